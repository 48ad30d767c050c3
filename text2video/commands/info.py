"""``text2video info``: versions, the device, and what is available."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
from importlib import metadata
from typing import Any, Callable

#: Optional providers of extra facts: "module:function" returning a dict, added when importable.
#: Each area of the package contributes its own (text encoders, formats, ...).
PROVIDERS: tuple[str, ...] = (
    "text2video.io.video:info",
    "text2video.text.encoders:info",
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print versions, the device and what is available")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def collect() -> dict[str, Any]:
    import torch

    from text2video import __version__
    from text2video.models.registry import available_models

    versions = {"text2video": __version__, "python": platform.python_version()}
    for dist in ("torch", "diffusers", "transformers", "accelerate", "av", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    device = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    facts: dict[str, Any] = {
        "versions": versions,
        "device": {
            "default": device,
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "cpu_threads": torch.get_num_threads(),
        },
        "models": available_models(),
    }
    for provider in PROVIDERS:
        module_name, func_name = provider.split(":")
        try:
            func: Callable[[], dict[str, Any]] = getattr(importlib.import_module(module_name), func_name)
        except (ModuleNotFoundError, AttributeError):
            continue
        facts.update(func())
    return facts


def _print_text(facts: dict[str, Any], indent: str = "") -> None:
    for key, value in facts.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_text(value, indent + "  ")
        elif isinstance(value, list):
            print(f"{indent}{key}: {', '.join(map(str, value)) if value else '(none)'}")
        else:
            print(f"{indent}{key}: {value}")


def run(args: argparse.Namespace) -> int:
    facts = collect()
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        _print_text(facts)
    return 0
