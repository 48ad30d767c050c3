"""Latent-space wiring: a tiny VAE + tiny UNet3DConditionModel run trains, resumes, exports a pipeline
with ``vae/`` that generates decoded pixel videos; config errors; motion-module-only training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from trainer_toys import ToyTextEncoder, ToyVideos

from text2video.config import config_from_dict, load_config
from text2video.errors import ConfigError, TextEncoderError
from text2video.latent import VideoVAE
from text2video.runs.build import build_configured_model, configured_model_kwargs
from text2video.train.trainer import Trainer

TINY_UNET = {
    "name": "unet3d_condition",
    "preset": "tiny",
    "block_out_channels": [16, 32],
    "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
}


def _config(**sections) -> object:
    data = {
        "data": {"kind": "shapes", "num_frames": 4, "size": 16, "options": {"n": 16, "seed": 0}},
        "latent": {"vae": "tiny", "micro_batch": 8},
        "model": dict(TINY_UNET),
        "train": {
            "steps": 2,
            "batch_size": 2,
            "lr": 1e-3,
            "warmup_steps": 0,
            "log_every": 1,
            "save_every": 2,
            "cpu": True,
            "ema_decay": 0.9,
        },
        "sample": {"prompts": ["a red circle moving right"], "steps": 2, "guidance_scale": 2.0},
    }
    for name, values in sections.items():
        if name == "model" and "name" in values:
            data["model"] = dict(values)  # another model: none of the tiny UNet's keys
        else:
            data.setdefault(name, {}).update(values)
    return config_from_dict(data)


class _Spy:
    """Wraps a VideoVAE's decode and records the shapes it was given."""

    def __init__(self, vae: VideoVAE) -> None:
        self.shapes: list[tuple[int, ...]] = []
        original = vae.decode

        def decode(latents, **kwargs):
            self.shapes.append(tuple(latents.shape))
            return original(latents, **kwargs)

        vae.decode = decode  # type: ignore[method-assign]


def test_tiny_latent_run_trains_resumes_exports_and_generates(tmp_path: Path, caplog) -> None:
    from text2video.cli import main
    from text2video.pipelines import load_pipeline
    from text2video.pipelines.from_run import export_run, pipeline_from_run

    run = tmp_path / "run"
    config = _config(latent={"vae": "tiny:3", "fit_steps": 2})
    with caplog.at_level(logging.INFO, logger="text2video.runs.vae"):
        trainer = Trainer(config, run, progress=False)
    assert any("fitted the VAE" in r.getMessage() for r in caplog.records)
    assert (run / "vae" / "config.json").is_file()
    vae_id = trainer.vae.id
    model = trainer.model
    # sizes filled from the VAE (f = 4, 4 channels) and the MiniLM text encoder (384)
    assert (model.config.in_channels, model.config.out_channels, model.config.sample_size) == (4, 4, 4)
    assert model.config.cross_attention_dim == trainer.text_encoder.dim == 384
    result = trainer.train()
    assert result.step == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    spy = _Spy(trainer.vae)
    video = trainer.generate(["a red circle moving right"])
    assert video.shape == (1, 3, 4, 16, 16) and video.min() >= -1 and video.max() <= 1
    assert spy.shapes == [(1, 4, 4, 4, 4)]  # sampled at the latent shape, then decoded

    # resume: the run's fitted VAE is read back, not fitted again
    caplog.clear()
    resumed_config = _config(latent={"vae": "tiny:3", "fit_steps": 2}, train={"steps": 3})
    with caplog.at_level(logging.INFO, logger="text2video.runs.vae"):
        again = Trainer(resumed_config, run, progress=False)
    assert not any("fitted the VAE" in r.getMessage() for r in caplog.records)
    assert again.vae.id == vae_id
    assert again.train(resume="latest").step == 3

    # export: the pipeline folder carries the VAE and generates decoded pixel videos
    out = export_run(run, tmp_path / "pipe")
    record = json.loads((out / "pipeline.json").read_text())
    assert record["vae"] == "vae" and (out / "vae" / "config.json").is_file()
    assert record["defaults"]["channels"] == 3 and record["defaults"]["height"] == 16
    pipe = load_pipeline(out)
    assert pipe.vae is not None and pipe.vae.id == vae_id
    spy = _Spy(pipe.vae)
    videos = pipe(["a red circle moving right", "a blue square moving up"], steps=2, seed=0, progress=False).videos
    assert videos.shape == (2, 3, 4, 16, 16) and videos.min() >= -1 and videos.max() <= 1
    assert spy.shapes == [(2, 4, 4, 4, 4)]
    # the run folder and its export give the same videos
    from_run = pipeline_from_run(run)(["a red circle moving right", "a blue square moving up"], steps=2, seed=0, progress=False)
    torch.testing.assert_close(from_run.videos, videos)

    # eval works unchanged on the latent pipeline (it gets decoded pixels)
    report = tmp_path / "report"
    assert main(["eval", "--model", str(out), "--n", "2", "--batch-size", "2", "--steps", "2", "--no-fvd",
                 "--out", str(report)]) == 0  # fmt: skip
    from text2video.io.video import read_video

    gifs = sorted((report / "samples").glob("*.gif"))
    assert len(gifs) == 2 and read_video(gifs[0])[0].shape[:3] == (4, 16, 16)


