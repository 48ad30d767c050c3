"""File-backed datasets: folder and CSV layouts, clip sampling and padding, corrupt and empty inputs."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from text2video.data import CsvVideoDataset, FolderVideoDataset, make_dataset
from text2video.data.transforms import ClipSampler, SpatialTransform, crop, resize_short_side
from text2video.errors import ConfigError, DataError
from text2video.io.video import write_video


def _indexed_clip(t: int, h: int = 20, w: int = 28, step: int = 8) -> np.ndarray:
    """Flat frames whose gray level encodes the frame index: 8 + step * i."""
    return np.stack([np.full((h, w, 3), 8 + step * i, dtype=np.uint8) for i in range(t)])


def _indices(video: torch.Tensor, step: int = 8) -> list[int]:
    levels = (video.mean(dim=(0, 2, 3)) + 1) * 127.5
    return [int(round((v.item() - 8) / step)) for v in levels]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    write_video(_indexed_clip(12), root / "a.gif", fps=8)
    (root / "a.txt").write_text("a gray fade\n")
    write_video(_indexed_clip(20), root / "sub" / "b.mp4", fps=10)
    (root / "sub" / "b.txt").write_text("first caption\nsecond caption\n")
    write_video(_indexed_clip(3), root / "short.gif", fps=8)  # no caption, shorter than a clip
    return root


def test_folder_items_shapes_captions_and_fps(folder: Path) -> None:
    ds = FolderVideoDataset(folder, num_frames=4, stride=2, size=16, random_clip=False, caption="first")
    assert len(ds) == 3 and ds.missing_captions == 1
    items = {Path(it["path"]).name: it for it in (ds[i] for i in range(len(ds)))}
    assert set(items) == {"a.gif", "b.mp4", "short.gif"}
    for item in items.values():
        assert item["video"].shape == (3, 4, 16, 16)
        assert item["video"].min() >= -1 and item["video"].max() <= 1
    assert items["a.gif"]["text"] == "a gray fade" and items["short.gif"]["text"] == ""
    assert items["b.mp4"]["text"] == "first caption"
    assert _indices(items["a.gif"]["video"]) == [0, 2, 4, 6]
    assert _indices(items["b.mp4"]["video"]) == [0, 2, 4, 6]
    assert items["a.gif"]["fps"] == pytest.approx(4.0)  # 8 fps, every 2nd frame
    assert items["b.mp4"]["fps"] == pytest.approx(5.0)


@pytest.mark.parametrize("pad, expected", [("repeat", [0, 2, 2, 2, 2]), ("loop", [0, 2, 0, 2, 0])])
def test_short_video_padding_policy(folder: Path, pad: str, expected: list[int]) -> None:
    ds = FolderVideoDataset(folder, num_frames=5, stride=2, size=None, random_clip=False, pad=pad, suffixes=["gif"])
    item = next(ds[i] for i in range(len(ds)) if ds[i]["path"].endswith("short.gif"))
    assert _indices(item["video"]) == expected


def test_random_clips_stay_inside_and_follow_the_stride(folder: Path) -> None:
    ds = FolderVideoDataset(folder, num_frames=4, stride=3, size=None, suffixes=["mp4"])
    starts = set()
    for _ in range(12):
        got = _indices(ds[0]["video"])
        assert np.all(np.diff(got) == 3) and got[-1] <= 19
        starts.add(got[0])
    assert len(starts) > 1  # random starts


def test_sampler_and_spatial_transform_directly() -> None:
    sampler = ClipSampler(num_frames=4, stride=2, random_start=False, pad="loop")
    assert sampler.indices(5).tolist() == [0, 2, 4, 0]
    assert ClipSampler(num_frames=3, stride=1, random_start=False).indices(10).tolist() == [0, 1, 2]
    video = torch.linspace(-1, 1, 40 * 60).view(1, 1, 40, 60).repeat(3, 2, 1, 1)
    resized = resize_short_side(video, (20, 20))
    assert resized.shape == (3, 2, 20, 30)
    assert crop(resized, (20, 20)).shape == (3, 2, 20, 20)
    flipped = SpatialTransform(size=None, hflip=1.0)(video)
    assert torch.equal(flipped, video.flip(-1))
    with pytest.raises(ConfigError, match="pad policy"):
        ClipSampler(pad="black")


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_batches_with_workers(folder: Path, workers: int) -> None:
    ds = FolderVideoDataset(folder, num_frames=4, size=16)
    loader = DataLoader(ds, batch_size=3, num_workers=workers)
    batch = next(iter(loader))
    assert batch["video"].shape == (3, 3, 4, 16, 16)
    assert len(batch["text"]) == 3 and all(isinstance(t, str) for t in batch["text"])
    assert batch["fps"].shape == (3,)


def test_corrupt_files_are_skipped_counted_and_reported(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    (folder / "broken.mp4").write_bytes(b"not a video" * 50)
    good = (folder / "a.gif").read_bytes()
    (folder / "cut.gif").write_bytes(good[: len(good) // 2])
    with caplog.at_level(logging.INFO, logger="text2video"):
        ds = FolderVideoDataset(folder, num_frames=4, size=16)
    assert len(ds) == 3 and len(ds.unreadable) == 2
    summary = [r.getMessage() for r in caplog.records if "unreadable skipped" in r.getMessage()]
    assert len(summary) == 1 and "broken.mp4" in summary[0] and "cut.gif" in summary[0]


def test_unscanned_dataset_skips_a_file_that_fails_later(folder: Path) -> None:
    ds = FolderVideoDataset(folder, num_frames=4, size=16, scan=False, suffixes=["gif"])
    first = ds.entries[0].path
    Path(ds.entries[1].path).write_bytes(b"broken later")  # short.gif breaks after the build
    items = [ds[i] for i in range(len(ds))]
    assert all(it["path"] != ds.entries[1].path for it in items) and items[0]["path"] == first
    assert len(ds.failed) == 1 and "1 unreadable skipped" in ds.summary()


def test_empty_missing_and_all_broken_folders_fail_naming_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        FolderVideoDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        FolderVideoDataset(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.gif").write_bytes(b"GIF89a garbage")
    with pytest.raises(DataError, match="broken: none of 1"):
        FolderVideoDataset(broken)
    with pytest.raises(DataError, match="broken: none of 1"):
        FolderVideoDataset(broken, scan=False)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_csv_webvid_layout_video_and_image_mode(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    write_video(_indexed_clip(70, 40, 60, step=3), videos / "001" / "11.mp4", fps=25)  # page_dir layout
    write_video(_indexed_clip(30, 40, 60, step=3), videos / "12.mp4", fps=25)  # flat layout
    manifest = _write_csv(
        tmp_path / "webvid.csv",
        ["videoid", "contentUrl", "duration", "page_dir", "name"],
        [["11", "u", "PT00H00M03S", "001", "waves at sunset"], ["12", "u", "PT1S", "002", "a cat"]],
    )
    ds = CsvVideoDataset(manifest, videos, size=32)
    item = ds[0]
    assert item["video"].shape == (3, 16, 32, 32) and item["text"] == "waves at sunset"
    assert np.all(np.diff(_indices(item["video"], step=3)) == 4)  # AnimateDiff: 16 frames, stride 4
    assert item["fps"] == pytest.approx(25 / 4)
    short = ds[1]["video"]  # 30 frames < 61: padded by repeating its last frame
    assert short.shape == (3, 16, 32, 32) and _indices(short, 3)[-1] == _indices(short, 3)[-2]
    images = CsvVideoDataset(manifest, videos, mode="image", size=32)
    batch = next(iter(DataLoader(images, batch_size=2)))
    assert batch["video"].shape == (2, 3, 1, 32, 32)
    assert batch["text"] == ["waves at sunset", "a cat"]


def test_csv_generic_layout_with_fps_and_missing_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_video(_indexed_clip(10), tmp_path / "clips" / "x.gif", fps=8)
    manifest = _write_csv(
        tmp_path / "list.csv",
        ["path", "text", "fps"],
        [["clips/x.gif", "an x", "12"], ["clips/missing.mp4", "gone", ""]],
    )
    with caplog.at_level(logging.INFO, logger="text2video"):
        ds = CsvVideoDataset(manifest, num_frames=4, stride=1, size=16, random_clip=False)
    assert len(ds) == 1 and "missing.mp4" in ds.summary()
    item = ds[0]
    assert item["video"].shape == (3, 4, 16, 16) and item["text"] == "an x" and item["fps"] == 12.0
    bad = _write_csv(tmp_path / "bad.csv", ["file", "caption"], [["a", "b"]])
    with pytest.raises(DataError, match="no known layout"):
        CsvVideoDataset(bad)


def test_make_dataset_dispatches_and_rejects_unknown(folder: Path) -> None:
    assert isinstance(make_dataset("folder", root=folder, num_frames=2, size=8), FolderVideoDataset)
    assert make_dataset("shapes", n=3)[0]["video"].shape[0] == 3
    assert make_dataset("digits", n=2, num_frames=4)[1]["video"].shape == (3, 4, 32, 32)
    with pytest.raises(ConfigError, match="unknown dataset kind"):
        make_dataset("webdataset")
    with pytest.raises(ConfigError, match="shapes"):
        make_dataset("shapes", colour_count=3)
