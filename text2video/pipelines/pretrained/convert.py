"""``text2video convert``: another project's model as a text2video pipeline folder.

When the input is a whole model (a diffusers pipeline folder, a Stable Diffusion folder with motion
weights, a video-diffusion-pytorch checkpoint with its text encoder, or a Hub id of one), the output is a
complete pipeline folder: ``model/`` (ours), ``vae/``, the model's own text encoder and tokenizer
(``text_encoder/``, ``tokenizer/``), the scheduler config and the defaults in ``pipeline.json``, so
``text2video generate --model OUT`` runs it with no source folder around. When the input is only a
denoiser (a bare UNet folder, a checkpoint whose text encoder is not given), the output is a model folder,
as the importers in `text2video.models.convert` write it (for ``train.init_from``), and the report says
what to pass for a pipeline folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional

from ...errors import ConfigError, Text2VideoError
from .detect import ModelSource, detect_model

logger = logging.getLogger(__name__)

#: ``--from`` value -> the detected formats it converts into a pipeline folder.
SOURCE_FORMATS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "diffusers-unet3d": ("diffusers-text-to-video",),
        "animatediff": ("diffusers-animatediff", "diffusers-stable-diffusion"),
        "video-diffusion-pytorch": ("video-diffusion-pytorch",),
    }
)
_FROM_OF_FORMAT = {fmt: src for src, fmts in SOURCE_FORMATS.items() for fmt in fmts}


def _detect(src: str) -> Optional[ModelSource]:
    try:
        return detect_model(src)
    except Text2VideoError as exc:
        logger.debug("%s is not a whole model (%s); converting the denoiser only", src, exc)
        return None


def _motion_weights(source: ModelSource, given: Any) -> Any:
    if given is not None or source.format != "diffusers-stable-diffusion":
        return given
    from ...models.convert.animatediff import find_motion_weights

    return find_motion_weights(source.path)


def convert_model(
    source: str,
    src: str | Path,
    out: str | Path,
    *,
    motion_adapter: Any = None,
    text_encoder: Any = None,
    use_ema: Optional[bool] = None,
) -> dict[str, Any]:
    """Convert ``src`` written by ``source`` (a key of `text2video.models.convert.CONVERTERS`) into ``out``;
    returns a report (``pipeline``: whether ``out`` is a pipeline folder)."""
    from ...models.convert import convert
    from ...text.encoders import resolve_folder

    out = Path(out)
    detected = _detect(str(src)) if source in SOURCE_FORMATS else None
    if detected is not None and detected.format in _FROM_OF_FORMAT and _FROM_OF_FORMAT[detected.format] != source:
        raise ConfigError(f"{src} is {detected.description}: convert it with --from {_FROM_OF_FORMAT[detected.format]}")
    usable = detected is not None and detected.format in SOURCE_FORMATS.get(source, ())
    adapter = _motion_weights(detected, motion_adapter) if usable else motion_adapter
    if usable and detected.format == "diffusers-stable-diffusion" and adapter is None:
        usable = False  # an image model without motion weights: the inflated UNet only (motion modules at zero)
    if usable and detected.format == "video-diffusion-pytorch" and (text_encoder is None or use_ema):
        from . import vdp

        cond_dim = vdp.read_checkpoint(detected.path, use_ema)[1].get("cond_dim")  # --ema: a checkpoint without EMA weights fails here
        usable = text_encoder is not None or cond_dim is None
    if not usable:
        options = {} if use_ema is None else {"use_ema": use_ema}
        if source == "animatediff" and motion_adapter is not None:
            options["motion_adapter"] = motion_adapter
        report = convert(source, src, out, **options)
        hint = {"video-diffusion-pytorch": "its BERT folder as --text-encoder",
                "animatediff": "a Stable Diffusion or AnimateDiff pipeline folder (model_index.json) with its motion weights",
                "diffusers-unet3d": "the whole TextToVideoSDPipeline folder (model_index.json), not its unet/"}.get(source)  # fmt: skip
        note = "wrote a model folder (for train.init_from)"
        report.setdefault("notes", []).append(note + (f"; for a pipeline folder that `generate` runs, pass {hint}" if hint else ""))
        report["pipeline"] = False
        return report

    from .. import load_pipeline

    options = {"motion_adapter": adapter} if detected.format.startswith("diffusers-") and adapter is not None else {}
    if use_ema is not None:
        options["use_ema"] = use_ema
    pipe = load_pipeline(str(src), text_encoder=text_encoder, **options)
    if detected.format == "video-diffusion-pytorch" and text_encoder is not None:
        pipe.text_encoder_ref = str(resolve_folder(text_encoder).model_dir)
        pipe.embed_text_encoder = True
    pipe.save_pretrained(out)
    model = pipe.model
    report = {
        "source": source,
        "input": str(src),
        "format": detected.format,
        "output": str(out),
        "pipeline": True,
        "weights": "model/diffusion_pytorch_model.safetensors",
        "config": {k: v for k, v in dict(model.config).items() if not str(k).startswith("_")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "parts": sorted(p.name for p in out.iterdir()),
        "defaults": {k: getattr(pipe.defaults, k) for k in ("height", "width", "num_frames", "steps", "sampler", "guidance_scale")},
        "notes": [],
    }
    if adapter is not None:
        report["motion_adapter"] = str(adapter)
    logger.info("wrote the pipeline folder %s (%d parameters)", out, report["parameters"])
    return report
