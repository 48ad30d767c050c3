"""The fused C kernels (text2video.backends.cpu.kernels): building, falling back, and agreeing with PyTorch."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat

import pytest
import torch
import torch.nn.functional as F

from text2video.backends.cpu import kernels as cpu_kernels
from text2video.backends.cpu import winograd_conv
from text2video.backends.cpu.fused_norm import rms_scale_shift_silu
from text2video.backends.cpu.short_attention import short_sequence_attention
from text2video.backends.cpu.small_map_conv import conv3x3_gemm_backward
from text2video.backends.cpu.winograd_conv import CHANNEL_BLOCK, conv3x3_winograd, transform_weight, winograd_applies


@pytest.fixture
def fresh_load(monkeypatch, tmp_path):
    """Kernel loading from a clean slate, into a private cache folder; the cached library is restored afterwards."""
    monkeypatch.setenv(cpu_kernels.ENV_CACHE, str(tmp_path / "kernels"))
    monkeypatch.delenv(cpu_kernels.ENV_SWITCH, raising=False)
    cpu_kernels.load.cache_clear()
    yield tmp_path / "kernels"
    cpu_kernels.load.cache_clear()


@pytest.fixture(params=["kernels", "torch"])
def either_path(request, monkeypatch):
    """Runs a test through the C kernels, then through the PyTorch path (every caller falls back)."""
    if request.param == "kernels":
        require_kernels()
    else:
        monkeypatch.setattr(cpu_kernels, "load", lambda: None)
    return request.param


def require_kernels():
    if cpu_kernels.load() is None:
        pytest.skip("no C compiler here: the kernels cannot be built")


# ------------------------------------------------------------------------------------------------
# building and falling back


def test_builds_once_into_the_cache_and_reuses_it(fresh_load):
    if cpu_kernels._compiler() is None:
        pytest.skip("no C compiler here")
    lib = cpu_kernels.load()
    assert lib is not None and lib.t2v_abi_version() == cpu_kernels.ABI_VERSION
    built = list(fresh_load.glob("*.so"))
    assert len(built) == 1 and built[0] == cpu_kernels.library_path(cpu_kernels._compiler())
    stamp = built[0].stat().st_mtime_ns
    cpu_kernels.load.cache_clear()
    assert cpu_kernels.load() is not None
    assert built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
    # no temporary files left: the library and the hash recorded when it was built, in a private folder
    assert sorted(fresh_load.iterdir()) == [built[0], cpu_kernels.hash_path(built[0])]
    assert cpu_kernels.hash_path(built[0]).read_text().strip() == hashlib.sha256(built[0].read_bytes()).hexdigest()
    assert stat.S_IMODE(fresh_load.stat().st_mode) == 0o700


@pytest.fixture
def library_copy(tmp_path):
    """A copy of the built kernel library with its recorded hash, in a private folder of this test."""
    require_kernels()
    source = cpu_kernels.library_path(cpu_kernels._compiler())
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    copy = folder / source.name
    shutil.copyfile(source, copy)
    os.chmod(copy, 0o700)
    cpu_kernels.record_hash(copy)
    return copy


def test_a_checked_library_loads_and_a_changed_one_is_refused(library_copy):
    assert cpu_kernels._bind(cpu_kernels.load_verified(library_copy)).t2v_abi_version() == cpu_kernels.ABI_VERSION
    data = bytearray(library_copy.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one planted byte
    library_copy.write_bytes(bytes(data))
    with pytest.raises(cpu_kernels.UnsafeLibraryError, match="does not match the hash"):
        cpu_kernels.open_verified(library_copy)
    cpu_kernels.hash_path(library_copy).unlink()
    with pytest.raises(cpu_kernels.UnsafeLibraryError, match="no recorded hash"):
        cpu_kernels.open_verified(library_copy)


def test_a_library_or_folder_others_can_write_or_own_is_refused(library_copy, monkeypatch, caplog):
    os.chmod(library_copy, 0o720)  # group-writable
    with pytest.raises(cpu_kernels.UnsafeLibraryError, match="writable by its group"):
        cpu_kernels.open_verified(library_copy)
    os.chmod(library_copy, 0o700)
    shared = library_copy.parent.parent / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # a folder anyone may write, as a shared TEXT2VIDEO_KERNEL_CACHE would be
    with pytest.raises(cpu_kernels.UnsafeLibraryError, match="writable by others"):
        cpu_kernels.secure_folder(shared)
    monkeypatch.setenv(cpu_kernels.ENV_CACHE, str(shared))
    cpu_kernels.load.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=cpu_kernels.__name__):
            assert cpu_kernels.load() is None  # refused: the PyTorch path runs instead
    finally:
        cpu_kernels.load.cache_clear()
    assert "refused" in caplog.text and not list(shared.iterdir())  # nothing built or loaded there
    real_uid = os.getuid()
    monkeypatch.setattr(cpu_kernels.os, "getuid", lambda: real_uid + 1)  # as if another user owned the files
    with pytest.raises(cpu_kernels.UnsafeLibraryError, match="belongs to user"):
        cpu_kernels.open_verified(library_copy)
    with pytest.raises(cpu_kernels.UnsafeLibraryError, match="belongs to user"):
        cpu_kernels.secure_folder(library_copy.parent)


def test_switched_off_by_environment(fresh_load, monkeypatch):
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    assert cpu_kernels.load() is None
    assert not fresh_load.exists()


def test_failed_build_falls_back_and_leaves_nothing(fresh_load, monkeypatch, caplog):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    with caplog.at_level(logging.WARNING, logger=cpu_kernels.__name__):
        assert cpu_kernels.load() is None
    assert "PyTorch path" in caplog.text and cpu_kernels.ENV_SWITCH in caplog.text
    assert not list(fresh_load.glob("*"))
    # and the callers still work
    qkv = torch.randn(3, 4, 3, 2, 8)
    assert short_sequence_attention(qkv).shape == (3, 4, 2, 8)


def test_no_compiler_falls_back(fresh_load, monkeypatch, caplog):
    monkeypatch.setattr(cpu_kernels, "_compiler", lambda: None)
    with caplog.at_level(logging.WARNING, logger=cpu_kernels.__name__):
        assert cpu_kernels.load() is None
    assert "no C compiler" in caplog.text


def test_load_other_builds_another_source_and_refuses_a_broken_one(tmp_path):
    require_kernels()
    other = cpu_kernels.load_other(cpu_kernels.SOURCE, tmp_path)
    assert other.t2v_abi_version() == cpu_kernels.ABI_VERSION and other.t2v_max_frames() == 64
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    with pytest.raises(RuntimeError, match="failed"):
        cpu_kernels.load_other(broken, tmp_path)


def test_only_float32_cpu_tensors_use_the_kernels():
    require_kernels()
    assert cpu_kernels.usable(torch.zeros(2), None) is not None
    assert cpu_kernels.usable(torch.zeros(2, dtype=torch.bfloat16)) is None
    assert cpu_kernels.usable(torch.zeros(2), torch.zeros(2, dtype=torch.float64)) is None


def test_non_contiguous_tensors_are_refused():
    with pytest.raises(ValueError, match="contiguous"):
        cpu_kernels.ptr(torch.zeros(4, 4).t())


# ------------------------------------------------------------------------------------------------
# agreement with PyTorch


def _reference_attention(qkv: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``(T, N, 3, H, d)`` -> ``(T, N, H, d)`` through scaled_dot_product_attention."""
    q, k, v = (qkv[:, :, i].permute(1, 2, 0, 3) for i in range(3))  # (N, H, T, d)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return out.permute(2, 0, 1, 3)


