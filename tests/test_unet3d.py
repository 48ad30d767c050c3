"""Unet3D (text2video-from-scratch): shapes, conditioning paths, options, round trips."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from text2video.backends.cpu.fused_norm import rms_scale_shift_silu
from text2video.backends.cpu.short_attention import short_sequence_attention
from text2video.backends.cpu.small_map_conv import conv3x3_gemm_backward
from text2video.diffusion.conditioning import Conditioning
from text2video.diffusion.denoise import denoise
from text2video.errors import ModelError
from text2video.models.registry import load_model
from text2video.models.unet3d import (
    RelativePositionBias,
    SpatialLinearAttention,
    TemporalAttention,
    Unet3D,
)
from text2video.nn.frames import fold_frames, unfold_frames
from text2video.nn.rotary import rotary_angles, rotate_features, rotate_rows

TINY = dict(dim=8, cond_dim=6, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, spatial_attn_dim_head=8)


def tiny(**kw) -> Unet3D:
    return Unet3D(**{**TINY, **kw}).eval()


@pytest.mark.parametrize("frames,height,width", [(1, 8, 8), (3, 8, 12), (4, 16, 6)])
def test_shapes_any_frames_and_non_square(frames, height, width):
    model = tiny(out_dim=5)
    x = torch.randn(2, 3, frames, height, width)
    out = model(x, torch.tensor([1, 500]), cond=torch.randn(2, 6))
    assert out.shape == (2, 5, frames, height, width)
    assert torch.isfinite(out).all()


def test_fold_unfold_round_trip():
    x = torch.randn(2, 3, 4, 5, 6)
    folded = fold_frames(x)
    assert folded.shape == (8, 3, 5, 6)
    assert torch.equal(folded[1 * 4 + 2], x[1, :, 2])
    assert torch.equal(unfold_frames(folded, 4), x)
    assert torch.equal(fold_frames(x, torch.channels_last), folded)
    assert fold_frames(x, torch.channels_last).is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="whole number"):
        unfold_frames(folded, 3)


def test_size_not_divisible_is_a_clear_error():
    model = tiny(dim_mults=(1, 2, 4))
    with pytest.raises(ModelError, match="divisible by 4"):
        model(torch.randn(1, 3, 2, 8, 10), torch.tensor([1]), cond=torch.randn(1, 6))
    with pytest.raises(ModelError, match="channels"):
        model(torch.randn(1, 4, 2, 8, 8), torch.tensor([1]), cond=torch.randn(1, 6))
    with pytest.raises(ModelError, match="cond of shape"):
        model(torch.randn(1, 3, 2, 8, 8), torch.tensor([1]), cond=torch.randn(1, 7))


def test_unknown_block_type_or_norm():
    with pytest.raises(ModelError, match="block_type"):
        tiny(block_type="fancy")
    with pytest.raises(ModelError, match="block_norm"):
        tiny(block_norm="batch")
    assert tiny(block_type="basic") is not None  # text2video-from-scratch's config value


@torch.no_grad()
def test_null_condition_rows_use_the_null_embedding():
    model = tiny()
    x, t = torch.randn(3, 3, 2, 8, 8), torch.tensor([5, 50, 500])
    text = torch.randn(3, 6)
    null_rows = torch.tensor([True, False, True])
    out = model.forward_cond(x, t, Conditioning(text_pooled=text, null_text=null_rows))
    # independent: pass the null embedding itself as the text of the dropped rows
    explicit = torch.where(null_rows[:, None], model.null_cond_emb.expand(3, -1), text)
    torch.testing.assert_close(out, model(x, t, cond=explicit), atol=1e-5, rtol=1e-5)
    # and the text of dropped rows does not matter
    other = model.forward_cond(x, t, Conditioning(text_pooled=torch.randn(3, 6), null_text=torch.ones(3, dtype=torch.bool)))
    torch.testing.assert_close(other, model(x, t, cond=model.null_cond_emb.expand(3, -1)), atol=1e-5, rtol=1e-5)
    # no text at all -> null condition; null_cond_prob=1 -> null condition
    torch.testing.assert_close(model.forward_cond(x, t, Conditioning()), other, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x, t, cond=text, null_cond_prob=1.0), other, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[1], other[1], atol=1e-4)


@torch.no_grad()
def test_guidance_combines_conditional_and_null_predictions():
    model = tiny()
    x, t, text = torch.randn(2, 3, 3, 8, 8), torch.tensor([10, 900]), torch.randn(2, 6)
    cond_out = model(x, t, cond=text)
    null_out = model(x, t, cond=text, null_cond_prob=1.0)
    guided = model.forward_with_cond_scale(x, t, cond=text, cond_scale=3.0)
    torch.testing.assert_close(guided, null_out + 3.0 * (cond_out - null_out), atol=1e-4, rtol=1e-4)
    # the adapter's batched guidance form gives the same two halves
    both = denoise(model, torch.cat((x, x)), torch.cat((t, t)), Conditioning(text_pooled=text).with_guidance_batch())
    torch.testing.assert_close(both, torch.cat((cond_out, null_out)), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_focus_present_attends_to_own_frame_only():
    torch.manual_seed(1)
    layer = TemporalAttention(8, heads=2, dim_head=8).eval()
    bias_fn = RelativePositionBias(2)
    with torch.no_grad():
        bias_fn.embedding.weight.normal_()
    x = fold_frames(torch.randn(2, 8, 4, 3, 3))
    focus = torch.tensor([True, False])
    out = layer(x, 2, rotary_angles(4, 8, x.device), bias_fn(4, x.device), focus)
    # independent: each frame on its own (one key: the attention returns the frame's values)
    alone = torch.cat([layer(x[i : i + 1], 1, rotary_angles(1, 8, x.device), bias_fn(1, x.device)) for i in range(4)])
    torch.testing.assert_close(out[:4], alone, atol=1e-5, rtol=1e-5)
    plain = layer(x, 2, rotary_angles(4, 8, x.device), bias_fn(4, x.device))
    torch.testing.assert_close(out[4:], plain[4:])
    assert not torch.allclose(out[:4], plain[:4], atol=1e-4)


@torch.no_grad()
def test_focus_present_mask_changes_only_the_masked_items():
    model = tiny()
    x, t, text = torch.randn(2, 3, 3, 8, 8), torch.tensor([3, 30]), torch.randn(2, 6)
    plain = model(x, t, cond=text)
    focused = model(x, t, cond=text, focus_present_mask=torch.tensor([True, False]))
    via_cond = model.forward_cond(x, t, Conditioning(text_pooled=text, focus_present=torch.tensor([True, False])))
    torch.testing.assert_close(focused, via_cond)
    torch.testing.assert_close(focused[1], plain[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(focused[0], plain[0], atol=1e-4)


def test_rotary_on_weights_matches_rotary_embedding_torch():
    rotary_embedding_torch = pytest.importorskip("rotary_embedding_torch")
    heads, d, c, frames = 2, 8, 5, 4
    weight, tokens = torch.randn(heads * d, c), torch.randn(frames, c)
    q = (tokens @ weight.T).view(frames, heads, d).transpose(0, 1)  # (heads, frames, d)
    expected = rotary_embedding_torch.RotaryEmbedding(d).rotate_queries_or_keys(q)
    rotated = rotate_rows(weight, heads, d, rotary_angles(frames, d, tokens.device))  # (frames, heads*d, c)
    ours = torch.einsum("fc,foc->fo", tokens, rotated).view(frames, heads, d).transpose(0, 1)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_save_pretrained_round_trip(tmp_path):
    model = tiny(cond_norm=True, frame_pos_emb=True)
    model.save_pretrained(str(tmp_path))
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = Unet3D.from_pretrained(str(tmp_path)).eval()
    assert isinstance(load_model(tmp_path), Unet3D)
    assert loaded.config.cond_dim == 6 and list(loaded.config.dim_mults) == [1, 2] and loaded.config.cond_norm
    x, t, text = torch.randn(1, 3, 2, 8, 8), torch.tensor([7]), torch.randn(1, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, cond=text), model(x, t, cond=text))


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = tiny().train()
    ckpt = tiny(gradient_checkpointing=True).train()
    via_diffusers = tiny().train()
    via_diffusers.enable_gradient_checkpointing()
    assert via_diffusers.gradient_checkpointing
    ckpt.load_state_dict(plain.state_dict())
    x, t, text = torch.randn(2, 3, 3, 8, 8), torch.tensor([1, 2]), torch.randn(2, 6)
    for m in (plain, ckpt):
        m(x, t, cond=text).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is None:
            assert name == "null_cond_emb"  # no row used the null embedding
            continue
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize(
    "options",
    [
        dict(attn_3d=True),
        dict(frame_pos_emb=True),
        dict(cond_norm=True),
        dict(block_norm="group"),
        dict(block_norm="layer"),
        dict(cond_dim=None),
        dict(use_sparse_linear_attn=False, init_dim=12),
    ],
)
def test_options_build_run_and_train(options):
    model = tiny(**options).train()
    x, t = torch.randn(2, 3, 2, 8, 8), torch.tensor([1, 2])
    out = model(x, t, cond=None if options.get("cond_dim", 6) is None else torch.randn(2, 6))
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n != "null_cond_emb")


def test_attn_3d_mixes_frames_in_the_middle_attention():
    torch.manual_seed(0)
    model = tiny(attn_3d=True).eval()
    x = torch.randn(1, 3, 3, 8, 8)
    with torch.no_grad():
        spatial = model.mid.spatial_attn
        h = fold_frames(torch.randn(1, 16, 3, 4, 4))
        base = spatial(h, 1)
        h2 = h.clone()
        h2[2] += torch.randn_like(h2[2])  # change only the last frame
        changed = spatial(h2, 1)
    assert not torch.allclose(base[0], changed[0], atol=1e-5)  # frame 0 sees frame 2
    assert model(x, torch.tensor([1]), cond=torch.randn(1, 6)).shape == x.shape


def test_bf16_autocast():
    model = tiny()
    x, t, text = torch.randn(1, 3, 2, 8, 8), torch.tensor([4]), torch.randn(1, 6)
    with torch.no_grad():
        ref = model(x, t, cond=text)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t, cond=text)
    assert low.shape == ref.shape and torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


def test_bf16_autocast_training_step():
    model = tiny().train()
    x, t, text = torch.randn(2, 3, 3, 8, 8), torch.tensor([4, 9]), torch.randn(2, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, t, cond=text).float().pow(2).mean()
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if name != "null_cond_emb"}  # text given: no null row
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())


def test_rotate_features_matches_rotary_embedding_torch():
    rotary_embedding_torch = pytest.importorskip("rotary_embedding_torch")
    frames, heads, d, rot = 4, 2, 12, 8
    q = torch.randn(frames, 3, heads, d)
    expected = rotary_embedding_torch.RotaryEmbedding(rot).rotate_queries_or_keys(q.permute(1, 2, 0, 3))  # (.., frames, d)
    ours = rotate_features(q, rot, rotary_angles(frames, rot, q.device)).permute(1, 2, 0, 3)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_short_sequence_attention_values_and_gradients():
    frames, n, heads, d = 5, 6, 3, 4
    qkv = torch.randn(frames, n, 3, heads, d, dtype=torch.double, requires_grad=True)
    bias = torch.randn(heads, frames, frames, dtype=torch.double, requires_grad=True)
    q, k, v = qkv.permute(2, 1, 3, 0, 4)  # (n, heads, frames, d) each
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).permute(2, 0, 1, 3)
    torch.testing.assert_close(short_sequence_attention(qkv, bias), expected)
    assert torch.autograd.gradcheck(short_sequence_attention, (qkv, bias))
    assert torch.autograd.gradcheck(short_sequence_attention, (qkv,))
    # the no-grad path (sampling) gives the same values, with and without a bias
    with torch.no_grad():
        torch.testing.assert_close(short_sequence_attention(qkv, bias), expected)
        plain = F.scaled_dot_product_attention(q, k, v).permute(2, 0, 1, 3)
        torch.testing.assert_close(short_sequence_attention(qkv), plain)


def test_conv3x3_gemm_backward_matches_conv2d():
    x = torch.randn(2, 5, 3, 4, dtype=torch.double, requires_grad=True)
    weight = torch.randn(6, 5, 3, 3, dtype=torch.double, requires_grad=True)
    bias = torch.randn(6, dtype=torch.double, requires_grad=True)
    torch.testing.assert_close(conv3x3_gemm_backward(x, weight, bias), F.conv2d(x, weight, bias, padding=1))
    assert torch.autograd.gradcheck(conv3x3_gemm_backward, (x, weight, bias))


@pytest.mark.parametrize("channels,size", [(8, 6), (48, 3), (24, 5)])  # more pixels than channels, fewer, ~equal
def test_spatial_linear_attention_matches_the_formula(channels, size):
    torch.manual_seed(0)
    attn = SpatialLinearAttention(channels, heads=2, dim_head=8)
    with torch.no_grad():
        attn.to_out.bias.normal_()
    x = torch.randn(3, channels, size, size, dtype=torch.double)
    attn = attn.double()
    # video-diffusion-pytorch's formula, written out: softmax of q over features, of k over pixels, context = k v^T
    tokens = attn.norm.normed_tokens(x).reshape(3, size * size, channels)
    q, k, v = (tokens @ w.t() for w in attn.to_qkv.weight.chunk(3))  # (BT, N, heads*d)
    q = q.view(3, -1, 2, 8).softmax(dim=-1) * 8**-0.5
    k = k.view(3, -1, 2, 8).softmax(dim=1)
    context = torch.einsum("bnhd,bnhe->bhde", k, v.view(3, -1, 2, 8))
    out = torch.einsum("bnhd,bhde->bnhe", q, context).reshape(3, size * size, 16) @ attn.to_out.weight.t() + attn.to_out.bias
    expected = out.view(3, size, size, channels).permute(0, 3, 1, 2)
    torch.testing.assert_close(attn(x), expected)


@pytest.mark.parametrize(
    "c_in,c_out,size,grad,taken",
    [
        (256, 512, 3, True, True),  # unequal channels, both >= 256, a 3x3 map (odd sides: no Winograd)
        (512, 256, 2, True, True),  # a 2x2 map: too small for Winograd
        (128, 512, 3, True, False),  # too few input channels
        (256, 512, 8, True, False),  # an 8x8 map: Winograd
        (256, 512, 3, False, False),  # no gradient wanted: the ordinary convolution
    ],
)
def test_small_map_convolutions_take_the_gemm_path(monkeypatch, c_in, c_out, size, grad, taken):
    from text2video.backends.cpu import unet3d

    calls = []
    real = unet3d.conv3x3_gemm_backward
    monkeypatch.setattr(unet3d, "conv3x3_gemm_backward", lambda *a: calls.append(1) or real(*a))
    conv = unet3d.FastConv2d(c_in, c_out, 3, padding=1)
    x = torch.randn(2, c_in, size, size)
    with torch.set_grad_enabled(grad):
        out = conv(x)
    assert bool(calls) == taken
    torch.testing.assert_close(out, F.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "c_in,c_out,size,grad,tile",
    [
        (64, 64, 32, True, 4),  # 32x32 and 16x16 maps: F(4x4, 3x3)
        (128, 64, 16, True, 4),
        (256, 128, 8, True, 2),  # 8x8: F(2x2, 3x3)
        (64, 64, 20, True, 4),  # 400 pixels, sides multiples of 4
        (64, 64, 18, True, 2),  # 324 pixels, even sides only
        (64, 64, 12, True, 2),  # 144 pixels: the small tile
        (64, 64, 9, True, None),  # odd sides: oneDNN
        (24, 64, 16, True, None),  # channels not a multiple of the kernels' block
        (256, 512, 4, True, 2),  # 4x4: the small tile too
        (64, 64, 2, True, None),  # 2x2: too small
        (64, 64, 16, False, None),  # no gradient wanted: the ordinary convolution
    ],
)
def test_training_convolutions_take_the_winograd_path(monkeypatch, c_in, c_out, size, grad, tile):
    from text2video.backends.cpu import kernels as cpu_kernels
    from text2video.backends.cpu import unet3d

    if cpu_kernels.load() is None:
        pytest.skip("no C compiler here: the kernels cannot be built")
    tiles = []
    real = unet3d.conv3x3_winograd
    monkeypatch.setattr(unet3d, "conv3x3_winograd", lambda *a: tiles.append(a[-1]) or real(*a))
    torch.manual_seed(0)
    conv = unet3d.FastConv2d(c_in, c_out, 3, padding=1)
    x = torch.randn(2, c_in, size, size)
    with torch.set_grad_enabled(grad):
        out = conv(x)
    assert tiles == ([tile] if tile else [])
    torch.testing.assert_close(out, F.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("channels,size", [(8, 4), (32, 2)])  # many tokens per frame (rotated weights), few (rotated features)
def test_temporal_attention_chunks_and_paths_agree(channels, size):
    from text2video.backends.cpu.unet3d import FastTemporalAttention

    batch, frames = 2, 5
    plain = TemporalAttention(channels, 2, 8).double()
    layer = FastTemporalAttention(channels, 2, 8).double()
    layer.load_state_dict(plain.state_dict())
    x = torch.randn(batch * frames, channels, size, size, dtype=torch.double).contiguous(memory_format=torch.channels_last)
    angles = rotary_angles(frames, 8, x.device).double()
    bias = RelativePositionBias(2).double()(frames, x.device)

    def run(chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        layer.zero_grad()
        layer.chunk_tokens = chunk
        xi = x.clone().requires_grad_()
        out = layer(xi, batch, angles, bias.detach())
        out.pow(2).sum().backward()
        return out, xi.grad

    whole, grad_whole = run(0)
    chunked, grad_chunked = run(3)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(grad_chunked, grad_whole)
    # against plain attention: rotary on queries and keys, SDPA with the bias
    tokens = layer.norm.normed_tokens(x).reshape(batch, frames, size * size, channels)
    qkv = F.linear(tokens, layer.to_qkv.weight).view(batch, frames, size * size, 3, 2, 8)
    q, k, v = qkv.permute(3, 0, 2, 4, 1, 5)  # (batch, pixels, heads, frames, d)
    rot = lambda t: rotate_features(t.movedim(3, 0), 8, angles).movedim(0, 3)  # noqa: E731
    ref = F.scaled_dot_product_attention(rot(q), rot(k), v, attn_mask=bias)
    ref = layer.to_out(ref.permute(0, 3, 1, 2, 4).reshape(batch, frames, size, size, 16))
    torch.testing.assert_close(whole.permute(0, 2, 3, 1).reshape_as(ref), ref)
    # the model's own (plain) layer computes the same
    torch.testing.assert_close(plain(x, batch, angles, bias.detach()), whole)


def test_rms_scale_shift_silu_matches_composition():
    x = torch.randn(3, 5, 6, dtype=torch.double, requires_grad=True)
    weight = torch.randn(6, dtype=torch.double, requires_grad=True)
    scale, shift = (torch.randn(3, 6, dtype=torch.double, requires_grad=True) for _ in range(2))
    expected = F.silu(torch.addcmul(shift[:, None], F.rms_norm(x, (6,), weight, 1e-12), scale[:, None] + 1))
    torch.testing.assert_close(rms_scale_shift_silu(x, weight, scale, shift), expected)
    assert torch.autograd.gradcheck(rms_scale_shift_silu, (x, weight, scale, shift))
    assert torch.autograd.gradcheck(rms_scale_shift_silu, (x, weight))
    with pytest.raises(ValueError, match="together"):
        rms_scale_shift_silu(x, weight, scale, None)


@pytest.mark.parametrize("kernel,stride", [(3, 1), (4, 2)])
def test_conv2d_on_channels_last_input_keeps_plain_gradients(kernel, stride):
    from text2video.backends.cpu.unet3d import FastConv2d

    torch.manual_seed(0)
    conv = FastConv2d(16, 24, kernel, stride, 1)
    x = torch.randn(3, 16, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out = conv(x)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref_w, ref_b = conv.weight.detach().clone().requires_grad_(True), conv.bias.detach().clone().requires_grad_(True)
    ref_x = x.detach().contiguous().requires_grad_(True)
    ref = F.conv2d(ref_x, ref_w, ref_b, stride=stride, padding=1)
    ref.backward(grad)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for got, want in ((x.grad, ref_x.grad), (conv.weight.grad, ref_w.grad), (conv.bias.grad, ref_b.grad)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert conv.weight.grad.is_contiguous()  # the parameter's own layout, as optimizers and DDP buckets expect


def test_patch_size_folds_pixel_blocks_into_channels():
    """patch_size=2: the first convolution sees each 2x2 block of pixels as 12 channels (space-to-depth) and the
    output is unfolded back (checked through the input the first convolution receives)."""
    model = tiny(patch_size=2, coord_channels=True)
    assert model.init_conv.in_channels == 3 * 4 + 2 and model.final_conv.out_channels == 3 * 4
    assert model.downsample_factor == 4
    x = torch.randn(2, 3, 3, 8, 12)
    seen = {}
    model.init_conv.register_forward_hook(lambda mod, inp, out: seen.update(input=inp[0]))
    out = model(x, torch.tensor([1, 500]), cond=torch.randn(2, 6))
    assert out.shape == x.shape and torch.isfinite(out).all()
    folded = seen["input"]  # (B*T, 12 + 2, H/2, W/2)
    assert folded.shape == (6, 14, 4, 6)
    # channel c*4 + i*2 + j of block (y, x) is pixel (2y + i, 2x + j) of channel c (pixel_unshuffle's order)
    torch.testing.assert_close(folded[1 * 3 + 2, 1 * 4 + 1 * 2 + 0, 3, 5], x[1, 1, 2, 7, 10])
    with pytest.raises(ModelError, match="patch_size 2 needs height and width divisible by 4"):
        model(torch.randn(1, 3, 2, 8, 10), torch.tensor([1]), cond=torch.randn(1, 6))
    with pytest.raises(ModelError, match="patch_size must be a whole number"):
        tiny(patch_size=0)
