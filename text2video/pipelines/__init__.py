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


def load_pipeline(
    path: str | Path, kind: str | None = None, *, checkpoint: str | Path = "latest", use_ema: bool = True, **kwargs: Any
) -> VideoPipeline:
    """Load a pipeline folder (``pipeline.json`` + ``model/``), a training run folder (``checkpoint``: its
    latest by default; ``use_ema``: its EMA weights) or one checkpoint folder of a run. ``kind`` picks another
    pipeline class on the same files (e.g. ``"InterpolationPipeline"``); keyword arguments (``device``,
    ``text_encoder``, ...) go to the loader."""
    from ..errors import CheckpointError, ConfigError
    from .from_run import is_run_dir, pipeline_from_run, run_of_checkpoint

    path = Path(path)
    if path.is_file():
        raise CheckpointError(
            f"{path} is a file; give a run folder (text2video train), one of its checkpoint folders, or a pipeline "
            "folder (text2video export). .pt checkpoints are not read: they are pickles."
        )
    if not path.is_dir():
        raise CheckpointError(f"model folder {path} does not exist")
    run_kind = kind or TextToVideoPipeline.pipeline_name
    if is_run_dir(path):
        return pipeline_from_run(path, checkpoint, use_ema=use_ema, kind=run_kind, **kwargs)
    run = run_of_checkpoint(path)
    if run is not None:  # one checkpoint folder of a run
        return pipeline_from_run(run, path, use_ema=use_ema, kind=run_kind, **kwargs)
    if str(checkpoint) != "latest" or not use_ema:
        raise ConfigError(f"{path} is a pipeline folder: checkpoint and use_ema (--checkpoint, --no-ema) apply to run folders only")
    record = read_pipeline_record(path)
    name = kind or record.get("pipeline", TextToVideoPipeline.pipeline_name)
    cls = PIPELINES.get(name)
    if cls is None:
        raise ConfigError(f"unknown pipeline {name!r}; choose one of: {', '.join(PIPELINES)}")
    return cls.from_pretrained(path, **kwargs)
