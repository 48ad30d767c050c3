"""SegDiTTransformer2DModel (Open-Sora): DiT-XL/2's size, diffusers parity, conditioning, save/load."""

from __future__ import annotations

import pytest
import torch
from diffusers import DiTTransformer2DModel

from text2video.diffusion.conditioning import Conditioning
from text2video.errors import ModelError
from text2video.models import build_model, load_model
from text2video.models.convert import convert
from text2video.models.convert.diffusers_dit import from_diffusers_dit
from text2video.models.segdit import SegDiTTransformer2DModel


def _tiny(**kw) -> SegDiTTransformer2DModel:
    cfg = dict(num_attention_heads=2, attention_head_dim=8, in_channels=3, num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=5)
    cfg.update(kw)
    return SegDiTTransformer2DModel(**cfg)


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Give every parameter a random offset so zero-initialised layers stop hiding the inputs."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def _dit_param_count(depth: int, hidden: int, patch: int, in_ch: int, out_ch: int, classes: int) -> int:
    linear = lambda i, o: i * o + o  # noqa: E731
    per_block = 4 * linear(hidden, hidden) + linear(hidden, 4 * hidden) + linear(4 * hidden, hidden) + linear(hidden, 6 * hidden)
    return (
        in_ch * patch * patch * hidden
        + hidden  # patch embedding
        + linear(256, hidden)
        + linear(hidden, hidden)  # timestep MLP
        + (classes + 1) * hidden  # class table with the null class
        + depth * per_block
        + linear(hidden, 2 * hidden)
        + linear(hidden, patch * patch * out_ch)  # final layer
    )


def test_dit_xl_2_has_675m_parameters_and_one_shared_embedding():
    with torch.device("meta"):
        model = SegDiTTransformer2DModel.from_preset("DiT-XL/2")
    n = sum(p.numel() for p in model.parameters())
    assert n == _dit_param_count(28, 1152, 2, 4, 8, 1000)
    # DiT paper, Table 1: 675M (its count also holds the 256x1152 fixed position table we compute).
    assert 674e6 < n < 676e6
    assert sum(1 for name, _ in model.named_modules() if name.endswith("class_embedder")) == 1


def test_forward_shapes_learned_sigma_and_zero_init():
    model = _tiny(learn_sigma=True).eval()
    x = torch.randn(2, 3, 8, 12)  # not square: position code sized from the input
    out = model(x, torch.tensor([3, 700]), torch.tensor([0, 4])).sample
    assert out.shape == (2, 6, 8, 12)
    assert torch.equal(out, torch.zeros_like(out))
    assert model(x, 5, return_dict=False)[0].shape == (2, 6, 8, 12)


def test_matches_diffusers_dit_after_import(tmp_path):
    ref = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=3,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
    )
    _perturb(ref)
    with torch.no_grad():  # the copies agree, as in checkpoints converted from the original DiT
        for block in ref.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(ref.transformer_blocks[0].norm1.emb.state_dict())
    ours = from_diffusers_dit(ref).eval()
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([0, 420, 999]), torch.tensor([1, 7, 10])
    with torch.no_grad():
        expected = ref(x, timestep=t, class_labels=y).sample
        got = ours(x, t, y).sample
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_ref = sum(p.numel() for p in ref.parameters())
    emb = sum(p.numel() for p in ref.transformer_blocks[0].norm1.emb.parameters())
    assert n_ref - n_ours == 2 * emb  # diffusers holds 3 copies, we hold one

    ref.save_pretrained(tmp_path / "diffusers_dit")
    report = convert("diffusers-dit", tmp_path / "diffusers_dit", tmp_path / "ours")
    assert report["embedding_copies_equal"] and report["config"]["learn_sigma"]
    loaded = load_model(tmp_path / "ours").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, y).sample, expected, atol=1e-5, rtol=1e-5)


def test_import_refuses_disagreeing_embedding_copies():
    ref = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10
    )
    _perturb(ref)  # independent random offsets: block 1's copy now differs
    with pytest.raises(ModelError, match="block 1.*differs"):
        from_diffusers_dit(ref)


def test_class_labels_segmentation_and_null_class():
    model = _perturb(_tiny(segmentation_channels=2))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 10])
    seg = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        base = model(x, t, torch.tensor([1, 1]), segmentation=seg).sample
        other_class = model(x, t, torch.tensor([2, 2]), segmentation=seg).sample
        other_seg = model(x, t, torch.tensor([1, 1]), segmentation=-seg).sample
        unlabelled = model(x, t, None, segmentation=seg).sample
        null = model(x, t, torch.tensor([5, 5]), segmentation=seg).sample
    assert not torch.allclose(base, other_class)
    assert not torch.allclose(base, other_seg)
    torch.testing.assert_close(unlabelled, null)  # no labels = the null class (id num_classes)
    assert model.null_class == 5
    with pytest.raises(ModelError, match="segmentation must have shape"):
        model(x, t, segmentation=torch.randn(2, 1, 8, 8))


def test_label_dropout_in_training_only():
    model = _perturb(_tiny(class_dropout_prob=1.0))
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([10, 10]), torch.tensor([1, 2])
    with torch.no_grad():
        null = model(x, t, torch.tensor([5, 5])).sample
        model.train()
        dropped = model(x, t, y).sample
        model.eval()
        kept = model(x, t, y).sample
    torch.testing.assert_close(dropped, null)
    assert not torch.allclose(kept, null)