@pytest.mark.parametrize("frames, heads, dim_head, with_bias", [(5, 4, 32, True), (7, 2, 64, False), (1, 3, 24, True), (16, 2, 20, True)])
def test_short_attention_matches_sdpa(frames, heads, dim_head, with_bias):
    require_kernels()
    torch.manual_seed(frames)
    qkv = torch.randn(frames, 37, 3, heads, dim_head, requires_grad=True)
    bias = torch.randn(heads, frames, frames, requires_grad=True) if with_bias else None
    out = short_sequence_attention(qkv, bias)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [qkv] + ([bias] if with_bias else []), grad)
    ref = _reference_attention(qkv, bias)
    want = torch.autograd.grad(ref, [qkv] + ([bias] if with_bias else []), grad)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(short_sequence_attention(qkv, bias), ref.detach(), atol=1e-5, rtol=1e-5)


def _rotated_by_complex_product(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """``x`` ``(T, N, H, d)`` with the pairs of its first ``2R`` features, read as complex numbers, times ``exp(i angle)``."""
    pairs = 2 * angles.shape[-1]
    z = torch.view_as_complex(x[..., :pairs].double().unflatten(-1, (-1, 2)).contiguous())
    turned = torch.view_as_real(z * torch.polar(torch.ones_like(angles.double()), angles.double())[:, None, None])
    return torch.cat((turned.flatten(-2).to(x.dtype), x[..., pairs:]), dim=-1)


@pytest.mark.parametrize("frames, heads, dim_head, pairs", [(5, 4, 32, 16), (6, 2, 24, 4), (7, 2, 64, 16), (1, 3, 8, 4)])
def test_short_attention_applies_rotary_angles(frames, heads, dim_head, pairs, either_path):
    torch.manual_seed(frames)
    qkv = torch.randn(frames, 29, 3, heads, dim_head, requires_grad=True)
    bias = torch.randn(heads, frames, frames, requires_grad=True)
    angles = torch.rand(frames, pairs) * 6.0
    out = short_sequence_attention(qkv, bias, angles=angles)
    rotated = torch.stack([_rotated_by_complex_product(qkv[:, :, i], angles) for i in range(2)] + [qkv[:, :, 2]], dim=2)
    ref = _reference_attention(rotated, bias)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (qkv, bias), grad), torch.autograd.grad(ref, (qkv, bias), grad)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(short_sequence_attention(qkv, bias, angles=angles), ref.detach(), atol=1e-5, rtol=1e-5)


