"""``text2video convert --from diffusers-unet3d``: ModelScope-style text-to-video weights in diffusers'
``UNet3DConditionModel`` format (a UNet folder or a pipeline folder with ``unet/``) as a
`UNet3DConditionModel` folder (temporal convolutions, temporal attentions and the input temporal
transformer mapped one to one)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..unet3d_condition import UNet3DConditionModel

logger = logging.getLogger(__name__)


def convert(src: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    """Load the diffusers ``UNet3DConditionModel`` at ``src``, save ours to ``out``; returns a report."""
    model = UNet3DConditionModel.from_diffusers_unet3d(Path(src), **overrides)
    model.save_pretrained(str(out))
    report = {
        "source": "diffusers-unet3d",
        "unet3d": str(src),
        "out": str(out),
        "config": {k: v for k, v in model.config.items() if not k.startswith("_")},
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    logger.info("wrote %s (%d parameters)", out, report["parameters"])
    return report
