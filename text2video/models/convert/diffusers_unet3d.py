"""``text2video convert --from diffusers-unet3d``: ModelScope-style text-to-video weights in diffusers'
``UNet3DConditionModel`` format (a UNet folder or a pipeline folder with ``unet/``) as a
`UNet3DConditionModel` folder (temporal convolutions, temporal attentions and the input temporal
transformer mapped one to one)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from ..unet3d_condition import UNet3DConditionModel

logger = logging.getLogger(__name__)


def convert(src: Path, out: Path, use_ema: Optional[bool] = None, **overrides: Any) -> dict[str, Any]:
    """Load the diffusers ``UNet3DConditionModel`` at ``src`` (UNet or pipeline folder), save ours to
    ``out``; returns a report. ``overrides`` are config values (e.g. ``fps_embedding=True``);
    ``use_ema`` is accepted for the command line's sake and ignored."""
    model = UNet3DConditionModel.from_diffusers_unet3d(Path(src), **overrides)
    model.save_pretrained(str(out))
    report = {
        "source": "diffusers-unet3d",
        "unet3d": str(src),
        "output": str(out),
        "weights": "diffusion_pytorch_model.safetensors",
        "config": {k: v for k, v in model.config.items() if not k.startswith("_")},
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    logger.info("wrote %s (%d parameters)", out, report["parameters"])
    return report