def test_short_attention_rejects_angles_that_do_not_fit():
    qkv = torch.randn(4, 3, 3, 2, 8)
    with pytest.raises(ValueError, match="rotary angles"):
        short_sequence_attention(qkv, angles=torch.zeros(5, 4))  # 5 frames of angles for 4
    with pytest.raises(ValueError, match="rotary angles"):
        short_sequence_attention(qkv, angles=torch.zeros(4, 5))  # 10 rotated features of 8


def test_short_attention_kernel_and_torch_path_agree(monkeypatch):
    require_kernels()
    torch.manual_seed(0)
    qkv = torch.randn(6, 50, 3, 4, 16, requires_grad=True)
    bias = torch.randn(4, 6, 6, requires_grad=True).permute(0, 2, 1)  # not contiguous
    grad = torch.randn(6, 50, 4, 16)
    fused = short_sequence_attention(qkv, bias)
    fused_grads = torch.autograd.grad(fused, (qkv, bias), grad)
    monkeypatch.setattr(cpu_kernels, "load", lambda: None)
    plain = short_sequence_attention(qkv, bias)
    plain_grads = torch.autograd.grad(plain, (qkv, bias), grad)
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(fused_grads, plain_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_short_attention_with_infinite_mask_takes_the_torch_path(monkeypatch):
    require_kernels()
    torch.manual_seed(1)
    qkv = torch.randn(4, 6, 3, 2, 8)
    bias = torch.zeros(2, 4, 4)
    bias[:, :, 3] = float("-inf")  # nobody attends to the last frame
    calls = []
    real = cpu_kernels.load().t2v_short_attention_forward
    monkeypatch.setattr(cpu_kernels.load(), "t2v_short_attention_forward", lambda *a: calls.append(1) or real(*a))
    out = short_sequence_attention(qkv, bias)
    assert not calls
    torch.testing.assert_close(out, _reference_attention(qkv, bias), atol=1e-5, rtol=1e-5)
    short_sequence_attention(qkv, torch.zeros(2, 4, 4))
    assert calls  # a finite bias does use the kernel


def test_short_attention_longer_than_the_kernel_limit_falls_back():
    require_kernels()
    frames = cpu_kernels.load().t2v_max_frames() + 1
    qkv = torch.randn(frames, 2, 3, 1, 4)
    torch.testing.assert_close(short_sequence_attention(qkv), _reference_attention(qkv, None), atol=1e-5, rtol=1e-5)


def _reference_norm(x, weight, scale, shift, eps):
    y = F.rms_norm(x, (x.shape[-1],), eps=eps) * weight
    if scale is not None:
        y = y * (scale[:, None] + 1) + shift[:, None]
    return F.silu(y)


@pytest.mark.parametrize("conditioned", [True, False])
@pytest.mark.parametrize("channels", [64, 20])
def test_rms_scale_shift_silu_matches_composition(conditioned, channels, either_path):
    torch.manual_seed(channels)
    x = torch.randn(3, 11, channels, requires_grad=True)
    weight = torch.randn(channels, requires_grad=True)
    scale = torch.randn(3, channels, requires_grad=True) if conditioned else None
    shift = torch.randn(3, channels, requires_grad=True) if conditioned else None
    inputs = [t for t in (x, weight, scale, shift) if t is not None]
    out = rms_scale_shift_silu(x, weight, scale, shift, 1e-6)
    ref = _reference_norm(x, weight, scale, shift, 1e-6)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_rms_scale_shift_silu_at_large_pre_activations(either_path):
    # pre-activations up to +-400: the SiLU's exponential saturates on both sides (the kernel's exp clamps
    # its argument to [-87, 88]) and must still give silu(a) ~ a for large a and ~ 0 for very negative a
    torch.manual_seed(3)
    x = torch.randn(2, 7, 64, requires_grad=True)
    weight = torch.full((64,), 40.0, requires_grad=True)
    scale = torch.rand(2, 64).mul(4).requires_grad_()
    shift = torch.randn(2, 64).mul(50).requires_grad_()
    out = rms_scale_shift_silu(x, weight, scale, shift, 1e-6)
    ref = _reference_norm(x, weight, scale, shift, 1e-6)
    assert ref.detach().abs().max() > 150 and bool(torch.isfinite(out).all())
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5)
    grad = torch.randn_like(out)
    inputs = (x, weight, scale, shift)
    for got, want in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-4)


