"""The seeds' own names and flows through `text2video.compat` and the core: AnimateDiff's WebVid10M,
DiffusionPlayground's VideoGenerator, text2video-from-scratch's configs/default.yaml and generate.py flags,
the Open-Sora document's SegDiT / DiffuserSTDiT arguments, image-to-video for every family's tiny preset."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_runs import TINY, train_tiny

from text2video.cli import main
from text2video.compat import KEY_MAP, VideoGenerator, WebVid10M, migrate, migrate_file
from text2video.config import load_config, preset_names
from text2video.errors import ConfigError
from text2video.io.video import probe_video, read_video, write_video
from text2video.pipelines import VideoOutput, load_pipeline

#: text2video-from-scratch's configs/default.yaml (its settings, shipped as an example)
SEED_DEFAULT_YAML = (Path(__file__).parents[1] / "examples" / "text2video-from-scratch.yaml").read_text()


# ------------------------------------------------------------------------------ AnimateDiff: WebVid10M


def _webvid(tmp_path: Path) -> tuple[Path, Path]:
    """Two WebVid videos whose left half is dark and right half bright."""
    videos = tmp_path / "videos"
    frames = np.zeros((20, 24, 32, 3), dtype=np.uint8)
    frames[:, :, 16:] = 220
    write_video(frames, videos / "001" / "11.mp4", fps=25)
    write_video(frames, videos / "12.mp4", fps=25)
    manifest = tmp_path / "results_2M_train.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
        writer.writerows([["11", "u", "PT1S", "001", "waves at sunset"], ["12", "u", "PT1S", "002", "a cat"]])
    return manifest, videos


def test_webvid10m_keeps_animatediffs_contract(tmp_path: Path) -> None:
    manifest, videos = _webvid(tmp_path)
    dataset = WebVid10M(csv_path=manifest, video_folder=videos, sample_size=16, sample_stride=2, sample_n_frames=4, is_image=False)
    item = dataset[0]
    assert set(item) == {"pixel_values", "text"} and item["text"] == "waves at sunset"
    assert item["pixel_values"].shape == (4, 3, 16, 16) and item["pixel_values"].min() >= -1 and item["pixel_values"].max() <= 1
    images = WebVid10M(manifest, videos, sample_size=(16, 20), is_image=True)
    assert images[1]["pixel_values"].shape == (3, 16, 20) and images[1]["text"] == "a cat"
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["pixel_values"].shape == (2, 4, 3, 16, 16) and batch["text"] == ["waves at sunset", "a cat"]
    right_bright = []
    torch.manual_seed(0)
    for _ in range(16):  # AnimateDiff's RandomHorizontalFlip: half of the reads are mirrored
        pixels = dataset[0]["pixel_values"]
        right_bright.append(bool(pixels[..., 12:].mean() > pixels[..., :4].mean()))
    assert 0 < sum(right_bright) < 16
    never = WebVid10M(manifest, videos, sample_size=16, sample_n_frames=4, hflip=0.0)
    assert all(never[0]["pixel_values"][..., 12:].mean() > never[0]["pixel_values"][..., :4].mean() for _ in range(4))


# ------------------------------------------------------------------------------ DiffusionPlayground


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """DiffusionPlayground's training: epochs (its ``num_epochs``) and the best model kept by a validation loss."""
    return train_tiny(tmp_path_factory.mktemp("compat") / "run", "data.val_split=2", "train.val_every=1", "train.epochs=1")


def test_video_generator_generates_and_interpolates_on_one_object(run: Path, tmp_path: Path) -> None:
    from text2video.runs.checkpoint import read_state, resolve_checkpoint

    assert read_state(resolve_checkpoint("latest", run))["step"] == 3  # one epoch: 6 of 8 clips (2 held out) in batches of 2
    generator = VideoGenerator(run, device="cpu")
    assert generator.pipeline.model is generator.interpolator.model  # one set of weights
    best = load_pipeline(run, checkpoint="best")  # DiffusionPlayground loads its best model
    for name, weight in best.model.state_dict().items():
        assert torch.equal(generator.pipeline.model.state_dict()[name], weight)
    videos = generator.generate(num_samples=2, num_frames=4, height=16, width=24, num_steps=2)
    assert isinstance(videos, VideoOutput) and videos.videos.shape == (2, 3, 4, 16, 24)
    paths = videos.save(tmp_path / "generated", fmt="mp4")
    assert [probe_video(p).num_frames for p in paths] == [4, 4] and all(p.suffix == ".mp4" for p in paths)
    video1, video2 = torch.rand(1, 3, 4, 16, 16) * 2 - 1, torch.rand(1, 3, 4, 16, 16) * 2 - 1
    between = generator.interpolate(video1, video2, num_steps=2, num_interp_frames=3)
    assert between.videos.shape == (3, 3, 4, 16, 16)
    assert between.save(tmp_path / "between.mp4" if len(between) == 1 else tmp_path / "between", fmt="mp4")[2].suffix == ".mp4"


