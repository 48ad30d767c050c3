"""Importers of other projects' checkpoints. Each is ``convert(src, out, **options) -> dict`` that
writes a ``save_pretrained`` folder to ``out`` and returns a report (inferred config, checks made)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

from ...errors import ModelError

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


def convert(source: str, src: str | Path, out: str | Path, **options: Any) -> dict[str, Any]:
    """Convert the checkpoint ``src`` written by ``source`` into a text2video model folder ``out``."""
    return converter(source)(Path(src), Path(out), **options)
