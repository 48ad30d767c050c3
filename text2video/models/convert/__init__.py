"""Importers of other projects' checkpoints. Each is ``convert(src, out, **options) -> dict`` that
writes a ``save_pretrained`` folder to ``out`` and returns a report (inferred config, checks made)."""

from __future__ import annotations

import contextlib
import importlib
import pickle
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator

from safetensors import SafetensorError

from ...errors import ModelError, Text2VideoError

#: source format -> "module:function", imported lazily.
CONVERTERS: MappingProxyType[str, str] = MappingProxyType(
    {
        "video-diffusion-pytorch": "text2video.models.convert.video_diffusion_pytorch:convert",
        "diffusers-dit": "text2video.models.convert.diffusers_dit:convert",
        "animatediff": "text2video.models.convert.animatediff:convert",
        "diffusers-unet3d": "text2video.models.convert.diffusers_unet3d:convert",
    }
)


def converter(source: str) -> Callable[..., dict[str, Any]]:
    """The importer for ``source``; a `ModelError` names the known sources."""
    target = CONVERTERS.get(source)
    if target is None:
        raise ModelError(f"unknown checkpoint source {source!r}; choose one of: {', '.join(CONVERTERS)}")
    module_name, func = target.split(":")
    return getattr(importlib.import_module(module_name), func)


@contextlib.contextmanager
def reading_errors(src: str | Path, source: str) -> Iterator[None]:
    """Turn the errors of reading a foreign file (missing, unreadable, truncated, of another kind) into one
    `ModelError` naming it; the importers' own `Text2VideoError` messages pass through."""
    try:
        yield
    except Text2VideoError:
        raise
    except (OSError, EOFError, UnicodeDecodeError, ValueError, KeyError, pickle.UnpicklingError, SafetensorError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(f"cannot read {src} as a {source} checkpoint ({type(exc).__name__}: {reason}); check the file and --from") from exc


def convert(source: str, src: str | Path, out: str | Path, **options: Any) -> dict[str, Any]:
    """Convert the checkpoint ``src`` written by ``source`` into a text2video model folder ``out`` (errors of
    reading it: `reading_errors`)."""
    run = converter(source)
    with reading_errors(src, source):
        return run(Path(src), Path(out), **options)
