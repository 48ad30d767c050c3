"""`CsvVideoDataset`: videos listed in a CSV manifest.

Two layouts are recognised from the header:

* WebVid (``videoid,name,page_dir``, other columns ignored): the video is
  ``video_folder/page_dir/videoid.mp4`` or, when that does not exist, ``video_folder/videoid.mp4``;
  the caption is ``name``.
* Generic (``path,text[,fps]``): ``path`` relative to ``video_folder`` (default: the CSV's folder)
  or absolute; ``fps`` overrides the file's own frame rate.

Video mode (default) yields 16-frame clips, stride 4, at 256x256; image mode one random frame (T = 1).
"""

from __future__ import annotations

import csv as _csv
import io
from pathlib import Path

from text2video.data.buckets import Buckets
from text2video.data.files import VideoEntry, VideoFileDataset
from text2video.data.transforms import ClipSampler, SpatialTransform
from text2video.errors import DataError
from text2video.io.text import read_text

WEBVID_COLUMNS: tuple[str, ...] = ("videoid", "name", "page_dir")
GENERIC_COLUMNS: tuple[str, ...] = ("path", "text")
MODES: tuple[str, ...] = ("video", "image")


def read_manifest(csv_path: str | Path, video_folder: str | Path | None = None) -> list[VideoEntry]:
    """The entries a manifest lists (files are not opened here)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"CSV manifest not found: {csv_path}; check the path")
    folder = Path(video_folder) if video_folder is not None else csv_path.parent
    reader = _csv.DictReader(io.StringIO(read_text(csv_path, "CSV manifest"), newline=""))
    try:
        columns = {c.strip() for c in (reader.fieldnames or [])}
        rows = list(reader)
    except _csv.Error as exc:
        raise DataError(f"{csv_path}, line {reader.line_num}: not a valid CSV row ({exc})") from None
    if set(WEBVID_COLUMNS) <= columns:
        return [_webvid_entry(row, folder) for row in rows]
    if set(GENERIC_COLUMNS) <= columns:
        return [_generic_entry(row, folder, csv_path, n) for n, row in enumerate(rows, start=2)]
    raise DataError(
        f"{csv_path}: columns {sorted(columns)} match no known layout; use WebVid's "
        f"{','.join(WEBVID_COLUMNS)} or {','.join(GENERIC_COLUMNS)}[,fps]"
    )


def _webvid_entry(row: dict[str, str], folder: Path) -> VideoEntry:
    videoid, page_dir = row["videoid"].strip(), (row.get("page_dir") or "").strip()
    nested = folder / page_dir / f"{videoid}.mp4"
    path = nested if nested.exists() or not (folder / f"{videoid}.mp4").exists() else folder / f"{videoid}.mp4"
    return VideoEntry(str(path), _captions(row.get("name")))


def _generic_entry(row: dict[str, str], folder: Path, csv_path: Path, line: int) -> VideoEntry:
    path = Path((row.get("path") or "").strip())
    if not str(path):
        raise DataError(f"{csv_path}:{line}: empty path")
    fps_text = (row.get("fps") or "").strip()
    try:
        fps = float(fps_text) if fps_text else None
    except ValueError as exc:
        raise DataError(f"{csv_path}:{line}: fps {fps_text!r} is not a number") from exc
    if fps is not None and fps <= 0:
        raise DataError(f"{csv_path}:{line}: fps must be positive, got {fps}")
    return VideoEntry(str(path if path.is_absolute() else folder / path), _captions(row.get("text")), fps)


def _captions(text: str | None) -> tuple[str, ...]:
    text = (text or "").strip()
    return (text,) if text else ()


class CsvVideoDataset(VideoFileDataset):
    """Videos listed in a CSV manifest (see the module doc for the layouts).

    Args:
        csv_path: the manifest.
        video_folder: where the videos are (default: the CSV's folder).
        mode: ``"video"`` (clips of ``num_frames``) or ``"image"`` (one frame, T = 1).
        num_frames, stride, size: clip length, step between frames, output size (AnimateDiff: 16, 4, 256).
        random_clip, crop, hflip, pad, scan, caption, channels, buckets: as in `FolderVideoDataset`.
    """

    def __init__(
        self,
        csv_path: str | Path,
        video_folder: str | Path | None = None,
        *,
        mode: str = "video",
        num_frames: int = 16,
        stride: int = 4,
        size: int | tuple[int, int] | None = 256,
        random_clip: bool = True,
        crop: str = "center",
        hflip: float = 0.0,
        pad: str = "repeat",
        scan: bool = True,
        caption: str = "random",
        channels: int = 3,
        buckets: Buckets | None = None,
    ) -> None:
        if mode not in MODES:
            raise DataError(f"unknown CSV dataset mode {mode!r}; choose from: {', '.join(MODES)}")
        self.csv_path, self.mode = Path(csv_path), mode
        entries = read_manifest(csv_path, video_folder)
        if not entries:
            raise DataError(f"{csv_path}: the manifest lists no video")
        super().__init__(
            entries,
            source=str(self.csv_path),
            sampler=ClipSampler(num_frames, stride, random_clip, pad),
            transform=SpatialTransform(size, crop, hflip),
            image_mode=mode == "image",
            scan=scan,
            caption=caption,
            channels=channels,
            buckets=buckets,
        )
