"""Our models out, and pretrained models through `convert`: ``export --format diffusers`` round trips
(runs in pixel and latent space, TextToVideoSDPipeline and AnimateDiffPipeline), refusals that name the
format that works, a checkpoint folder as --model, and convert-then-generate for each source format."""

from __future__ import annotations

import json
from pathlib import Path

import pretrained_toys as toys
import pytest
import torch

from text2video.cli import main
from text2video.config import config_from_dict
from text2video.errors import ModelError
from text2video.pipelines import load_pipeline

PROMPT = "a red circle moving left"
MODELSCOPE_LIKE = {"temporal_conv": True, "input_temporal_transformer": True, "input_temporal_heads": 8, "input_temporal_head_dim": 8,
                   "motion_positional_embedding": None, "motion_in_plain_blocks": False, "in_channels": 3, "out_channels": 3,
                   "num_attention_heads": [2, 4], "motion_num_attention_heads": [2, 4]}  # ModelScope: one head width  # fmt: skip


def _train(run: Path, clip: Path, *, latent: bool, model: dict, padding: str = "max_length") -> Path:
    from text2video.train.trainer import Trainer

    data = {
        "data": {"kind": "shapes", "num_frames": 4, "size": 16, "options": {"n": 8, "seed": 0}},
        "text": {"encoder": str(clip), "padding": padding, "cache": False},
        "model": {"name": "unet3d_condition", "preset": "tiny", "block_out_channels": [16, 32],
                  "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"], "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
                  **model},
        "diffusion": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "epsilon"},
        "train": {"steps": 2, "batch_size": 2, "lr": 1e-3, "warmup_steps": 0, "log_every": 1, "save_every": 1, "cpu": True,
                  "ema_decay": 0.5, "cond_drop": 0.5, "sample_every": 0},
        "sample": {"prompts": [PROMPT], "steps": 4, "guidance_scale": 3.0},
    }  # fmt: skip
    if latent:
        data["latent"] = {"vae": "tiny:3", "micro_batch": 8}
    Trainer(config_from_dict(data), run, progress=False).train()
    return run


_single_thread = pytest.fixture(scope="module", autouse=True)(toys.one_thread)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clip")
    model, tokenizer = toys.tiny_clip()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, clip_folder) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "pixel": _train(root / "pixel", clip_folder, latent=False, model=MODELSCOPE_LIKE),
        "latent": _train(root / "latent", clip_folder, latent=True, model={}),
    }


def _diffusers_frames(folder: Path, latents: torch.Tensor, guidance: float, **scheduler_overrides) -> torch.Tensor:
    import diffusers

    import text2video.pipelines.to_diffusers  # noqa: F401  (pixel models: diffusers loads PixelSpaceVAE from it)

    index = json.loads((folder / "model_index.json").read_text())
    cls = getattr(diffusers, index["_class_name"])
    scheduler_cls = getattr(diffusers, index["scheduler"][1])
    scheduler = scheduler_cls.from_pretrained(folder / "scheduler", **scheduler_overrides)
    ref = cls.from_pretrained(folder, scheduler=scheduler)
    ref.set_progress_bar_config(disable=True)
    frames = ref(PROMPT, latents=latents.clone(), num_inference_steps=4, guidance_scale=guidance, num_frames=latents.shape[2],
                 output_type="pt").frames  # fmt: skip
    return frames.permute(0, 2, 1, 3, 4) * 2 - 1


