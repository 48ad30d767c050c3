"""Where a LoRA adapter file is, from what a user names: the file, its folder, a LoRA run or checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..errors import CheckpointError, ConfigError
from ..models.lora import LORA_FILE
from ..runs.checkpoint import EMA_LORA_WEIGHTS, LORA_WEIGHTS, resolve_checkpoint
from ..runs.folder import is_run_dir, run_of_checkpoint

__all__ = ["apply_loras", "lora_file", "parse_lora_spec"]


def lora_file(path: str | Path, use_ema: bool = True) -> Path:
    """The adapter file of ``path``: a ``.safetensors`` file, a folder holding ``pytorch_lora_weights.safetensors``
    (diffusers' name), a LoRA run folder (its latest checkpoint) or one of its checkpoint folders (their EMA
    adapter by default)."""
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ConfigError(f"LoRA {path}: give a .safetensors adapter file, its folder, or a LoRA run folder")
        return path
    if not path.is_dir():
        raise CheckpointError(f"LoRA {path} does not exist")
    if (path / LORA_FILE).is_file():
        return path / LORA_FILE
    if is_run_dir(path) or run_of_checkpoint(path) is not None:
        checkpoint = resolve_checkpoint(path)
        for name in (EMA_LORA_WEIGHTS, LORA_WEIGHTS) if use_ema else (LORA_WEIGHTS,):
            if (checkpoint / name).is_file():
                return checkpoint / name
        raise CheckpointError(f"{path} is a run whose checkpoint {checkpoint.name} holds no adapter: it was not trained with train.lora")
    raise CheckpointError(f"{path} holds no LoRA adapter ({LORA_FILE}, or a LoRA run's checkpoints)")


def parse_lora_spec(spec: str) -> tuple[str, float]:
    """``PATH[:SCALE]`` -> (path, scale); the scale defaults to 1."""
    path, sep, tail = spec.rpartition(":")
    if sep and path:
        try:
            return path, float(tail)
        except ValueError:
            pass
    return spec, 1.0


def apply_loras(pipe: Any, loras: Sequence[str | Path | tuple[str | Path, float]]) -> None:
    """Load adapters into ``pipe`` (each ``PATH[:SCALE]`` or ``(path, scale)``) and merge them into the weights
    (`VideoPipeline.fuse_lora`: sampling at the base model's speed; `unload_lora` still gives the base back)."""
    for spec in loras:
        path, scale = (spec[0], float(spec[1])) if isinstance(spec, tuple) else parse_lora_spec(str(spec))
        pipe.load_lora(path, scale)
    pipe.fuse_lora()
