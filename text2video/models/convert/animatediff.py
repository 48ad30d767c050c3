"""``text2video convert --from animatediff IN --out OUT``: Stable Diffusion 1.x's UNet inflated to
`UNet3DConditionModel` with AnimateDiff motion weights.

``IN`` is one of: a diffusers ``UNet2DConditionModel`` folder; a Stable Diffusion pipeline folder
(its ``unet/``); an AnimateDiff pipeline folder saved by diffusers (``unet/`` holds a
``UNetMotionModel`` with the motion modules, or ``unet/`` + ``motion_adapter/``). Motion weights
come from the ``motion_adapter`` option (a ``MotionAdapter`` folder or an original AnimateDiff
``.ckpt`` / ``.safetensors``), else from ``IN/motion_adapter/`` or a single ``IN/*.ckpt`` /
``IN/mm_*.safetensors`` file; without any, the motion modules start at zero.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from ..unet3d_condition import UNet3DConditionModel

logger = logging.getLogger(__name__)


def find_motion_weights(src: Path) -> Optional[Path]:
    """Motion weights stored next to the UNet in ``src``: ``motion_adapter/``, or one motion file."""
    if not src.is_dir():
        return None
    if (src / "motion_adapter").is_dir():
        return src / "motion_adapter"
    files = sorted(src.glob("*.ckpt")) + sorted(src.glob("mm_*.safetensors")) + sorted(src.glob("motion_module*.safetensors"))
    return files[0] if len(files) == 1 else None


def convert(
    src: Path, out: Path, motion_adapter: Optional[str | Path] = None, use_ema: Optional[bool] = None, **overrides: Any
) -> dict[str, Any]:
    """Inflate the UNet at ``src``, load the motion weights, save to ``out``; returns a report.

    ``overrides`` are `UNet3DConditionModel` config values (e.g. ``motion_num_attention_heads`` for an
    original-layout checkpoint with other than 8 heads, or VideoCrafter options). ``use_ema`` is
    accepted for the command line's sake and ignored (these checkpoints hold one set of weights).
    """
    src, notes = Path(src), []
    if motion_adapter is None:
        motion_adapter = find_motion_weights(src)
        if motion_adapter is not None:
            notes.append(f"motion weights found at {motion_adapter}")
    model = UNet3DConditionModel.from_unet2d(src, motion_adapter, **overrides)
    if motion_adapter is None and not any(p.abs().sum() > 0 for n, p in model.motion_parameters() if n.endswith("proj_out.weight")):
        notes.append("no motion weights given: motion modules start at zero (the model equals the image model per frame)")
    model.save_pretrained(str(out))
    motion = dict(model.motion_parameters())
    report = {
        "source": "animatediff",
        "input": str(src),
        "motion_adapter": str(motion_adapter) if motion_adapter is not None else None,
        "output": str(out),
        "weights": "diffusion_pytorch_model.safetensors",
        "config": {k: v for k, v in model.config.items() if not k.startswith("_")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "motion_parameters": sum(p.numel() for p in motion.values()),
        "motion_tensors": len(motion) if motion_adapter is not None else 0,
        "notes": notes,
    }
    logger.info("wrote %s (%d parameters, %d in motion modules)", out, report["parameters"], report["motion_parameters"])
    return report
