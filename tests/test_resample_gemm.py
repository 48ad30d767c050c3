"""The resampling convolutions as GEMMs (text2video.backends.cpu.resample_gemm) and where Unet3D uses them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from text2video.backends.cpu.resample_gemm import downsample_conv_gemm, upsample_conv_gemm
from text2video.backends.cpu.unet3d import FastConv2d as Conv2d
from text2video.backends.cpu.unet3d import FastConvTranspose2d as ConvTranspose2d


def _grads(out: torch.Tensor, inputs: list[torch.Tensor], grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(out, inputs, grad)


# (function, its reference, weight shape for 5 input and 7 output channels, output size for an (h, w) input)
RESAMPLINGS = {
    "down": (downsample_conv_gemm, F.conv2d, (7, 5, 4, 4), lambda h, w: (h // 2, w // 2)),
    "up": (upsample_conv_gemm, F.conv_transpose2d, (5, 7, 4, 4), lambda h, w: (2 * h, 2 * w)),
}


@pytest.mark.parametrize(
    "direction, size", [("down", (2, 2)), ("down", (6, 4)), ("down", (8, 10)), ("up", (1, 1)), ("up", (3, 2)), ("up", (4, 4))]
)
@pytest.mark.parametrize("with_bias", [True, False])
def test_resampling_gemms_match_the_convolutions(direction, size, with_bias):
    fn, reference, weight_shape, out_size = RESAMPLINGS[direction]
    torch.manual_seed(0)
    x = torch.randn(3, 5, *size, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(*weight_shape, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True) if with_bias else None
    inputs = [t for t in (x, weight, bias) if t is not None]
    out, ref = fn(x, weight, bias), reference(x, weight, bias, stride=2, padding=1)
    assert out.shape == ref.shape == (3, 7, *out_size(*size))
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(ref)
    for got, want in zip(_grads(out, inputs, grad), _grads(ref, inputs, grad)):
        torch.testing.assert_close(got, want)


def test_resampling_gemms_pass_gradcheck():
    torch.manual_seed(2)
    x = torch.randn(1, 2, 4, 2, dtype=torch.float64, requires_grad=True)
    w_down = torch.randn(3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w_up = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(downsample_conv_gemm, (x, w_down, bias))
    assert torch.autograd.gradcheck(upsample_conv_gemm, (x, w_up, bias))


def test_resampling_gemms_refuse_shapes_they_do_not_take():
    with pytest.raises(ValueError, match=r"even height and width.*\(1, 2, 5, 4\)"):
        downsample_conv_gemm(torch.randn(1, 2, 5, 4), torch.randn(3, 2, 4, 4))
    with pytest.raises(ValueError, match=r"4x4 kernel.*\(3, 2, 3, 3\)"):
        downsample_conv_gemm(torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3))
    with pytest.raises(ValueError, match="taking its C channels"):
        upsample_conv_gemm(torch.randn(1, 2, 3, 3), torch.randn(3, 2, 4, 4))  # takes 3 input channels, not 2


def test_unet3d_resampling_takes_the_gemms_on_small_maps_with_many_channels():
    torch.manual_seed(3)
    down, up = Conv2d(256, 256, 4, 2, 1), ConvTranspose2d(256, 256, 4, 2, 1)
    assert down._gemm_downsample_pays(torch.randn(2, 256, 8, 8))  # to a 4x4 map
    assert not down._gemm_downsample_pays(torch.randn(2, 256, 16, 16))  # to an 8x8 map: oneDNN
    assert not Conv2d(128, 128, 4, 2, 1)._gemm_downsample_pays(torch.randn(2, 128, 8, 8))  # too few channels
    assert not Conv2d(256, 256, 3, 1, 1)._gemm_downsample_pays(torch.randn(2, 256, 8, 8))  # not a resampling kernel
    assert up._gemm_upsample_pays(torch.randn(2, 256, 4, 4))
    assert not up._gemm_upsample_pays(torch.randn(2, 256, 8, 8))
    x = torch.randn(2, 256, 8, 8)
    assert not down._gemm_downsample_pays(x.double())
    with torch.no_grad():
        assert not down._gemm_downsample_pays(x)  # sampling keeps oneDNN's packed weights
        assert not up._gemm_upsample_pays(x[..., :4, :4])
    for module, inp, ref_fn in (
        (down, x, lambda i: F.conv2d(i, down.weight, down.bias, stride=2, padding=1)),
        (up, x[..., :4, :4].contiguous(), lambda i: F.conv_transpose2d(i, up.weight, up.bias, stride=2, padding=1)),
    ):
        inp = inp.requires_grad_(True)
        out, ref = module(inp), ref_fn(inp)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        grad = torch.randn_like(ref)
        params = [inp, module.weight, module.bias]
        for got, want in zip(_grads(out, params, grad), _grads(ref, params, grad)):
            torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-4)
