"""Unet3D's text options for the demo: per-frame text modulation (``frame_cond``) and cross-attention
to the caption tokens (``text_cross_attn``). Both are off by default and start as the plain model."""

import torch

from text2video.diffusion.conditioning import Conditioning
from text2video.models.unet3d import Unet3D

SMALL = dict(dim=8, dim_mults=(1, 2), cond_dim=16, attn_heads=1, attn_dim_head=8)


def _cond(b: int = 2, null=(False, False)) -> Conditioning:
    g = torch.Generator().manual_seed(1)
    return Conditioning(
        text_tokens=torch.randn(b, 5, 16, generator=g),
        text_mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)[:b],
        text_pooled=torch.randn(b, 16, generator=g),
        null_text=torch.tensor(null),
    )


def _pair(**option):
    torch.manual_seed(0)
    plain = Unet3D(**SMALL)
    torch.manual_seed(0)
    extended = Unet3D(**SMALL, **option)
    missing, unexpected = extended.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing  # the option adds parameters only
    return plain.eval(), extended.eval()


def test_options_start_as_the_plain_model_then_change_it():
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([3, 700])
    for option, last in (
        ("frame_cond", lambda m: m.frame_cond_mlp[2].weight),
        ("text_cross_attn", lambda m: m.mid.cross_attn.to_out.weight),
    ):
        plain, extended = _pair(**{option: True})
        with torch.no_grad():
            torch.testing.assert_close(extended.forward_cond(x, t, _cond()), plain.forward_cond(x, t, _cond()))
            torch.nn.init.normal_(last(extended))
            assert (extended.forward_cond(x, t, _cond()) - plain.forward_cond(x, t, _cond())).abs().max() > 1e-3


def test_frame_cond_modulates_frames_differently():
    torch.manual_seed(0)
    model = Unet3D(**SMALL, frame_cond=True).eval()
    torch.nn.init.normal_(model.frame_cond_mlp[2].weight)
    emb = torch.zeros(2, model.time_mlp[-1].out_features + 16)
    per_frame = model._per_frame_embedding(emb, torch.randn(2, 16), frames=3).view(2, 3, -1)
    assert not torch.allclose(per_frame[:, 0], per_frame[:, 1])
    # a static clip: identical frames in, per-frame text modulation makes the outputs differ by frame
    x = torch.randn(1, 3, 1, 8, 8).expand(1, 3, 4, 8, 8).contiguous()
    with torch.no_grad():
        out = model.forward_cond(x, torch.tensor([500]), _cond(1, (False,)))
    assert (out[:, :, 0] - out[:, :, 3]).abs().max() > 1e-4


def test_cross_attention_ignores_padding_and_dropped_captions():
    torch.manual_seed(0)
    model = Unet3D(**SMALL, text_cross_attn=True).eval()
    for block in (*model.downs, model.mid, *model.ups):
        torch.nn.init.normal_(block.cross_attn.to_out.weight)
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([3, 700])
    cond = _cond()
    with torch.no_grad():
        base = model.forward_cond(x, t, cond)
        padded = cond.text_tokens.clone()
        padded[0, 3:] = 100.0  # masked positions of item 0
        other = Conditioning(text_tokens=padded, text_mask=cond.text_mask, text_pooled=cond.text_pooled, null_text=cond.null_text)
        torch.testing.assert_close(model.forward_cond(x, t, other)[0], base[0])
        # a dropped caption sees only the null token: its tokens no longer matter
        dropped = Conditioning(
            text_tokens=torch.randn(2, 5, 16), text_mask=cond.text_mask, text_pooled=cond.text_pooled, null_text=torch.tensor([True, True])
        )
        dropped2 = Conditioning(
            text_tokens=torch.randn(2, 5, 16), text_mask=cond.text_mask, text_pooled=cond.text_pooled, null_text=torch.tensor([True, True])
        )
        torch.testing.assert_close(model.forward_cond(x, t, dropped), model.forward_cond(x, t, dropped2))
        # the original forward (pooled only) uses the null token, like a dropped caption
        torch.testing.assert_close(model(x, t, None), model.forward_cond(x, t, dropped))


def test_options_train_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = Unet3D(**SMALL, frame_cond=True, text_cross_attn=True)
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([3, 700])
    model.forward_cond(x, t, _cond()).square().mean().backward()
    assert model.frame_cond_mlp[2].weight.grad.abs().sum() > 0
    assert model.mid.cross_attn.to_out.weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    loaded = Unet3D.from_pretrained(tmp_path).eval()
    assert loaded.config.frame_cond and loaded.config.text_cross_attn
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_cond(x, t, _cond()), model.eval().forward_cond(x, t, _cond()))


def test_coord_channels_add_pixel_positions_to_the_first_convolution():
    from text2video.models.unet3d import pixel_coordinates

    x = torch.randn(2, 3, 4, 5, 7)
    grid = pixel_coordinates(x)
    assert grid.shape == (2, 2, 4, 5, 7)
    torch.testing.assert_close(grid[1, 0, 2, 3], torch.tensor([-1.0, -2 / 3, -1 / 3, 0.0, 1 / 3, 2 / 3, 1.0]))  # x along a row
    torch.testing.assert_close(grid[0, 1, 0, :, 6], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))  # y down a column
    torch.manual_seed(0)
    plain = Unet3D(**SMALL).eval()
    with_coords = Unet3D(**SMALL, coord_channels=True).eval()
    state = plain.state_dict()
    w = state["init_conv.weight"]
    state["init_conv.weight"] = torch.cat((w, torch.zeros(w.shape[0], 2, *w.shape[2:])), dim=1)
    with_coords.load_state_dict(state)
    video, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([3, 700])
    with torch.no_grad():
        torch.testing.assert_close(with_coords.forward_cond(video, t, _cond()), plain.forward_cond(video, t, _cond()))
        with_coords.init_conv.weight[:, 3:] = 1.0
        assert (with_coords.forward_cond(video, t, _cond()) - plain.forward_cond(video, t, _cond())).abs().max() > 1e-3
