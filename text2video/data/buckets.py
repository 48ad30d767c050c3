"""Buckets: train on videos of mixed shapes without cropping them all to one square.

As Open-Sora and diffusion-pipe do, every video is put in a bucket by its shape: the nearest of a few
aspect ratios (width / height, compared on a log scale) at about the area of ``data.size``, and the
longest of a few clip lengths that the video holds (a video shorter than every length gets the shortest,
padded as the dataset pads). A video is resized so its short side fits the bucket's resolution and
centre-cropped (or randomly cropped) to it, so only the sliver outside the nearest aspect ratio is lost.
Training batches are drawn from one bucket at a time (`text2video.train.data.BucketBatches`), so every
batch stacks.

Config (``data.buckets``)::

    aspect_ratios: [0.5, 0.75, 1.0, 1.333, 2.0]   # width / height, or "16:9" strings (default: these)
    frames: [4, 8]                               # clip lengths (default: [data.num_frames])
    multiple: 8                                  # bucket sides are multiples of this (the model's downsampling)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from text2video.errors import ConfigError

DEFAULT_ASPECT_RATIOS: tuple[float, ...] = (0.5, 0.75, 1.0, 4 / 3, 2.0)
_KEYS = ("aspect_ratios", "frames", "multiple")


@dataclass(frozen=True, order=True)
class Bucket:
    """One training shape: ``frames`` x ``height`` x ``width``."""

    frames: int
    height: int
    width: int

    def __str__(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"


def _aspect(value: Any) -> float:
    """``1.5``, ``"3:2"`` or ``"1.5"`` as a width / height ratio."""
    if isinstance(value, str) and ":" in value:
        w, _, h = value.partition(":")
        try:
            ratio = float(w) / float(h)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"data.buckets.aspect_ratios: {value!r} is not a ratio like 16:9") from None
    else:
        try:
            ratio = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"data.buckets.aspect_ratios: {value!r} is not a number or a ratio like 16:9") from None
    if not ratio > 0:
        raise ConfigError(f"data.buckets.aspect_ratios: {value!r} must be positive")
    return ratio


class Buckets:
    """The buckets of one run: ``aspect_ratios`` (width / height) at the area ``height * width`` of
    ``area_hw``, clip lengths ``frames``, sides rounded to multiples of ``multiple``."""

    def __init__(self, aspect_ratios: Sequence[Any], frames: Sequence[int], area_hw: tuple[int, int], multiple: int = 8) -> None:
        if not aspect_ratios:
            raise ConfigError("data.buckets.aspect_ratios is empty; give at least one width/height ratio, e.g. [1.0]")
        if not frames or any(not isinstance(f, int) or f < 1 for f in frames):
            raise ConfigError(f"data.buckets.frames = {list(frames)!r}: give positive whole clip lengths, e.g. [4, 8]")
        if not isinstance(multiple, int) or multiple < 1:
            raise ConfigError(f"data.buckets.multiple = {multiple!r} must be a positive whole number (e.g. 8)")
        self.aspect_ratios = tuple(sorted({_aspect(a) for a in aspect_ratios}))
        self.frames = tuple(sorted(set(frames)))
        self.area = float(area_hw[0] * area_hw[1])
        self.multiple = multiple
        self.resolutions = {a: self.resolution(a) for a in self.aspect_ratios}

    @classmethod
    def from_config(cls, options: Mapping[str, Any], area_hw: tuple[int, int], num_frames: int | None = None) -> Buckets:
        """From ``data.buckets`` (unknown keys are errors); ``frames`` defaults to ``[num_frames]``."""
        if not isinstance(options, Mapping):
            raise ConfigError(f"data.buckets must be a mapping like {{aspect_ratios: [0.5, 1.0, 2.0], frames: [8]}}, got {options!r}")
        unknown = sorted(set(options) - set(_KEYS))
        if unknown:
            raise ConfigError(f"unknown key(s) data.buckets.{unknown[0]}; allowed: {', '.join(f'data.buckets.{k}' for k in _KEYS)}")
        frames = options.get("frames") or [num_frames or 1]
        return cls(options.get("aspect_ratios") or DEFAULT_ASPECT_RATIOS, list(frames), area_hw, options.get("multiple", 8))

    def resolution(self, aspect: float) -> tuple[int, int]:
        """``(height, width)`` of about the buckets' area at width / height ``aspect``, in multiples of ``multiple``."""
        m = self.multiple
        height = math.sqrt(self.area / aspect)
        return max(m, round(height / m) * m), max(m, round(height * aspect / m) * m)

    def nearest_aspect(self, height: int, width: int) -> float:
        """The bucket aspect ratio closest to ``width / height`` on a log scale."""
        ratio = math.log(width / height)
        return min(self.aspect_ratios, key=lambda a: abs(math.log(a) - ratio))

    def clip_length(self, num_frames: int, stride: int = 1) -> int:
        """The longest clip length a ``num_frames`` video holds at ``stride`` (the shortest when it holds none)."""
        fitting = [f for f in self.frames if (f - 1) * stride + 1 <= num_frames]
        return fitting[-1] if fitting else self.frames[0]

    def assign(self, height: int, width: int, num_frames: int, stride: int = 1) -> Bucket:
        """The bucket of a ``num_frames`` x ``height`` x ``width`` video."""
        h, w = self.resolutions[self.nearest_aspect(height, width)]
        return Bucket(self.clip_length(num_frames, stride), h, w)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{h}x{w}" for h, w in self.resolutions.values())
        return f"Buckets(frames={list(self.frames)}, sizes=[{sizes}])"


__all__ = ["Bucket", "Buckets", "DEFAULT_ASPECT_RATIOS"]