@pytest.mark.parametrize("kind, pipeline", [("pixel", "TextToVideoSDPipeline"), ("latent", "AnimateDiffPipeline")])
def test_export_diffusers_round_trip(runs, tmp_path, capsys, kind, pipeline):
    out = tmp_path / "diffusers"
    assert main(["export", str(runs[kind]), "--format", "diffusers", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pipeline"] == pipeline and json.loads((out / "model_index.json").read_text())["_class_name"] == pipeline
    ours = load_pipeline(runs[kind])  # the run itself: its latest checkpoint, EMA weights
    assert ours.defaults.negative_prompt == ""  # max-length encoding: the empty prompt is the unconditional input
    shape = ours.sample_shape((1, 3, 4, 16, 16))
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for guidance in (1.0, 3.0):
        # a pixel model clips x0 by default, where diffusers' scheduler keeps the noise estimate: compare unclipped
        got = ours(PROMPT, latents=latents.clone(), steps=4, guidance_scale=guidance, clip_x0=False, progress=False).videos
        want = _diffusers_frames(out, latents, guidance, **({"clip_sample": False} if kind == "pixel" else {}))
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_export_refuses_what_diffusers_cannot_express(runs, clip_folder, tmp_path, capsys):
    from text2video.pipelines.to_diffusers import export_diffusers

    pipe = load_pipeline(runs["latent"])
    videocrafter = type(pipe.model)(**{**dict(pipe.model.config), "fps_embedding": True})
    pipe.model = videocrafter
    with pytest.raises(ModelError, match="fps_embedding=True.*--format text2video"):
        export_diffusers(pipe, tmp_path / "x")
    longest = _train(tmp_path / "longest", clip_folder, latent=True, model={}, padding="longest")
    assert main(["export", str(longest), "--format", "diffusers", "--out", str(tmp_path / "y")]) == 2
    assert "text.padding=max_length" in capsys.readouterr().err


def test_export_refuses_other_denoisers(tmp_path, capsys):
    from text2video.models.unet3d import Unet3D
    from text2video.pipelines import TextToVideoPipeline
    from text2video.pipelines.to_diffusers import export_diffusers

    pipe = TextToVideoPipeline(Unet3D(dim=8, dim_mults=(1, 2), attn_heads=1, attn_dim_head=8), None)
    with pytest.raises(ModelError, match="no pipeline for a Unet3D.*--format text2video"):
        export_diffusers(pipe, tmp_path / "x")


def test_checkpoint_folder_as_model(runs):
    from text2video.pipelines.from_run import pipeline_from_run
    from text2video.runs.checkpoint import list_checkpoints

    first = list_checkpoints(runs["latent"])[0]
    pipe = load_pipeline(first)
    assert pipe.source.format == "text2video-checkpoint"
    expected = pipeline_from_run(runs["latent"], first)(PROMPT, steps=2, seed=0, progress=False).videos
    torch.testing.assert_close(pipe(PROMPT, steps=2, seed=0, progress=False).videos, expected)
    latest = load_pipeline(runs["latent"])(PROMPT, steps=2, seed=0, progress=False).videos
    assert (latest - expected).abs().max() > 0  # another checkpoint, other weights


def test_own_runs_take_the_memory_options_and_info(runs, capsys):
    pipe = load_pipeline(runs["latent"], dtype="bfloat16", vae_frames=2)
    assert next(pipe.model.parameters()).dtype == torch.bfloat16 and pipe.vae.micro_batch == 2
    video = pipe(PROMPT, steps=2, seed=0, progress=False).videos
    full = load_pipeline(runs["latent"])(PROMPT, steps=2, seed=0, progress=False).videos
    assert video.dtype == torch.float32 and 0 < (video - full).abs().max() < 0.5
    assert main(["info", "--model", str(runs["latent"]), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["format"] == "text2video-run" and facts["denoiser"] == "UNet3DConditionModel"
    assert facts["text_encoder"]["padding"] == "max_length" and facts["vae"]["downsample_factor"] == 4
    assert facts["parameters"]["denoiser"] == sum(p.numel() for p in pipe.model.parameters())
    assert facts["memory"]["float32"]["total_bytes"] > facts["memory"]["float16"]["total_bytes"] > 0


# ------------------------------------------------------------------------------------------ convert


def test_convert_then_generate_text_to_video(tmp_path, capsys):
    src = toys.save_text_to_video(tmp_path / "ms")
    out = tmp_path / "converted"
    assert main(["convert", "--from", "diffusers-unet3d", str(src), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pipeline"] and {"model", "vae", "text_encoder", "tokenizer", "pipeline.json"} <= set(report["parts"])
    record = json.loads((out / "pipeline.json").read_text())
    assert record["text_encoder"]["path"] == "." and record["scheduler"]["_class_name"] == "DDIMScheduler"
    moved = tmp_path / "moved"
    out.rename(moved)  # complete: nothing points back at the source
    latents = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(latents=latents, steps=3, num_frames=3, progress=False)
    torch.testing.assert_close(load_pipeline(moved)(PROMPT, **kw).videos, load_pipeline(src)(PROMPT, **kw).videos)
    assert main(["generate", PROMPT, "--model", str(moved), "--steps", "2", "--frames", "2", "--output-dir", str(tmp_path / "v"),
                 "--json"]) == 0  # fmt: skip
    videos = json.loads(capsys.readouterr().out)["videos"]
    assert len(videos) == 1 and Path(videos[0]).is_file()
    with pytest.raises(Exception, match="--from diffusers-unet3d"):
        from text2video.pipelines.pretrained.convert import convert_model

        convert_model("animatediff", src, tmp_path / "wrong")


def test_convert_then_generate_animatediff(tmp_path):
    sd = toys.save_stable_diffusion(tmp_path / "sd")
    toys.motion_adapter().save_pretrained(tmp_path / "adapter")
    out = tmp_path / "animatediff"
    assert main(["convert", "--from", "animatediff", str(sd), "--motion-adapter", str(tmp_path / "adapter"), "--out", str(out)]) == 0
    converted, direct = load_pipeline(out), load_pipeline(sd, motion_adapter=tmp_path / "adapter")
    assert converted.scheduler_config == direct.scheduler_config
    latents = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(latents=latents, steps=2, num_frames=2, progress=False)
    torch.testing.assert_close(converted(PROMPT, **kw).videos, direct(PROMPT, **kw).videos)


def test_convert_then_generate_video_diffusion_pytorch(tmp_path):
    from text_models import save_tiny_bert

    from text2video.models.convert.video_diffusion_pytorch import import_original_package

    pytest.importorskip("rotary_embedding_torch")
    vdp = import_original_package()
    torch.manual_seed(0)
    unet = vdp.Unet3D(dim=8, cond_dim=16, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8).eval()
    state = vdp.GaussianDiffusion(unet, image_size=8, num_frames=3, timesteps=50).state_dict()
    torch.save({"step": 1, "model": state, "ema": state}, tmp_path / "model-1.pt")
    save_tiny_bert(tmp_path / "bert")
    out = tmp_path / "vdp"
    # without the text encoder: the denoiser only, and the report says what completes it
    assert main(["convert", "--from", "video-diffusion-pytorch", str(tmp_path / "model-1.pt"), "--out", str(tmp_path / "bare")]) == 0
    assert not (tmp_path / "bare" / "pipeline.json").exists() and (tmp_path / "bare" / "config.json").is_file()
    assert main(["convert", "--from", "video-diffusion-pytorch", str(tmp_path / "model-1.pt"), "--text-encoder", str(tmp_path / "bert"),
                 "--out", str(out)]) == 0  # fmt: skip
    assert (out / "text_encoder" / "config.json").is_file()  # the BERT folder travels with the pipeline
    converted = load_pipeline(out)
    direct = load_pipeline(tmp_path / "model-1.pt", text_encoder=tmp_path / "bert")
    assert converted.objective.num_train_timesteps == 50
    kw = dict(num_frames=3, height=8, width=8, steps=2, seed=1, progress=False)
    torch.testing.assert_close(converted(PROMPT, **kw).videos, direct(PROMPT, **kw).videos)