# ------------------------------------------------------------------------------ text2video-from-scratch


def test_the_seeds_default_yaml_migrates_to_the_preset_with_every_key_named(tmp_path: Path) -> None:
    migration = migrate(yaml.safe_load(SEED_DEFAULT_YAML))
    ours = migration.config().to_dict()
    assert ours == load_config("text2video-from-scratch").to_dict()  # the preset is the seed's file, fixed
    text = "\n".join(migration.notes)
    for key in yaml.safe_load(SEED_DEFAULT_YAML)["trainer"]:
        assert f"trainer.{key}:" in text
    assert "diffusion.timesteps: 10 -> diffusion.num_train_timesteps: 1000 (changed on purpose" in text
    assert "trainer.train_lr: 0.0001 -> train.lr: 0.0001" in text and migration.run_dir == "./saved_models"
    changed = migrate({"diffusion": {"timesteps": 200, "use_dynamic_thres": True, "dynamic_thres_percentile": 0.8, "channels": 1},
                       "model": {"use_bert_text_cond": False}, "trainer": {"amp": True}}).config()  # fmt: skip
    assert changed.diffusion.kwargs["num_train_timesteps"] == 200  # only the seed's default of 10 is changed
    assert (changed.sample.dynamic_threshold, changed.data.channels, changed.text.encoder, changed.train.mixed_precision) == (
        0.8, 1, "none", "fp16"
    )  # fmt: skip
    assert set(KEY_MAP) >= {f"trainer.{k}" for k in yaml.safe_load(SEED_DEFAULT_YAML)["trainer"]}
    with pytest.raises(ConfigError, match="unknown text2video-from-scratch setting 'trainer.train_lrate'"):
        migrate({"trainer": {"train_lrate": 1e-4}})
    ours_file = tmp_path / "ours.yaml"
    ours_file.write_text(load_config("tiny-cpu").to_yaml())
    with pytest.raises(ConfigError, match="needs no migration"):
        migrate_file(ours_file)


