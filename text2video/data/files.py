"""The common core of datasets backed by video files (a folder, a CSV manifest).

Unreadable files never stop training. With ``scan=True`` every file is probed once when the dataset
is built: unreadable ones are dropped, counted and reported in one summary log line. With
``scan=False`` (huge manifests) only the first readable file is looked for up front; a file that fails
later is skipped in favour of the next item, counted, and logged once. A dataset with no readable
file fails at once with a `DataError` naming its source.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset

from text2video.data.buckets import Bucket, Buckets
from text2video.data.transforms import ClipSampler, SpatialTransform, item_rng
from text2video.errors import DataError, VideoReadError
from text2video.io.video import AV_SUFFIXES, frames_to_tensor, probe_video, read_video

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoEntry:
    """One file of a dataset: its captions (one is picked per item), an fps override, its length."""

    path: str
    captions: tuple[str, ...] = ()
    fps: float | None = None
    num_frames: int | None = None  # known after a scan, with the frame size
    height: int | None = None
    width: int | None = None


class VideoFileDataset(Dataset):
    """Items ``{"video": (C, T, H, W) in [-1, 1], "text", "fps", "path"}`` from a list of entries.

    Args:
        entries: the files and their captions.
        source: what the entries came from (a folder, a CSV), named in messages.
        sampler: which frames make a clip (`ClipSampler`); ignored in image mode.
        transform: resize / crop / flip (`SpatialTransform`).
        image_mode: one frame per item (T = 1), random unless the sampler's ``random_start`` is False.
        scan: probe every file now (exact counts, one summary line) or only until a readable one.
        caption: ``"random"`` picks one of a file's captions per item, ``"first"`` always the first.
        channels: 3 (RGB), 1 (grayscale) or 4 (RGBA: the files' alpha, opaque where they have none).
        buckets: mixed shapes (`text2video.data.buckets`): each video is read at its bucket's clip length and
            resolution instead of the sampler's and the transform's (needs ``scan``).
    """

    def __init__(
        self,
        entries: Sequence[VideoEntry],
        *,
        source: str,
        sampler: ClipSampler,
        transform: SpatialTransform,
        image_mode: bool = False,
        scan: bool = True,
        caption: str = "random",
        channels: int = 3,
        buckets: Buckets | None = None,
    ) -> None:
        if buckets is not None and not scan:
            raise DataError(f"{source}: buckets need every video's shape up front; build the dataset with scan=True")
        if caption not in ("random", "first"):
            raise DataError(f"unknown caption choice {caption!r}; choose 'random' or 'first'")
        if channels not in (1, 3, 4):
            raise DataError(f"channels = {channels!r}: choose 1 (grayscale), 3 (RGB) or 4 (RGBA)")
        self.channels = channels
        self.buckets = buckets
        self.source, self.sampler, self.transform = source, sampler, transform
        self.image_mode, self.caption = image_mode, caption
        self.unreadable: list[tuple[str, str]] = []  # (path, reason) found by the scan
        self.failed: set[str] = set()  # paths that failed while loading, in this process
        if not entries:
            raise DataError(f"{source}: no video files found; check the path and the supported formats")
        self.entries = self._scan(list(entries)) if scan else self._first_readable(list(entries))
        self.missing_captions = sum(1 for e in self.entries if not any(c.strip() for c in e.captions))
        logger.info("%s", self.summary())
        if buckets is not None:
            counts: dict[Bucket, int] = {}
            for key in self.bucket_keys() or []:
                counts[key] = counts.get(key, 0) + 1
            logger.info("%s: buckets %s", source, ", ".join(f"{key}: {n}" for key, n in sorted(counts.items())))

    # ---------------------------------------------------------------------------------- scanning

    def _probe(self, entry: VideoEntry) -> VideoEntry | None:
        try:
            info = probe_video(entry.path)
            return replace(entry, num_frames=info.num_frames, height=info.height, width=info.width)
        except VideoReadError as exc:
            self.unreadable.append((entry.path, str(exc)))
            return None

    def _scan(self, entries: list[VideoEntry]) -> list[VideoEntry]:
        good = [e for e in (self._probe(e) for e in entries) if e is not None and e.num_frames]
        if not good:
            self._fail(len(entries))
        return good

    def _first_readable(self, entries: list[VideoEntry]) -> list[VideoEntry]:
        for i, entry in enumerate(entries):
            probed = self._probe(entry)
            if probed is not None and probed.num_frames:
                return [probed] + entries[i + 1 :]  # the ones before it are unreadable
        self._fail(len(entries))
        return []  # unreachable

    def _fail(self, total: int) -> None:
        examples = "; ".join(f"{Path(p).name}: {r}" for p, r in self.unreadable[:3])
        raise DataError(f"{self.source}: none of {total} video files is readable ({examples}); fix or replace them")

    def summary(self) -> str:
        """One line: readable items, unreadable files skipped, missing captions."""
        line = f"{self.source}: {len(self.entries)} videos"
        skipped = len(self.unreadable) + len(self.failed)
        if skipped:
            names = ", ".join(Path(p).name for p in [*(p for p, _ in self.unreadable), *sorted(self.failed)][:5])
            line += f", {skipped} unreadable skipped ({names}{', ...' if skipped > 5 else ''})"
        if self.missing_captions:
            line += f", {self.missing_captions} without caption (empty text)"
        return line

    # ----------------------------------------------------------------------------------- loading

    def __len__(self) -> int:
        return len(self.entries)

    def bucket_of(self, entry: VideoEntry) -> Bucket:
        """The bucket (clip length and resolution) ``entry`` is read at."""
        if self.buckets is None:
            raise DataError(f"{self.source}: this dataset has no buckets")
        bucket = self.buckets.assign(entry.height or 1, entry.width or 1, entry.num_frames or 1, self.sampler.stride)
        return replace(bucket, frames=1) if self.image_mode else bucket

    def bucket_keys(self) -> list[Bucket] | None:
        """Every item's bucket, in item order (what `text2video.train.data.BucketBatches` groups by); None
        without buckets."""
        return None if self.buckets is None else [self.bucket_of(entry) for entry in self.entries]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index %= len(self)
        for step in range(len(self)):
            entry = self.entries[(index + step) % len(self)]
            if entry.path in self.failed:
                continue
            try:
                return self.load(entry)
            except VideoReadError as exc:
                self.failed.add(entry.path)
                logger.warning("skipping unreadable video (%d so far in %s): %s", len(self.failed), self.source, exc)
        raise DataError(f"{self.source}: every video failed to load; see the warnings above")

    def load(self, entry: VideoEntry) -> dict[str, Any]:
        """Read, sample, pad and transform one entry (raises `VideoReadError`)."""
        rng = item_rng()
        sampler, transform = self.sampler, self.transform
        if self.buckets is not None:
            bucket = self.bucket_of(entry)
            sampler = replace(sampler, num_frames=bucket.frames)
            transform = replace(transform, size=(bucket.height, bucket.width))
        frames, fps = self._read_frames(entry, rng, sampler)
        video = transform(frames_to_tensor(frames), rng)
        captions = [c for c in entry.captions if c.strip()]
        if not captions:
            text = ""
        elif self.caption == "first" or len(captions) == 1:
            text = captions[0]
        else:
            text = captions[int(rng.integers(len(captions)))]
        return {"video": video, "text": text, "fps": float(fps), "path": entry.path}

    def _read_frames(self, entry: VideoEntry, rng: np.random.Generator, sampler: ClipSampler) -> tuple[np.ndarray, float]:
        total = entry.num_frames if entry.num_frames is not None else probe_video(entry.path).num_frames
        if self.image_mode:
            index = int(rng.integers(total)) if sampler.random_start else 0
            frames, fps = read_video(entry.path, start=min(index, max(total - 1, 0)), num_frames=1, channels=self.channels)
            return frames, entry.fps or fps
        if Path(entry.path).suffix.lower() in AV_SUFFIXES:  # seek and stop early
            start = sampler.start(total, rng)
            try:
                frames, fps = read_video(
                    entry.path, start=start, num_frames=sampler.num_frames, stride=sampler.stride, channels=self.channels
                )
            except VideoReadError:
                if start == 0:
                    raise
                # the stored frame count overstated the video: take the clip from the start instead
                frames, fps = read_video(entry.path, num_frames=sampler.num_frames, stride=sampler.stride, channels=self.channels)
            frames, source_fps = sampler.pad_frames(frames), fps * sampler.stride
        else:  # GIF and frame folders are decoded whole anyway
            frames, source_fps = read_video(entry.path, channels=self.channels)
            frames = frames[sampler.indices(len(frames), rng)]
        return frames, (entry.fps or source_fps) / sampler.stride
