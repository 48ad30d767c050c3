"""Atomic checkpoint folders of a training run.

Layout of a run folder::

    run/checkpoints/step-00001000/   model.safetensors, ema.safetensors, optimizer.pt, scheduler.pt,
                                     scaler.pt (fp16 only), rng.pt, state.json (written last)

A LoRA run (``train.lora``) writes its adapter instead of the model: ``lora.safetensors`` and
``ema_lora.safetensors`` (`text2video.models.lora`'s file, a few MB, loadable by diffusers too); its
frozen base is ``train.init_from``, and the optimizer state is the adapter's alone.
    run/checkpoints/latest           a one-line file naming the newest complete checkpoint folder

A checkpoint is written into a hidden temporary folder, every file is fsynced, and the folder is renamed
into place; ``latest`` is then replaced atomically. A crash or kill at any moment leaves ``latest``
pointing at a complete checkpoint. Tensors are read with safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from ..errors import CheckpointError

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "state.json"
LORA_WEIGHTS = "lora.safetensors"
EMA_LORA_WEIGHTS = "ema_lora.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the training loop may touch: Python, NumPy, torch CPU and CUDA (when present)."""
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and (child / STATE_FILE).is_file():
            found.append((int(m[1]), child))
    return [path for _, path in sorted(found)]


def _write_latest(root: Path, name: str) -> None:
    tmp = root / f".{LATEST}.tmp-{os.getpid()}"
    tmp.write_text(name + "\n")
    _fsync_file(tmp)
    os.replace(tmp, root / LATEST)
    _fsync_dir(root)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: nn.Module,
    ema_model: Optional[nn.Module] = None,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    state: Optional[dict[str, Any]] = None,
    rng_state: Optional[dict[str, Any]] = None,
    keep: int = 3,
    lora: bool = False,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, keep the newest ``keep``; return it."""
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        if lora:
            from ..models.lora import save_lora

            save_lora(model, tmp / LORA_WEIGHTS)
            if ema_model is not None:
                save_lora(ema_model, tmp / EMA_LORA_WEIGHTS)
        else:
            save_model(model, str(tmp / "model.safetensors"))
            if ema_model is not None:
                save_model(ema_model, str(tmp / "ema.safetensors"))
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        torch.save(rng_state if rng_state is not None else capture_rng_state(), tmp / "rng.pt")
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **(state or {})}, indent=2))
        for child in tmp.iterdir():
            _fsync_file(child)
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_latest(root, final.name)
    _prune(root, keep, protect=final)
    logger.info("saved checkpoint %s", final)
    return final


def _prune(root: Path, keep: int, protect: Path) -> None:
    complete = list_checkpoints(root.parent)
    for old in complete[: max(0, len(complete) - keep)]:
        if old != protect:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid != str(os.getpid()):
            shutil.rmtree(stale, ignore_errors=True)


def resolve_checkpoint(target: str | Path, run_dir: Optional[str | Path] = None) -> Path:
    """A checkpoint folder from ``latest`` (needs ``run_dir``), a run folder, or a checkpoint folder.

    ``latest`` falls back to the newest complete folder if the pointer is missing or stale.
    """
    if str(target) == LATEST:
        if run_dir is None:
            raise CheckpointError("--resume latest needs a run folder; pass --run-dir or a checkpoint path")
        return _latest(Path(run_dir))
    path = Path(target)
    if (path / STATE_FILE).is_file():
        return path
    if checkpoints_dir(path).is_dir():
        return _latest(path)
    raise CheckpointError(f"{path} is neither a checkpoint folder (with {STATE_FILE}) nor a run folder with {CHECKPOINTS}/")


def _latest(run_dir: Path) -> Path:
    root = checkpoints_dir(run_dir)
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / STATE_FILE).is_file():
            return candidate
        logger.warning("%s names %s, which is not a complete checkpoint; using the newest complete one", pointer, candidate)
    complete = list_checkpoints(run_dir)
    if not complete:
        raise CheckpointError(f"no checkpoint in {root}; train first, or start without --resume")
    return complete[-1]


def read_state(checkpoint: str | Path) -> dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a broken checkpoint
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a safetensors state dict into ``module`` (strict)."""
    try:
        missing, unexpected = load_model(module, str(path), strict=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            f"cannot load weights from {path}: it does not fit the model ({exc}); was it saved from a different model config?"
        ) from exc
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}; "
            "was it saved from a different model config?"
        )


def load_checkpoint(
    checkpoint: str | Path,
    *,
    model: nn.Module,
    ema_model: Optional[nn.Module] = None,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore everything a checkpoint holds into the given objects; return its ``state.json``."""
    path = Path(checkpoint)
    state = read_state(path)
    if (path / LORA_WEIGHTS).is_file():  # a LoRA run: the adapters on the (already loaded) base
        from ..models.lora import load_lora_weights

        load_lora_weights(model, path / LORA_WEIGHTS)
        if ema_model is not None:
            ema_file = path / EMA_LORA_WEIGHTS
            load_lora_weights(ema_model, ema_file if ema_file.is_file() else path / LORA_WEIGHTS)
    else:
        load_weights(model, path / "model.safetensors")
        if ema_model is not None:
            ema_file = path / "ema.safetensors"
            load_weights(ema_model, ema_file if ema_file.is_file() else path / "model.safetensors")
    if optimizer is not None:
        optimizer.load_state_dict(_torch_load(path / "optimizer.pt"))
    if scheduler is not None:
        scheduler.load_state_dict(_torch_load(path / "scheduler.pt"))
    if scaler is not None and (path / "scaler.pt").is_file():
        scaler.load_state_dict(_torch_load(path / "scaler.pt"))
    if restore_rng:
        restore_rng_state(_torch_load(path / "rng.pt"))
    return state
