"""A detected model (`detect.detect_model`) assembled into a text2video pipeline from its own parts, one
branch per format. `text2video.pipelines.load_pipeline`, the one loader, detects, calls `assemble`, then
applies the memory options (`text2video.pipelines.memory`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from ...errors import ConfigError
from .detect import ModelSource

logger = logging.getLogger(__name__)

_SD_FORMATS = ("diffusers-animatediff", "diffusers-stable-diffusion")


def _pipeline_class(kind: Optional[str]) -> type:
    from .. import PIPELINES

    name = kind or "TextToVideoPipeline"
    if name not in PIPELINES:
        raise ConfigError(f"unknown pipeline {name!r}; choose one of: {', '.join(PIPELINES)}")
    return PIPELINES[name]


def _text_encoder_option(text_encoder: Any) -> Any:
    """``text_encoder=`` as given: an encoder object, or a folder to load (string / path)."""
    if isinstance(text_encoder, (str, Path)):
        from ...text import load_text_encoder

        return load_text_encoder(text_encoder)
    return text_encoder


def _ref_of(text_encoder: Any) -> Optional[str]:
    """What ``pipeline.json`` records for a text encoder given as an option (a folder; None for an object)."""
    return str(Path(text_encoder).expanduser().resolve()) if isinstance(text_encoder, (str, Path)) else None


def assemble(
    source: ModelSource,
    kind: Optional[str] = None,
    *,
    text_encoder: Any = None,
    model: Any = None,
    vae: Any = None,
    motion_adapter: Any = None,
    clip_skip: Optional[int] = None,
    checkpoint: str | Path = "latest",
    use_ema: bool = True,
    device: Any = None,
    dtype: Any = None,
    model_classes: Sequence[type] = (),
) -> Any:
    """The pipeline ``kind`` of a detected model, on the CPU in float32 (the pretrained text encoder is
    loaded on ``device`` in ``dtype`` directly). ``model_classes``: model classes besides the registered
    ones that a pipeline folder may name (see `VideoPipeline.from_pretrained`)."""
    from ..memory import parse_dtype

    fmt = source.format
    if kind is None and fmt == "text2video-pipeline":  # the class the folder was saved from
        from ..base import read_pipeline_record

        kind = read_pipeline_record(source.path).get("pipeline")
    cls = _pipeline_class(kind)
    if motion_adapter is not None and fmt not in _SD_FORMATS:
        raise ConfigError(f"--motion-adapter applies to Stable Diffusion and AnimateDiff folders; {source.spec} is {source.description}")
    if clip_skip is not None and not fmt.startswith("diffusers-"):
        raise ConfigError(f"--clip-skip applies to diffusers pipeline folders; {source.spec} is {source.description}")
    if fmt in ("text2video-run", "text2video-checkpoint"):
        from ...runs.folder import run_of_checkpoint
        from ..from_run import pipeline_from_run

        run_dir, target = (source.path, checkpoint) if fmt == "text2video-run" else (run_of_checkpoint(source.path), source.path)
        return pipeline_from_run(run_dir, target, use_ema=use_ema, text_encoder=_text_encoder_option(text_encoder), kind=cls.pipeline_name)
    if fmt == "video-diffusion-pytorch":  # use_ema: its EMA weights when it has them
        if str(checkpoint) != "latest":
            raise ConfigError(f"{source.spec} is {source.description}: --checkpoint applies to run folders only")
    elif str(checkpoint) != "latest" or not use_ema:
        raise ConfigError(
            f"{source.spec} is {source.description}: checkpoint and use_ema (--checkpoint, --no-ema) apply to run folders only "
            "(and --no-ema to a video-diffusion-pytorch checkpoint)"
        )
    if fmt == "text2video-pipeline":
        return cls.from_pretrained(
            source.path, model=model, text_encoder=_text_encoder_option(text_encoder), vae=vae, model_classes=model_classes
        )
    if fmt == "video-diffusion-pytorch":
        from . import vdp

        unet, config, timesteps = vdp.load_model(source.path, None if use_ema else False)
        encoder = vdp.load_text_encoder_for(source.path, config.get("cond_dim"), text_encoder)
        return cls(
            model if model is not None else unet,
            encoder,
            vdp.objective_config(timesteps),
            vdp.DEFAULTS,
            text_encoder_ref=_ref_of(text_encoder),
        )
    from .diffusers_folder import read_parts

    parts = read_parts(source, motion_adapter=motion_adapter, clip_skip=clip_skip)
    for note in parts.notes:
        logger.info("%s: %s", source.spec, note)
    dtype = parse_dtype(dtype)
    encoder = _text_encoder_option(text_encoder) if text_encoder is not None else parts.load_text_encoder(device=device, dtype=dtype)
    pipe = cls(
        model if model is not None else parts.load_model(),
        encoder,
        parts.objective_config,
        parts.defaults,
        text_encoder_ref=parts.text_encoder_ref if text_encoder is None else _ref_of(text_encoder),
        vae=vae if vae is not None else parts.load_vae(),
        scheduler_config=parts.scheduler_config,
        embed_text_encoder=text_encoder is None,
    )
    return pipe
