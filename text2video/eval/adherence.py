"""The prompt-adherence judge for the synthetic shapes grammar (``data/vocab.py``).

`judge_video` reads one video and the caption it was made for, and decides per attribute whether the
video shows it:

* **foreground** — per frame, the background is modelled as a plane (a + b·x + c·y per channel) fitted
  robustly to the border ring, so plain, tinted and gradient backgrounds all work. The pixels that
  differ from it by more than half the object's contrast form the mask; the largest connected component
  is the object. A frame counts only when that component holds almost all of the foreground, its
  contrast stands well above the background's own noise and its size is plausible.
* **colour** — the hue of the object's core pixels (those closest to full contrast, so blurred edges
  mixed with the background do not count), matched to the nearest hue of the palette.
* **shape** — the soft silhouette (the fraction of object colour in each pixel) is compared with
  circle, square and triangle templates of about the same area and the same centroid, rendered with sub-pixel
  supersampling and at a few blur widths (generative models blur); the best cosine similarity wins, summed over
  frames; a silhouette that matches no template well (a bar, a ring, a cross) has no shape.
* **direction** — the Theil-Sen slope of the centroid track (the median over all frame pairs: robust
  to pixel-quantised motion and to a few bad frames); the dominant axis must clearly dominate and the net
  motion must exceed a minimum displacement.
* **temporal consistency** — in [0, 1]: the fraction of frames with one clear object, times terms that
  fall with the spread of its area and of its hue over the frames.

When most frames have no single clear object (blank video, noise, clutter) the judge abstains: every
attribute fails. `judge_batch` / `judge_folder` aggregate per-attribute accuracy and the all-three rate,
separately for seen and held-out combinations (`vocab.is_held_out`).
"""

from __future__ import annotations

import colorsys
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import ndimage

from text2video.data.vocab import (
    COLOURS,
    DEFAULT_HOLDOUT,
    DIRECTIONS,
    SHAPES,
    HoldoutRule,
    is_held_out,
    parse_caption,
)
from text2video.errors import DataError
from text2video.io.text import read_lines

log = logging.getLogger(__name__)

ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "direction")

#: Palette hues in degrees, from vocab.COLOURS.
_PALETTE_HUES: dict[str, float] = {name: 360.0 * colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))[0] for name, rgb in COLOURS.items()}


@dataclass(frozen=True)
class JudgeSettings:
    """Thresholds of the judge (defaults validated in docs/evaluation.md)."""

    min_contrast: float = 0.12  # object vs background, RGB distance in [0, sqrt(3)]
    noise_factor: float = 3.0  # object contrast must exceed this times the border's own spread
    min_area_px: float = 3.0
    max_area_frac: float = 0.45
    min_main_share: float = 0.85  # share of foreground pixels in the largest component
    min_valid_frac: float = 0.5  # frames with one clear object, else abstain
    min_saturation: float = 0.2
    min_displacement_px: float = 1.0  # net motion over the clip along the dominant axis ...
    min_displacement_frac: float = 0.04  # ... and as a fraction of the frame side
    dominance: float = 1.5  # dominant axis over the other
    shape_frames: int = 4  # frames (evenly spaced) whose silhouette is compared with the templates
    min_shape_score: float = 0.92  # mean best cosine similarity; below it the silhouette is no known shape


@dataclass
class FrameObservation:
    """What one frame shows (None when it has no single clear object)."""

    centroid: tuple[float, float]  # (x, y) pixels
    area: float  # soft area, pixels
    hue: float  # degrees
    saturation: float
    shape_scores: dict[str, float]


@dataclass
class Verdict:
    """The judge's reading of one video against its caption."""

    caption: str
    expected: dict[str, str] | None  # factors named by the caption, None outside the grammar
    predicted: dict[str, str | None]  # factors read from the video (None: could not tell)
    colour_ok: bool
    shape_ok: bool
    direction_ok: bool
    consistency: float
    abstained: bool
    reason: str = ""
    held_out: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def all_ok(self) -> bool:
        return self.colour_ok and self.shape_ok and self.direction_ok

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["all_ok"] = self.all_ok
        return out


