"""``text2video convert --from animatediff``: a Stable Diffusion 1.x UNet (diffusers folder) inflated to
`UNet3DConditionModel`, with AnimateDiff motion weights (diffusers ``MotionAdapter`` folder, or an
original AnimateDiff ``.ckpt`` / ``.safetensors``) loaded onto its motion modules."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from ..unet3d_condition import UNet3DConditionModel

logger = logging.getLogger(__name__)


def convert(src: Path, out: Path, motion_adapter: Optional[str | Path] = None, **overrides: Any) -> dict[str, Any]:
    """Inflate the UNet at ``src`` (a UNet folder or a pipeline folder with ``unet/``), load
    ``motion_adapter`` when given (otherwise the motion modules start at zero), save to ``out``.

    ``overrides`` are `UNet3DConditionModel` config values (e.g. ``motion_num_attention_heads`` for an
    original-layout checkpoint with other than 8 heads, or VideoCrafter options). Returns a report.
    """
    model = UNet3DConditionModel.from_unet2d(Path(src), motion_adapter, **overrides)
    model.save_pretrained(str(out))
    motion = dict(model.motion_parameters())
    report = {
        "source": "animatediff",
        "unet2d": str(src),
        "motion_adapter": str(motion_adapter) if motion_adapter is not None else None,
        "out": str(out),
        "config": {k: v for k, v in model.config.items() if not k.startswith("_")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "motion_parameters": sum(p.numel() for p in motion.values()),
        "motion_tensors": len(motion) if motion_adapter is not None else 0,
    }
    logger.info("wrote %s (%d parameters, %d in motion modules)", out, report["parameters"], report["motion_parameters"])
    return report
