"""`UNet3DConditionModel`: AnimateDiff's shape tables, the inflated layers, the VideoCrafter options,
gradient checkpointing, save/load, freezing and the `forward_cond` protocol."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.embeddings import SinusoidalPositionalEmbedding

from text2video.diffusion.conditioning import Conditioning
from text2video.diffusion.denoise import denoise
from text2video.errors import ModelError
from text2video.models.registry import build_model, load_model
from text2video.models.unet3d_condition import UNet3DConditionModel
from text2video.models.unet3d_condition_blocks import ResnetBlock3D, Upsample3D
from text2video.nn.motion import TemporalTransformer, interleaved_positions

# SD 1.5's width ratios (320, 640, 1280, 1280) at CPU size.
TINY = dict(
    block_out_channels=(8, 16, 32, 32),
    layers_per_block=1,
    num_attention_heads=2,
    cross_attention_dim=16,
    norm_num_groups=4,
    motion_num_attention_heads=2,
    motion_norm_num_groups=4,
)


def _model(**overrides) -> UNet3DConditionModel:
    torch.manual_seed(0)
    return UNet3DConditionModel(**{**TINY, **overrides})


def _randomize_zero_layers(model: torch.nn.Module) -> None:
    """Give the zero-initialised layers (motion outputs, fps MLP, temporal convs) random weights."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if torch.count_nonzero(p) == 0 and "bias" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _batch(b: int = 2, t: int = 2, size: int = 8):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(b, 4, t, size, size, generator=g),
        torch.tensor([3, 900][:b]),
        torch.randn(b, 5, 16, generator=g),
    )