# ---------------------------------------------------------------------------------------------- input


def as_frames(video: Any) -> np.ndarray:
    """float32 ``(T, H, W, 3)`` in [0, 1] from uint8 ``(T, H, W, C)`` numpy, or a float tensor/array
    ``(C, T, H, W)`` / ``(1, C, T, H, W)`` in [-1, 1] (the package's convention)."""
    if hasattr(video, "detach"):  # torch tensor
        video = video.detach().float().cpu().numpy()
    arr = np.asarray(video)
    if arr.dtype == np.uint8:
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.ndim != 4:
            raise DataError(f"uint8 video of shape {arr.shape}: expected (T, H, W, C)")
        frames = arr.astype(np.float32) / 255.0
    else:
        if arr.ndim == 5 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 4 or arr.shape[0] not in (1, 3, 4):
            raise DataError(f"float video of shape {arr.shape}: expected (C, T, H, W) in [-1, 1]")
        frames = np.clip((np.moveaxis(arr.astype(np.float32), 0, -1) + 1.0) / 2.0, 0.0, 1.0)
    channels = frames.shape[-1]
    if channels == 1:
        frames = np.repeat(frames, 3, axis=-1)
    elif channels == 4:
        frames = frames[..., :3]
    elif channels != 3:
        raise DataError(f"video with {channels} channels: expected 1, 3 or 4")
    return frames


# ------------------------------------------------------------------------------------------ templates


