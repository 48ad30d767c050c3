"""Grayscale (1) and RGBA (4) channel videos: read and written as such, datasets, and a model trained on them
(text2video-from-scratch's ``channels`` 1 / 3 / 4, its CHANNELS_TO_MODE)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_runs import train_tiny

from text2video.data import FolderVideoDataset, ShapesDataset
from text2video.io.video import probe_video, read_video, write_video
from text2video.pipelines import load_pipeline


def _gray(t: int = 4, h: int = 12, w: int = 10) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (t, h, w, 1), dtype=np.uint8)


def _rgba(t: int = 4, h: int = 12, w: int = 10) -> np.ndarray:
    """Random colours; alpha either 0 or 255 (GIF holds one bit of it); frame 1 repeats frame 0."""
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (t, h, w, 4), dtype=np.uint8)
    frames[..., 3] = np.where(frames[..., 3] > 100, 255, 0)
    frames[1] = frames[0]
    return frames


@pytest.mark.parametrize("suffix", [".gif", ""])
def test_gray_and_rgba_round_trip_with_their_channels(tmp_path: Path, suffix: str) -> None:
    gray, rgba = _gray(), _rgba()
    back, fps = read_video(write_video(gray, tmp_path / f"gray{suffix}", fps=5), channels=1)
    assert back.shape == gray.shape and fps == pytest.approx(5.0)
    assert np.array_equal(back, gray)  # 256 gray levels fit the palette; frame folders are lossless
    back = read_video(write_video(rgba, tmp_path / f"rgba{suffix}", fps=5), channels=4)[0]
    assert back.shape == rgba.shape  # the repeated frame is kept, not merged
    assert np.array_equal(back[..., 3], rgba[..., 3])
    opaque = rgba[..., 3] == 255
    if suffix == "":  # PNG frames keep every colour
        assert np.array_equal(back, rgba)
    else:  # a GIF's palette: colours close, transparency exact
        assert np.abs(back[..., :3].astype(int) - rgba[..., :3].astype(int))[opaque].mean() < 30


def test_channels_on_read_convert_any_file(tmp_path: Path) -> None:
    rgb = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    path = write_video(rgb, tmp_path / "rgb", fps=8)
    gray = read_video(path, channels=1)[0]
    assert gray.shape == (2, 4, 4, 1)
    assert int(gray[0, 0, 0, 0]) == round(200 * 0.299 + 100 * 0.587 + 50 * 0.114)  # ITU-R 601 luma
    rgba = read_video(path, channels=4)[0]
    assert rgba.shape == (2, 4, 4, 4) and np.all(rgba[..., 3] == 255) and np.array_equal(rgba[..., :3], rgb)
    mp4 = write_video(_gray(h=16, w=16), tmp_path / "gray.mp4", fps=8)
    assert read_video(mp4, channels=1)[0].shape == (4, 16, 16, 1)
    with pytest.raises(ValueError, match="channels must be 1"):
        read_video(path, channels=2)


def test_rgba_to_mp4_warns_that_alpha_is_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="text2video.io.video"):
        write_video(_rgba(h=16, w=16), tmp_path / "a.mp4", fps=8)
    assert "no alpha channel" in caplog.text


def test_one_frame_writes_a_png_image_and_more_frames_say_how(tmp_path: Path) -> None:
    frames = np.random.default_rng(2).integers(0, 256, (3, 8, 6, 3), dtype=np.uint8)
    path = write_video(frames[:1], tmp_path / "first.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (6, 8)
    assert np.array_equal(read_video(path)[0], frames[:1])
    assert probe_video(path).num_frames == 1
    gray_png = write_video(_gray(t=1), tmp_path / "gray.png")
    with Image.open(gray_png) as image:
        assert image.mode == "L"
    with pytest.raises(ValueError, match="one frame"):
        write_video(frames, tmp_path / "three.png")


def test_datasets_read_and_make_the_asked_channels(tmp_path: Path) -> None:
    shapes = ShapesDataset(n=2, num_frames=3, size=16, channels=4, background="gray")
    item = shapes[0]
    assert item["video"].shape == (4, 3, 16, 16)
    alpha = (item["video"][3] + 1) / 2
    assert alpha.max() == 1.0 and alpha.min() == 0.0  # the shape opaque, the background transparent
    rgba_frames = shapes.render(0).frames
    gray_item = ShapesDataset(n=2, num_frames=3, size=16, channels=1, background="gray")[0]
    assert gray_item["video"].shape == (1, 3, 16, 16)
    write_video(rgba_frames, tmp_path / "clips" / "a.gif", fps=8)
    (tmp_path / "clips" / "a.txt").write_text("a shape\n")
    folder = FolderVideoDataset(tmp_path / "clips", num_frames=3, size=16, channels=4)
    video = folder[0]["video"]
    assert video.shape == (4, 3, 16, 16)
    assert torch.equal(video[3] > 0, torch.from_numpy(rgba_frames[..., 3] >= 128)[None].squeeze(0))


@pytest.mark.parametrize("channels", [1, 4])
def test_a_model_trained_on_gray_or_rgba_videos_makes_and_writes_them(tmp_path: Path, channels: int) -> None:
    run = train_tiny(tmp_path / "run", f"data.channels={channels}")
    pipe = load_pipeline(run)
    assert pipe.model.config.channels == channels and pipe.defaults.channels == channels
    out = pipe("a red circle moving left", steps=2, seed=0, progress=False)
    assert out.videos.shape[1] == channels
    path = out.save(tmp_path / "samples")[0]
    back = read_video(path, channels=channels)[0]
    assert back.shape == (4, 16, 16, channels)
    if channels == 1:
        assert np.array_equal(back, out.frames(0))
    else:
        assert np.array_equal(back[..., 3] >= 128, out.frames(0)[..., 3] >= 128)
