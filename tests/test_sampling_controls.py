"""The sampling controls end to end: fps (VideoCrafter's fps conditioning and the written frame rate), dynamic
thresholding from the config and the CLI (text2video-from-scratch), unconditional models (DiffusionPlayground),
samples saved with their prompt and settings for ``eval --videos``, a checkpoint folder as ``--model``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_runs import train_tiny

from text2video.cli import main
from text2video.data.synthetic import ShapesDataset
from text2video.diffusion.objective import ObjectiveConfig
from text2video.io.video import frames_to_tensor, probe_video, read_video
from text2video.models.unet3d import Unet3D
from text2video.models.unet3d_condition import UNet3DConditionModel
from text2video.pipelines import PipelineDefaults, TextToVideoPipeline, VideoOutput, load_pipeline
from text2video.text.encoders import TextEmbeddings


class CharEncoder:
    """Deterministic 8-dim token states from the characters of each prompt."""

    dim = 8

    def encode(self, prompts: list[str]) -> TextEmbeddings:
        tokens = torch.stack([torch.randn(3, 8, generator=torch.Generator().manual_seed(sum(map(ord, p)))) for p in prompts])
        return TextEmbeddings(tokens, torch.ones(len(prompts), 3, dtype=torch.bool), tokens.mean(1))


DEFAULTS = PipelineDefaults(num_frames=2, height=8, width=8, channels=4, fps=8.0, steps=3, sampler="ddim", guidance_scale=1.0)


def _fps_model() -> UNet3DConditionModel:
    torch.manual_seed(0)
    model = UNet3DConditionModel(block_out_channels=(8, 16, 16, 16), layers_per_block=1, num_attention_heads=2, cross_attention_dim=8,
                                 norm_num_groups=4, motion_num_attention_heads=2, motion_norm_num_groups=4, fps_embedding=True)  # fmt: skip
    with torch.no_grad():  # the fps MLP starts at zero (an imported model is unchanged): give it weights
        for p in model.fps_embedder.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return model.eval()


def test_fps_changes_a_fps_conditioned_model_and_no_other() -> None:
    plain = Unet3D(dim=8, dim_mults=(1, 2), channels=4, cond_dim=8, attn_heads=1, attn_dim_head=8).eval()
    for model, conditioned in ((_fps_model(), True), (plain, False)):
        pipe = TextToVideoPipeline(model, CharEncoder(), ObjectiveConfig(), DEFAULTS)
        slow, fast = (pipe("a red circle", seed=0, fps=fps, progress=False) for fps in (4.0, 24.0))
        assert (slow.fps, fast.fps) == (4.0, 24.0)
        assert torch.equal(slow.videos, fast.videos) is not conditioned


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny tiny-cpu run with a validation split and a best checkpoint."""
    return train_tiny(tmp_path_factory.mktemp("controls") / "run", "data.val_split=2", "train.val_every=1")


def test_generate_writes_the_asked_frame_rate(run: Path, tmp_path: Path, capsys) -> None:
    args = ["generate", "a red circle moving left", "--model", str(run), "--steps", "2", "--format", "mp4", "--json"]
    assert main([*args, "--fps", "5", "--output-dir", str(tmp_path / "five")]) == 0
    path = Path(json.loads(capsys.readouterr().out)["videos"][0])
    assert probe_video(path).fps == pytest.approx(5.0)
    assert json.loads(path.with_suffix(".json").read_text())["fps"] == 5.0
    assert main([*args, "--output-dir", str(tmp_path / "default")]) == 0
    assert probe_video(json.loads(capsys.readouterr().out)["videos"][0]).fps == pytest.approx(8.0)  # the run's sample.fps