def _silhouette(shape: str, area: float, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Boolean mask of ``shape`` with the given area, centroid at dx = dy = 0 (sample offsets)."""
    if shape == "circle":
        return dx * dx + dy * dy <= area / math.pi
    if shape == "square":
        half = math.sqrt(area) / 2
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    # equilateral triangle, apex up, centroid at 2/3 of the height below the apex
    side = math.sqrt(4 * area / math.sqrt(3))
    height = side * math.sqrt(3) / 2
    frac = (dy + 2 * height / 3) / height  # 0 at the apex, 1 at the base
    return (frac >= 0) & (frac <= 1) & (np.abs(dx) <= frac * side / 2)


def shape_scores(window: np.ndarray, area: float, cx: float, cy: float, ss: int = 4) -> dict[str, float]:
    """Best cosine similarity of the soft silhouette ``window`` (h, w) with each shape's template
    (area ``area`` times a few scales, centroid (cx, cy) in window pixels, a few blur widths)."""
    h, w = window.shape
    ys = (np.arange(h * ss) + 0.5) / ss - 0.5 - cy
    xs = (np.arange(w * ss) + 0.5) / ss - 0.5 - cx
    dy, dx = ys[:, None], xs[None, :]
    scores: dict[str, float] = {}
    for shape in SHAPES:
        best = -1.0
        for scale in _SCALES:
            mask = _silhouette(shape, area * scale, dx, dy).reshape(h, ss, w, ss).mean(axis=(1, 3))
            for blur in _BLURS:
                tpl = ndimage.gaussian_filter(mask, blur, mode="constant") if blur > 0 else mask
                best = max(best, _cosine(window, tpl))
        scores[shape] = best
    return scores


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / max(math.sqrt(float((a * a).sum() * (b * b).sum())), 1e-12))


#: Template sizes (relative to the measured area) and blur widths (pixels) tried for every shape.
_SCALES: tuple[float, ...] = (0.8, 1.0, 1.25)
_BLURS: tuple[float, ...] = (0.0, 0.7, 1.4)


# ---------------------------------------------------------------------------------------- per frame


def _background(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """A planar background model (H, W, 3) fitted to the border ring, and the border's spread."""
    h, w, _ = frame.shape
    ring = max(1, min(h, w) // 16)
    border = np.zeros((h, w), bool)
    border[:ring], border[-ring:], border[:, :ring], border[:, -ring:] = True, True, True, True
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    design = np.stack([np.ones_like(xx), xx / w - 0.5, yy / h - 0.5], -1)
    a, y = design[border], frame[border]
    keep = np.ones(len(a), bool)
    for _ in range(2):  # fit, drop the border pixels that belong to the object, refit
        coef, *_ = np.linalg.lstsq(a[keep], y[keep], rcond=None)
        resid = np.linalg.norm(a @ coef - y, axis=1)
        keep = resid <= max(np.percentile(resid, 75) * 3.0, 0.02)
        if keep.sum() < 4:
            keep = np.ones(len(a), bool)
    spread = float(np.percentile(resid[keep], 90)) if keep.any() else 0.0
    return design @ coef, spread


def observe_frame(frame: np.ndarray, settings: JudgeSettings = JudgeSettings(), with_shape: bool = True) -> FrameObservation | None:
    """Find the single foreground object of one float frame (H, W, 3); None when there is none.
    ``with_shape=False`` skips the (slower) template comparison."""
    h, w, _ = frame.shape
    background, spread = _background(frame)
    dist = np.linalg.norm(frame - background, axis=-1)
    peak = float(ndimage.median_filter(dist, size=3, mode="nearest").max()) if min(h, w) >= 8 else float(dist.max())
    if peak < max(settings.min_contrast, settings.noise_factor * spread):
        return None
    mask = dist > peak / 2
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        return None
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    main = int(np.argmax(sizes)) + 1
    if sizes[main - 1] / sizes.sum() < settings.min_main_share:
        return None
    component = labels == main
    region = ndimage.binary_dilation(component, iterations=2)
    core_level = float(np.percentile(dist[component], 90))
    alpha = np.clip(dist / max(core_level, 1e-6), 0.0, 1.0) * region
    area = float(alpha.sum())
    if area < settings.min_area_px or area > settings.max_area_frac * h * w:
        return None
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = float((alpha * xx).sum() / area), float((alpha * yy).sum() / area)

    core = component & (dist >= 0.8 * core_level)
    rgb = frame[core].mean(axis=0) if core.any() else frame[component].mean(axis=0)
    hue, sat, _ = colorsys.rgb_to_hsv(*map(float, rgb))

    # shape: compare with templates in a window around the object
    ys, xs = np.nonzero(region)
    pad = 3
    y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + pad + 1)
    scores = shape_scores(alpha[y0:y1, x0:x1], area, cx - x0, cy - y0) if with_shape else {}
    return FrameObservation((cx, cy), area, 360.0 * hue, float(sat), scores)


# ------------------------------------------------------------------------------------- per video


def _circular_spread(hues_deg: np.ndarray) -> tuple[float, float]:
    """Circular mean and standard deviation (degrees)."""
    rad = np.deg2rad(hues_deg)
    c, s = np.cos(rad).mean(), np.sin(rad).mean()
    r = min(1.0, math.hypot(c, s))
    mean = math.degrees(math.atan2(s, c)) % 360.0
    std = math.degrees(math.sqrt(max(0.0, -2.0 * math.log(max(r, 1e-12)))))
    return mean, std


def _nearest_colour(hue: float) -> str:
    return min(_PALETTE_HUES, key=lambda n: min(abs(hue - _PALETTE_HUES[n]), 360 - abs(hue - _PALETTE_HUES[n])))


def _direction(
    centroids: np.ndarray, frame_index: np.ndarray, side: int, num_frames: int, settings: JudgeSettings
) -> tuple[str | None, dict[str, float]]:
    if len(centroids) < 2:
        return None, {}
    i, j = np.triu_indices(len(centroids), k=1)  # Theil-Sen: the median slope over all pairs of frames
    slopes = (centroids[j] - centroids[i]) / (frame_index[j] - frame_index[i])[:, None]
    net = np.median(slopes, axis=0) * (num_frames - 1)
    ax = int(np.argmax(np.abs(net)))
    major, minor = abs(net[ax]), abs(net[1 - ax])
    info = {"net_dx": float(net[0]), "net_dy": float(net[1])}
    min_disp = max(settings.min_displacement_px, settings.min_displacement_frac * side)
    if major < min_disp or major < settings.dominance * minor:
        return None, info
    sign = int(np.sign(net[ax]))
    unit = (sign, 0) if ax == 0 else (0, sign)
    return next(name for name, d in DIRECTIONS.items() if tuple(d) == unit), info


def judge_video(
    video: Any,
    caption: str,
    holdout: Sequence[HoldoutRule] = DEFAULT_HOLDOUT,
    settings: JudgeSettings = JudgeSettings(),
) -> Verdict:
    """Judge one video (uint8 ``(T, H, W, C)`` or float ``(C, T, H, W)`` in [-1, 1]) against ``caption``."""
    frames = as_frames(video)
    num_frames, h, w, _ = frames.shape
    expected = parse_caption(caption)
    held = bool(expected is not None and is_held_out(expected, tuple(holdout)))
    exp_dict = asdict(expected) if expected is not None else None

    shape_frames = set(np.linspace(0, num_frames - 1, min(num_frames, settings.shape_frames)).round().astype(int).tolist())
    obs = [observe_frame(f, settings, with_shape=i in shape_frames) for i, f in enumerate(frames)]
    valid = [i for i, o in enumerate(obs) if o is not None]
    valid_frac = len(valid) / num_frames

    def abstain(reason: str, consistency: float = 0.0) -> Verdict:
        return Verdict(
            caption,
            exp_dict,
            {a: None for a in ATTRIBUTES},
            False,
            False,
            False,
            consistency,
            True,
            reason,
            held,
            {"valid_frames": len(valid)},
        )

    if valid_frac < settings.min_valid_frac or len(valid) < 2:
        return abstain(f"no single clear foreground object in {num_frames - len(valid)} of {num_frames} frames")

    good = [obs[i] for i in valid]
    areas = np.array([o.area for o in good])
    hues = np.array([o.hue for o in good])
    mean_hue, hue_std = _circular_spread(hues)
    sat = float(np.median([o.saturation for o in good]))
    area_cv = float(areas.std() / max(areas.mean(), 1e-8))
    consistency = valid_frac / (1.0 + 4.0 * area_cv) / (1.0 + hue_std / 20.0)

    colour = _nearest_colour(mean_hue) if sat >= settings.min_saturation else None
    scored = [o for o in good if o.shape_scores] or [
        observe_frame(frames[i], settings) for i in valid[:: max(1, len(valid) // settings.shape_frames)]
    ]
    totals = {s: sum(o.shape_scores[s] for o in scored if o is not None) for s in SHAPES}
    best = max(totals, key=totals.get)
    shape = best if totals[best] / max(len(scored), 1) >= settings.min_shape_score else None
    centroids = np.array([o.centroid for o in good])
    direction, motion = _direction(centroids, np.array(valid, float), min(h, w), num_frames, settings)

    predicted = {"colour": colour, "shape": shape, "direction": direction}
    ok = {a: bool(expected is not None and predicted[a] == getattr(expected, a)) for a in ATTRIBUTES}
    details = {
        "valid_frames": len(valid),
        "hue": mean_hue,
        "hue_std": hue_std,
        "saturation": sat,
        "area_mean": float(areas.mean()),
        "area_cv": area_cv,
        "shape_scores": {s: totals[s] / max(len(scored), 1) for s in SHAPES},
        **motion,
    }
    reason = "" if expected is not None else "caption is not in the shapes grammar"
    return Verdict(
        caption, exp_dict, predicted, ok["colour"], ok["shape"], ok["direction"], float(consistency), False, reason, held, details
    )


# ------------------------------------------------------------------------------------- aggregation


def summarize(verdicts: Iterable[Verdict]) -> dict[str, Any]:
    """Per-attribute accuracy, all-three rate, mean consistency and abstention rate, for all items and
    separately for seen and held-out combinations (captions outside the grammar are counted apart)."""
    verdicts = list(verdicts)
    in_grammar = [v for v in verdicts if v.expected is not None]

    def group(items: list[Verdict]) -> dict[str, Any]:
        n = len(items)
        if n == 0:
            return {"n": 0}
        out: dict[str, Any] = {"n": n}
        for a in ATTRIBUTES:
            out[a] = sum(getattr(v, f"{a}_ok") for v in items) / n
        out["all_three"] = sum(v.all_ok for v in items) / n
        out["consistency"] = float(np.mean([v.consistency for v in items]))
        out["abstained"] = sum(v.abstained for v in items) / n
        return out

    return {
        "all": group(in_grammar),
        "seen": group([v for v in in_grammar if not v.held_out]),
        "held_out": group([v for v in in_grammar if v.held_out]),
        "outside_grammar": len(verdicts) - len(in_grammar),
    }


def judge_batch(
    videos: Iterable[Any],
    captions: Sequence[str],
    holdout: Sequence[HoldoutRule] = DEFAULT_HOLDOUT,
    settings: JudgeSettings = JudgeSettings(),
) -> tuple[dict[str, Any], list[Verdict]]:
    """Judge many videos; returns the `summarize` dict and the verdicts. A (B, C, T, H, W) tensor is
    taken as B videos."""
    verdicts = [judge_video(v, c, holdout, settings) for v, c in zip(videos, captions, strict=True)]
    return summarize(verdicts), verdicts


VIDEO_SUFFIXES: tuple[str, ...] = (".gif", ".mp4", ".webm", ".avi", ".mov", ".mkv")


def find_captioned_videos(folder: str | Path) -> list[tuple[Path, str]]:
    """``(video path, caption)`` for every video in ``folder`` with a same-stem ``.txt`` caption."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"video folder {root} does not exist; pass a folder of GIF/MP4 files with .txt captions")
    pairs: list[tuple[Path, str]] = []
    missing = 0
    for path in sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
        txt = path.with_suffix(".txt")
        if txt.is_file():
            lines = read_lines(txt, "caption file")
            pairs.append((path, lines[0] if lines else ""))
        else:
            missing += 1
    if missing:
        log.warning("%d videos in %s have no same-stem .txt caption and were skipped", missing, root)
    if not pairs:
        raise DataError(f"no captioned video in {root}: expected files like 0001.gif + 0001.txt")
    return pairs


def judge_folder(
    folder: str | Path,
    holdout: Sequence[HoldoutRule] = DEFAULT_HOLDOUT,
    settings: JudgeSettings = JudgeSettings(),
    progress: bool = False,
) -> tuple[dict[str, Any], list[Verdict]]:
    """Judge every GIF/MP4 with a same-stem ``.txt`` caption in ``folder``. Unreadable videos are
    skipped, counted (``summary["unreadable"]``) and logged."""
    from text2video.errors import VideoReadError
    from text2video.io.video import read_video

    pairs = find_captioned_videos(folder)
    if progress:
        from tqdm import tqdm

        pairs = tqdm(pairs, desc="judging", unit="video")
    verdicts: list[Verdict] = []
    unreadable = 0
    for path, caption in pairs:
        try:
            frames, _ = read_video(path)
        except VideoReadError as exc:
            unreadable += 1
            log.warning("skipping %s: %s", path, exc)
            continue
        verdict = judge_video(frames, caption, holdout, settings)
        verdict.details["path"] = str(path)
        verdicts.append(verdict)
    summary = summarize(verdicts)
    summary["unreadable"] = unreadable
    return summary, verdicts
