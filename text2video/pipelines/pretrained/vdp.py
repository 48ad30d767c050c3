"""A video-diffusion-pytorch trainer checkpoint (text2video-from-scratch's ``results/model-N.pt``) as a pipeline.

The ``Unet3D`` comes through the importer (`text2video.models.convert.video_diffusion_pytorch`: the file
is read with ``weights_only=True``, EMA weights by default), the schedule from the checkpoint's own
``betas`` (cosine, as ``GaussianDiffusion`` builds it, with its length), the text encoder from
``--text-encoder`` (a BERT folder, mean-pooled as ``bert_embed`` does; its width must be the checkpoint's
``cond_dim``). ``GaussianDiffusion``'s image size and frame count are not stored in the checkpoint:
the defaults are text2video-from-scratch's (5 frames of 32x32), and ``--size`` / ``--frames`` change them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch

from ...errors import CheckpointError, TextEncoderError
from ..base import PipelineDefaults

logger = logging.getLogger(__name__)

FAMILY = "video-diffusion-pytorch Unet3D (text2video-from-scratch)"
#: text2video-from-scratch's sampling settings (configs/default.yaml): 5 frames of 32x32, guidance 2.0.
DEFAULTS = PipelineDefaults(num_frames=5, height=32, width=32, channels=3, fps=8.0, steps=50, sampler="ddim", guidance_scale=2.0)


def read_checkpoint(path: Path, use_ema: Optional[bool] = None) -> tuple[dict[str, torch.Tensor], dict[str, Any], str, int]:
    """(Unet3D state dict, inferred config, which weights, number of diffusion timesteps) of a checkpoint."""
    from ...models.convert.video_diffusion_pytorch import _load_file, infer_config, select_state_dict

    raw = _load_file(path)
    flat = raw.get("state_dict", raw) if isinstance(raw, dict) else {}
    if isinstance(flat, dict) and any(".motion_modules." in str(k) or ".temporal_transformer." in str(k) for k in flat):
        raise CheckpointError(
            f"{path} is an AnimateDiff motion-module checkpoint, not a video-diffusion-pytorch one: pass it as "
            "--motion-adapter, with a Stable Diffusion 1.5 folder as --model"
        )
    state, part = select_state_dict(raw, use_ema=use_ema)
    diffusion = raw.get(part, raw) if isinstance(raw, dict) else {}
    betas = diffusion.get("betas") if isinstance(diffusion, dict) else None
    timesteps = int(betas.shape[0]) if isinstance(betas, torch.Tensor) else 1000
    if isinstance(betas, torch.Tensor):
        from ...diffusion.schedule import make_betas

        cosine = make_betas("cosine", timesteps).float()
        if not torch.allclose(betas.float()[:-1], cosine[:-1], atol=1e-5):
            logger.warning("%s: its betas are not the cosine schedule video-diffusion-pytorch builds; sampling uses cosine", path)
    return state, infer_config(state), part, timesteps


def load_model(path: Path, use_ema: Optional[bool] = None) -> tuple[torch.nn.Module, dict[str, Any], int]:
    """The converted ``Unet3D`` with the checkpoint's weights, its config and the schedule length."""
    from ...models.convert.video_diffusion_pytorch import convert_state_dict
    from ...models.unet3d import Unet3D

    state, config, part, timesteps = read_checkpoint(path, use_ema)
    model = Unet3D(**config)
    model.load_state_dict(convert_state_dict(state, model.state_dict()))
    logger.info("loaded the %s weights of %s (%d diffusion timesteps)", part, path, timesteps)
    return model.eval(), config, timesteps


def objective_config(timesteps: int) -> dict[str, Any]:
    """``GaussianDiffusion``'s chain: cosine betas, noise prediction (its L1 loss is training-only)."""
    return {"num_train_timesteps": timesteps, "beta_schedule": "cosine", "prediction_type": "epsilon", "loss_type": "l1",
            "cond_drop_prob": 0.0}  # fmt: skip


def load_text_encoder_for(path: Path, cond_dim: Optional[int], spec: Any, device: Any = None, dtype: Any = None) -> Any:
    """The BERT encoder ``--text-encoder`` names, checked against the checkpoint's ``cond_dim``."""
    if cond_dim is None:
        if spec is not None:
            logger.warning("%s is an unconditional model (no cond_dim); --text-encoder is ignored", path)
        return None
    if spec is None:
        raise TextEncoderError(
            f"{path} is a text-conditioned video-diffusion-pytorch checkpoint (cond_dim={cond_dim}): pass --text-encoder DIR, "
            f"a local BERT folder whose hidden size is {cond_dim} (text2video-from-scratch used bert-base-cased, 768)"
        )
    if not isinstance(spec, (str, Path)):
        encoder = spec
    else:
        from ...text import load_text_encoder

        encoder = load_text_encoder(spec, device=device, dtype=dtype)
    if getattr(encoder, "dim", cond_dim) != cond_dim:
        raise TextEncoderError(
            f"--text-encoder {spec} gives {encoder.dim}-dim embeddings but {path.name} was trained on {cond_dim}-dim ones "
            f"(its cond_dim): pass a BERT folder whose hidden size is {cond_dim} (text2video-from-scratch used bert-base-cased, 768)"
        )
    return encoder
