"""Pipelines: a denoiser + a text encoder + a sampler, from prompts (or frames) to videos."""

from __future__ import annotations

import logging
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional, Sequence

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

logger = logging.getLogger(__name__)


def load_pipeline(
    path: str | Path,
    kind: str | None = None,
    *,
    checkpoint: str | Path = "latest",
    use_ema: bool = True,
    device: Any = None,
    dtype: Any = None,
    offload: str = "off",
    vae_frames: Optional[int] = None,
    vae_tiling: bool = False,
    revision: Optional[str] = None,
    lora: Sequence[Any] = (),
    **options: Any,
) -> VideoPipeline:
    """Load any model text2video reads as a pipeline, detected from its files (see `text2video.pipelines.pretrained`):

    - a pipeline folder (``pipeline.json`` + ``model/``; text2video export / convert);
    - a training run folder (``checkpoint``: its latest by default; ``use_ema``: its EMA weights) or one
      checkpoint folder of a run (``checkpoint`` and ``use_ema`` apply to these and to a ``.pt`` only);
    - a diffusers ``TextToVideoSDPipeline`` / ``AnimateDiffPipeline`` folder, or a Stable Diffusion 1.x folder
      with ``motion_adapter=`` (a MotionAdapter folder, Hub id or original AnimateDiff ``.ckpt``);
    - a video-diffusion-pytorch trainer checkpoint ``.pt`` with ``text_encoder=`` (a BERT folder);
    - a Hugging Face Hub id of one of these (``revision``: a branch, tag or commit).

    ``kind`` picks another pipeline class on the same model (e.g. ``"InterpolationPipeline"``). The pipeline
    runs on ``device`` in ``dtype``, with the memory options ``offload`` (off / on / auto: model CPU offload
    on CUDA), ``vae_frames`` (frames per VAE decode) and ``vae_tiling`` (see `text2video.pipelines.memory`).
    Other keyword arguments: ``text_encoder``, ``motion_adapter``, ``clip_skip``, ``model``, ``vae`` (see
    `text2video.pipelines.pretrained.loader.assemble`). ``lora``: LoRA adapters (``PATH[:SCALE]`` or ``(path,
    scale)``; see `text2video.pipelines.lora.lora_file`) merged into the weights of the float32 model before the
    dtype, device and offload apply (`VideoPipeline.unload_lora` gives the base back)."""
    from .memory import configure_runtime
    from .pretrained.detect import detect_model
    from .pretrained.loader import assemble

    source = detect_model(path, revision=revision)
    logger.info("%s: %s", path, source.description)
    if offload == "on" and device is None:
        device = "cuda"  # offload means: run on the GPU, keep on the CPU
    offloading = offload != "off" and device is not None and str(device).startswith("cuda")
    pipe = assemble(source, kind, checkpoint=checkpoint, use_ema=use_ema, device=None if offloading else device, dtype=dtype, **options)
    pipe.source = source
    if lora:
        from .lora import apply_loras

        apply_loras(pipe, lora)
    return configure_runtime(pipe, device=device, dtype=dtype, offload=offload, vae_frames=vae_frames, vae_tiling=vae_tiling)
