"""STDiT and DiffuserSTDiT (Open-Sora): shapes, conditioning, null caption, save/load, sizes."""

from __future__ import annotations

import pytest
import torch

from text2video.diffusion.conditioning import Conditioning
from text2video.diffusion.denoise import denoise
from text2video.errors import ModelError
from text2video.models import build_model, load_model
from text2video.models.stdit import DiffuserSTDiT, STDiT

TINY = dict(
    input_size=(4, 8, 8), in_channels=4, out_channels=4, hidden_size=32, depth=2, num_heads=2, caption_channels=16, model_max_length=6
)


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def test_seed_shapes_zero_init_and_t1():
    model = STDiT(**{**TINY, "in_channels": 9}).eval()  # 4 latent + 5 cond_image channels
    x, y = torch.randn(2, 4, 4, 8, 8), torch.randn(2, 1, 7, 16)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    out = model(x, torch.tensor([10, 900]), y=y, mask=mask, cond_image=torch.randn(2, 5, 4, 8, 8))
    assert out.shape == (2, 4, 4, 8, 8)
    assert torch.equal(out, torch.zeros_like(out))  # adaLN-Zero: a fresh model predicts zeros
    assert model(x[:, :, :1], 7).shape == (2, 4, 1, 8, 8)  # T = 1, scalar timestep, no text
    assert model(torch.randn(1, 4, 3, 12, 6), 7).shape == (1, 4, 3, 12, 6)  # other sizes
    with pytest.raises(ModelError, match="in_channels=9"):
        model(x, 1, cond_image=torch.randn(2, 2, 4, 8, 8))


def test_text_tokens_mask_and_cond_image_change_the_output():
    model = _perturb(STDiT(**{**TINY, "in_channels": 8}))
    x, t = torch.randn(2, 4, 2, 8, 8), torch.tensor([100, 100])
    y = torch.randn(2, 1, 5, 16)
    mask = torch.tensor([[True, True, True, False, False]] * 2)
    img = torch.randn(2, 4, 2, 8, 8)
    with torch.no_grad():
        base = model(x, t, y, mask, img)
        other_text = model(x, t, y + 1.0, mask, img)
        garbage_in_padding = y.clone()
        garbage_in_padding[:, :, 3:] = 50.0
        masked_changed = model(x, t, garbage_in_padding, mask, img)
        longer_mask = model(x, t, y, torch.ones(2, 5, dtype=torch.bool), img)
        other_image = model(x, t, y, mask, -img)
    assert not torch.allclose(base, other_text)
    torch.testing.assert_close(masked_changed, base)  # padded tokens do not matter
    assert not torch.allclose(base, longer_mask)
    assert not torch.allclose(base, other_image)


def test_temporal_attention_mixes_frames():
    model = _perturb(STDiT(**TINY))
    x = torch.randn(1, 4, 4, 8, 8)
    changed = x.clone()
    changed[:, :, 0] += 1.0
    with torch.no_grad():
        a, b = model(x, 5), model(changed, 5)
    assert not torch.allclose(a[:, :, 3], b[:, :, 3])


def test_null_caption_for_missing_and_dropped_text():
    model = _perturb(STDiT(**TINY))
    x, t, y = torch.randn(2, 4, 2, 8, 8), torch.tensor([3, 3]), torch.randn(2, 1, 5, 16)
    with torch.no_grad():
        no_text = model(x, t)
        null_tokens = model.y_embedding[None, None].expand(2, 1, -1, -1)
        explicit_null = model(x, t, null_tokens)
        with_text = model(x, t, y)
        model.train()
        model.register_to_config(class_dropout_prob=1.0)
        dropped = model(x, t, y)
        model.eval()
    torch.testing.assert_close(no_text, explicit_null, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dropped, no_text, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(with_text, no_text)


def test_forward_cond_maps_tokens_null_text_and_frames():
    model = _perturb(STDiT(**{**TINY, "in_channels": 9}))  # frames + frame-mask channel
    x, t = torch.randn(2, 4, 3, 8, 8), torch.tensor([50, 600])
    tokens, tmask = torch.randn(2, 5, 16), torch.tensor([[True] * 5, [True, True, False, False, False]])
    image = torch.randn(2, 4, 3, 8, 8)
    fmask = torch.tensor([[True, False, False], [False, False, True]])
    cond = Conditioning(text_tokens=tokens, text_mask=tmask, image=image, frame_mask=fmask, null_text=torch.tensor([False, True]))
    expected_image = torch.cat([image * fmask[:, None, :, None, None], fmask[:, None, :, None, None].float().expand(2, 1, 3, 8, 8)], 1)
    with torch.no_grad():
        got = denoise(model, x, t, cond)
        row0 = model(x[:1], t[:1], tokens[:1, None], tmask[:1], expected_image[:1])
        row1 = model(x[1:], t[1:], None, None, expected_image[1:])  # dropped text = null caption
    torch.testing.assert_close(got[:1], row0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1:], row1, atol=1e-5, rtol=1e-5)
    plain = STDiT(**TINY)
    with pytest.raises(ModelError, match="no image-conditioning channels"):
        plain.forward_cond(x, t, Conditioning(image=image))


