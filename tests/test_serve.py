"""`text2video serve` without a browser: limits, the catalog, Studio's files and commands, cancel, the one-at-a-time
rule, and the HTTP API through gradio_client."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from serve_models import save_tiny_pipeline

from text2video.cli import main
from text2video.errors import CheckpointError, ConfigError
from text2video.serve import GenerationCancelled, ModelCatalog, Request, Studio, find_model_folders, limits_for
from text2video.serve.limits import Range, size_multiple


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("served")
    save_tiny_pipeline(root / "tiny")
    save_tiny_pipeline(root / "tiny-fps", fps_model=True)
    return root


@pytest.fixture
def studio(models, tmp_path) -> Studio:
    return Studio(ModelCatalog([models / "tiny", models / "tiny-fps"]), tmp_path / "out")


def decode(path: Path) -> tuple[np.ndarray, dict]:
    """Every frame of an MP4 as uint8 (T, H, W, 3), and its stream facts, read with PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        facts = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt, "fps": float(stream.average_rate)}
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    return frames, facts


def run_command(command: str, out: Path) -> list[Path]:
    """Run a `text2video ...` command line in this process, writing into ``out``; the MP4s it wrote."""
    args = shlex.split(command)
    assert args[0] == "text2video"
    assert main([*args[1:], "--output-dir", str(out)]) == 0
    return sorted(out.glob("*.mp4"))


# ------------------------------------------------------------------------------------------ limits


def test_limits_follow_the_network_the_vae_and_the_defaults() -> None:
    from text2video.pipelines import PipelineDefaults

    def pipe(config: dict, vae=None, encoder=object(), **defaults):
        model = SimpleNamespace(config=config, fps_embedder=None)
        return SimpleNamespace(model=model, vae=vae, text_encoder=encoder, defaults=PipelineDefaults(**defaults),
                               objective=SimpleNamespace(num_train_timesteps=1000))  # fmt: skip

    assert size_multiple(pipe({"dim_mults": [1, 2, 4, 8]})) == 8  # three halvings
    assert size_multiple(pipe({"block_out_channels": [8, 16]}, vae=SimpleNamespace(downsample_factor=4))) == 8
    assert size_multiple(pipe({"patch_size": [1, 2, 2]})) == 2
    assert size_multiple(pipe({"dim_mults": [1, 2], "patch_size": 2})) == 4  # Unet3D on 2x2 pixel blocks
    limits = limits_for(pipe({"dim_mults": [1, 2, 4]}, height=32, width=48, num_frames=8))
    assert (limits.height.minimum, limits.height.maximum, limits.height.step) == (8, 128, 4)
    assert limits.width.maximum == 192 and limits.frames.maximum == 32 and limits.steps.maximum == 1000
    assert not limits.takes_fps and limits.takes_text
    with pytest.raises(ConfigError, match=r"height 30 is not a multiple of 4, which m needs: 8 to 128 in steps of 4"):
        limits.check("m", height=30)
    with pytest.raises(ConfigError, match=r"frames 33 is outside what m takes: 2 to 32"):
        limits.check("m", frames=33)
    limits.check("m", height=32, width=48, frames=8, steps=1000, guidance_scale=0.0)  # defaults and ends pass
    unconditional = limits_for(pipe({"dim_mults": [1]}, encoder=None))
    assert unconditional.guidance_scale == Range(1.0, 1.0, 0) and not unconditional.takes_text
    motion = limits_for(pipe({"block_out_channels": [8, 16], "motion_max_seq_length": 24}))
    assert motion.frames.maximum == 24


def test_real_models_report_fps_and_size_steps(models) -> None:
    catalog = ModelCatalog([models / "tiny", models / "tiny-fps"])
    assert limits_for(catalog.pipeline("tiny-fps")).takes_fps and not limits_for(catalog.pipeline("tiny")).takes_fps
    facts = catalog.describe("tiny")
    pipe = catalog.pipeline("tiny")
    assert facts["model"] == "Unet3D" and facts["parameters"] == sum(p.numel() for p in pipe.model.parameters())
    assert facts["size_multiple"] == 2 and facts["defaults"]["steps"] == 3 and facts["text_encoder"]["dim"] == 384
    assert catalog.pipeline("tiny", "InterpolationPipeline").model is pipe.model  # one copy of the weights


