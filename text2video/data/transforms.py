"""Clip sampling and spatial transforms shared by the file-backed datasets.

Clip sampling (`ClipSampler`): ``num_frames`` frames, ``stride`` apart, from a random start (training)
or from the first frame. **Short videos** (fewer than ``(num_frames - 1) * stride + 1`` frames) keep
the stride, start at frame 0, and are padded up to ``num_frames`` by the ``pad`` policy:

* ``"repeat"`` (default): the last frame is repeated, so the clip ends in a freeze;
* ``"loop"``: the clip starts again from its first frame.

Never with black frames. Spatial transforms (`SpatialTransform`): resize so the short side fits the
target, then a centre or random crop to the target size, then an optional horizontal flip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from text2video.errors import ConfigError

PAD_POLICIES: tuple[str, ...] = ("repeat", "loop")
CROPS: tuple[str, ...] = ("center", "random")


def item_rng() -> np.random.Generator:
    """A numpy generator drawn from torch's RNG, so DataLoader workers (which torch seeds one by one)
    and ``torch.manual_seed`` both control the augmentations."""
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


@dataclass(frozen=True)
class ClipSampler:
    """Which frames of a video make a clip, and how short videos are padded (see the module doc)."""

    num_frames: int = 16
    stride: int = 1
    random_start: bool = True
    pad: str = "repeat"

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.stride < 1:
            raise ConfigError(f"clip sampling needs num_frames >= 1 and stride >= 1, got {self.num_frames}, {self.stride}")
        if self.pad not in PAD_POLICIES:
            raise ConfigError(f"unknown pad policy {self.pad!r}; choose from: {', '.join(PAD_POLICIES)}")

    @property
    def span(self) -> int:
        """Frames of the source a full clip covers."""
        return (self.num_frames - 1) * self.stride + 1

    def start(self, total: int, rng: np.random.Generator | None = None) -> int:
        """The first frame of the clip in a video of ``total`` frames."""
        room = total - self.span
        if room <= 0 or not self.random_start:
            return 0
        return int((rng or item_rng()).integers(0, room + 1))

    def indices(self, total: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Source frame indices of the clip, padded by the policy when the video is short."""
        start = self.start(total, rng)
        return start + self.pad_indices(len(range(start, total, self.stride)[: self.num_frames])) * self.stride

    def pad_indices(self, available: int) -> np.ndarray:
        """Positions ``0 .. available-1`` padded to ``num_frames`` by the policy."""
        if available < 1:
            raise ValueError("cannot pad a clip with no frame")
        positions = np.arange(self.num_frames)
        if self.pad == "repeat":
            return np.minimum(positions, available - 1)
        return positions % available

    def pad_frames(self, frames: np.ndarray) -> np.ndarray:
        """Pad (or cut) decoded clip frames ``(t, ...)`` to ``num_frames`` by the policy."""
        return frames[self.pad_indices(min(len(frames), self.num_frames))]


@dataclass(frozen=True)
class SpatialTransform:
    """Resize the short side, crop to ``size`` (centre or random) and maybe flip horizontally.

    ``size`` is an int (square) or (height, width); None keeps the frames as they are.
    ``hflip`` is the probability of a horizontal flip (0 disables it).
    """

    size: int | tuple[int, int] | None = 256
    crop: str = "center"
    hflip: float = 0.0

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ConfigError(f"unknown crop {self.crop!r}; choose from: {', '.join(CROPS)}")
        if not 0.0 <= self.hflip <= 1.0:
            raise ConfigError(f"hflip is a probability in [0, 1], got {self.hflip}")

    @property
    def hw(self) -> tuple[int, int] | None:
        if self.size is None:
            return None
        return (self.size, self.size) if isinstance(self.size, int) else (int(self.size[0]), int(self.size[1]))

    def __call__(self, video: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        """``video`` (C, T, H, W) float -> (C, T, h, w)."""
        rng = rng or item_rng()
        if self.hw is not None:
            video = resize_short_side(video, self.hw)
            video = crop(video, self.hw, random=self.crop == "random", rng=rng)
        if self.hflip > 0 and rng.random() < self.hflip:
            video = video.flip(-1)
        return video


def resize_short_side(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Scale (C, T, H, W) so that a ``size`` (h, w) crop fits exactly along one side (aspect kept)."""
    _, _, h, w = video.shape
    scale = max(size[0] / h, size[1] / w)
    new_h, new_w = max(size[0], round(h * scale)), max(size[1], round(w * scale))
    if (new_h, new_w) == (h, w):
        return video
    frames = video.permute(1, 0, 2, 3)  # (T, C, H, W): frames as a batch
    out = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=scale < 1)
    return out.permute(1, 0, 2, 3).clamp(-1.0, 1.0).contiguous()


def crop(video: torch.Tensor, size: tuple[int, int], *, random: bool = False, rng: np.random.Generator | None = None) -> torch.Tensor:
    """Centre (or random) crop of (C, T, H, W) to ``size`` (h, w); the frames must be at least that big."""
    _, _, h, w = video.shape
    if h < size[0] or w < size[1]:
        raise ValueError(f"cannot crop {h}x{w} frames to {size[0]}x{size[1]}; resize first")
    if random:
        rng = rng or item_rng()
        top, left = int(rng.integers(0, h - size[0] + 1)), int(rng.integers(0, w - size[1] + 1))
    else:
        top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return video[:, :, top : top + size[0], left : left + size[1]].contiguous()
