"""Built-in synthetic captioned videos, generated on the fly and deterministic per (seed, index).

* `ShapesDataset`: one coloured circle, square or triangle moving left, right, up or down on a plain
  or textured background; captions follow `text2video.data.vocab` ("a red circle moving left").
  Chosen colour/shape/direction combinations can be held out for compositional tests.
* `DigitsDataset`: Moving-MNIST style clips made of real handwritten digits from scikit-learn's
  UCI digits set (shipped offline), one or two digits bouncing off the frame edges.

Both take ``size`` as an int (square) or ``(height, width)``, and ``channels``: 3 (RGB), 1 (grayscale, the
luma of the RGB frames) or 4 (RGBA: the objects opaque on a transparent background).

Every item is the dataset dict of DESIGN.md (``video`` (C, T, H, W) in [-1, 1], ``text``, ``fps``,
``path``) plus ``factors`` (a dict of str: the ground truth the caption names) and ``centres``
((T, 2) float tensor: the true x, y centre of each object per frame, in pixels, (0, 0) the centre
of the top-left pixel; for two digits, the first digit's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from text2video.data.vocab import (
    COLOURS,
    DEFAULT_HOLDOUT,
    DIRECTIONS,
    SHAPES,
    HoldoutRule,
    ShapeFactors,
    is_held_out,
)
from text2video.errors import DataError
from text2video.io.video import frames_to_tensor

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("seen", "held_out", "all")
BACKGROUNDS: tuple[str, ...] = ("black", "gray", "noise")
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class SyntheticSample:
    """One rendered clip before conversion to the tensor item."""

    frames: np.ndarray  # uint8 (T, H, W, 3)
    text: str
    factors: dict[str, str]
    centres: np.ndarray  # float (T, 2): x, y


def _rules(holdout: Iterable[HoldoutRule | str] | None) -> tuple[HoldoutRule, ...]:
    return tuple(r if isinstance(r, HoldoutRule) else HoldoutRule.parse(r) for r in (holdout or ()))


def _check_names(kind: str, names: Sequence[str] | None, known: Sequence[str]) -> tuple[str, ...]:
    if names is None:
        return tuple(known)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise DataError(f"unknown {kind} {unknown or '(none given)'}; choose from: {', '.join(known)}")
    return tuple(names)


def _shape_mask(shape: str, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean mask of a shape of half-size ``r`` centred at (cx, cy) on sample coordinates xs, ys.
    The shape's centroid is (cx, cy) for every shape (the triangle is equilateral, point up)."""
    dx, dy = np.broadcast_arrays(xs - cx, ys - cy)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        half = 0.85 * r
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":
        # vertices on a circle of radius 1.15 r at -90, 30 and 150 degrees: apex up, centroid at the centre
        rr = 1.15 * r
        verts = [(rr * np.cos(a), rr * np.sin(a)) for a in np.deg2rad([-90.0, 30.0, 150.0])]
        inside = np.ones_like(dx, dtype=bool)
        for (x0, y0), (x1, y1) in zip(verts, verts[1:] + verts[:1]):
            inside &= (x1 - x0) * (dy - y0) - (y1 - y0) * (dx - x0) >= 0
        return inside
    raise DataError(f"unknown shape {shape!r}; choose from: {', '.join(SHAPES)}")


def _coverage(shape: str, hw: tuple[int, int], cx: float, cy: float, r: float, antialias: bool) -> np.ndarray:
    """Fraction of each pixel covered by the shape, (height, width) float in [0, 1]."""
    ss = _SUPERSAMPLE if antialias else 1
    h, w = hw
    xs = (np.arange(w * ss) + 0.5) / ss - 0.5  # pixel i spans [i - 0.5, i + 0.5]
    ys = (np.arange(h * ss) + 0.5) / ss - 0.5
    mask = _shape_mask(shape, xs[None, :], ys[:, None], cx, cy, r)
    return mask.reshape(h, ss, w, ss).mean(axis=(1, 3))


