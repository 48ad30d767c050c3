"""Convert MSR-VTT from its official layout to the folder format (``<video_id>.gif`` + ``.txt``).

The official layout: a folder of ``video0.mp4 ... video9999.mp4`` and an annotation JSON
(``train_val_videodatainfo.json`` / ``test_videodatainfo.json``) with a ``videos`` list (``video_id``,
``split``, ...) and a ``sentences`` list (``video_id``, ``caption``). Each video is trimmed to at most
``num_frames`` frames (after resampling to ``fps``), resized on its short side and centre-cropped.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from text2video.data.transforms import SpatialTransform
from text2video.errors import DataError, VideoReadError
from text2video.io.text import read_text
from text2video.io.video import VIDEO_SUFFIXES, frames_to_tensor, probe_video, read_video, tensor_to_frames, write_video

logger = logging.getLogger(__name__)


@dataclass
class ConvertReport:
    """What a conversion did."""

    converted: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (video_id, reason)
    missing: list[str] = field(default_factory=list)  # listed in the annotations, no file

    def summary(self) -> str:
        line = f"converted {len(self.converted)} videos"
        if self.unreadable:
            line += f", {len(self.unreadable)} unreadable skipped ({', '.join(v for v, _ in self.unreadable[:5])})"
        if self.missing:
            line += f", {len(self.missing)} listed but not found ({', '.join(self.missing[:5])})"
        return line


def load_annotations(path: str | Path) -> tuple[list[dict], dict[str, list[str]]]:
    """The ``videos`` records and the captions of each video id, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"MSR-VTT annotations not found: {path}; point at train_val_videodatainfo.json")
    try:
        data = json.loads(read_text(path, "MSR-VTT annotations"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "videos" not in data or "sentences" not in data:
        raise DataError(f"{path}: expected a JSON object with 'videos' and 'sentences' lists (the MSR-VTT layout)")
    captions: dict[str, list[str]] = defaultdict(list)
    for sentence in data["sentences"]:
        text = str(sentence.get("caption", "")).strip()
        if text:
            captions[str(sentence["video_id"])].append(text)
    return list(data["videos"]), dict(captions)


def _find_video(videos_dir: Path, video_id: str) -> Path | None:
    for suffix in (".mp4", *sorted(VIDEO_SUFFIXES - {".mp4"})):
        candidate = videos_dir / f"{video_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def convert_msrvtt(
    videos_dir: str | Path,
    annotations: str | Path,
    out_dir: str | Path,
    *,
    size: int = 64,
    num_frames: int | None = 16,
    fps: float | None = 8.0,
    captions: str = "first",
    split: str | None = None,
    limit: int | None = None,
    suffix: str = ".gif",
    progress: bool = True,
) -> ConvertReport:
    """Write ``out_dir/<video_id><suffix>`` and ``<video_id>.txt`` for each (selected) video.

    Args:
        size: output frames are ``size`` x ``size`` (short side resized, centre crop).
        num_frames: keep at most this many frames from the start (None keeps the whole video).
        fps: resample to about this frame rate by keeping every k-th frame (None keeps the source rate).
        captions: ``"first"`` writes one caption, ``"all"`` every caption, one per line.
        split: keep only ``train``, ``validate`` or ``test`` videos (None: all).
        limit: convert at most this many videos.
        suffix: ``.gif`` (default) or ``.mp4``.
    """
    if captions not in ("first", "all"):
        raise DataError(f"captions must be 'first' or 'all', got {captions!r}")
    videos_dir, out_dir = Path(videos_dir), Path(out_dir)
    if not videos_dir.is_dir():
        raise DataError(f"MSR-VTT videos folder not found: {videos_dir}; point at the folder of video*.mp4")
    records, texts = load_annotations(annotations)
    if split is not None:
        records = [r for r in records if r.get("split") == split]
    if limit is not None:
        records = records[:limit]
    if not records:
        raise DataError(f"{annotations}: no video to convert (split={split!r})")
    out_dir.mkdir(parents=True, exist_ok=True)
    transform = SpatialTransform(size=size, crop="center")
    report = ConvertReport()
    for record in tqdm(records, desc="msrvtt", unit="video", disable=not progress):
        video_id = str(record["video_id"])
        source = _find_video(videos_dir, video_id)
        if source is None:
            report.missing.append(video_id)
            continue
        try:
            info = probe_video(source)
            stride = max(1, round(info.fps / fps)) if fps else 1
            frames, clip_fps = read_video(source, num_frames=num_frames, stride=stride)
        except VideoReadError as exc:
            report.unreadable.append((video_id, str(exc)))
            continue
        frames = tensor_to_frames(transform(frames_to_tensor(frames)))
        write_video(frames, out_dir / f"{video_id}{suffix}", fps=clip_fps)
        lines = texts.get(video_id, [])[: 1 if captions == "first" else None]
        (out_dir / f"{video_id}.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        report.converted.append(video_id)
    logger.info("MSR-VTT %s -> %s: %s", videos_dir, out_dir, report.summary())
    return report