def test_forward_cond_per_frame_with_t1_and_null_text():
    model = _perturb(_tiny(learn_sigma=True, segmentation_channels=1))
    b, frames = 2, 3
    x = torch.randn(b, 3, frames, 8, 8)
    t = torch.tensor([5, 900])
    seg = torch.randn(b, 1, 8, 8)
    cond = Conditioning(class_labels=torch.tensor([0, 3]), segmentation=seg)
    with torch.no_grad():
        out = model.forward_cond(x, t, cond)
        # frame 1 of video 1 computed on its own through the original forward
        frame = model(x[1:, :, 1], t[1:], torch.tensor([3]), segmentation=seg[1:]).sample[:, :3]
        single = model.forward_cond(x[:, :, :1], t, cond)
        dropped = model.forward_cond(x, t, cond.text_dropped(torch.tensor([False, True])))
        null = model(x[1:, :, 0], t[1:], torch.tensor([model.null_class]), segmentation=seg[1:]).sample[:, :3]
    assert out.shape == x.shape and single.shape == (b, 3, 1, 8, 8)
    torch.testing.assert_close(out[1:, :, 1], frame, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dropped[0], out[0])
    torch.testing.assert_close(dropped[1:, :, 0], null, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = _perturb(
        build_model(
            "segdit",
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=3,
            num_layers=1,
            sample_size=8,
            num_embeds_ada_norm=4,
            segmentation_channels=1,
        )
    )
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path).eval()
    assert isinstance(loaded, SegDiTTransformer2DModel)
    x, seg = torch.randn(1, 3, 8, 8), torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(x, 3, torch.tensor([2]), segmentation=seg).sample, model(x, 3, torch.tensor([2]), segmentation=seg).sample
        )


def test_tiny_preset_runs_on_its_data_size():
    import text2video.config as config

    cfg = config.load_config("tiny-segdit")
    model = build_model(cfg.model.name, **cfg.model.kwargs)
    x = torch.zeros(1, 3, cfg.data.num_frames, cfg.data.size, cfg.data.size)
    assert model.forward_cond(x, torch.tensor([5]), Conditioning()).shape == x.shape


def test_named_sizes_are_presets_the_config_reads():
    """DiT's sizes are a PRESETS table on the class; model.preset picks one, other keys override it."""
    import text2video.config as config
    from text2video.errors import ConfigError
    from text2video.runs.build import build_configured_model

    assert set(SegDiTTransformer2DModel.PRESETS) == {"DiT-S/2", "DiT-B/2", "DiT-L/2", "DiT-XL/2"}
    cfg = config.config_from_dict({"model": {"name": "segdit", "preset": "DiT-S/2", "num_layers": 1}})
    with torch.device("meta"):
        model = build_configured_model(cfg, None)
    assert (model.config.num_attention_heads, model.config.attention_head_dim, model.config.num_layers) == (6, 64, 1)
    with pytest.raises(ConfigError, match="preset"):
        config.load_config("tiny-segdit", ["model.preset=DiT-M/2"])


def test_pooled_text_conditions_every_frame_and_null_text_is_learned():
    model = _perturb(_tiny(num_embeds_ada_norm=None, text_embed_dim=6))
    b, frames = 2, 3
    x, t = torch.randn(b, 3, frames, 8, 8), torch.tensor([5, 900])
    text = torch.randn(b, 6)
    cond = Conditioning(text_pooled=text)
    with torch.no_grad():
        out = model.forward_cond(x, t, cond)
        other = model.forward_cond(x, t, Conditioning(text_pooled=-text))
        dropped = model.forward_cond(x, t, cond.text_dropped(torch.tensor([False, True])))
        frame = model(x[1:, :, 2], t[1:], text_embeds=text[1:]).sample  # the plain forward, one frame
        null = model(x[1:, :, 0], t[1:]).sample  # no text: the learned null text
    assert not torch.allclose(out, other)
    torch.testing.assert_close(out[1:, :, 2], frame, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dropped[0], out[0])
    torch.testing.assert_close(dropped[1:, :, 0], null, atol=1e-5, rtol=1e-5)
    with pytest.raises(ModelError, match="pooled text of shape"):
        model(x[:, :, 0], t, text_embeds=torch.randn(b, 5))
    with pytest.raises(ModelError, match="built without text"):
        _tiny()(x[:, :, 0], t, text_embeds=text)


def test_frame_embedding_tells_frames_apart():
    """With frame_embedding the same input in two frames gives two predictions; without, the same."""
    x = torch.randn(1, 3, 1, 8, 8).expand(1, 3, 2, 8, 8)
    t = torch.tensor([500])
    with torch.no_grad():
        plain = _perturb(_tiny()).forward_cond(x, t, Conditioning())
        indexed = _perturb(_tiny(frame_embedding=True)).forward_cond(x, t, Conditioning())
    torch.testing.assert_close(plain[:, :, 0], plain[:, :, 1])
    assert not torch.allclose(indexed[:, :, 0], indexed[:, :, 1])


def test_a_run_fills_in_the_pooled_text_width():
    import text2video.config as config
    from text2video.runs.build import configured_model_kwargs

    class Encoder:
        dim, pooled_dim = 10, 7

    cfg = config.load_config("tiny-segdit")
    _, _, kwargs = configured_model_kwargs(cfg, 10, text_encoder=Encoder())
    assert kwargs["text_embed_dim"] == 7
