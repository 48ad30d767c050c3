"""Frozen-weight sampling (text2video.backends.cpu.frozen_weights) and oneDNN-packed convolutions (text2video.backends.cpu.packed_conv)."""

from __future__ import annotations

import copy
import types

import pytest
import torch
import torch.nn.functional as F

from text2video.backends import cpu as cpu_backend
from text2video.backends.cpu import packed_conv
from text2video.backends.cpu.frozen_weights import frozen_weights
from text2video.backends.cpu.unet3d import FastConv2d as Conv2d
from text2video.backends.cpu.unet3d import FastConvTranspose2d as ConvTranspose2d
from text2video.backends.cpu.unet3d import FastTemporalAttention as TemporalAttention
from text2video.diffusion.objective import DiffusionObjective
from text2video.diffusion.sampling import sample
from text2video.models.unet3d import RelativePositionBias, Unet3D
from text2video.nn.rotary import rotary_angles

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (mkldnn) CPU build")


def _conv(channels: int = 16) -> Conv2d:
    torch.manual_seed(0)
    return Conv2d(channels, channels, 3, padding=1).eval()


def _entries(layer: torch.nn.Module) -> dict:
    return layer.__dict__.get("_frozen_entries", {})


@pytest.mark.parametrize("size", [4, 16])  # 4x4 runs NCHW, 16x16 channels-last
def test_packed_conv_matches_plain_convolution_and_is_used(size: int) -> None:
    conv = _conv()
    x = torch.randn(3, 16, size, size)
    with torch.no_grad(), frozen_weights(conv):
        y = conv(x)
        assert "packed" in _entries(conv)  # the packed path ran
    torch.testing.assert_close(y, F.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-4, rtol=1e-4)
    assert "_frozen_entries" not in conv.__dict__ and "_frozen_depth" not in conv.__dict__  # freed on exit


def test_packed_transposed_conv_matches_plain() -> None:
    torch.manual_seed(0)
    up = ConvTranspose2d(16, 16, 4, 2, 1).eval()
    for size in (4, 8):
        x = torch.randn(2, 16, size, size)
        with torch.no_grad(), frozen_weights(up):
            y = up(x)
            assert _entries(up)["packed"][0][0] == "transpose"
        torch.testing.assert_close(y, F.conv_transpose2d(x, up.weight, up.bias, stride=2, padding=1), atol=1e-4, rtol=1e-4)


def test_no_packing_outside_the_block_or_with_gradients() -> None:
    conv = _conv()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        conv(x)
    assert "_frozen_entries" not in conv.__dict__
    with frozen_weights(conv):
        y = conv(x.requires_grad_())
        y.sum().backward()
        assert "packed" not in _entries(conv)  # a training call uses the ordinary convolution
    assert conv.weight.grad is not None and x.grad is not None


def test_weight_change_repacks() -> None:
    conv = _conv()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad(), frozen_weights(conv):
        conv(x)
        conv.weight.mul_(-2.0)  # an in-place update bumps the version counter
        y = conv(x)
    torch.testing.assert_close(y, F.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-4, rtol=1e-4)


def test_nested_blocks_keep_entries_until_the_outer_exit() -> None:
    conv = _conv()
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad(), frozen_weights(conv):
        with frozen_weights(conv):
            conv(x)
        assert conv.__dict__["_frozen_depth"] == 1 and "packed" in _entries(conv)
    assert "_frozen_depth" not in conv.__dict__


def test_deepcopy_leaves_the_entries_behind() -> None:
    conv = _conv()
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad(), frozen_weights(conv):
        expected = conv(x)
        twin = copy.deepcopy(conv)  # an opaque oneDNN tensor cannot be deep-copied: it must not be in the state
        assert "_frozen_entries" not in twin.__dict__ and "_frozen_depth" not in twin.__dict__
        torch.testing.assert_close(twin(x), expected, atol=1e-4, rtol=1e-4)


def test_missing_onednn_ops_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packed_conv, "_mkldnn_ops", lambda: types.SimpleNamespace())
    conv = _conv()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad(), frozen_weights(conv):
        y = conv(x)
        assert _entries(conv)["packing_unsupported"]
    torch.testing.assert_close(y, F.conv2d(x, conv.weight, conv.bias, padding=1))


def test_temporal_attention_reuses_its_rotated_projection(monkeypatch: pytest.MonkeyPatch) -> None:
    from text2video.backends.cpu import unet3d

    # the rotated projection is the path where the C attention kernel does not rotate (a GPU, no compiler)
    monkeypatch.setattr(unet3d, "rotates_inside", lambda *args: False)
    torch.manual_seed(0)
    attn, rel = TemporalAttention(8, 2, 8).eval(), RelativePositionBias(2)
    x = torch.randn(2 * 3, 8, 4, 4)  # batch 2, 3 frames, 16 pixels >= 8 channels: the rotated-rows path
    angles, bias = rotary_angles(3, attn.rot_dim, x.device), rel(3, x.device)
    with torch.no_grad():
        plain = attn(x, 2, angles, bias)
        with frozen_weights(attn):
            first = attn(x, 2, angles, bias)
            built = _entries(attn)["rotated_projection"][1]
            again = attn(x, 2, rotary_angles(3, attn.rot_dim, x.device), bias)  # fresh angles, same values
            assert _entries(attn)["rotated_projection"][1] is built
            attn.to_qkv.weight.mul_(0.5)
            changed = attn(x, 2, angles, bias)
            assert _entries(attn)["rotated_projection"][1] is not built
        expected_changed = attn(x, 2, angles, bias)
    torch.testing.assert_close(first, plain)
    torch.testing.assert_close(again, plain)
    torch.testing.assert_close(changed, expected_changed)


def _tiny_unet() -> Unet3D:
    torch.manual_seed(0)
    return cpu_backend.install(Unet3D(dim=16, dim_mults=(1, 2), cond_dim=8, attn_heads=2, attn_dim_head=8).eval())


def test_unet3d_output_unchanged_by_frozen_weights() -> None:
    model = _tiny_unet()
    x, t, cond = torch.randn(2, 3, 3, 16, 16), torch.tensor([10, 500]), torch.randn(2, 8)
    with torch.no_grad():
        plain = model(x, t, cond=cond)
        with frozen_weights(model):
            model(x, t, cond=cond)
            frozen = model(x, t, cond=cond)  # the second call runs from the entries
    torch.testing.assert_close(frozen, plain, atol=1e-5, rtol=1e-4)


def test_sampling_loop_packs_and_frees(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny_unet()
    calls = []
    original = packed_conv.packed_conv2d

    def counting(layer, *args, **kwargs):
        out = original(layer, *args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr("text2video.backends.cpu.unet3d.packed_conv2d", counting)
    with cpu_backend.sampling(model):  # what the pipelines wrap their sampling loop in, on CPU
        out = sample(model, (1, 3, 3, 16, 16), objective=DiffusionObjective(), sampler="ddim", steps=2)
    assert out.shape == (1, 3, 3, 16, 16) and torch.isfinite(out).all()
    convs = [m for m in model.modules() if isinstance(m, Conv2d) and m.kernel_size != (1, 1)]
    assert len(calls) == 2 * len(convs) and all(calls)  # every 3x3/4x4/7x7 convolution packed, at both steps
    assert all("_frozen_entries" not in m.__dict__ for m in model.modules())