def frame_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` (an int: square, or ``(height, width)``) as ``(height, width)``."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    values = [int(v) for v in size]
    if len(values) != 2:
        raise DataError(f"size must be an int or (height, width), got {size!r}")
    return values[0], values[1]


def check_channels(channels: int) -> None:
    if channels not in (1, 3, 4):
        raise DataError(f"channels = {channels!r}: choose 1 (grayscale), 3 (RGB) or 4 (RGBA)")


def with_channels(frames: np.ndarray, channels: int, coverage: np.ndarray | None = None) -> np.ndarray:
    """RGB frames ``(T, H, W, 3)`` as 1 (luma), 3 or 4 channels; RGBA's alpha is ``coverage`` ((T, H, W) in
    [0, 1]: the objects opaque, the background transparent)."""
    if channels == 3:
        return frames
    if channels == 1:
        return np.stack([np.asarray(Image.fromarray(f).convert("L")) for f in frames])[..., None]
    check_channels(channels)
    alpha = np.clip(coverage * 255 + 0.5, 0, 255).astype(np.uint8)[..., None]
    return np.concatenate([frames, alpha], axis=-1)


class ShapesDataset(Dataset):
    """Captioned clips of one coloured shape moving in a straight line, never leaving the frame.

    Args:
        n: number of items.
        num_frames, size: clip length and frame size in pixels (an int, or ``(height, width)``).
        seed: items depend only on (seed, index).
        holdout: rules (or strings such as ``"blue triangle"``) naming held-out combinations.
        split: ``"seen"`` excludes held-out combinations, ``"held_out"`` yields only them, ``"all"`` both.
        colours, shapes, directions: restrict the grammar (default: all of `text2video.data.vocab`).
        speed: (min, max) speed in pixels per frame at 32 px, scaled with ``size``; lowered when the
            whole path would not fit in the frame (the shape always stays fully inside).
        shape_size: (min, max) shape diameter as a fraction of the frame's shorter side.
        background: ``"black"``, ``"gray"`` (a random dark gray per item) or ``"noise"`` (dark gray with
            fixed per-item noise).
        fps: the frame rate the items report.
        antialias: 4x4 supersampled edges (sub-pixel motion); False draws hard edges.
        channels: 3 (RGB), 1 (grayscale) or 4 (RGBA: the shape opaque in its colour, the background transparent).
    """

    def __init__(
        self,
        n: int = 1000,
        num_frames: int = 8,
        size: int | Sequence[int] = 32,
        seed: int = 0,
        holdout: Iterable[HoldoutRule | str] | None = DEFAULT_HOLDOUT,
        split: str = "seen",
        *,
        colours: Sequence[str] | None = None,
        shapes: Sequence[str] | None = None,
        directions: Sequence[str] | None = None,
        speed: tuple[float, float] = (1.0, 2.0),
        shape_size: tuple[float, float] = (0.3, 0.4),
        background: str = "black",
        fps: float = 8.0,
        antialias: bool = True,
        channels: int = 3,
    ) -> None:
        self.height, self.width = frame_hw(size)
        if n < 1 or num_frames < 1 or min(self.height, self.width) < 8:
            raise DataError(f"ShapesDataset needs n >= 1, num_frames >= 1 and size >= 8; got n={n}, num_frames={num_frames}, size={size}")
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose from: {', '.join(SPLITS)}")
        if background not in BACKGROUNDS:
            raise DataError(f"unknown background {background!r}; choose from: {', '.join(BACKGROUNDS)}")
        if not (0 < shape_size[0] <= shape_size[1] <= 0.8):
            raise DataError(f"shape_size {shape_size}: need 0 < min <= max <= 0.8 (a fraction of the frame)")
        if not (0 <= speed[0] <= speed[1]):
            raise DataError(f"speed {speed}: need 0 <= min <= max (pixels per frame at 32 px)")
        check_channels(channels)
        self.n, self.num_frames, self.size, self.seed, self.channels = n, num_frames, size, seed, channels
        self.split, self.background, self.fps, self.antialias = split, background, float(fps), antialias
        self.speed, self.shape_size = (float(speed[0]), float(speed[1])), (float(shape_size[0]), float(shape_size[1]))
        self.holdout = _rules(holdout)
        cs = _check_names("colour", colours, list(COLOURS))
        ss = _check_names("shape", shapes, list(SHAPES))
        ds = _check_names("direction", directions, list(DIRECTIONS))
        combos = [ShapeFactors(c, s, d) for c in cs for s in ss for d in ds]
        if split == "seen":
            combos = [f for f in combos if not is_held_out(f, self.holdout)]
        elif split == "held_out":
            combos = [f for f in combos if is_held_out(f, self.holdout)]
        if not combos:
            raise DataError(
                f"ShapesDataset split={split!r} has no colour/shape/direction combination left with holdout "
                f"{[r for r in self.holdout]}; change the holdout rules, the split or the restrictions"
            )
        order = np.random.default_rng([seed, 0x5EED]).permutation(len(combos))
        self.combinations: tuple[ShapeFactors, ...] = tuple(combos[i] for i in order)

    def __len__(self) -> int:
        return self.n

    def factors_of(self, index: int) -> ShapeFactors:
        """The ground truth of item ``index`` (each combination appears once per ``len(combinations)`` items)."""
        return self.combinations[index % len(self.combinations)]

    def render(self, index: int) -> SyntheticSample:
        """The clip of item ``index`` as uint8 frames with its caption, factors and true centres."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for ShapesDataset of {self.n} items")
        factors = self.factors_of(index)
        rng = np.random.default_rng([self.seed, index])
        h, w, T = self.height, self.width, self.num_frames
        short = min(h, w)
        r = 0.5 * short * rng.uniform(*self.shape_size)
        r_extent = 1.15 * r if factors.shape == "triangle" else r  # farthest point from the centre
        margin = 1.0
        lo = r_extent + margin - 0.5  # allowed centre range along x: lo..hi_x, along y: lo..hi_y
        hi_x, hi_y = w - 0.5 - r_extent - margin, h - 0.5 - r_extent - margin
        dx, dy = DIRECTIONS[factors.direction]
        (along, hi, hi_across) = (w, hi_x, hi_y) if dx else (h, hi_y, hi_x)
        room = hi - lo
        speed = rng.uniform(*self.speed) * short / 32.0
        if T > 1:
            speed = min(speed, room / (T - 1))
        travel = speed * (T - 1)
        start_along = rng.uniform(lo, hi - travel) if room > travel else lo
        across = rng.uniform(lo, hi_across)
        steps = np.arange(T) * speed
        position = start_along + steps if (dx or dy) > 0 else (along - 1) - (start_along + steps)
        xs, ys = (position, np.full(T, across)) if dx else (np.full(T, across), position)
        bg = self._background(rng)
        colour = np.asarray(COLOURS[factors.colour], dtype=np.float32)
        frames = np.empty((T, h, w, 3), dtype=np.uint8)
        coverage = np.empty((T, h, w), dtype=np.float32)
        for t in range(T):
            coverage[t] = _coverage(factors.shape, (h, w), float(xs[t]), float(ys[t]), r, self.antialias)
            cov = coverage[t][..., None]
            if self.channels == 4:  # straight alpha: the colour wherever the shape is, alpha its coverage
                frames[t] = np.where(cov > 0, colour, bg).astype(np.uint8)
            else:
                frames[t] = np.clip(bg * (1.0 - cov) + colour * cov + 0.5, 0, 255).astype(np.uint8)
        return SyntheticSample(
            frames=with_channels(frames, self.channels, coverage),
            text=factors.caption(),
            factors={"colour": factors.colour, "shape": factors.shape, "direction": factors.direction},
            centres=np.stack([xs, ys], axis=1).astype(np.float32),
        )

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        hw = (self.height, self.width)
        if self.background == "black":
            return np.zeros((*hw, 3), dtype=np.float32)
        level = rng.uniform(0.0, 70.0)
        bg = np.full((*hw, 3), level, dtype=np.float32)
        if self.background == "noise":
            bg += rng.normal(0.0, 10.0, size=(*hw, 1)).astype(np.float32)
        return np.clip(bg, 0.0, 255.0)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.render(index)
        return _item(sample, self.fps, f"shapes://seed{self.seed}/{index}")


def _item(sample: SyntheticSample, fps: float, path: str) -> dict[str, Any]:
    return {
        "video": frames_to_tensor(sample.frames),
        "text": sample.text,
        "fps": fps,
        "path": path,
        "factors": dict(sample.factors),
        "centres": torch.from_numpy(sample.centres),
    }


class DigitsDataset(Dataset):
    """Moving-MNIST style clips of real handwritten digits (scikit-learn's UCI digits, 8x8, enlarged),
    white on black, bouncing off the frame edges; captioned ``"the digit 3 bouncing"`` or
    ``"the digits 3 and 7 bouncing"``.

    Args:
        n, num_frames, size, seed, fps: as in `ShapesDataset`.
        num_digits: 1, 2, or (1, 2) for a per-item random choice.
        digit_size: digit height in pixels (default ``0.4 * size``).
        speed: (min, max) pixels per frame at 32 px, scaled with ``size``.
        digits: restrict the classes drawn (default 0-9).
        channels: 3 (RGB, white digits), 1 (grayscale) or 4 (RGBA: white digits, alpha their ink).
    """

    def __init__(
        self,
        n: int = 1000,
        num_frames: int = 8,
        size: int | Sequence[int] = 32,
        seed: int = 0,
        *,
        num_digits: int | tuple[int, ...] = 1,
        digit_size: int | None = None,
        speed: tuple[float, float] = (1.0, 2.5),
        digits: Sequence[int] | None = None,
        fps: float = 8.0,
        channels: int = 3,
    ) -> None:
        from sklearn.datasets import load_digits

        counts = (num_digits,) if isinstance(num_digits, int) else tuple(num_digits)
        if not counts or any(c not in (1, 2) for c in counts):
            raise DataError(f"num_digits must be 1, 2 or (1, 2), got {num_digits!r}")
        self.height, self.width = frame_hw(size)
        short = min(self.height, self.width)
        if n < 1 or num_frames < 1 or short < 12:
            raise DataError(f"DigitsDataset needs n >= 1, num_frames >= 1 and size >= 12; got {n}, {num_frames}, {size}")
        check_channels(channels)
        self.n, self.num_frames, self.size, self.seed, self.fps = n, num_frames, size, seed, float(fps)
        self.channels = channels
        self.counts, self.speed = counts, (float(speed[0]), float(speed[1]))
        self.digit_size = int(digit_size or round(0.4 * short))
        if not 4 <= self.digit_size <= short:
            raise DataError(f"digit_size {self.digit_size} must be between 4 and the frame's shorter side {short}")
        bunch = load_digits()
        wanted = set(range(10) if digits is None else digits)
        if not wanted or not wanted <= set(range(10)):
            raise DataError(f"digits must be a non-empty subset of 0-9, got {digits!r}")
        keep = np.isin(bunch.target, sorted(wanted))
        self.images = (bunch.images[keep] / 16.0).astype(np.float32)  # (N, 8, 8) in [0, 1]
        self.labels = bunch.target[keep].astype(np.int64)

    def __len__(self) -> int:
        return self.n

    def _glyph(self, which: int) -> np.ndarray:
        from PIL import Image

        image = Image.fromarray((self.images[which] * 255).astype(np.uint8))
        d = self.digit_size
        return np.asarray(image.resize((d, d), Image.BICUBIC), dtype=np.float32) / 255.0

    def render(self, index: int) -> SyntheticSample:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for DigitsDataset of {self.n} items")
        rng = np.random.default_rng([self.seed, index, 1])
        h, w, d, T = self.height, self.width, self.digit_size, self.num_frames
        count = self.counts[int(rng.integers(len(self.counts)))]
        canvas = np.zeros((T, h, w), dtype=np.float32)
        labels: list[int] = []
        first_centres = np.zeros((T, 2), dtype=np.float32)
        for k in range(count):
            which = int(rng.integers(len(self.images)))
            labels.append(int(self.labels[which]))
            glyph = self._glyph(which)
            limit = np.array([w - d, h - d], dtype=np.float64)  # x, y
            pos = rng.uniform(0, 1, size=2) * limit
            angle = rng.uniform(0, 2 * np.pi)
            speed = rng.uniform(*self.speed) * min(h, w) / 32.0
            vel = speed * np.array([np.cos(angle), np.sin(angle)])
            for t in range(T):
                x, y = int(round(pos[0])), int(round(pos[1]))
                canvas[t, y : y + d, x : x + d] = np.maximum(canvas[t, y : y + d, x : x + d], glyph)
                if k == 0:
                    first_centres[t] = (x + (d - 1) / 2, y + (d - 1) / 2)
                pos = pos + vel
                for axis in range(2):  # bounce off the edges
                    if pos[axis] < 0:
                        pos[axis], vel[axis] = -pos[axis], -vel[axis]
                    elif pos[axis] > limit[axis]:
                        pos[axis], vel[axis] = 2 * limit[axis] - pos[axis], -vel[axis]
        ink = (canvas * 255 + 0.5).clip(0, 255).astype(np.uint8)[..., None]
        frames = np.repeat(ink, 3, axis=-1) if self.channels != 4 else np.full((*ink.shape[:3], 3), 255, dtype=np.uint8)
        frames = with_channels(frames, self.channels, canvas)
        if count == 1:
            text = f"the digit {labels[0]} bouncing"
        else:
            text = f"the digits {labels[0]} and {labels[1]} bouncing"
        factors = {"digits": " ".join(str(label) for label in labels), "count": str(count)}
        return SyntheticSample(frames=frames, text=text, factors=factors, centres=first_centres)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return _item(self.render(index), self.fps, f"digits://seed{self.seed}/{index}")
