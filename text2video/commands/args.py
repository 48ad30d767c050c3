"""Checks of command-line values shared by the commands: argparse types that refuse bad numbers with one
line, the device, output paths that must be writable, and text files read in any encoding.

Everything here runs before a model is loaded or memory is allocated, so a mistake costs nothing."""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path
from typing import Optional

from ..errors import ConfigError

# ------------------------------------------------------------------------------------ argparse types


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (sizes, frames, steps, counts)."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(value)


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return int(value)


def seed_int(text: str) -> int:
    """A seed: an integer from 0 to 2**63 - 1."""
    value = _number(text, int)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2**63 - 1, got {text!r}")
    return int(value)


def finite_float(text: str) -> float:
    """A finite number (NaN and infinities are refused: they give black or saturated videos)."""
    return float(_number(text, float))


def positive_float(text: str) -> float:
    value = float(_number(text, float))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = float(_number(text, float))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def unit_float(text: str) -> float:
    """A number in [0, 1]."""
    value = float(_number(text, float))
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


# ------------------------------------------------------------------------------------------ devices


def resolve_device(name: Optional[str]) -> str:
    """``--device``: the best available (CUDA, else CPU) when None; a named device that does not exist
    on this machine is refused."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is usable on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"--device {name}: Apple's MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name}: text2video runs on cpu, cuda or mps")
    return str(device)


# -------------------------------------------------------------------------------------------- paths


def writable_folder(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (with its parents) and check a file can be written in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".text2video-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{what} {path} is not writable ({reason}); choose another folder") from None
    return path


def writable_output(path: str | Path, what: str = "output") -> Path:
    """A file path (with a suffix: its folder must be writable) or a folder (created and checked)."""
    path = Path(path)
    if path.suffix and not path.is_dir():
        if path.exists() and not os.access(path, os.W_OK):
            raise ConfigError(f"{what} {path} exists and is not writable; choose another path")
        writable_folder(path.parent if str(path.parent) else Path("."), f"the folder of the {what}")
        return path
    return writable_folder(path, f"{what} folder")


def readable_file(path: str | Path, what: str = "file") -> Path:
    """An existing regular file this process can read."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    return path


__all__ = [
    "finite_float",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "readable_file",
    "resolve_device",
    "seed_int",
    "unit_float",
    "writable_folder",
    "writable_output",
]