def test_latent_cache_trains_on_cached_latents(tmp_path: Path) -> None:
    config = _config(latent={"cache": True, "posterior": "mode"}, train={"steps": 1, "save_every": 0})
    trainer = Trainer(config, tmp_path / "run", text_encoder=ToyTextEncoder(), dataset=ToyVideos(n=4, frames=4, size=16),
                      progress=False)  # fmt: skip
    assert trainer.latent_cached and len(list((tmp_path / "run" / "latent_cache").rglob("*.safetensors"))) == 4
    item = trainer.dataset[1]
    expected = trainer.vae.encode(ToyVideos(n=4, frames=4, size=16)[1]["video"][None])[0]
    torch.testing.assert_close(item["video"], expected, atol=1e-5, rtol=1e-5)
    assert trainer.train().step == 1


def test_focus_present_training_also_marks_items_of_a_latent_run(tmp_path: Path) -> None:
    from trainer_toys import ToyObjective

    objective = ToyObjective()
    config = _config(train={"steps": 1, "save_every": 0, "image_mode": "focus_present", "image_share": 1.0})
    trainer = Trainer(config, tmp_path / "run", text_encoder=ToyTextEncoder(), dataset=ToyVideos(n=4, frames=4, size=16),
                      objective=objective, progress=False)  # fmt: skip
    assert not trainer.latent_cached  # each batch is encoded by the VAE during the step
    trainer.train()
    assert objective.seen[0].focus_present is not None and bool(objective.seen[0].focus_present.all())


def test_pixel_space_is_unchanged_without_a_vae() -> None:
    config = _config(latent={"vae": None}, model={"name": "unet3d", "dim": 8, "dim_mults": [1]})
    model = build_configured_model(config, 8)
    assert model.config.channels == 3  # Unet3D default: pixels
    assert config.to_dict()["latent"]["vae"] is None


def test_latent_sizes_are_filled_and_checked() -> None:
    vae = VideoVAE.tiny(block_out_channels=(8, 8), norm_num_groups=8, latent_channels=2)  # f = 2, 2 channels
    config = _config(data={"size": 12})
    cls, preset, kwargs = configured_model_kwargs(config, 32, vae)
    assert preset == "tiny" and (kwargs["in_channels"], kwargs["out_channels"], kwargs["sample_size"]) == (2, 2, 6)
    assert kwargs["cross_attention_dim"] == 32
    stdit = config_from_dict({"data": {"size": 12, "num_frames": 4}, "latent": {"vae": "tiny"}, "model": {"name": "stdit"}})
    _, _, kwargs = configured_model_kwargs(stdit, 16, vae)
    assert kwargs["input_size"] == [4, 6, 6] and kwargs["caption_channels"] == 16 and kwargs["in_channels"] == 2
    unet = config_from_dict({"data": {"size": 12}, "latent": {"vae": "tiny"}, "model": {"name": "unet3d", "dim": 8}})
    assert configured_model_kwargs(unet, 16, vae)[2]["channels"] == 2
    with pytest.raises(ConfigError, match="multiple of the VAE's downsample factor 2"):
        configured_model_kwargs(_config(data={"size": 13}), 32, vae)
    with pytest.raises(ConfigError, match=r"model.out_channels = 3 .* must be 2"):
        configured_model_kwargs(_config(model={"out_channels": 3}), 32, vae)
    with pytest.raises(ConfigError, match=r"model.sample_size = 12 .* must be 6"):
        configured_model_kwargs(_config(data={"size": 12}, model={"sample_size": 12}), 32, vae)
    with pytest.raises(TextEncoderError, match="model.cross_attention_dim"):
        configured_model_kwargs(_config(model={"cross_attention_dim": 24}), 32, vae)


