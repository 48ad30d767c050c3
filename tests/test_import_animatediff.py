"""Importers of `UNet3DConditionModel`: SD UNet inflation + AnimateDiff motion weights (diffusers
MotionAdapter layout and the original AnimateDiff layout) and ModelScope weights (diffusers
UNet3DConditionModel), each checked against diffusers' own model on the same weights and input."""

from __future__ import annotations

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from diffusers import UNet3DConditionModel as DiffusersUNet3D
from pretrained_toys import to_original_layout as _to_original_layout
from safetensors.torch import save_file

from text2video.cli import main
from text2video.errors import CheckpointError, ModelError
from text2video.models.convert import convert
from text2video.models.unet3d_condition import UNet3DConditionModel

WIDTHS = (16, 16, 32, 32)
GROUPS = 4
TEXT_DIM = 16


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Give every parameter random values (so zero-initialised layers are exercised too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.1
            is_norm_scale = "norm" in name and name.endswith("weight") and p.ndim == 1
            p.copy_(1.0 + noise if is_norm_scale else noise)


@pytest.fixture(scope="module")
def unet2d() -> UNet2DConditionModel:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=WIDTHS,
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=2,
        norm_num_groups=GROUPS,
    )
    _randomize(unet, 1)
    return unet.eval()


@pytest.fixture(scope="module")
def adapter() -> MotionAdapter:
    torch.manual_seed(0)
    ad = MotionAdapter(
        block_out_channels=WIDTHS,
        motion_layers_per_block=2,
        motion_num_attention_heads=2,
        motion_norm_num_groups=GROUPS,
        motion_max_seq_length=24,
        use_motion_mid_block=True,
    )
    _randomize(ad, 2)
    return ad.eval()


def _inputs(frames: int = 3, size: int = 8):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, frames, size, size, generator=g)
    text = torch.randn(2, 5, TEXT_DIM, generator=g)
    return x, torch.tensor([7, 640]), text


@pytest.fixture(scope="module")
def reference(unet2d, adapter) -> UNetMotionModel:
    return UNetMotionModel.from_unet2d(unet2d, adapter).eval()


def _run_reference(model, x, t, text):
    """diffusers' UNetMotionModel expects the text repeated per frame (its pipeline does that)."""
    return model(x, t, text.repeat_interleave(x.shape[2], dim=0)).sample


def test_inflation_with_motion_adapter_matches_diffusers(unet2d, adapter, reference):
    ours = UNet3DConditionModel.from_unet2d(unet2d, adapter).eval()
    x, t, text = _inputs()
    with torch.no_grad():
        expected = _run_reference(reference, x, t, text)
        got = ours(x, t, text).sample
    assert got.shape == x.shape
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
    assert ours.config.motion_max_seq_length == 24


def test_original_animatediff_layout_file_matches_diffusers(unet2d, adapter, reference, tmp_path):
    original = _to_original_layout(adapter.state_dict())
    assert any("temporal_transformer" in k for k in original)
    path = tmp_path / "mm_sd_v15.safetensors"
    save_file({k: v.clone().contiguous() for k, v in original.items()}, str(path))
    ours = UNet3DConditionModel.from_unet2d(unet2d, path, motion_num_attention_heads=2, motion_norm_num_groups=GROUPS).eval()
    x, t, text = _inputs(frames=4)
    with torch.no_grad():
        assert torch.allclose(ours(x, t, text).sample, _run_reference(reference, x, t, text), atol=1e-4, rtol=1e-4)
    assert ours.config.motion_max_seq_length == 24  # read from the pos_encoder table

    ckpt = tmp_path / "mm.ckpt"
    torch.save({"state_dict": original}, ckpt)
    again = UNet3DConditionModel.from_unet2d(
        unet2d, None, motion_num_attention_heads=2, motion_norm_num_groups=GROUPS, motion_max_seq_length=24
    )
    loaded = again.load_motion_modules(ckpt)
    assert loaded and all(".motion_modules." in n for n in loaded)
    with torch.no_grad():
        assert torch.allclose(again(x, t, text).sample, ours(x, t, text).sample, atol=1e-5)


