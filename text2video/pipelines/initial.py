"""``train.init_from``: the weights a run starts from, from any model this package can load.

A ``.safetensors`` file or a ``save_pretrained`` model folder (``text2video convert``'s output) gives its
weights as they are; anything else goes through the one loader, `text2video.pipelines.load_pipeline`
(run folders, their checkpoint folders, pipeline folders, and whatever that loader learns to read), and
gives the weights of the model it builds (a LoRA run's model comes with its adapter merged in).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

__all__ = ["InitialWeights", "initial_weights", "load_initial_weights"]

MODEL_WEIGHTS = "diffusion_pytorch_model.safetensors"


@dataclass
class InitialWeights:
    """A state dict and where it came from; ``objective`` is the loaded pipeline's (None for bare weights)."""

    state: dict[str, torch.Tensor]
    source: Path
    objective: Optional[str] = None


def initial_weights(source: str | Path) -> InitialWeights:
    """The weights ``train.init_from = source`` names (see the module docstring)."""
    path = Path(source).expanduser().resolve()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ConfigError(
                f"train.init_from = {source!r} is a {path.suffix or 'suffix-less'} file; give a .safetensors file or a model folder"
            )
        from safetensors.torch import load_file

        return InitialWeights(load_file(str(path)), path)
    if not path.is_dir():
        raise ConfigError(f"train.init_from = {source!r}: no such file or folder ({path})")
    if (path / MODEL_WEIGHTS).is_file() and not (path / "pipeline.json").is_file():
        from safetensors.torch import load_file

        return InitialWeights(load_file(str(path / MODEL_WEIGHTS)), path)
    from . import load_pipeline

    try:
        pipe = load_pipeline(path)
    except CheckpointError as exc:
        raise ConfigError(
            f"train.init_from = {source!r}: {exc}. Give a run, checkpoint or pipeline folder, a save_pretrained model folder "
            "or a .safetensors file"
        ) from exc
    state = {k: v.detach().clone() for k, v in pipe.model.state_dict().items()}
    return InitialWeights(state, path, pipe.objective.config.objective)


def load_initial_weights(model: nn.Module, source: str | Path) -> InitialWeights:
    """Load ``train.init_from`` into ``model`` strictly; a mismatch names the differing keys."""
    found = initial_weights(source)
    own = model.state_dict()
    missing = sorted(set(own) - set(found.state))
    unexpected = sorted(set(found.state) - set(own))
    shapes = sorted(k for k in set(own) & set(found.state) if own[k].shape != found.state[k].shape)
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"train.init_from = {source}: its weights do not fit the configured model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, other shapes {shapes[:3]}); give the model section the base model's settings (its preset)"
        )
    model.load_state_dict(found.state, strict=True)
    logger.info("initial weights loaded from %s", found.source)
    return found