def test_latent_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="latent.posterior"):
        _config(latent={"posterior": "mean"})
    with pytest.raises(ConfigError, match="tiny:SEED"):
        _config(latent={"vae": "tiny:x"})
    with pytest.raises(ConfigError, match="latent.vae is null"):
        _config(latent={"vae": None, "fit_steps": 3})
    with pytest.raises(ConfigError, match="latent.micro_batch"):
        _config(latent={"micro_batch": 0})
    with pytest.raises(ConfigError, match="unknown key 'latent.vea'"):
        _config(latent={"vea": "tiny"})
    with pytest.raises(ConfigError, match="motion_modules"):
        _config(model={"name": "unet3d"}, train={"trainable": "motion_modules"})
    # every family supports train.gradient_checkpointing now (tests/test_sharding.py checks STDiT, UNetSTIC, SegDiT)
    with pytest.raises(ConfigError, match="model.preset"):
        _config(model={"preset": "huge"})
    missing = tmp_path / "no-such-sd15"
    config = _config(latent={"vae": str(missing)})
    with pytest.raises(ConfigError, match=r"latent.vae = .*VAE folder not found.*Stable Diffusion"):
        Trainer(config, tmp_path / "run", text_encoder=ToyTextEncoder(), dataset=ToyVideos(n=4, frames=4, size=16), progress=False)


def test_motion_module_only_training_changes_only_motion_parameters(tmp_path: Path) -> None:
    config = _config(
        latent={"vae": "tiny"},
        train={"steps": 1, "save_every": 0, "trainable": "motion_modules", "lr": 1e-2, "gradient_checkpointing": True},
    )
    trainer = Trainer(config, tmp_path / "run", text_encoder=ToyTextEncoder(), dataset=ToyVideos(n=4, frames=4, size=16),
                      progress=False)  # fmt: skip
    assert trainer.model.is_gradient_checkpointing
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    after = trainer.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(".motion_modules." in k for k in changed)
    assert all(p.requires_grad == (".motion_modules." in n) for n, p in trainer.model.named_parameters())


def test_presets_load() -> None:
    tiny = load_config("tiny-latent")
    assert tiny.latent.vae == "tiny" and tiny.model.name == "unet3d_condition" and tiny.latent.fit_steps > 0
    gpu = load_config("animatediff-256")
    assert gpu.model.kwargs["preset"] == "sd15" and gpu.data.size == 256 and gpu.data.num_frames == 16
    assert gpu.train.mixed_precision == "bf16" and gpu.train.gradient_checkpointing and gpu.data.kind == "csv"
    assert load_config("animatediff-256", ["train.trainable=motion_modules"]).train.trainable == "motion_modules"


def _latent_pipeline(kind: str):
    from text2video.models.unet3d_condition import UNet3DConditionModel
    from text2video.pipelines import PIPELINES

    torch.manual_seed(0)
    model = UNet3DConditionModel.from_preset("tiny", **{k: v for k, v in TINY_UNET.items() if k not in ("name", "preset")},
                                             cross_attention_dim=8).eval()  # fmt: skip
    vae = VideoVAE.tiny(seed=1)
    defaults = {"num_frames": 4, "height": 16, "width": 16, "channels": 3, "steps": 2, "guidance_scale": 1.0}
    return PIPELINES[kind](model, ToyTextEncoder(), {"prediction_type": "epsilon"}, defaults, vae=vae)


def test_latent_image_to_video_keeps_the_encoded_frame(tmp_path: Path) -> None:
    pipe = _latent_pipeline("ImageToVideoPipeline")
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    out = pipe(image, "a clip", seed=0, progress=False).videos
    assert out.shape == (1, 3, 4, 16, 16)
    # the first frame is the VAE's reconstruction of the given image (its latent is kept exactly)
    recon = pipe.vae.decode(pipe.vae.encode(image[:, :, None], posterior="mode"))
    torch.testing.assert_close(out[:, :, :1], recon, atol=1e-5, rtol=1e-5)
    # save / load keeps the VAE and the result
    again = type(pipe).from_pretrained(pipe.save_pretrained(tmp_path / "i2v"), text_encoder=ToyTextEncoder())
    assert again.vae.id == pipe.vae.id
    torch.testing.assert_close(again(image, "a clip", seed=0, progress=False).videos, out)


def test_latent_interpolation_decodes_pixels() -> None:
    pipe = _latent_pipeline("InterpolationPipeline")
    v1, v2 = torch.rand(2, 1, 3, 4, 16, 16) * 2 - 1
    out = pipe.interpolate(v1, v2, num_steps=2, num_interp_frames=3, seed=0, progress=False, strength=0.5)
    assert out.videos.shape == (3, 3, 4, 16, 16) and out.videos.abs().max() <= 1