def test_dynamic_threshold_from_the_config_and_the_flag(run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import yaml

    from text2video.diffusion import sampling

    used: list[float] = []
    threshold = sampling.dynamic_threshold_x0
    monkeypatch.setattr(sampling, "dynamic_threshold_x0", lambda x0, p: (used.append(p), threshold(x0, p))[1])
    plain = load_pipeline(run)
    assert plain.defaults.dynamic_threshold is None
    plain("a red circle moving left", steps=2, seed=0, progress=False)
    assert used == []  # plain clipping
    expected = plain("a red circle moving left", steps=2, seed=0, dynamic_threshold=0.6, progress=False).videos
    assert used == [0.6, 0.6]  # every step
    assert main(["generate", "a red circle moving left", "--model", str(run), "--steps", "2", "--dynamic-threshold", "0.6",
                 "--format", "webm", "--output-dir", str(tmp_path / "flag"), "--json"]) == 0  # fmt: skip
    written = Path(json.loads(capsys.readouterr().out)["videos"][0])
    assert json.loads(written.with_suffix(".json").read_text())["dynamic_threshold"] == 0.6 and used[2:] == [0.6, 0.6]
    configured = tmp_path / "configured"
    (configured / "checkpoints").mkdir(parents=True)
    (configured / "checkpoints" / "step-00000002").symlink_to(run / "checkpoints" / "step-00000002")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["sample"]["dynamic_threshold"] = 0.6
    (configured / "config.yaml").write_text(yaml.safe_dump(config))
    pipe = load_pipeline(configured)
    assert pipe.defaults.dynamic_threshold == 0.6
    assert torch.equal(pipe("a red circle moving left", steps=2, seed=0, progress=False).videos, expected)


def test_saved_samples_carry_their_prompt_and_settings_for_eval(run: Path, tmp_path: Path, capsys) -> None:
    pipe = load_pipeline(run)
    prompts = ["a red circle moving left", "a blue square moving up"]
    paths = pipe(prompts, steps=2, seed=3, progress=False).save(tmp_path / "samples")
    assert [p.with_suffix(".txt").read_text().strip() for p in paths] == prompts
    settings = json.loads(paths[1].with_suffix(".json").read_text())
    assert settings["prompt"] == prompts[1] and settings["seed"] == 4 and settings["steps"] == 2
    assert (settings["num_frames"], settings["height"], settings["width"], settings["sampler"]) == (4, 16, 16, "ddim")
    assert main(["eval", "--videos", str(tmp_path / "samples"), "--out", str(tmp_path / "report"), "--json"]) == 0
    assert json.loads((tmp_path / "report" / "eval.json").read_text())["adherence"]["all"]["n"] == 2
    # a judge that can read them agrees with the saved captions: true videos saved through VideoOutput
    shapes = ShapesDataset(n=4, num_frames=8, size=24, seed=11, split="all", background="gray")
    samples = [shapes.render(i) for i in range(4)]
    true = VideoOutput(torch.stack([frames_to_tensor(s.frames) for s in samples]), [s.text for s in samples])
    true.save(tmp_path / "true")
    capsys.readouterr()
    assert main(["eval", "--videos", str(tmp_path / "true"), "--out", str(tmp_path / "true_report"), "--json"]) == 0
    assert json.loads((tmp_path / "true_report" / "eval.json").read_text())["adherence"]["all"]["all_three"] == 1.0


def test_model_takes_a_checkpoint_folder_and_the_best_checkpoint(run: Path, tmp_path: Path, capsys) -> None:
    step = run / "checkpoints" / "step-00000002"
    from_folder = load_pipeline(step)("a red circle moving left", steps=2, seed=0, progress=False).videos
    assert torch.equal(from_folder, load_pipeline(run)("a red circle moving left", steps=2, seed=0, progress=False).videos)
    assert main(["generate", "a red circle", "--model", str(step), "--steps", "2", "--output-dir", str(tmp_path / "a")]) == 0
    best = run / "checkpoints" / "best"
    assert (best / "state.json").is_file()
    assert (
        main(["generate", "a red circle", "--model", str(run), "--checkpoint", "best", "--steps", "2", "--output-dir", str(tmp_path / "b")])
        == 0
    )
    assert main(["generate", "a red circle", "--model", str(best), "--steps", "2", "--output-dir", str(tmp_path / "c")]) == 0
    gifs = [read_video(next((tmp_path / name).glob("*.gif")))[0] for name in "bc"]
    assert np.array_equal(*gifs)


def test_an_unconditional_model_loads_no_encoder_and_needs_no_prompt(tmp_path: Path, monkeypatch, capsys) -> None:
    import text2video.text as text

    def no_encoder(*args, **kwargs):
        raise AssertionError("an unconditional run must not load a text encoder")

    monkeypatch.setattr(text, "load_text_encoder", no_encoder)
    run = train_tiny(tmp_path / "uncond", "text.encoder=none")
    capsys.readouterr()
    pipe = load_pipeline(run)
    assert pipe.text_encoder is None and pipe.model.config.cond_dim is None
    assert json.loads(pipe.save_pretrained(tmp_path / "exported").joinpath("pipeline.json").read_text())["text_encoder"] is None
    assert (
        main(["generate", "--model", str(run), "--batch-size", "2", "--steps", "2", "--output-dir", str(tmp_path / "out"), "--json"]) == 0
    )
    assert len(json.loads(capsys.readouterr().out)["videos"]) == 2
    assert main(["generate", "--model", str(tmp_path / "exported"), "--steps", "2", "--output-dir", str(tmp_path / "out2")]) == 0
    from text2video.compat import VideoGenerator  # DiffusionPlayground's unconditional flow: no prompt anywhere

    videos = VideoGenerator(run, device="cpu").generate(num_samples=2, num_frames=4, height=16, width=16, num_steps=2)
    assert videos.videos.shape == (2, 3, 4, 16, 16) and videos.prompts == ["", ""]
    stdit = train_tiny(tmp_path / "stdit", "text.encoder=none", config="tiny-stdit",
                       base=["train.steps=1", "train.batch_size=2", "train.save_every=0", "data.options.n=4", "data.size=8",
                             "data.num_frames=2", "model.input_size=[2, 8, 8]", "model.hidden_size=16", "model.depth=1", "model.num_heads=2"])  # fmt: skip
    assert load_pipeline(stdit).model.config.caption_channels == 0  # no text branch at all


def test_a_text_model_without_a_prompt_says_how_to_give_one(run: Path, capsys) -> None:
    assert main(["generate", "--model", str(run)]) == 2
    assert "no prompt given" in capsys.readouterr().err
