"""Pipelines: a denoiser + a text encoder + a sampler, from prompts (or frames) to videos."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from .base import PipelineDefaults, VideoOutput, VideoPipeline
from .image_to_video import ImageToVideoPipeline
from .interpolate import InterpolationPipeline
from .text_to_video import TextToVideoPipeline

__all__ = [
    "PipelineDefaults",
    "VideoOutput",
    "VideoPipeline",
    "TextToVideoPipeline",
    "ImageToVideoPipeline",
    "InterpolationPipeline",
    "PIPELINES",
    "load_pipeline",
]

#: pipeline.json "pipeline" value -> class.
PIPELINES: MappingProxyType[str, type[VideoPipeline]] = MappingProxyType(
    {cls.pipeline_name: cls for cls in (TextToVideoPipeline, ImageToVideoPipeline, InterpolationPipeline)}
)


def load_pipeline(path: str | Path, kind: str | None = None, **kwargs: Any) -> VideoPipeline:
    """Load any model text2video reads as a pipeline: a pipeline folder (``pipeline.json`` + ``model/``), a
    training run or checkpoint folder, a diffusers ``TextToVideoSDPipeline`` / ``AnimateDiffPipeline`` /
    Stable Diffusion folder (with ``motion_adapter=``), a video-diffusion-pytorch ``.pt`` (with
    ``text_encoder=``), or a Hugging Face Hub id of one of these (detected from the files, see
    `text2video.pipelines.pretrained`). ``kind`` picks another pipeline class on the same model (e.g.
    ``"InterpolationPipeline"``); keyword arguments: ``device``, ``dtype``, ``offload``, ``vae_frames``,
    ``vae_tiling``, ``text_encoder``, ``motion_adapter``, ``clip_skip``, ``checkpoint``, ``use_ema``,
    ``model``, ``vae``, ``revision``."""
    from .pretrained import load_any

    return load_any(path, kind, **kwargs)
