"""``text2video info``: versions, the device, and what is available; with ``--model X``: what X is
(format, family, parameters, text encoder, VAE, default size/frames/sampler) and the memory one sample
needs at its default size in each dtype."""

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
    from .model_options import add_pretrained_args

    p = sub.add_parser("info", help="print versions, the device and what is available, or what a model is (--model)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--model",
        default=None,
        help="describe this model (any --model of generate: folder, .pt or Hub id) and estimate the memory of one sample",
    )
    p.add_argument(
        "--train-config",
        default=None,
        metavar="YAML",
        help="with a diffusers --model: write a training config that fine-tunes it (its model settings, text encoder, VAE, "
        "schedule; train.init_from the model) for `text2video train --config YAML` (docs/finetuning.md)",
    )
    add_pretrained_args(p)
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


def describe(args: argparse.Namespace) -> dict[str, Any]:
    """`text2video.pipelines.pretrained.describe.describe_model` with the command line's options."""
    from text2video.pipelines.pretrained.describe import describe_model

    from .model_options import pretrained_options

    options = {k: v for k, v in pretrained_options(args).items() if k in ("motion_adapter", "text_encoder", "clip_skip", "revision")}
    return describe_model(args.model, **options)


def run(args: argparse.Namespace) -> int:
    if args.train_config:
        from text2video.errors import ConfigError
        from text2video.pipelines.pretrained.training import write_training_config

        if not args.model:
            raise ConfigError("--train-config describes a model: give it with --model (a diffusers pipeline folder or Hub id)")
        path = write_training_config(args.model, args.train_config, revision=args.revision)
        if args.json:
            print(json.dumps({"train_config": str(path)}))
        else:
            print(f"wrote {path}; train with: text2video train --config {path} --run-dir RUN data.kind=folder "
                  '"data.options={root: CLIPS}" train.lora.rank=8')  # fmt: skip
        return 0
    facts = describe(args) if args.model else collect()
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        _print_text(facts)
    return 0
