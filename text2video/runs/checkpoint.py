"""Atomic checkpoint folders of a training run, safe against kills, disk full, NaNs and concurrent readers.

Layout of a run folder::

    run/run.json                     the run's identity (``run_id``), written when it starts
    run/checkpoints/step-00001000/   model.safetensors, ema.safetensors, optimizer.pt, scheduler.pt,
                                     scaler.pt (fp16 only), rng.pt, .readers, state.json (written last)
    run/checkpoints/latest           a one-line file naming the newest complete checkpoint folder
    run/checkpoints/best/            the checkpoint with the lowest validation loss (``data.val_split``);
                                     ``latest`` and pruning leave it alone

A LoRA run (``train.lora``) writes its adapter instead of the model: ``lora.safetensors`` and
``ema_lora.safetensors`` (`text2video.models.lora`'s file, a few MB, loadable by diffusers too); its
frozen base is ``train.init_from``, and the optimizer state is the adapter's alone.

A checkpoint is written into a hidden temporary folder, every file is fsynced, and the folder is renamed
into place; ``latest`` is then replaced atomically. A crash or kill at any moment leaves ``latest``
pointing at a complete checkpoint of this run. Before anything is written the weights (and the EMA and
optimizer state) are checked finite, and the space they need is compared with the free space. Old
checkpoints are pruned by renaming them out of sight first and deleting them after, never the newest
finite one and never one a reader holds: readers (`open_checkpoint`) take a shared ``flock`` on the
checkpoint's ``.readers`` file, the pruner an exclusive one. `clean_leftovers` removes what a killed
process left behind (temporary folders and files, half-deleted checkpoints) when the next run starts.
Tensors are read with safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Union

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from ..errors import CheckpointError, DiskFullError, NonFiniteError

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
BEST = "best"
STATE_FILE = "state.json"
LORA_WEIGHTS = "lora.safetensors"
EMA_LORA_WEIGHTS = "ema_lora.safetensors"
READERS = ".readers"
RUN_RECORD = "run.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TMP_PREFIX = ".tmp-step-"
_DEL_PREFIX = ".del-"
_LATEST_TMP = f".{LATEST}.tmp-"


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


# ----------------------------------------------------------------------------------------- run identity


def read_run_id(run_dir: str | Path) -> Optional[str]:
    """The ``run_id`` of ``RUN/run.json`` (None for a run written before run ids, or no run)."""
    try:
        return json.loads((Path(run_dir) / RUN_RECORD).read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def start_run_record(run_dir: str | Path) -> str:
    """The run's id: the recorded one, else a new one written to ``RUN/run.json``."""
    found = read_run_id(run_dir)
    if found:
        return found
    run_id = uuid.uuid4().hex
    path = Path(run_dir) / RUN_RECORD
    tmp = path.with_name(f".{RUN_RECORD}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"run_id": run_id}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return run_id


def _state_of(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _belongs(path: Path, run_id: Optional[str]) -> bool:
    """A checkpoint belongs to the run ``run_id`` unless it records another id (older ones record none)."""
    if run_id is None:
        return True
    state = _state_of(path)
    return state is None or state.get("run_id") in (None, run_id)


def list_checkpoints(run_dir: str | Path, *, own: bool = True) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first (``own``: only those of the run's ``run_id``)."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and (child / STATE_FILE).is_file():
            found.append((int(m[1]), child))
    paths = [path for _, path in sorted(found)]
    if own:
        run_id = read_run_id(run_dir)
        paths = [p for p in paths if _belongs(p, run_id)]
    return paths


# ---------------------------------------------------------------------------------------- finite checks


def nonfinite_entries(tensors: dict[str, Any], prefix: str = "") -> list[str]:
    """Names of the floating tensors in a (nested) state dict that hold a NaN or an infinity."""
    bad: list[str] = []
    for key, value in tensors.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, dict):
            bad.extend(nonfinite_entries(value, f"{name}."))
        elif isinstance(value, float) and not math.isfinite(value):
            bad.append(name)
    return bad


def _file_is_finite(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return all(not t.is_floating_point() or bool(torch.isfinite(t).all()) for t in (handle.get_tensor(k) for k in handle.keys()))
    except Exception:  # noqa: BLE001 - unreadable is not finite
        return False


def is_finite_checkpoint(path: Path) -> bool:
    """Whether a checkpoint's weights are finite: recorded by `save_checkpoint`, else read from the files."""
    state = _state_of(path)
    if state is not None and "finite" in state:
        return bool(state["finite"])
    return all(_file_is_finite(path / name) for name in _weight_files(path) if (path / name).is_file())


def _weight_files(path: Path) -> tuple[str, str]:
    """The weights file and the EMA one of a checkpoint: the adapter's for a LoRA run, else the model's."""
    return (LORA_WEIGHTS, EMA_LORA_WEIGHTS) if (path / LORA_WEIGHTS).is_file() else ("model.safetensors", "ema.safetensors")


def newest_finite(run_dir: str | Path) -> Optional[Path]:
    for path in reversed(list_checkpoints(run_dir)):
        if is_finite_checkpoint(path):
            return path
    return None


# ---------------------------------------------------------------------------------------- writing


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    # torch's zip writer and safetensors' Rust writer report a full disk in their own words
    return any(s in text for s in ("no space left", "storagefull", "os error 28", "disk quota", "file write failed"))


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def _disk_full(root: Path, step: int, need: int, previous: Optional[Path]) -> DiskFullError:
    free = shutil.disk_usage(root).free if root.exists() else 0
    kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
    return DiskFullError(
        f"no space left in {root} for checkpoint step {step}: it needs about {_mb(need)}, {_mb(free)} are free; {kept}. "
        "Free some space (or lower train.keep_checkpoints) and continue with --resume latest"
    )


Weights = Union[nn.Module, Mapping[str, torch.Tensor]]


def _weights_state(weights: Weights) -> dict[str, torch.Tensor]:
    return dict(weights) if isinstance(weights, Mapping) else weights.state_dict()


def _write_weights(weights: Weights, path: Path) -> None:
    """A module (safetensors drops its tied duplicates) or a full state dict gathered from a sharded model."""
    if isinstance(weights, Mapping):
        save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(path))
    else:
        save_model(weights, str(path))


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: Weights,
    ema_model: Optional[Weights] = None,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    state: Optional[dict[str, Any]] = None,
    rng_state: Optional[dict[str, Any]] = None,
    keep: int = 3,
    lora: bool = False,
    name: Optional[str] = None,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, keep the newest ``keep``; return it.
    ``name`` (`BEST`) writes that folder instead, replacing the previous one: ``latest`` and pruning ignore it.

    ``model`` and ``ema_model`` are modules or full state dicts, ``optimizer`` an optimizer or its state dict
    (a sharded run gathers them first: `text2video.train.sharding`); the files are the same either way.

    Raises `NonFiniteError` (nothing written) when the weights, the EMA or the optimizer state hold a NaN
    or an infinity, and `DiskFullError` (nothing left behind) when the disk cannot take it.
    """
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    previous = newest_finite(run_dir)
    model_state = _weights_state(model)
    ema_state = _weights_state(ema_model) if ema_model is not None else {}
    optim_state = (optimizer if isinstance(optimizer, Mapping) else optimizer.state_dict()) if optimizer is not None else {}
    bad = nonfinite_entries(model_state, "model.") + nonfinite_entries(ema_state, "ema.")
    bad += nonfinite_entries(optim_state.get("state", {}), "optimizer.") if optim_state else []
    if bad:
        kept = f"the newest finite checkpoint, {previous}, is kept" if previous else "there is no earlier checkpoint"
        raise NonFiniteError(
            f"step {step}: {len(bad)} tensors hold NaN or infinite values ({', '.join(bad[:3])}); the checkpoint was not "
            f"saved and {kept}. Lower train.lr or set train.max_grad_norm, then --resume latest"
        )
    need = _tensor_bytes(model_state) + _tensor_bytes(ema_state) + _tensor_bytes(optim_state) + (1 << 20)
    if shutil.disk_usage(root).free < need:
        raise _disk_full(root, step, need, previous)
    run_id = read_run_id(run_dir)
    record = {"step": step, **(state or {}), "finite": True}
    if run_id:
        record["run_id"] = run_id
    final = root / (name or f"step-{step:08d}")
    tmp = root / f"{_TMP_PREFIX}{step:08d}{'-' + name if name else ''}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        if lora:
            from ..models.lora import save_lora

            save_lora(model, tmp / LORA_WEIGHTS)
            if ema_model is not None:
                save_lora(ema_model, tmp / EMA_LORA_WEIGHTS)
        else:
            _write_weights(model, tmp / "model.safetensors")
            if ema_model is not None:
                _write_weights(ema_model, tmp / "ema.safetensors")
        if optimizer is not None:
            torch.save(optim_state, tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        torch.save(rng_state if rng_state is not None else capture_rng_state(), tmp / "rng.pt")
        (tmp / READERS).write_bytes(b"")
        (tmp / STATE_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
        for child in tmp.iterdir():
            _fsync_file(child)
        _fsync_dir(tmp)
        if final.exists() and not _remove_checkpoint(final):
            shutil.rmtree(tmp)  # a reader holds the folder: it stays (a step's has the same content; an older best is kept)
            if name is not None:
                logger.warning("%s is being read: it stays as it was, not replaced by step %d", final, step)
        else:
            os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and _is_disk_full(exc):
            raise _disk_full(root, step, need, previous) from exc
        if isinstance(exc, OSError):
            kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
            raise CheckpointError(f"cannot write checkpoint step {step} into {root}: {exc.strerror or exc}; {kept}") from exc
        raise
    if name is not None:
        logger.info("saved checkpoint %s (step %d)", final, step)
        return final
    try:
        _write_latest(root, final.name)
    except OSError as exc:  # the new checkpoint is complete: `latest` falls back to the newest complete one
        (root / f"{_LATEST_TMP}{os.getpid()}").unlink(missing_ok=True)
        if _is_disk_full(exc):
            raise _disk_full(root, step, 0, final) from exc
        raise CheckpointError(f"checkpoint {final} was written but {root / LATEST} could not be updated: {exc.strerror}") from exc
    _prune(run_dir, keep, protect=final)
    logger.info("saved checkpoint %s", final)
    return final


def _write_latest(root: Path, name: str) -> None:
    tmp = root / f"{_LATEST_TMP}{os.getpid()}"
    tmp.write_text(name + "\n")
    _fsync_file(tmp)
    os.replace(tmp, root / LATEST)
    _fsync_dir(root)


def _remove_checkpoint(path: Path) -> bool:
    """Delete a checkpoint folder unless a reader holds it: renamed out of sight first, so a kill half way
    through the deletion never leaves a half-empty ``step-N``. Returns whether it was removed."""
    import fcntl

    fd = None
    try:
        fd = os.open(path / READERS, os.O_RDONLY)
    except FileNotFoundError:
        pass  # a checkpoint from before reader locks
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                logger.debug("%s is being read; pruning it later", path)
                return False
        hidden = path.with_name(f"{_DEL_PREFIX}{path.name}-{os.getpid()}")
        os.rename(path, hidden)
    finally:
        if fd is not None:
            os.close(fd)
    shutil.rmtree(hidden, ignore_errors=True)
    return True


def _prune(run_dir: str | Path, keep: int, protect: Path) -> None:
    """Keep the newest ``keep`` checkpoints of this run, ``protect`` and the newest finite one."""
    root = checkpoints_dir(run_dir)
    for stale in root.glob(f"{_TMP_PREFIX}*"):  # torn writes of killed processes
        if stale.name.rsplit("-", 1)[-1] != str(os.getpid()):
            shutil.rmtree(stale, ignore_errors=True)
    complete = list_checkpoints(run_dir)
    old = complete[: max(0, len(complete) - keep)]
    if not old:
        return
    finite = newest_finite(run_dir)
    for path in old:
        if path not in (protect, finite):
            _remove_checkpoint(path)


def clean_leftovers(run_dir: str | Path) -> list[str]:
    """Remove what a killed writer left in ``RUN/checkpoints`` (temporary folders and ``latest`` files,
    half-deleted checkpoints, folders without ``state.json``) and point ``latest`` at the newest complete
    checkpoint of this run. Call it holding the run's lock (`text2video.runs.lock`). Returns what it removed."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    removed = []
    for child in root.iterdir():
        name = child.name
        incomplete = bool(_STEP_DIR.match(name)) and child.is_dir() and not (child / STATE_FILE).is_file()
        if name.startswith((_TMP_PREFIX, _DEL_PREFIX, _LATEST_TMP)) or incomplete:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            removed.append(name)
    newest = list_checkpoints(run_dir)
    pointer = root / LATEST
    named = _pointer_target(root)
    if newest and named != newest[-1]:
        _write_latest(root, newest[-1].name)
        removed.append(f"{LATEST} -> {named.name if named else 'nothing'} (now {newest[-1].name})")
    elif not newest and (pointer.exists() or pointer.is_symlink()):
        pointer.unlink()
        removed.append(LATEST)
    if removed:
        logger.info("cleaned up after an interrupted run in %s: %s", root, ", ".join(removed))
    return removed


# ---------------------------------------------------------------------------------------- resolving


def _pointer_target(root: Path) -> Optional[Path]:
    """The checkpoint ``latest`` names, if it is a plain ``step-N`` name of this folder holding a complete checkpoint."""
    pointer = root / LATEST
    if pointer.is_symlink() or not pointer.is_file():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not _STEP_DIR.match(name):
        logger.warning("%s names %r, which is not a checkpoint of this folder; ignoring it", pointer, name[:80])
        return None
    candidate = root / name
    return candidate if (candidate / STATE_FILE).is_file() and not candidate.is_symlink() else None


def resolve_checkpoint(target: str | Path, run_dir: Optional[str | Path] = None) -> Path:
    """A checkpoint folder from ``latest`` or ``best`` (both need ``run_dir``), a run folder, or a checkpoint folder.

    ``latest`` falls back to the newest complete folder of the run if the pointer is missing or stale, and
    never names a checkpoint of another run.
    """
    if str(target) == LATEST:
        if run_dir is None:
            raise CheckpointError("--resume latest needs a run folder; pass --run-dir or a checkpoint path")
        return _latest(Path(run_dir))
    if str(target) == BEST:
        if run_dir is None:
            raise CheckpointError("the best checkpoint needs a run folder; pass --run-dir or a checkpoint path")
        best = checkpoints_dir(run_dir) / BEST
        if not (best / STATE_FILE).is_file():
            raise CheckpointError(
                f"{run_dir} has no best checkpoint ({best}): it is kept by the validation loss; train with data.val_split > 0"
            )
        return best
    path = Path(target)
    if (path / STATE_FILE).is_file():
        return path
    if checkpoints_dir(path).is_dir():
        return _latest(path)
    raise CheckpointError(f"{path} is neither a checkpoint folder (with {STATE_FILE}) nor a run folder with {CHECKPOINTS}/")


def _latest(run_dir: Path) -> Path:
    root = checkpoints_dir(run_dir)
    candidate = _pointer_target(root)
    run_id = read_run_id(run_dir)
    if candidate is not None and _belongs(candidate, run_id):
        return candidate
    if (root / LATEST).exists():
        logger.warning("%s does not name a complete checkpoint of this run; using the newest complete one", root / LATEST)
    complete = list_checkpoints(run_dir)
    if not complete:
        raise CheckpointError(f"no checkpoint in {root}; train first, or start without --resume")
    return complete[-1]


def previous_intact(path: str | Path) -> Optional[Path]:
    """The newest checkpoint of the same run older than ``path`` whose files read back (None if none)."""
    path = Path(path)
    m = _STEP_DIR.match(path.name)
    run = path.parent.parent
    step = int(m[1]) if m else None
    for other in reversed(list_checkpoints(run)):
        if step is not None and int(_STEP_DIR.match(other.name)[1]) >= step:
            continue
        if other != path and _intact(other):
            return other
    return None


def _intact(path: Path) -> bool:
    if _state_of(path) is None:
        return False
    weights, ema = _weight_files(path)
    for name in (weights, ema):
        file = path / name
        if name == weights or file.exists():
            try:
                with safe_open(str(file), framework="pt"):
                    pass
            except Exception:  # noqa: BLE001
                return False
    return True


@contextlib.contextmanager
def open_checkpoint(target: str | Path, run_dir: Optional[str | Path] = None, *, attempts: int = 20) -> Iterator[Path]:
    """``with open_checkpoint("latest", run) as path:`` the resolved checkpoint folder, which a training
    process writing this run cannot prune while the block runs (a shared lock on its ``.readers``). A
    ``latest`` pruned between resolving and locking is resolved again."""
    import fcntl

    for _ in range(max(1, attempts)):
        path = resolve_checkpoint(target, run_dir)
        try:
            fd = os.open(path / READERS, os.O_RDONLY)
        except FileNotFoundError:
            if (path / STATE_FILE).is_file():  # a checkpoint written before reader locks
                yield path
                return
            continue  # pruned under us: resolve again
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if (path / STATE_FILE).is_file():  # still in place now that it cannot be pruned
                yield path
                return
        finally:
            os.close(fd)
    raise CheckpointError(f"the checkpoints of {run_dir or target} keep disappearing while being read; try again")


# ---------------------------------------------------------------------------------------- reading


def read_state(checkpoint: str | Path) -> dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}{_fallback_hint(path.parent)}") from exc


def _fallback_hint(checkpoint: Path) -> str:
    previous = previous_intact(checkpoint)
    if previous is None:
        return "; no earlier intact checkpoint exists"
    return f"; the previous intact checkpoint is {previous} (pass it as --checkpoint / --resume)"


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path.parent} is missing {path.name} (deleted or never written){_fallback_hint(path.parent)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a broken checkpoint
        raise CheckpointError(f"{path} is corrupt ({str(exc).splitlines()[0][:200]}){_fallback_hint(path.parent)}") from exc


def _check_weights_file(path: Path, hint: Any) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing (deleted or never written){hint()}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({str(exc).splitlines()[0][:200]}){hint()}") from exc


def _hint_for(path: Path) -> Any:
    return lambda: _fallback_hint(path.parent) if _STEP_DIR.match(path.parent.name) else ""


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The full state dict of a weights file (for a sharded model, which loads it through
    `text2video.train.sharding`), with `load_weights`' messages for a missing or corrupt file."""
    path = Path(path)
    _check_weights_file(path, _hint_for(path))
    try:
        return load_file(str(path))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} disappeared while being read{_hint_for(path)()}") from exc