def test_caption_channels_zero_disables_text():
    model = STDiT(**{**TINY, "caption_channels": 0})
    assert not any("cross_attn" in n or "y_embedding" in n for n, _ in model.named_parameters())
    x = torch.randn(1, 4, 1, 8, 8)
    assert model.forward_cond(x, torch.tensor([1]), Conditioning(text_tokens=torch.randn(1, 3, 16))).shape == x.shape
    with pytest.raises(ModelError, match="caption_channels=0"):
        model(x, 1, y=torch.randn(1, 1, 3, 16))


def test_diffuser_wrapper_matches_stdit_and_round_trips(tmp_path):
    wrapper = _perturb(DiffuserSTDiT(**TINY))
    x, t, ehs = torch.randn(2, 4, 2, 8, 8), torch.tensor([1, 2]), torch.randn(2, 3, 16)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    with torch.no_grad():
        out = wrapper(x, t, encoder_hidden_states=ehs, mask=mask)
        inner = wrapper.model(x, t, ehs[:, None], mask)
        one_token = wrapper(x, t, encoder_hidden_states=torch.randn(2, 1, 16)).sample  # Open-Sora's [B, 1, D]
    assert out.sample.shape == (2, 4, 2, 8, 8) and one_token.shape == (2, 4, 2, 8, 8)
    torch.testing.assert_close(out.sample, inner)
    assert wrapper(x, t, ehs, return_dict=False)[0].shape == (2, 4, 2, 8, 8)
    wrapper.save_pretrained(tmp_path / "w")
    loaded = load_model(tmp_path / "w").eval()
    assert isinstance(loaded, DiffuserSTDiT)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, ehs, mask=mask).sample, out.sample)


def test_stdit_save_load_and_registry(tmp_path):
    model = _perturb(build_model("stdit", **TINY))
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path).eval()
    x, y = torch.randn(1, 4, 2, 8, 8), torch.randn(1, 1, 4, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 9, y), model(x, 9, y))


def test_named_sizes_follow_dit():
    assert set(STDiT.PRESETS) == {"STDiT-S/2", "STDiT-B/2", "STDiT-L/2", "STDiT-XL/2"}
    assert dict(STDiT.PRESETS["STDiT-XL/2"]) == dict(depth=28, hidden_size=1152, num_heads=16, patch_size=(1, 2, 2))
    with torch.device("meta"):
        model = STDiT.from_preset("STDiT-S/2", input_size=(4, 8, 8), caption_channels=16)
    assert len(model.blocks) == 12 and model.config.hidden_size == 384 and tuple(model.config.patch_size) == (1, 2, 2)
    with pytest.raises(ModelError, match="unknown STDiT preset"):
        STDiT.preset_config("STDiT-M/2")


@pytest.mark.parametrize("preset", ["tiny-stdit", "stdit-gpu-64"])
def test_presets_build(preset):
    import text2video.config as config

    cfg = config.load_config(preset)
    with torch.device("meta"):
        model = build_model(cfg.model.name, **cfg.model.kwargs)
    assert isinstance(model, STDiT) and model.config.caption_channels == 384  # MiniLM's width


def test_pooled_text_reaches_every_block_without_cross_attention():
    """With cross-attention's output at zero, only pooled_text lets the caption change the prediction; the pooled
    vector is the masked mean of the tokens (padding ignored), and a dropped caption pools the null caption."""
    x, t = torch.randn(2, 4, 2, 8, 8), torch.tensor([10, 900])
    tokens = torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    predictions = {}
    for pooled in (False, True):
        model = _perturb(STDiT(**TINY, pooled_text=pooled))
        with torch.no_grad():
            for block in model.blocks:
                block.cross_attn.to_out.weight.zero_()
                block.cross_attn.to_out.bias.zero_()
            run = lambda tok, m=mask, model=model, **kw: model.forward_cond(x, t, Conditioning(text_tokens=tok, text_mask=m, **kw))  # noqa: E731
            padded = tokens.clone()
            padded[1, 3:] = 100.0  # masked tokens: must not matter
            null = torch.tensor([True, True])
            predictions[pooled] = (run(tokens), run(-tokens), run(padded), run(tokens, null_text=null), run(-tokens, null_text=null))
    same, other, padded, dropped, dropped_other = predictions[False]
    torch.testing.assert_close(same, other)  # cross-attention silenced: the caption does not reach the model
    same, other, padded, dropped, dropped_other = predictions[True]
    assert not torch.allclose(same, other)
    torch.testing.assert_close(same, padded)
    torch.testing.assert_close(dropped, dropped_other)  # the null caption replaces both
    with pytest.raises(ModelError, match="pooled_text needs caption_channels"):
        STDiT(**{**TINY, "caption_channels": 0}, pooled_text=True)
