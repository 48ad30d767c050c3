"""UNetSTIC (Open-Sora): (B, T, C, H, W) input, conditioning, layouts, null text, save/load."""

from __future__ import annotations

import pytest
import torch

from text2video.diffusion.conditioning import Conditioning
from text2video.diffusion.denoise import denoise
from text2video.errors import ModelError
from text2video.models import build_model, load_model
from text2video.models.unet_stic import UNetSTIC

TINY = dict(
    sample_size=8,
    in_channels=8,
    out_channels=4,
    block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    cross_attention_dim=12,
    attention_head_dim=8,
    norm_num_groups=8,
    num_frames=3,
)


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def test_seed_shapes_zero_init_and_t1():
    model = UNetSTIC(**TINY).eval()
    x = torch.randn(2, 3, 4, 8, 8)  # (B, T, C, H, W)
    out = model(x, torch.tensor([1, 500]), torch.randn(2, 5, 12), cond_image=torch.randn(2, 3, 4, 8, 8))
    assert out.sample.shape == (2, 4, 3, 8, 8)  # (B, out_channels, T, H, W)
    assert torch.equal(out.sample, torch.zeros_like(out.sample))
    assert model(x[:, :1], 3, None, return_dict=False)[0].shape == (2, 4, 1, 8, 8)
    with pytest.raises(ModelError, match="divisible by 2"):
        model(torch.randn(1, 2, 4, 7, 8), 3)
    with pytest.raises(ModelError, match="cond_image must be"):
        model(x, 3, cond_image=torch.randn(2, 4, 3, 8, 8))  # cond_image in (B, C, T, H, W): refused


def test_layout_is_resolved_at_the_edge():
    """Frame k of the output depends on frame k of x in (B, T, C, H, W); the output is (B, C, T, H, W)."""
    model = _perturb(UNetSTIC(**{**TINY, "in_channels": 4}))
    for layer in model.modules():  # no temporal mixing: frames are independent
        if layer.__class__.__name__ == "TemporalMixer":
            torch.nn.init.zeros_(layer.attn.to_out.weight)
            torch.nn.init.zeros_(layer.attn.to_out.bias)
    x = torch.randn(1, 3, 4, 8, 8)
    with torch.no_grad():
        full = model(x, 9).sample
        single = model(x[:, 1:2], 9).sample
    torch.testing.assert_close(full[:, :, 1:2], single, atol=1e-5, rtol=1e-5)


def test_text_mask_cond_image_and_time_mixing_change_the_output():
    model = _perturb(UNetSTIC(**TINY))
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([40, 40])
    ctx, mask = torch.randn(2, 5, 12), torch.tensor([[True, True, False, False, False]] * 2)
    img = torch.randn(2, 3, 4, 8, 8)
    with torch.no_grad():
        base = model(x, t, ctx, img, mask).sample
        other_text = model(x, t, ctx + 1, img, mask).sample
        padded = ctx.clone()
        padded[:, 2:] = 30.0
        same = model(x, t, padded, img, mask).sample
        other_img = model(x, t, ctx, -img, mask).sample
        changed = x.clone()
        changed[:, 0] += 1.0
        mixed = model(changed, t, ctx, img, mask).sample
    assert not torch.allclose(base, other_text)
    torch.testing.assert_close(same, base)  # masked tokens do not matter
    assert not torch.allclose(base, other_img)
    assert not torch.allclose(base[:, :, 2], mixed[:, :, 2])  # frame 0 reaches frame 2