def test_train_takes_the_seeds_config_and_config_migrate_writes_the_new_one(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    write_video(np.zeros((5, 16, 16, 3), np.uint8), tmp_path / "training_data" / "a.gif", fps=8)
    (tmp_path / "training_data" / "a.txt").write_text("news reporter talking\n")
    write_video(np.full((5, 16, 16, 3), 90, np.uint8), tmp_path / "training_data" / "b.gif", fps=8)
    (tmp_path / "training_data" / "b.txt").write_text("a cat is dancing\n")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text(SEED_DEFAULT_YAML)
    small = ["train.steps=1", "data.size=16", "model.dim=8", "model.dim_mults=[1, 2]", "model.attn_heads=1", "model.attn_dim_head=8",
             "sample.steps=2", "text.cache=false"]  # fmt: skip
    assert main(["train", "--config", "configs/default.yaml", *small, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "text2video-from-scratch config" in err and "trainer.train_batch_size: 2 -> train.batch_size: 2" in err
    assert (tmp_path / "saved_models" / "config.yaml").is_file()  # the seed's results_folder is the run folder
    assert load_pipeline(tmp_path / "saved_models")("a cat is dancing", steps=2, progress=False).videos.shape == (1, 3, 5, 16, 16)
    assert main(["config", "migrate", "configs/default.yaml", "--out", "configs/text2video.yaml"]) == 0
    assert "train.lr" in capsys.readouterr().err
    written = (tmp_path / "configs" / "text2video.yaml").read_text()
    assert written.startswith("# migrated from a text2video-from-scratch config")
    assert load_config(tmp_path / "configs" / "text2video.yaml").to_dict() == migrate_file("configs/default.yaml").config().to_dict()
    assert main(["config", "migrate", "configs/default.yaml", "--out", "configs/text2video.yaml"]) == 2  # no silent overwrite
    assert "--force" in capsys.readouterr().err


def test_the_old_preset_name_still_loads_with_a_note(caplog: pytest.LogCaptureFixture, capsys) -> None:
    with caplog.at_level(logging.WARNING, logger="text2video.config"):
        assert load_config("seed-001").to_dict() == load_config("text2video-from-scratch").to_dict()
    assert "now called 'text2video-from-scratch'" in caplog.text
    assert "seed-001" not in preset_names()
    assert main(["config", "presets"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in preset_names()) and "seed-001 (the old name of text2video-from-scratch)" in listed


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> Path:
    """text2video-from-scratch's results folder: model-2.pt and model-10.pt (the newest; lexically the first)."""
    from text2video.models.convert.video_diffusion_pytorch import import_original_package

    pytest.importorskip("rotary_embedding_torch")
    vdp = import_original_package()
    folder = tmp_path_factory.mktemp("seed001") / "saved_models"
    folder.mkdir()
    for step in (2, 10):
        torch.manual_seed(step)
        unet = vdp.Unet3D(dim=8, cond_dim=16, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8).eval()
        state = vdp.GaussianDiffusion(unet, image_size=8, num_frames=3, timesteps=100).state_dict()
        torch.save({"step": step, "model": state, "ema": state, "scaler": {}}, folder / f"model-{step}.pt")
    return folder


def test_generate_model_path_takes_the_seeds_checkpoints(saved_models: Path, tmp_path: Path, capsys) -> None:
    from text_models import save_tiny_bert

    from text2video.pipelines.pretrained import detect_model

    assert detect_model(saved_models).path.name == "model-10.pt"
    flags = ["generate", "--text", "news reporter talking", "--cond_scale", "2", "--batch_size", "2", "--output_dir", str(tmp_path / "results"),
             "--steps", "2", "--frames", "3", "--size", "8"]  # fmt: skip
    assert main([*flags, "--model_path", str(saved_models / "model-2.pt")]) == 2
    assert "--text-encoder DIR" in capsys.readouterr().err  # a clear message asking for the BERT it was trained with
    save_tiny_bert(tmp_path / "bert16")
    assert main([*flags, "--model_path", str(saved_models), "--text-encoder", str(tmp_path / "bert16")]) == 0
    written = sorted((tmp_path / "results").glob("*.gif"))
    assert len(written) == 2 and read_video(written[0])[0].shape == (3, 8, 8, 3)


# ------------------------------------------------------------------------------ the Open-Sora document


def test_segdit_takes_segmentation_with_the_documents_channel_count() -> None:
    from text2video.diffusion.conditioning import Conditioning
    from text2video.models.segdit import SegDiTTransformer2DModel

    torch.manual_seed(0)
    model = SegDiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=3, num_layers=1,
                                     sample_size=8, patch_size=2, num_embeds_ada_norm=5).eval()  # fmt: skip
    with torch.no_grad():  # DiT starts at exactly zero output (adaLN-Zero): give it weights
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    image, segmentation = torch.randn(2, 3, 8, 8), torch.randn(2, 1, 8, 8)  # in_channels counts image + map, as documented
    with torch.no_grad():
        with_map = model(image, timestep=torch.tensor([10, 500]), class_labels=torch.tensor([1, 2]), segmentation=segmentation).sample
        without = model(image, timestep=torch.tensor([10, 500]), class_labels=torch.tensor([1, 2])).sample
        zeros = model(
            image, timestep=torch.tensor([10, 500]), class_labels=torch.tensor([1, 2]), segmentation=torch.zeros(2, 1, 8, 8)
        ).sample
        video = model.forward_cond(torch.randn(2, 3, 2, 8, 8), torch.tensor([10, 500]), Conditioning(segmentation=segmentation))
    assert with_map.shape == (2, 3, 8, 8) and not torch.allclose(with_map, without) and torch.equal(without, zeros)
    assert video.shape == (2, 3, 2, 8, 8)
    with pytest.raises(Exception, match="in_channels = image \\+ segmentation"):
        model(image, timestep=10, segmentation=torch.randn(2, 2, 8, 8))


def test_diffuser_stdit_takes_its_cross_attention_width() -> None:
    from text2video.models.stdit import DiffuserSTDiT

    torch.manual_seed(0)
    model = DiffuserSTDiT(input_size=(2, 8, 8), in_channels=4, out_channels=4, hidden_size=16, depth=1, num_heads=2,
                          cross_attention_dim=24, model_max_length=4).eval()  # fmt: skip
    assert model.model.config.caption_channels == 24 and model.config.cross_attention_dim == 24
    out = model(torch.randn(2, 4, 2, 8, 8), torch.tensor([1, 2]), encoder_hidden_states=torch.randn(2, 1, 24)).sample
    assert out.shape == (2, 4, 2, 8, 8)
    config = load_config("tiny-stdit", ["model.name=diffuser_stdit", "model.cross_attention_dim=384"])
    from text2video.runs.build import configured_model_kwargs

    assert configured_model_kwargs(config, 384)[2]["cross_attention_dim"] == 384  # the text width checked under its own name
    with pytest.raises(Exception, match="model.cross_attention_dim"):
        configured_model_kwargs(load_config("tiny-stdit", ["model.name=diffuser_stdit", "model.cross_attention_dim=768"]), 384)


#: every family's tiny preset, shrunk to seconds
FAMILIES = {
    "tiny-cpu": TINY,
    "tiny-stdit": ["model.input_size=[4, 16, 16]", "model.hidden_size=16", "model.depth=1", "model.num_heads=2"],
    "tiny-unet-stic": [
        "model.sample_size=16",
        "model.block_out_channels=[8, 16]",
        "model.attention_head_dim=8",
        "model.norm_num_groups=4",
        "model.num_frames=4",
    ],  # fmt: skip
    "tiny-segdit": ["model.num_attention_heads=2", "model.attention_head_dim=8", "model.num_layers=1", "model.sample_size=16"],
    "tiny-latent": [
        "latent.vae=null",
        "latent.fit_steps=0",
        "latent.cache=false",
        "model.block_out_channels=[8, 16]",
        "model.norm_num_groups=4",
        "model.motion_norm_num_groups=4",
        "model.cross_attention_dim=384",
    ],  # fmt: skip
}
COMMON = ["train.steps=1", "train.batch_size=2", "train.save_every=0", "train.warmup_steps=0", "text.cache=false", "data.options.n=4",
          "data.size=16", "data.num_frames=4", "sample.steps=2", "diffusion.frame_mask_prob=0.5"]  # fmt: skip


@pytest.mark.parametrize("preset", list(FAMILIES))
def test_every_familys_tiny_preset_animates_when_trained_with_frame_masks(preset: str, tmp_path: Path) -> None:
    run = train_tiny(tmp_path / "run", *FAMILIES[preset], config=preset, base=COMMON)
    frames = read_video(write_video(np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8), tmp_path / "first.png"))[0]
    pipe = load_pipeline(run, "ImageToVideoPipeline")
    out = pipe(frames, "a red circle moving left", steps=2, seed=0, progress=False)
    assert out.videos.shape == (1, 3, 4, 16, 16)
    given = torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(out.videos[0, :, 0], given, atol=1e-5)  # the given frame is kept
    if preset == "tiny-stdit":  # a model that takes cond_image got the frames and their mask as input channels
        assert pipe.model.config.in_channels == 7
    if preset == "tiny-cpu":  # and through the commands, at the frame rate asked for (VideoCrafter's fps)
        assert main(["animate", str(tmp_path / "first.png"), "--prompt", "a red circle", "--model", str(run), "--steps", "2",
                     "--fps", "5", "--format", "mp4", "--output-dir", str(tmp_path / "animated")]) == 0  # fmt: skip
        assert (tmp_path / "animated" / "000_a_red_circle.txt").read_text().strip() == "a red circle"
        assert probe_video(next((tmp_path / "animated").glob("*.mp4"))).fps == pytest.approx(5.0)
        assert main(["interpolate", "--first", str(tmp_path / "first.png"), "--last", str(tmp_path / "first.png"), "--model", str(run),
                     "--steps", "2", "--fps", "3", "--format", "mp4", "--output-dir", str(tmp_path / "between")]) == 0  # fmt: skip
        assert probe_video(next((tmp_path / "between").glob("*.mp4"))).fps == pytest.approx(3.0)


# ------------------------------------------------------------------------------ the README


def test_the_readme_lists_every_preset() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    line = re.search(r"^Presets\b(.+?)\.\s", readme, flags=re.M | re.S)
    assert line is not None
    listed = set(re.findall(r"`([a-z0-9-]+)`", line.group(1)))
    assert listed == set(preset_names())