def test_animatediff_shape_tables_hold_block_by_block():
    model = _model(layers_per_block=2).eval()  # SD 1.5's two ResNet layers per block
    b, t, h, w = 2, 3, 16, 16
    x, ts, text = _batch(b, t, h)  # H = W = 16: three halvings down to 2
    seen = {}

    def hook(name):
        def record(module, args, output):
            seen[name] = (tuple(args[0].shape), tuple((output[0] if isinstance(output, tuple) else output).shape))

        return record

    for i, blk in enumerate(model.down_blocks):
        blk.register_forward_hook(hook(f"down{i}"))
    model.mid_block.register_forward_hook(hook("mid"))
    for i, blk in enumerate(model.up_blocks):
        blk.register_forward_hook(hook(f"up{i}"))
    with torch.no_grad():
        out = model(x, ts, text).sample
    c0, c1, c2, c3 = TINY["block_out_channels"]
    # Down table: block types and (input -> output) shapes, T unchanged, H and W halved by blocks 0-2.
    assert [type(b).__name__ for b in model.down_blocks] == ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"]
    assert seen["down0"] == ((b, c0, t, h, w), (b, c0, t, h // 2, w // 2))
    assert seen["down1"] == ((b, c0, t, h // 2, w // 2), (b, c1, t, h // 4, w // 4))
    assert seen["down2"] == ((b, c1, t, h // 4, w // 4), (b, c2, t, h // 8, w // 8))
    assert seen["down3"] == ((b, c2, t, h // 8, w // 8), (b, c3, t, h // 8, w // 8))
    assert model.down_blocks[3].downsample is None and model.down_blocks[3].attentions is None
    assert seen["mid"] == ((b, c3, t, h // 8, w // 8),) * 2
    assert [type(b).__name__ for b in model.up_blocks] == ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3
    assert seen["up0"][1] == (b, c3, t, h // 4, w // 4)
    assert seen["up1"][1] == (b, c2, t, h // 2, w // 2)
    assert seen["up2"][1] == (b, c1, t, h, w)
    assert seen["up3"][1] == (b, c0, t, h, w)
    assert out.shape == x.shape
    # Table 1.1: each layer of a cross-attention down block is ResNet + transformer + motion module.
    blk = model.down_blocks[0]
    assert len(blk.resnets) == len(blk.attentions) == len(blk.motion_modules) == 2
    # Up blocks have one more layer than down blocks (they consume the downsampler's skip too).
    assert all(len(u.resnets) == 3 for u in model.up_blocks)


def test_resnet_block_table_is_per_frame_with_time_embedding_and_shortcut():
    torch.manual_seed(0)
    block = ResnetBlock3D(8, 16, 12, groups=4, output_scale_factor=2.0).eval()
    x, temb = torch.randn(2, 8, 3, 6, 6), torch.randn(2, 12)
    out = block(x, temb)
    assert out.shape == (2, 16, 3, 6, 6) and block.conv_shortcut is not None
    # Independent computation of one frame, following AnimateDiff's table 1.2.
    f = x[:, :, 1]
    h = block.conv1(torch.nn.functional.silu(torch.nn.functional.group_norm(f, 4, block.norm1.weight, block.norm1.bias, 1e-5)))
    h = h + block.time_emb_proj(torch.nn.functional.silu(temb))[:, :, None, None]
    h = block.conv2(torch.nn.functional.silu(torch.nn.functional.group_norm(h, 4, block.norm2.weight, block.norm2.bias, 1e-5)))
    expected = (block.conv_shortcut(f) + h) / 2.0
    assert torch.allclose(out[:, :, 1], expected, atol=1e-5)


def test_upsample_nearest_output_size_and_bf16_cast():
    torch.manual_seed(0)
    up = Upsample3D(4)
    x = torch.randn(1, 4, 2, 3, 5)
    assert up(x).shape == (1, 4, 2, 6, 10)
    assert up(x, output_size=(5, 9)).shape == (1, 4, 2, 5, 9)
    with torch.no_grad():
        nearest = torch.nn.functional.interpolate(x[:, :, 0], scale_factor=2.0, mode="nearest")
        assert torch.allclose(up(x)[:, :, 0], up.conv(nearest), atol=1e-6)
        bf = up.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert bf.dtype == torch.bfloat16


def test_motion_module_positions_and_zero_init():
    # AnimateDiff's sin/cos interleaved frame positions, checked against diffusers' table.
    table = SinusoidalPositionalEmbedding(24, max_seq_length=16).pe[0]
    assert torch.allclose(interleaved_positions(16, 24), table, atol=1e-6)
    mm = TemporalTransformer(8, heads=2, norm_groups=4)
    x = torch.randn(2, 8, 5, 3, 3)
    assert torch.equal(mm(x), x)  # zero-initialised output projection: identity
    _randomize_zero_layers(mm)
    y = mm(x)
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    y2 = mm(x2)
    assert not torch.allclose(y2[:, :, 4], y[:, :, 4])  # frames interact
    assert torch.allclose(y2[:, :, :, 0, 0], mm(x2)[:, :, :, 0, 0])
    with pytest.raises(ModelError, match="max_seq_length"):
        TemporalTransformer(8, heads=2, norm_groups=4, max_seq_length=4)(x)


def test_fps_embedding_changes_output_and_trains():
    model = _model(fps_embedding=True)
    x, t, text = _batch()
    with torch.no_grad():
        a = model(x, t, text, fps=torch.tensor([4.0, 4.0])).sample
        b = model(x, t, text, fps=torch.tensor([24.0, 24.0])).sample
    assert torch.equal(a, b)  # zero-initialised: an imported model is unchanged at first
    loss = model(x, t, text, fps=torch.tensor([4.0, 24.0])).sample.square().mean()
    loss.backward()
    assert model.fps_embedder.linear_2.weight.grad.abs().sum() > 0
    _randomize_zero_layers(model.fps_embedder)
    with torch.no_grad():
        a = model(x, t, text, fps=4.0).sample
        b = model(x, t, text, fps=24.0).sample
    assert not torch.allclose(a, b)


def test_dual_cross_attention_and_temporal_cross_attention_change_output_and_train():
    model = _model(image_cross_attention=True, image_embed_dim=12, num_image_tokens=3, temporal_cross_attention=True)
    _randomize_zero_layers(model)
    x, t, text = _batch()
    image = torch.randn(2, 12)
    with torch.no_grad():
        no_image = model(x, t, text).sample
        with_image = model(x, t, text, image_embeds=image).sample
        other_text = model(x, t, text.flip(0)).sample
    assert not torch.allclose(no_image, with_image)
    assert not torch.allclose(no_image, other_text)
    model(x, t, text, image_embeds=image).sample.square().mean().backward()
    attn2 = model.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    assert attn2.to_k_image.weight.grad.abs().sum() > 0
    assert model.image_projector.proj.weight.grad.abs().sum() > 0
    temporal = model.down_blocks[0].motion_modules[0].transformer_blocks[0].attn2
    assert temporal.to_k.in_features == 16 and temporal.to_k.weight.grad.abs().sum() > 0


def test_temporal_conv_starts_as_identity_and_mixes_frames_once_trained():
    base = _model()
    model = _model(temporal_conv=True)
    model.load_state_dict(base.state_dict(), strict=False)
    x, t, text = _batch()
    with torch.no_grad():
        assert torch.allclose(model.eval()(x, t, text).sample, base.eval()(x, t, text).sample, atol=1e-5)
    layer = model.down_blocks[0].resnets[0].temporal_conv
    assert layer is not None
    _randomize_zero_layers(layer)
    clip = torch.randn(1, 8, 3, 4, 4)
    moved = clip.clone()
    moved[:, :, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(layer(clip)[:, :, 1], layer(moved)[:, :, 1])  # 3x1x1 kernels mix neighbours


def test_gradient_checkpointing_gives_the_same_gradients():
    model = _model(fps_embedding=True, temporal_conv=True).eval()  # eval: no dropout draws to differ
    _randomize_zero_layers(model)
    x, t, text = _batch()

    def grads():
        model.zero_grad()
        model(x, t, text, fps=8.0).sample.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.enable_gradient_checkpointing()
    assert model.down_blocks[0].gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and len(plain) > 50
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


def test_save_and_load_round_trip(tmp_path):
    model = _model(fps_embedding=True, image_cross_attention=True, image_embed_dim=12).eval()
    _randomize_zero_layers(model)
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "diffusion_pytorch_model.safetensors").is_file()
    again = load_model(tmp_path / "m").eval()
    assert isinstance(again, UNet3DConditionModel) and again.config.fps_embedding
    x, t, text = _batch(t=2, size=8)
    image = torch.randn(2, 12)
    with torch.no_grad():
        assert torch.equal(model(x, t, text, fps=6.0, image_embeds=image).sample, again(x, t, text, fps=6.0, image_embeds=image).sample)


def test_freeze_except_motion_modules():
    model = _model()
    count = model.freeze_except_motion_modules()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".motion_modules." in n for n in trainable)
    assert count == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert not model.conv_in.weight.requires_grad
    x, t, text = _batch(t=2, size=8)
    model(x, t, text).sample.mean().backward()
    assert model.conv_in.weight.grad is None
    with pytest.raises(ModelError, match="no motion modules"):
        _model(use_motion_modules=False).freeze_except_motion_modules()


def test_forward_cond_maps_text_null_fps_and_image():
    model = _model(fps_embedding=True, image_cross_attention=True, image_embed_dim=12).eval()
    _randomize_zero_layers(model)
    x, t, text = _batch()
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    with torch.no_grad():
        direct = model(x, t, text, encoder_attention_mask=mask, fps=torch.tensor([8.0, 12.0])).sample
        cond = Conditioning(text_tokens=text, text_mask=mask, fps=torch.tensor([8.0, 12.0]))
        assert torch.allclose(denoise(model, x, t, cond), direct, atol=1e-6)
        # Masked-out tokens are ignored: changing them changes nothing.
        text2 = text.clone()
        text2[1, 3:] = 5.0
        assert torch.allclose(denoise(model, x, t, Conditioning(text_tokens=text2, text_mask=mask, fps=cond.fps)), direct, atol=1e-6)
        # A null-text row equals the same row without any text (empty context); the other row is untouched.
        dropped = denoise(model, x, t, cond.text_dropped(torch.tensor([True, False])))
        no_text = model(x, t, None, fps=torch.tensor([8.0, 12.0])).sample
        assert torch.allclose(dropped[0], no_text[0], atol=1e-5)
        assert torch.allclose(dropped[1], direct[1], atol=1e-6)
        # The first given frame of cond.image becomes the image condition.
        frames = torch.randn(2, 4, 3, 8, 8)
        frame_mask = torch.tensor([[False, True, False], [True, False, False]])
        with_image = denoise(model, x, t, Conditioning(text_tokens=text, text_mask=mask, fps=cond.fps, image=frames, frame_mask=frame_mask))
        embeds = model.encode_image(torch.stack([frames[0, :, 1], frames[1, :, 0]]))
        expected = model(x, t, text, encoder_attention_mask=mask, fps=cond.fps, image_embeds=embeds).sample
        assert torch.allclose(with_image, expected, atol=1e-6) and not torch.allclose(with_image, direct)


def test_zero_motion_inflation_is_frame_independent():
    model = _model().eval()  # motion modules start at zero: the video model is the image model per frame
    x, t, text = _batch(t=3, size=8)
    with torch.no_grad():
        video = model(x, t, text).sample
        single = model(x[:, :, 1:2], t, text).sample
    assert torch.allclose(video[:, :, 1:2], single, atol=1e-5)


def test_registry_presets_bf16_and_errors():
    model = build_model("unet3d_condition", **TINY)
    assert isinstance(model, UNet3DConditionModel)
    sd = UNet3DConditionModel.from_preset("sd15", block_out_channels=(32, 64, 128, 128), norm_num_groups=32)
    assert sd.config.cross_attention_dim == 768 and sd.config.num_attention_heads == 8
    bf = UNet3DConditionModel.from_preset("tiny").to(torch.bfloat16)
    x = torch.randn(1, 4, 2, 8, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        assert bf(x, 10, torch.randn(1, 3, 32, dtype=torch.bfloat16)).sample.dtype == torch.bfloat16
    with pytest.raises(ModelError, match="unknown UNet3DConditionModel preset"):
        UNet3DConditionModel.from_preset("sd99")
    with pytest.raises(ModelError, match="cross_attention_dim"):
        _model()(torch.randn(1, 4, 2, 8, 8), 1, torch.randn(1, 3, 7))
    with pytest.raises(ModelError, match=r"\(B, C, T, H, W\)"):
        _model()(torch.randn(1, 4, 8, 8), 1)
    with pytest.raises(ModelError, match="norm_num_groups"):
        _model(block_out_channels=(6, 16, 32, 32))
    with pytest.raises(ModelError, match="image cross-attention"):
        _model()(torch.randn(1, 4, 2, 8, 8), 1, image_embeds=torch.randn(1, 4))