def test_rms_norm_gradient_for_input_only():
    require_kernels()
    x = torch.randn(2, 5, 8, requires_grad=True)
    weight, scale, shift = torch.randn(8), torch.randn(2, 8), torch.randn(2, 8)
    (got,) = torch.autograd.grad(rms_scale_shift_silu(x, weight, scale, shift).sum(), x)
    (want,) = torch.autograd.grad(_reference_norm(x, weight, scale, shift, 1e-12).sum(), x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(4, 4), (3, 5), (1, 1)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_small_map_conv_matches_conv2d(size, with_bias, either_path):
    torch.manual_seed(0)
    x = torch.randn(3, 12, *size, requires_grad=True)
    weight = torch.randn(10, 12, 3, 3, requires_grad=True)
    bias = torch.randn(10, requires_grad=True) if with_bias else None
    inputs = [t for t in (x, weight, bias) if t is not None]
    out = conv3x3_gemm_backward(x, weight, bias)
    ref = F.conv2d(x, weight, bias, padding=1)
    if either_path == "kernels":
        assert out.is_contiguous(memory_format=torch.channels_last)  # the GEMM forward's layout
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    grad = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


# Lavin & Gray (2016): F(2x2, 3x3) with points 0, +-1; F(4x4, 3x3) with points 0, +-1, +-2
WINOGRAD_MATRICES = {
    2: dict(
        bt=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        at=[[1, 1, 1, 0], [0, 1, -1, -1]],
        g=[[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
    ),
    4: dict(
        bt=[
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        at=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
        g=[[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    ),
}


def _reference_winograd_input(x: torch.Tensor, tile: int) -> torch.Tensor:
    """(N, H, W, C) -> (alpha^2, tiles, C): B^T d B of every padded (alpha x alpha) input tile, in float64."""
    bt = torch.tensor(WINOGRAD_MATRICES[tile]["bt"], dtype=torch.float64)
    alpha = tile + 2
    xp = F.pad(x.double(), (0, 0, 1, 1, 1, 1))  # (N, H+2, W+2, C)
    d = xp.unfold(1, alpha, tile).unfold(2, alpha, tile)  # (N, th, tw, C, alpha, alpha)
    v = torch.einsum("ar,nijcrs,bs->abnijc", bt, d, bt)
    return v.reshape(alpha * alpha, -1, x.shape[-1])


@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_transforms_match_the_papers_matrices(tile):
    require_kernels()
    lib = cpu_kernels.load()
    torch.manual_seed(0)
    n, h, w, c, c_out = 2, 8, 12, 32, 16
    mats = {k: torch.tensor(v, dtype=torch.float64) for k, v in WINOGRAD_MATRICES[tile].items()}
    alpha, tiles = tile + 2, n * (h // tile) * (w // tile)
    x = torch.randn(n, h, w, c)
    v = torch.empty(alpha * alpha, tiles, c)
    lib.t2v_winograd_input(x.data_ptr(), v.data_ptr(), n, h, w, c, tile, 1)
    torch.testing.assert_close(v.double(), _reference_winograd_input(x, tile), atol=1e-4, rtol=1e-5)
    weight = torch.randn(c_out, c, 3, 3)
    want_u = torch.einsum("ak,oikl,bl->aboi", mats["g"], weight.double(), mats["g"]).reshape(alpha * alpha, c_out, c)
    torch.testing.assert_close(transform_weight(weight, tile).double(), want_u, atol=1e-5, rtol=1e-5)
    m = torch.randn(alpha * alpha, tiles, c_out)
    bias = torch.randn(c_out)
    y = torch.empty(n, h, w, c_out)
    lib.t2v_winograd_output(m.data_ptr(), bias.data_ptr(), y.data_ptr(), n, h, w, c_out, tile, 1)
    blocks = torch.einsum("pa,abtc,qb->tcpq", mats["at"], m.double().view(alpha, alpha, tiles, c_out), mats["at"])
    blocks = blocks.reshape(n, h // tile, w // tile, c_out, tile, tile).permute(0, 1, 4, 2, 5, 3).reshape(n, h, w, c_out)
    torch.testing.assert_close(y.double(), blocks + bias.double(), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_adjoint_kernels_are_adjoints(tile):
    """<T a, b> = <a, T* b> for the tile transforms and the weight transform."""
    require_kernels()
    lib = cpu_kernels.load()
    torch.manual_seed(1)
    n, h, w, c = 3, 4, 8, 16
    alpha, tiles = tile + 2, n * (h // tile) * (w // tile)
    dot = lambda a, b: (a.double() * b.double()).sum().item()  # noqa: E731
    x, dv = torch.randn(n, h, w, c), torch.randn(alpha * alpha, tiles, c)
    v, dx = torch.empty_like(dv), torch.empty_like(x)
    lib.t2v_winograd_input(x.data_ptr(), v.data_ptr(), n, h, w, c, tile, 2)
    lib.t2v_winograd_input_adjoint(dv.data_ptr(), dx.data_ptr(), n, h, w, c, tile, 2)
    assert dot(v, dv) == pytest.approx(dot(x, dx), rel=1e-5)
    m, dy = torch.randn(alpha * alpha, tiles, c), torch.randn(n, h, w, c)
    y, dm = torch.empty_like(dy), torch.empty_like(m)
    lib.t2v_winograd_output(m.data_ptr(), None, y.data_ptr(), n, h, w, c, tile, 2)
    lib.t2v_winograd_output_adjoint(dy.data_ptr(), dm.data_ptr(), n, h, w, c, tile, 2)
    assert dot(y, dy) == pytest.approx(dot(m, dm), rel=1e-5)
    weight, du = torch.randn(c, c, 3, 3), torch.randn(alpha * alpha, c, c)
    dw = torch.empty_like(weight)
    lib.t2v_winograd_weight_adjoint(du.data_ptr(), dw.data_ptr(), c * c, tile, 2)
    assert dot(transform_weight(weight, tile), du) == pytest.approx(dot(weight, dw), rel=1e-5)


@pytest.mark.parametrize("tile,size", [(2, (2, 2)), (2, (8, 6)), (4, (4, 4)), (4, (12, 8))])
@pytest.mark.parametrize("with_bias", [True, False])
def test_winograd_conv_matches_conv2d(tile, size, with_bias):
    require_kernels()
    torch.manual_seed(0)
    x = torch.randn(3, 32, *size).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    weight = torch.randn(16, 32, 3, 3, requires_grad=True)
    bias = torch.randn(16, requires_grad=True) if with_bias else None
    inputs = [t for t in (x, weight, bias) if t is not None]
    out = conv3x3_winograd(x, weight, bias, tile)
    assert out.is_contiguous(memory_format=torch.channels_last)
    ref_inputs = [t.detach().double().requires_grad_(True) for t in inputs]
    ref = F.conv2d(ref_inputs[0], ref_inputs[1], ref_inputs[2] if with_bias else None, padding=1)
    torch.testing.assert_close(out.double(), ref, atol=2e-4, rtol=1e-4)
    grad = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, ref_inputs, grad.double())):
        torch.testing.assert_close(got.double(), want, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("tile,channels,size", [(4, 64, 32), (2, 256, 4)])
def test_winograd_large_outputs_stream_the_same_values(tile, channels, size):
    """Outputs large enough for the kernels' non-temporal stores (cpu_kernels.c: transformed tiles of 1 MiB and
    more with F(4x4)'s 36 streams, anything of 4 MiB and more) hold the same values as the direct convolution."""
    require_kernels()
    torch.manual_seed(2)
    alpha = tile + 2
    x = torch.randn(2, channels, size, size).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    weight = (torch.randn(channels, channels, 3, 3) / (3 * channels**0.5)).requires_grad_(True)
    tiles = 2 * (size // tile) ** 2
    streamed = {"tiles": alpha * alpha * tiles * channels * 4, "weight": alpha * alpha * channels * channels * 4}
    assert max(streamed.values()) >= (1 << 20 if tile == 4 else 4 << 20)
    out = conv3x3_winograd(x, weight, None, tile)
    ref_x, ref_w = x.detach().double().requires_grad_(True), weight.detach().double().requires_grad_(True)
    ref = F.conv2d(ref_x, ref_w, padding=1)
    grad = torch.randn_like(out)
    got = (out, *torch.autograd.grad(out, (x, weight), grad))
    want = (ref, *torch.autograd.grad(ref, (ref_x, ref_w), grad.double()))
    for g, w in zip(got, want):
        # F(4x4)'s rounding is about 7e-6 of the largest value (the weight gradient sums 2048 pixels' products)
        torch.testing.assert_close(g.double(), w, atol=2e-5 * float(w.abs().max()), rtol=0)


def test_winograd_conv_input_gradient_alone_and_refusals():
    require_kernels()
    torch.manual_seed(0)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    weight = torch.randn(16, 16, 3, 3)  # a frozen weight: only the input's gradient
    out = conv3x3_winograd(x, weight, None, 2)
    (gx,) = torch.autograd.grad(out.sum(), x)
    ref_x = x.detach().requires_grad_(True)
    (want,) = torch.autograd.grad(F.conv2d(ref_x, weight, padding=1).sum(), ref_x)
    torch.testing.assert_close(gx, want, atol=1e-4, rtol=1e-4)
    assert winograd_applies(x, weight, 2) and winograd_applies(x, weight, 4)
    assert not winograd_applies(torch.randn(2, 16, 6, 6), weight, 4)  # sides not multiples of 4
    assert not winograd_applies(torch.randn(2, 16, 5, 4), weight, 2)
    assert not winograd_applies(x, weight, 3)
    narrow = torch.randn(2, CHANNEL_BLOCK + 8, 4, 4)
    assert not winograd_applies(narrow, torch.randn(16, CHANNEL_BLOCK + 8, 3, 3), 2)
    assert not winograd_applies(x.double(), weight.double(), 2)
    with winograd_conv.disabled():
        assert not winograd_applies(x, weight, 2)
    assert winograd_applies(x, weight, 2)
    with pytest.raises(ValueError, match="multiples of the tile size"):
        conv3x3_winograd(torch.randn(2, 16, 6, 6), weight, None, 4)
    with pytest.raises(ValueError, match=r"\(C_out, 16, 3, 3\) weight"):
        conv3x3_winograd(x, torch.randn(16, 8, 3, 3), None, 2)


def test_unet3d_training_step_same_with_and_without_kernels(monkeypatch):
    require_kernels()
    from text2video.backends import cpu as cpu_backend
    from text2video.backends.cpu import unet3d
    from text2video.models.unet3d import Unet3D

    # 6x6 frames: Winograd on the outer level; the inner 3x3 level's convolutions take the small-map GEMM
    # path at this tiny width
    monkeypatch.setattr(unet3d, "GEMM_BACKWARD_MIN_CHANNELS", 32)
    calls, winograd_tiles = [], []
    real_conv, real_winograd = unet3d.conv3x3_gemm_backward, unet3d.conv3x3_winograd
    monkeypatch.setattr(unet3d, "conv3x3_gemm_backward", lambda *a: calls.append(1) or real_conv(*a))
    monkeypatch.setattr(unet3d, "conv3x3_winograd", lambda *a: winograd_tiles.append(a[-1]) or real_winograd(*a))
    torch.manual_seed(0)
    model = cpu_backend.install(Unet3D(dim=16, dim_mults=(1, 2), cond_dim=8, attn_heads=2, attn_dim_head=8))
    x, t, cond = torch.randn(2, 3, 4, 6, 6), torch.tensor([3, 700]), torch.randn(2, 8)

    def run():
        model.zero_grad(set_to_none=True)
        out = model(x, t, cond=cond)
        out.square().mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fused_out, fused_grads = run()
    assert calls, "the small-map convolution path was not taken"
    assert set(winograd_tiles) == {2}, "the 6x6 level's convolutions did not take the Winograd path"
    monkeypatch.setattr(cpu_kernels, "load", lambda: None)
    plain_out, plain_grads = run()
    torch.testing.assert_close(fused_out, plain_out, atol=1e-5, rtol=1e-4)
    assert fused_grads.keys() == plain_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(fused_grads[name], plain_grads[name], atol=1e-4, rtol=1e-3, msg=name)


def test_rotation_inside_the_kernel_is_not_promised_under_autocast():
    from text2video.backends.cpu.short_attention import rotates_inside

    require_kernels()
    x = torch.randn(5, 4, 8)
    assert rotates_inside(x, 5)
    assert not rotates_inside(x, cpu_kernels.load().t2v_max_frames() + 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not rotates_inside(x, 5)  # the projection would come out in bf16
