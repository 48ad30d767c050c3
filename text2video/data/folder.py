"""`FolderVideoDataset`: every video under a folder (recursive), each with a same-stem ``.txt`` caption.

``clips/cat.gif`` is captioned by ``clips/cat.txt``. A caption file may hold several captions, one per
line; one of them is picked per item. A video without a caption file gets the empty string (counted
in the summary line, never None).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from text2video.data.buckets import Buckets
from text2video.data.files import VideoEntry, VideoFileDataset
from text2video.data.transforms import ClipSampler, SpatialTransform
from text2video.errors import DataError
from text2video.io.text import read_lines
from text2video.io.video import VIDEO_SUFFIXES


def read_captions(video: Path) -> tuple[str, ...]:
    """The non-empty lines of the same-stem ``.txt`` next to ``video`` (none when it is missing)."""
    text_file = video.with_suffix(".txt")
    if not text_file.is_file():
        return ()
    return tuple(read_lines(text_file, "caption file"))


def find_videos(root: str | Path, suffixes: Sequence[str] | None = None) -> list[Path]:
    """Video files under ``root``, recursively, sorted, hidden files and folders left out."""
    root = Path(root)
    wanted = {s.lower() if s.startswith(".") else f".{s.lower()}" for s in (suffixes or VIDEO_SUFFIXES)}
    found = [
        p
        for p in root.rglob("*")
        if p.suffix.lower() in wanted and p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(found)


class FolderVideoDataset(VideoFileDataset):
    """Captioned videos (GIF, MP4, WebM, MOV, AVI, MKV) under ``root``.

    Args:
        root: the folder, searched recursively.
        num_frames, stride: clip length and the step between its frames in the source.
        size: output frame size (int, (h, w), or None to keep the source size).
        random_clip: a random clip start (training) or always the first frame.
        crop: ``"center"`` or ``"random"``; ``hflip``: probability of a horizontal flip.
        pad: short-video policy, ``"repeat"`` the last frame or ``"loop"`` (see `transforms`).
        image_mode: one frame per item (T = 1).
        scan: probe every file now (see `text2video.data.files`).
        suffixes: limit the formats, e.g. ``["gif"]``.
        channels: 3 (RGB), 1 (grayscale) or 4 (RGBA).
        buckets: read videos of mixed shapes at their bucket's shape (`text2video.data.buckets`).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        num_frames: int = 16,
        stride: int = 1,
        size: int | tuple[int, int] | None = 64,
        random_clip: bool = True,
        crop: str = "center",
        hflip: float = 0.0,
        pad: str = "repeat",
        image_mode: bool = False,
        scan: bool = True,
        caption: str = "random",
        suffixes: Sequence[str] | None = None,
        channels: int = 3,
        buckets: Buckets | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"video folder not found: {self.root}; check the path")
        files = find_videos(self.root, suffixes)
        if not files:
            kinds = ", ".join(sorted(s.lstrip(".") for s in (suffixes or VIDEO_SUFFIXES)))
            raise DataError(f"{self.root}: no video files ({kinds}) in this folder or below it")
        entries = [VideoEntry(str(p), read_captions(p)) for p in files]
        super().__init__(
            entries,
            source=str(self.root),
            sampler=ClipSampler(num_frames, stride, random_clip, pad),
            transform=SpatialTransform(size, crop, hflip),
            image_mode=image_mode,
            scan=scan,
            caption=caption,
            channels=channels,
            buckets=buckets,
        )