def test_a_latent_pipeline_is_served_at_the_vaes_size_steps(tmp_path) -> None:
    folder = save_tiny_pipeline(tmp_path / "latent", latent=True)
    studio = Studio(ModelCatalog([folder]), tmp_path / "out")
    limits = studio.limits()
    assert limits.height.step == 8  # the VAE's 4x times the U-Net's one halving
    with pytest.raises(ConfigError, match="height 20 is not a multiple of 8"):
        studio.generate(Request(prompt="x", height=20))
    r = studio.generate(Request(prompt="a circle", steps=2, seed=0, height=24, width=16))[0]
    assert decode(r.video)[0].shape == (4, 24, 16, 3)  # decoded pixels at the asked size
    assert "latents" in studio.catalog.describe()["space"]


# ------------------------------------------------------------------------------------------ catalog


def test_catalog_finds_model_folders_and_names_them(models, tmp_path) -> None:
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "b" / "x").mkdir(parents=True)
    for folder in (tmp_path / "a" / "x", tmp_path / "b" / "x"):
        (folder / "pipeline.json").write_text("{}")
    (tmp_path / "a" / "notes").mkdir()
    assert find_model_folders(tmp_path / "a") == [tmp_path / "a" / "x"]
    catalog = ModelCatalog([tmp_path / "a" / "x", tmp_path / "b" / "x"])
    assert catalog.names == ["a/x", "b/x"] and catalog.default == "a/x"
    both = ModelCatalog.from_args([str(models / "tiny")], str(models))
    assert both.names == ["tiny", "tiny-fps"]  # --model first, the folder's others after, none twice
    with pytest.raises(ConfigError, match="no model named 'nope'.*tiny, tiny-fps"):
        both.check_name("nope")
    with pytest.raises(CheckpointError, match="no model folder in"):
        find_model_folders(tmp_path / "a" / "notes")
    with pytest.raises(ConfigError, match="is itself a model folder; serve it with --model"):
        find_model_folders(models / "tiny")
    with pytest.raises(CheckpointError, match="does not exist"):
        ModelCatalog([tmp_path / "missing"])
    with pytest.raises(ConfigError, match="no model to serve"):
        ModelCatalog([])


def test_serve_command_refuses_bad_arguments_with_one_line(tmp_path, capsys) -> None:
    assert main(["serve"]) == 2
    assert "no model to serve: give --model FOLDER" in capsys.readouterr().err
    assert main(["serve", "--models-dir", str(tmp_path)]) == 2
    assert "no model folder in" in capsys.readouterr().err


