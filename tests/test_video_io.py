"""Video IO: round trips per format, the real GIF shipped by scikit-image, seeking, errors, tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from text2video.errors import VideoReadError
from text2video.io.video import (
    frames_to_tensor,
    info,
    probe_video,
    read_video,
    tensor_to_frames,
    write_contact_sheet,
    write_video,
)

SKIMAGE_GIF = Path(__import__("skimage").__file__).parent / "data" / "no_time_for_that_tiny.gif"


def _smooth_clip(t: int = 10, h: int = 24, w: int = 32) -> np.ndarray:
    """A clip of soft gradients that lossy codecs keep well; frame t is brighter by 8 * t in red."""
    yy, xx = np.mgrid[:h, :w]
    frames = np.empty((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        frames[i, ..., 0] = np.clip(40 + 8 * i + xx * 2, 0, 255)
        frames[i, ..., 1] = np.clip(30 + yy * 4, 0, 255)
        frames[i, ..., 2] = 120
    return frames


def _brightness_clip(t: int = 30, size: int = 16) -> np.ndarray:
    """Flat frames whose gray level encodes the frame index (8 + 8 * i)."""
    return np.stack([np.full((size, size, 3), 8 + 8 * i, dtype=np.uint8) for i in range(t)])


def _decoded_index(frame: np.ndarray) -> int:
    return int(round((frame.astype(float).mean() - 8) / 8))


@pytest.mark.parametrize("suffix, max_err", [(".gif", 6.0), (".mp4", 4.0), (".webm", 5.0), (".mov", 4.0)])
def test_round_trip_keeps_frames_fps_and_pixels(tmp_path: Path, suffix: str, max_err: float) -> None:
    clip = _smooth_clip()
    path = write_video(clip, tmp_path / f"clip{suffix}", fps=8.0)
    frames, fps = read_video(path)
    assert frames.dtype == np.uint8 and frames.shape == clip.shape
    assert fps == pytest.approx(8.0, rel=1e-3)
    assert np.abs(frames.astype(int) - clip.astype(int)).mean() < max_err
    info_ = probe_video(path)
    assert (info_.num_frames, info_.height, info_.width) == (10, 24, 32)
    assert info_.fps == pytest.approx(8.0, rel=1e-3)


def test_gif_fps_that_is_not_whole_centiseconds(tmp_path: Path) -> None:
    # 24 fps = 41.67 ms per frame: the delays are spread so that their mean gives the asked rate
    path = write_video(_brightness_clip(12), tmp_path / "a.gif", fps=24.0)
    assert read_video(path)[1] == pytest.approx(24.0, rel=1e-3)
    with Image.open(path) as im:
        assert im.info.get("loop") == 0  # loops forever


def test_mp4_odd_size_is_padded_to_even(tmp_path: Path) -> None:
    clip = _smooth_clip(h=23, w=31)
    frames, _ = read_video(write_video(clip, tmp_path / "odd.mp4", fps=10))
    assert frames.shape == (10, 24, 32, 3)
    assert np.abs(frames[:, :23, :31].astype(int) - clip.astype(int)).mean() < 4.0


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".avi", ".gif", ""])
def test_seek_and_stride_return_the_right_frames(tmp_path: Path, suffix: str) -> None:
    path = write_video(_brightness_clip(30), tmp_path / f"b{suffix}", fps=24)
    frames, fps = read_video(path, start=17, num_frames=4)
    assert [_decoded_index(f) for f in frames] == [17, 18, 19, 20]
    frames, fps = read_video(path, start=10, num_frames=3, stride=7)
    assert [_decoded_index(f) for f in frames] == [10, 17, 24]
    assert fps == pytest.approx(24.0 / 7, rel=1e-3)  # playback rate of the strided clip
    frames, _ = read_video(path, start=25, num_frames=8, stride=3)  # runs past the end: returned short
    assert [_decoded_index(f) for f in frames] == [25, 28]


def test_real_gif_from_scikit_image() -> None:
    frames, fps = read_video(SKIMAGE_GIF)
    assert frames.shape == (24, 25, 14, 3) and frames.dtype == np.uint8
    # independent decode: Pillow's own RGB conversion, frame by frame
    with Image.open(SKIMAGE_GIF) as im:
        expected = []
        delays = []
        for i in range(im.n_frames):
            im.seek(i)
            expected.append(np.asarray(im.convert("RGB")))
            delays.append(im.info["duration"])
    assert np.array_equal(frames, np.stack(expected))
    assert fps == pytest.approx(1000.0 / np.mean(delays))
    assert len({f.tobytes() for f in frames}) > 1  # it is animated
    assert probe_video(SKIMAGE_GIF).num_frames == 24


def test_gif_transparency_is_composited_over_black(tmp_path: Path) -> None:
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.save(tmp_path / "t.gif", transparency=1)
    frames, _ = read_video(tmp_path / "t.gif")
    assert frames.shape == (1, 4, 4, 3)
    assert tuple(frames[0, 0, 0]) == (255, 0, 0)
    assert tuple(frames[0, 1, 1]) == (0, 0, 0)  # the transparent green is not shown


def test_frame_folder_in_natural_order(tmp_path: Path) -> None:
    clip = _brightness_clip(12)
    for i, frame in enumerate(clip):
        Image.fromarray(frame).save(tmp_path / f"f{i}.png")  # f10 must come after f9
    frames, fps = read_video(tmp_path)
    assert [_decoded_index(f) for f in frames] == list(range(12))
    assert np.array_equal(frames, clip)


def test_missing_corrupt_and_unknown_files_raise_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="nope.mp4"):
        read_video(tmp_path / "nope.mp4")
    for name in ("bad.mp4", "bad.gif", "bad.webm"):
        (tmp_path / name).write_bytes(b"this is not a video at all" * 10)
        with pytest.raises(VideoReadError, match=name):
            read_video(tmp_path / name)
        with pytest.raises(VideoReadError, match=name):
            probe_video(tmp_path / name)
    (tmp_path / "x.xyz").write_bytes(b"1")
    with pytest.raises(VideoReadError, match="unknown video format"):
        read_video(tmp_path / "x.xyz")


@pytest.mark.parametrize("suffix", [".gif", ".mp4", ".webm"])
def test_truncated_files_raise_naming_the_file(tmp_path: Path, suffix: str) -> None:
    path = write_video(_smooth_clip(), tmp_path / f"whole{suffix}", fps=8)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(VideoReadError, match=cut.name):
        read_video(cut)


def test_tensor_helpers_round_trip_and_range() -> None:
    clip = _smooth_clip()
    tensor = frames_to_tensor(clip)
    assert tensor.shape == (3, 10, 24, 32) and tensor.dtype == torch.float32
    assert tensor.min() >= -1.0 and tensor.max() <= 1.0
    assert tensor[0, 3, 5, 7].item() == pytest.approx(clip[3, 5, 7, 0] / 127.5 - 1.0)
    assert np.array_equal(tensor_to_frames(tensor), clip)
    batch = frames_to_tensor(np.stack([clip, clip[::-1]]))
    assert batch.shape == (2, 3, 10, 24, 32)
    assert np.array_equal(tensor_to_frames(batch)[1], clip[::-1])
    assert tensor_to_frames(torch.full((3, 1, 2, 2), 5.0)).max() == 255  # clamped
    with pytest.raises(ValueError):
        frames_to_tensor(clip.astype(np.float32))


def test_write_accepts_a_tensor_and_grayscale(tmp_path: Path) -> None:
    clip = _smooth_clip()
    frames, _ = read_video(write_video(frames_to_tensor(clip), tmp_path / "t", fps=8))
    assert np.array_equal(frames, clip)
    gray = clip[..., 0]
    frames, _ = read_video(write_video(gray, tmp_path / "g", fps=8))
    assert np.array_equal(frames[..., 1], gray)


def test_contact_sheet_draws_every_video(tmp_path: Path) -> None:
    videos = [_smooth_clip(t=5), _brightness_clip(t=12, size=24)]
    path = write_contact_sheet(videos, tmp_path / "sheet.png", ["first", "second"], max_frames=4)
    with Image.open(path) as sheet:
        width, height = sheet.size
        arr = np.asarray(sheet.convert("RGB"))
    # two rows of 4 tiles, each enlarged x3 (24 px -> 72 >= 64) plus caption lines and padding
    assert height >= 2 * 72 and width >= 4 * 96
    assert (arr[..., 0] > 200).any() and (arr < 50).any()  # tiles and caption text are drawn
    with pytest.raises(ValueError, match="captions"):
        write_contact_sheet(videos, tmp_path / "x.png", ["only one"])


def test_info_lists_formats() -> None:
    facts = info()["video_io"]
    assert ".gif" in facts["read"] and ".mp4" in facts["read"]
    assert ".gif" in facts["write"] and ".mp4" in facts["write"]


def test_gif_keeps_identical_consecutive_frames(tmp_path: Path) -> None:
    # Pillow merges repeated frames on save; a still clip (or a padded one) must keep its length
    still = np.concatenate([np.zeros((4, 12, 12, 3), np.uint8), np.full((3, 12, 12, 3), 200, np.uint8)])
    frames, fps = read_video(write_video(still, tmp_path / "still.gif", fps=10))
    assert frames.shape == still.shape and fps == pytest.approx(10.0)
    assert np.abs(frames.astype(int) - still.astype(int)).max() <= 1