def test_forward_cond_layout_null_text_and_frames():
    model = _perturb(UNetSTIC(**{**TINY, "in_channels": 9}))  # frames + mask channel
    x_t = torch.randn(2, 4, 3, 8, 8)  # (B, C, T, H, W)
    t = torch.tensor([5, 700])
    tokens, tmask = torch.randn(2, 4, 12), torch.tensor([[True] * 4, [True, False, False, False]])
    image, fmask = torch.randn(2, 4, 3, 8, 8), torch.tensor([[True, False, False], [True, True, False]])
    cond = Conditioning(text_tokens=tokens, text_mask=tmask, image=image, frame_mask=fmask, null_text=torch.tensor([False, True]))
    given = torch.cat([image * fmask[:, None, :, None, None], fmask[:, None, :, None, None].float().expand(2, 1, 3, 8, 8)], 1)
    with torch.no_grad():
        got = denoise(model, x_t, t, cond)
        row0 = model(x_t[:1].transpose(1, 2), t[:1], tokens[:1], given[:1].transpose(1, 2), tmask[:1]).sample
        row1 = model(x_t[1:].transpose(1, 2), t[1:], None, given[1:].transpose(1, 2)).sample
    assert got.shape == x_t.shape
    torch.testing.assert_close(got[:1], row0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1:], row1, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = _perturb(build_model("unet_stic", **TINY))
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path).eval()
    assert isinstance(loaded, UNetSTIC)
    x, ctx = torch.randn(1, 2, 4, 8, 8), torch.randn(1, 3, 12)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 4, ctx).sample, model(x, 4, ctx).sample)


def test_bad_block_types_are_named():
    with pytest.raises(ModelError, match="unknown down block"):
        UNetSTIC(**{**TINY, "down_block_types": ("AttnDownBlock2D", "DownBlock2D")})


def test_tiny_preset_runs_on_its_data_size():
    import text2video.config as config

    cfg = config.load_config("tiny-unet-stic")
    model = build_model(cfg.model.name, **cfg.model.kwargs)
    x = torch.zeros(1, 3, 2, cfg.data.size, cfg.data.size)
    out = model.forward_cond(x, torch.tensor([5]), Conditioning(text_tokens=torch.randn(1, 3, 384)))
    assert out.shape == x.shape


def test_pooled_text_reaches_every_block_without_cross_attention():
    """With the transformers' outputs at zero the caption reaches the prediction only through pooled_text: the
    masked mean of the tokens (padding ignored) added to the timestep embedding; a dropped caption pools the null."""
    x, t = torch.randn(2, 4, 3, 8, 8), torch.tensor([10, 900])  # (B, C, T, H, W)
    tokens, mask = torch.randn(2, 5, 12), torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    padded = tokens.clone()
    padded[1, 3:] = 100.0
    null = torch.tensor([True, True])
    outputs = {}
    for pooled in (False, True):
        model = _perturb(UNetSTIC(**{**TINY, "in_channels": 4}, pooled_text=pooled))
        with torch.no_grad():
            for layer in model.modules():
                if layer.__class__.__name__ == "SpatialTransformer":
                    torch.nn.init.zeros_(layer.proj_out.weight)
                    torch.nn.init.zeros_(layer.proj_out.bias)
            run = lambda tok, model=model, **kw: model.forward_cond(x, t, Conditioning(text_tokens=tok, text_mask=mask, **kw))  # noqa: E731
            outputs[pooled] = (run(tokens), run(-tokens), run(padded), run(tokens, null_text=null), run(-tokens, null_text=null))
    same, other, *_ = outputs[False]
    torch.testing.assert_close(same, other)  # cross-attention silenced: the caption does not reach the model
    same, other, padded_out, dropped, dropped_other = outputs[True]
    assert not torch.allclose(same, other)
    torch.testing.assert_close(same, padded_out)
    torch.testing.assert_close(dropped, dropped_other)


def test_coord_channels_are_the_pixels_x_and_y():
    """The first convolution gets each pixel's x and y in [-1, 1] as two more channels, the same in every frame."""
    coords = _perturb(UNetSTIC(**{**TINY, "in_channels": 4}, coord_channels=True))
    assert coords.conv_in.in_channels == 4 + 2
    seen = {}
    coords.conv_in.register_forward_hook(lambda mod, inp, out: seen.update(input=inp[0]))
    x = torch.randn(1, 4, 2, 8, 6)  # (B, C, T, H, W)
    with torch.no_grad():
        out = coords.forward_cond(x, torch.tensor([900]), Conditioning())
    assert out.shape == x.shape
    inputs = seen["input"]  # (B*T, 4 + 2, H, W)
    torch.testing.assert_close(inputs[:, :4], x[0].transpose(0, 1))
    for frame in range(2):
        torch.testing.assert_close(inputs[frame, 4], torch.linspace(-1, 1, 6).expand(8, 6))  # x grows along the width
        torch.testing.assert_close(inputs[frame, 5], torch.linspace(-1, 1, 8)[:, None].expand(8, 6))
