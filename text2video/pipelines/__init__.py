"""Pipelines: a denoiser + a text encoder + a sampler, from prompts (or frames) to videos."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from .base import PipelineDefaults, VideoOutput, VideoPipeline, read_pipeline_record
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
    """Load a pipeline folder (``pipeline.json`` + ``model/``) or a training run folder. ``kind`` picks another pipeline class on
    the same files (e.g. ``"InterpolationPipeline"``); keyword arguments go to ``from_pretrained``."""
    from ..errors import ConfigError
    from .from_run import is_run_dir, pipeline_from_run

    if is_run_dir(path):  # a training run folder: its latest checkpoint, EMA weights
        return pipeline_from_run(path, kind=kind or TextToVideoPipeline.pipeline_name, **kwargs)
    record = read_pipeline_record(Path(path))
    name = kind or record.get("pipeline", TextToVideoPipeline.pipeline_name)
    cls = PIPELINES.get(name)
    if cls is None:
        raise ConfigError(f"unknown pipeline {name!r}; choose one of: {', '.join(PIPELINES)}")
    return cls.from_pretrained(path, **kwargs)
