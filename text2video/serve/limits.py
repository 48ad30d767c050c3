"""The ranges a served model accepts for each control, from its pipeline's defaults and its model's config.

A pipeline knows its default size, frames, steps and sampler; how far a person may move from them depends
on the network: a U-Net halves the picture once per level and a transformer cuts it into patches, so
height and width must be multiples of that factor (times the VAE's for a latent pipeline). Values outside
these ranges are refused with one line naming the control, the value and the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..diffusion.sampling import SAMPLERS
from ..errors import ConfigError

__all__ = ["Range", "ControlLimits", "limits_for", "size_multiple", "takes_fps"]

#: Most videos one request may ask for (a person waits for all of them).
MAX_VIDEOS = 8
#: Guidance scales beyond this only burn the picture.
MAX_GUIDANCE = 30.0
MAX_FPS = 60.0
#: How messages name the controls (as the page labels them).
LABELS = {"num_videos": "number of videos", "guidance_scale": "guidance scale"}
#: Smallest height or width offered (unless a model's default is smaller).
MIN_SIZE = 8


@dataclass(frozen=True)
class Range:
    """Allowed values ``minimum..maximum`` in multiples of ``step`` (step 0: any value, e.g. a float)."""

    minimum: float
    maximum: float
    step: float = 1

    def check(self, name: str, value: float, model: str) -> None:
        if value is None or not self.minimum <= value <= self.maximum:
            raise ConfigError(f"{name} {value} is outside what {model} takes: {self.describe()}")
        if self.step and self.step > 1 and value % self.step:
            raise ConfigError(f"{name} {value} is not a multiple of {self.step:g}, which {model} needs: {self.describe()}")

    def describe(self) -> str:
        text = f"{self.minimum:g} to {self.maximum:g}"
        return text + (f" in steps of {self.step:g}" if self.step and self.step > 1 else "")


@dataclass(frozen=True)
class ControlLimits:
    """What the page offers for one model: ranges, choices, and which controls apply."""

    frames: Range
    height: Range
    width: Range
    steps: Range
    guidance_scale: Range
    num_videos: Range
    fps: Range
    samplers: tuple[str, ...]
    takes_text: bool
    takes_fps: bool

    def check(self, model: str, **values: Any) -> None:
        """Raise `ConfigError` for the first value outside its range (None values are not checked)."""
        for name, value in values.items():
            if value is None:
                continue
            if name == "sampler":
                if value not in self.samplers:
                    raise ConfigError(f"sampler {value!r} is not one of {', '.join(self.samplers)}")
                continue
            getattr(self, name).check(LABELS.get(name, name), value, model)


def _config(model: Any) -> Mapping[str, Any]:
    config = getattr(model, "config", None)
    return config if isinstance(config, Mapping) else {}


def size_multiple(pipe: Any) -> int:
    """Height and width must divide by this: the network's downsampling (U-Net levels or patch size)
    times the VAE's factor for latent pipelines."""
    config = _config(pipe.model)
    factor = 1
    levels = config.get("dim_mults") or config.get("block_out_channels")
    if levels:
        factor *= 2 ** (len(levels) - 1)
    patch = config.get("patch_size")
    if patch:
        spatial = patch if isinstance(patch, int) else max(int(p) for p in list(patch)[-2:])
        # a U-Net that runs on pixel blocks (Unet3D's patch_size) halves the block grid; a transformer's patches are all
        factor = factor * int(spatial) if config.get("dim_mults") else max(factor, int(spatial))
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        factor *= int(getattr(vae, "downsample_factor", 1))
    return max(factor, 1)


def takes_fps(pipe: Any) -> bool:
    """Whether the model is conditioned on frames per second (an fps embedding)."""
    return getattr(pipe.model, "fps_embedder", None) is not None or bool(_config(pipe.model).get("fps_embedding"))


def limits_for(pipe: Any) -> ControlLimits:
    """The control ranges of ``pipe`` (a `VideoPipeline`)."""
    d = pipe.defaults
    config = _config(pipe.model)
    multiple = size_multiple(pipe)
    max_frames = int(config.get("motion_max_seq_length") or max(4 * d.num_frames, 32))
    frame_step = 1
    patch = config.get("patch_size")
    if patch is not None and not isinstance(patch, int) and len(list(patch)) == 3:
        frame_step = int(list(patch)[0])

    def size(default: int) -> Range:
        step = multiple if default % multiple == 0 else math.gcd(multiple, default)  # the default always fits
        low = min(default, step * math.ceil(MIN_SIZE / step))
        top = max(4 * default, 4 * step)
        return Range(low, top - top % step, step)

    total_steps = int(getattr(pipe.objective, "num_train_timesteps", 1000))
    text = getattr(pipe, "text_encoder", None) is not None
    return ControlLimits(
        frames=Range(max(2, frame_step), max(max_frames, d.num_frames), frame_step),
        height=size(d.height),
        width=size(d.width),
        steps=Range(1, total_steps),
        guidance_scale=Range(0.0, MAX_GUIDANCE, 0) if text else Range(1.0, 1.0, 0),
        num_videos=Range(1, MAX_VIDEOS),
        fps=Range(1.0, MAX_FPS, 0),
        samplers=tuple(SAMPLERS),
        takes_text=text,
        takes_fps=takes_fps(pipe),
    )