def read_optimizer_state(checkpoint: str | Path) -> dict[str, Any]:
    """A checkpoint's ``optimizer.pt`` (PyTorch's format: parameters numbered in the optimizer's order)."""
    return _torch_load(Path(checkpoint) / "optimizer.pt")


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a safetensors state dict into ``module`` (strict). A missing or corrupt file, and weights of
    another model, are told apart; inside a run the message names the previous intact checkpoint."""
    path = Path(path)
    hint = _hint_for(path)
    _check_weights_file(path, hint)
    try:
        missing, unexpected = load_model(module, str(path), strict=False)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} disappeared while being read{hint()}") from exc
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
    model: Optional[nn.Module] = None,
    ema_model: Optional[nn.Module] = None,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore everything a checkpoint holds into the given objects; return its ``state.json``. A sharded
    run passes no ``model`` / ``ema_model`` / ``optimizer`` here and loads those through `read_weights` and
    `read_optimizer_state`."""
    path = Path(checkpoint)
    state = read_state(path)
    if (path / LORA_WEIGHTS).is_file():  # a LoRA run: the adapters on the (already loaded) base
        from ..models.lora import load_lora_weights

        if model is not None:
            load_lora_weights(model, path / LORA_WEIGHTS)
        if ema_model is not None:
            ema_file = path / EMA_LORA_WEIGHTS
            load_lora_weights(ema_model, ema_file if ema_file.is_file() else path / LORA_WEIGHTS)
    else:
        if model is not None:
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