def test_text2video_and_its_serve_package_import_no_gradio() -> None:
    code = ("import sys, text2video, text2video.serve, text2video.cli; text2video.cli.build_parser(); "
            "import text2video.commands.serve; print('gradio' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ------------------------------------------------------------------------------------------ studio


def test_text_to_video_writes_mp4_gif_and_settings_and_its_command_makes_the_same_videos(studio, tmp_path) -> None:
    steps: list[tuple[int, int]] = []
    results = studio.generate(Request(prompt="a red circle moving left", steps=2, seed=5, num_videos=2),
                              progress=lambda done, total: steps.append((done, total)))  # fmt: skip
    assert steps == [(1, 2), (2, 2)]
    assert [r.settings["seed"] for r in results] == [5, 6] and [r.settings["index"] for r in results] == [0, 1]
    for r in results:
        frames, facts = decode(r.video)
        assert frames.shape == (4, 16, 16, 3)
        assert facts == {"codec": "h264", "pix_fmt": "yuv420p", "fps": 8.0}
        assert r.gif.is_file() and r.video.parent == r.gif.parent == r.settings_file.parent
        assert json.loads(r.settings_file.read_text()) == r.settings
        s = r.settings
        assert (s["steps"], s["frames"], s["height"], s["width"], s["sampler"], s["guidance_scale"]) == (2, 4, 16, 16, "ddim", 2.0)
        assert s["files"] == {"mp4": str(r.video), "gif": str(r.gif), "settings": str(r.settings_file)}
    assert studio.recent() == results[::-1]
    assert "--seed 5" in results[0].command and "--batch-size 2" in results[0].command and "--steps 2" in results[0].command
    again = run_command(results[0].command, tmp_path / "cli")
    assert len(again) == 2
    for mine, theirs in zip(results, again):
        assert np.array_equal(decode(mine.video)[0], decode(theirs)[0])


def test_random_seed_is_drawn_shown_and_reproducible(studio, tmp_path) -> None:
    first = studio.generate(Request(prompt="a blue square", steps=1))[0]
    assert first.settings["random_seed"] is True and first.settings["seed"] == first.settings["base_seed"]
    again = studio.generate(Request(prompt="a blue square", steps=1, seed=first.settings["seed"]))[0]
    assert again.settings["random_seed"] is False
    assert np.array_equal(decode(first.video)[0], decode(again.video)[0])


def test_fps_model_gets_the_fps_control_and_the_file_its_rate(studio, tmp_path) -> None:
    r = studio.generate(Request(model="tiny-fps", prompt="a circle", steps=1, seed=0, fps=12))[0]
    assert decode(r.video)[1]["fps"] == 12.0 and r.settings["fps"] == 12.0
    assert "--fps 12" in r.command
    assert np.array_equal(decode(r.video)[0], decode(run_command(r.command, tmp_path / "cli")[0])[0])
    plain = studio.generate(Request(model="tiny", prompt="a circle", steps=1, seed=0, fps=12))[0]
    assert plain.settings["fps"] == 8.0 and "--fps" not in plain.command  # a model without fps keeps its own


def _picture(height: int, width: int) -> np.ndarray:
    """A smooth colour gradient (H.264 keeps it within a few levels)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([255 * x / (width - 1), 255 * y / (height - 1), np.full_like(x, 128.0)], axis=-1).astype(np.uint8)


def test_image_modes_keep_the_given_frames_and_their_commands_reproduce(studio, tmp_path) -> None:
    from PIL import Image

    from text2video.io.video import read_video

    first, last = _picture(24, 40), _picture(24, 40)[::-1, ::-1]
    r = studio.generate(Request(mode="image", prompt="a circle", steps=2, seed=1, frames=5), {"first": first})[0]
    given = np.asarray(Image.open(r.settings["inputs"]["first"]))
    assert given.shape == (16, 16, 3)  # fitted to the model's size
    frames = decode(r.video)[0]
    assert frames.shape == (5, 16, 16, 3)
    gif = read_video(r.gif)[0].astype(int)  # near lossless here: 256 pixels, 255 palette colours
    assert np.abs(gif[0] - given).mean() < 1.5 < 20 < np.abs(gif[2] - given).mean()  # the first frame is the picture
    assert r.command.startswith("text2video animate ")
    assert np.array_equal(frames, decode(run_command(r.command, tmp_path / "animate")[0])[0])

    r = studio.generate(Request(mode="first_last", prompt="a circle", steps=2, seed=1, frames=5), {"first": first, "last": last})[0]
    frames = decode(r.video)[0]
    end = np.asarray(Image.open(r.settings["inputs"]["last"]))
    assert np.abs(read_video(r.gif)[0][-1].astype(int) - end).mean() < 1.5
    assert np.array_equal(frames, decode(run_command(r.command, tmp_path / "infill")[0])[0])

    clip1 = np.stack([_picture(16, 16)] * 6)
    clip2 = 255 - clip1
    results = studio.generate(Request(mode="videos", steps=4, seed=2, frames=4, num_videos=3, strength=0.5),
                              {"video1": clip1, "video2": clip2})  # fmt: skip
    assert [r.settings["weight"] for r in results] == [0.0, 0.5, 1.0]
    assert all(decode(r.video)[0].shape == (4, 16, 16, 3) for r in results)
    again = run_command(results[0].command, tmp_path / "between")
    assert len(again) == 3 and np.array_equal(decode(results[1].video)[0], decode(again[1])[0])


@pytest.mark.parametrize(
    "request_, message",
    [
        (Request(prompt="x", height=17), r"height 17 is not a multiple of 2, which tiny needs: 8 to 64 in steps of 2"),
        (Request(prompt="x", width=1000), r"width 1000 is outside what tiny takes: 8 to 64"),
        (Request(prompt="x", steps=0), r"steps 0 is outside what tiny takes: 1 to 100"),
        (Request(prompt="x", steps="2.5"), r"steps must be a whole number, got '2.5'"),
        (Request(prompt="x", sampler="fast"), r"sampler 'fast' is not one of ddpm, ddim"),
        (Request(prompt="x", guidance_scale=99), r"guidance scale 99.0 is outside what tiny takes: 0 to 30"),
        (Request(prompt="x", num_videos=9), r"number of videos 9 is outside what tiny takes: 1 to 8"),
        (Request(prompt="x", seed=-1), r"seed -1 must be between 0 and"),
        (Request(mode="image", prompt="x"), r"image mode needs first: upload it"),
        (Request(mode="first_last", frames=2), r"frames 2 leaves nothing to generate after 2 given frame\(s\)"),
        (Request(mode="videos", num_videos=1), r"between two videos, number of videos 1 must be at least 2"),
        (Request(mode="sideways"), r"unknown mode 'sideways'"),
    ],
)
def test_values_outside_the_limits_are_refused_and_nothing_is_written(studio, request_, message) -> None:
    with pytest.raises(ConfigError, match=message):
        studio.generate(request_, {})
    assert not studio.output_dir.exists() or not any(studio.output_dir.iterdir())


def test_a_short_clip_is_refused_with_the_frames_it_has(studio) -> None:
    clip = np.zeros((3, 16, 16, 3), np.uint8)
    with pytest.raises(ConfigError, match="video 1 has 3 frames; set frames to 3 or less"):
        studio.generate(Request(mode="videos", frames=4, num_videos=2), {"video1": clip, "video2": clip})


def test_cancel_stops_at_the_next_step_and_writes_nothing(studio) -> None:
    done: list[int] = []
    with pytest.raises(GenerationCancelled, match="cancelled after 3 of 8 steps; nothing was written"):
        studio.generate(Request(prompt="x", steps=8), progress=lambda d, t: done.append(d), cancelled=lambda: len(done) >= 2)
    assert done == [1, 2]
    assert not studio.output_dir.exists() or not any(studio.output_dir.iterdir())
    assert studio.recent() == []


def test_one_generation_at_a_time_on_a_device(studio) -> None:
    log: list[str] = []

    def worker(name: str) -> None:
        studio.generate(Request(prompt=name, steps=3, seed=0), progress=lambda d, t: log.append(name))

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(log) == ["a"] * 3 + ["b"] * 3
    assert log in (["a"] * 3 + ["b"] * 3, ["b"] * 3 + ["a"] * 3)  # never interleaved
    assert len(studio.recent()) == 2


# ------------------------------------------------------------------------------------------ HTTP API


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_api_generate_and_animate_with_gradio_client(studio, tmp_path, monkeypatch) -> None:
    pytest.importorskip("gradio")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from PIL import Image

    from text2video.serve.app import build_app, launch

    demo = build_app(studio)
    url, share = launch(demo, studio, port=free_port())
    try:
        assert share is None and url.startswith("http://127.0.0.1:")
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        videos, settings = client.predict(prompt="a red circle", steps=2, seed=3, num_videos=2, api_name="/generate")
        assert len(videos) == 2 and [s["seed"] for s in settings] == [3, 4]
        frames, facts = decode(Path(videos[1]))
        assert frames.shape == (4, 16, 16, 3) and facts["codec"] == "h264"
        assert np.array_equal(frames, decode(Path(settings[1]["files"]["mp4"]))[0])  # what the server wrote
        with pytest.raises(AppError, match="height 17 is not a multiple of 2"):
            client.predict(prompt="a red circle", height=17, api_name="/generate")
        Image.fromarray(_picture(16, 16)).save(tmp_path / "first.png")
        videos, settings = client.predict(image=handle_file(str(tmp_path / "first.png")), prompt="a circle", steps=2, frames=5,
                                          api_name="/animate")  # fmt: skip
        assert settings[0]["mode"] == "image" and decode(Path(videos[0]))[0].shape == (5, 16, 16, 3)
        assert len(studio.recent()) == 3
    finally:
        demo.close()