def test_non_square_input_forwards_upsample_size(unet2d, adapter, reference):
    ours = UNet3DConditionModel.from_unet2d(unet2d, adapter).eval()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 2, 12, 10, generator=g)  # 12 and 10 are not multiples of 8
    text = torch.randn(1, 5, TEXT_DIM, generator=g)
    with torch.no_grad():
        expected = _run_reference(reference, x, 500, text)
        got = ours(x, 500, text).sample
    assert got.shape == x.shape
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_zero_motion_modules_reproduce_the_2d_model_frame_by_frame(unet2d):
    ours = UNet3DConditionModel.from_unet2d(unet2d).eval()  # motion modules start at zero
    x, t, text = _inputs(frames=3)
    with torch.no_grad():
        video = ours(x, t, text).sample
        for f in range(x.shape[2]):
            frame = unet2d(x[:, :, f], t, text).sample
            assert torch.allclose(video[:, :, f], frame, atol=1e-4, rtol=1e-4)


def test_modelscope_weights_match_diffusers_unet3d():
    torch.manual_seed(0)
    ref = DiffusersUNet3D(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=WIDTHS,
        layers_per_block=1,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=GROUPS,
    )
    _randomize(ref, 4)
    ref.eval()
    ours = UNet3DConditionModel.from_diffusers_unet3d(ref).eval()
    assert ours.config.temporal_conv and ours.config.input_temporal_transformer
    x, t, text = _inputs(frames=3)
    with torch.no_grad():
        expected = ref(x, t, text).sample
        got = ours(x, t, text).sample
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


def test_converters_write_loadable_folders(unet2d, adapter, reference, tmp_path):
    # An AnimateDiff-style folder: unet/ (SD UNet) + motion_adapter/, converted from the command line.
    unet2d.save_pretrained(tmp_path / "sd" / "unet")
    adapter.save_pretrained(tmp_path / "sd" / "motion_adapter")
    assert main(["convert", "--from", "animatediff", str(tmp_path / "sd"), "--out", str(tmp_path / "out")]) == 0
    loaded = UNet3DConditionModel.from_pretrained(tmp_path / "out").eval()
    assert loaded.config.motion_max_seq_length == 24
    x, t, text = _inputs()
    with torch.no_grad():
        expected = _run_reference(reference, x, t, text)
        assert torch.allclose(loaded(x, t, text).sample, expected, atol=1e-4, rtol=1e-4)
    # A diffusers UNetMotionModel folder (what AnimateDiffPipeline.save_pretrained writes as unet/).
    reference.save_pretrained(tmp_path / "pipe" / "unet")
    report = convert("animatediff", tmp_path / "pipe", tmp_path / "out2")
    assert report["motion_adapter"] is None and report["parameters"] > 0
    with torch.no_grad():
        again = UNet3DConditionModel.from_pretrained(tmp_path / "out2").eval()
        assert torch.allclose(again(x, t, text).sample, expected, atol=1e-4, rtol=1e-4)

    ref3d = DiffusersUNet3D(
        block_out_channels=WIDTHS, layers_per_block=1, cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=GROUPS
    )
    ref3d.save_pretrained(tmp_path / "ms")
    report = convert("diffusers-unet3d", tmp_path / "ms", tmp_path / "ms_out", use_ema=None)
    assert report["config"]["temporal_conv"] is True
    assert UNet3DConditionModel.from_pretrained(tmp_path / "ms_out").config.input_temporal_transformer


def test_bad_sources_raise_clear_errors(unet2d, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        UNet3DConditionModel.from_unet2d(unet2d, tmp_path / "missing.safetensors")
    save_file({"foo.weight": torch.zeros(2)}, str(tmp_path / "junk.safetensors"))
    with pytest.raises(CheckpointError, match="no motion-module weights"):
        UNet3DConditionModel.from_unet2d(unet2d, tmp_path / "junk.safetensors")
    wrong = MotionAdapter(block_out_channels=WIDTHS, motion_layers_per_block=1, motion_num_attention_heads=2, motion_norm_num_groups=GROUPS)
    with pytest.raises(CheckpointError, match="do not fit"):
        UNet3DConditionModel.from_unet2d(unet2d, wrong)
    sdxl_like = UNet2DConditionModel(
        block_out_channels=WIDTHS,
        norm_num_groups=GROUPS,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=2,
        class_embed_type="timestep",
    )
    with pytest.raises(ModelError, match="class_embed_type"):
        UNet3DConditionModel.from_unet2d(sdxl_like)
