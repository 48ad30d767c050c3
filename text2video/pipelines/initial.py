"""``train.init_from``: the weights a run starts from, from any model this package can load.

A ``.safetensors`` file or a ``save_pretrained`` model folder (``text2video convert``'s output for a bare
denoiser) gives its weights as they are; anything else goes through the one loader,
`text2video.pipelines.load_pipeline`: run folders, their checkpoint folders, pipeline folders, diffusers
``TextToVideoSDPipeline`` / ``AnimateDiffPipeline`` folders, Hugging Face Hub ids of them, and a
video-diffusion-pytorch ``.pt`` (its EMA ``Unet3D``, with the run's text encoder). It gives the
weights of the model it builds (a LoRA run's model comes with its adapter merged in), and what the base
was trained with (objective, scheduler, prompt encoding), which `base_differences` compares with a run's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, ModelError, TextEncoderError

logger = logging.getLogger(__name__)

__all__ = ["InitialWeights", "base_differences", "initial_weights", "load_initial_weights", "base_scheduler_config"]

MODEL_WEIGHTS = "diffusion_pytorch_model.safetensors"
#: files the one loader reads as a video-diffusion-pytorch checkpoint (weights only)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
#: the `ObjectiveConfig` fields that fix a diffusion chain: a base and a run that differ here disagree on what x_t is.
SCHEDULE_FIELDS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type", "rescale_zero_terminal_snr")


@dataclass
class InitialWeights:
    """A state dict and where it came from (an absolute path, or a Hub id); for a loaded pipeline also its
    objective config, its own scheduler config (a pretrained diffusers model's) and whether it encodes
    prompts padded to the tokenizer's length (None for bare weights)."""

    state: dict[str, torch.Tensor]
    source: str
    objective: Optional[dict[str, Any]] = None
    scheduler_config: Optional[dict[str, Any]] = None
    max_length_prompts: Optional[bool] = None

    @property
    def objective_kind(self) -> Optional[str]:
        return None if self.objective is None else self.objective.get("objective", "diffusion")


def _weights_file(path: Path) -> InitialWeights:
    from safetensors.torch import load_file

    return InitialWeights(load_file(str(path)), str(path))


def initial_weights(source: str | Path, text_encoder: Any = None) -> InitialWeights:
    """The weights ``train.init_from = source`` names (see the module docstring). ``text_encoder`` (the run's)
    is what a video-diffusion-pytorch ``.pt`` is loaded with (its width is checked against the checkpoint's)."""
    from . import load_pipeline

    path = Path(str(source)).expanduser()
    options: dict[str, Any] = {}
    if path.exists():
        path = path.resolve()
        if path.is_file() and path.suffix == ".safetensors":
            return _weights_file(path)
        if path.is_dir() and (path / MODEL_WEIGHTS).is_file() and not (path / "pipeline.json").is_file():
            return _weights_file(path / MODEL_WEIGHTS)
        if path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES and text_encoder is not None:
            options["text_encoder"] = text_encoder
    spec = str(path) if path.exists() else str(source)
    try:
        pipe = load_pipeline(spec, **options)
    except (CheckpointError, ModelError, TextEncoderError) as exc:
        raise ConfigError(
            f"train.init_from = {source!r}: {exc}. Give a run, checkpoint or pipeline folder, a diffusers pipeline folder, "
            "a Hub id, a video-diffusion-pytorch .pt, a save_pretrained model folder or a .safetensors file"
        ) from exc
    state = {k: v.detach().clone() for k, v in pipe.model.state_dict().items()}
    max_length = None if pipe.text_encoder is None or "text_encoder" in options else hasattr(pipe.text_encoder, "null_prompt")
    return InitialWeights(state, spec, pipe.objective.config.to_dict(), pipe.scheduler_config, max_length)


def load_initial_weights(model: nn.Module, source: str | Path, text_encoder: Any = None) -> InitialWeights:
    """Load ``train.init_from`` into ``model`` strictly; a mismatch names the differing keys."""
    found = initial_weights(source, text_encoder)
    own = model.state_dict()
    missing = sorted(set(own) - set(found.state))
    unexpected = sorted(set(found.state) - set(own))
    shapes = sorted(k for k in set(own) & set(found.state) if own[k].shape != found.state[k].shape)
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"train.init_from = {source}: its weights do not fit the configured model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, other shapes {shapes[:3]}); give the model section the base model's settings (its preset, "
            "or for a diffusers folder the settings `text2video info --model BASE` lists under training)"
        )
    model.load_state_dict(found.state, strict=True)
    logger.info("initial weights loaded from %s", found.source)
    return found


def base_differences(found: InitialWeights, objective: Any, padding: str) -> list[str]:
    """How a run that trains with ``objective`` (an `ObjectiveConfig`) and ``text.padding = padding`` differs from
    what its base was trained with: one line per setting (empty for bare weights, or when they agree)."""
    if found.objective is None:
        return []
    lines = []
    base_kind, ours = found.objective_kind, objective.objective
    if base_kind != ours:
        lines.append(f"diffusion.objective: the base was trained with {base_kind}, this run trains with {ours}")
    elif ours == "diffusion":
        mine = objective.to_dict()
        for key in SCHEDULE_FIELDS:
            if key in found.objective and found.objective[key] != mine.get(key):
                lines.append(f"diffusion.{key}: the base was trained with {found.objective[key]!r}, this run trains with {mine.get(key)!r}")
    if found.max_length_prompts is not None and found.max_length_prompts != (padding == "max_length"):
        base_padding = "max_length" if found.max_length_prompts else "longest"
        lines.append(f"text.padding: the base encodes prompts with {base_padding}, this run with {padding}")
    return lines


def base_scheduler_config(found: InitialWeights, objective: Any) -> Optional[dict[str, Any]]:
    """The base's own scheduler config when a model trained from it with ``objective`` still walks the chain it
    describes (the diffusion objective on the same schedule); otherwise None (the run's objective samples)."""
    if found.scheduler_config is None or objective.objective != "diffusion":
        return None
    mine = objective.to_dict()
    if any(key in (found.objective or {}) and found.objective[key] != mine.get(key) for key in SCHEDULE_FIELDS):
        return None
    return found.scheduler_config
