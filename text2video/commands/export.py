"""``text2video export``: a run folder's checkpoint as a pipeline folder that `generate` loads."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's checkpoint (EMA weights by default) as a pipeline folder",
        description="Export a training run as a pipeline folder (model/ + pipeline.json) for `text2video generate --model`.",
        epilog="example: text2video export runs/tiny-cpu --out models/tiny",
    )
    p.add_argument("run", help="run folder (holds config.yaml and checkpoints/)")
    p.add_argument("--out", required=True, help="pipeline folder to write")
    p.add_argument("--checkpoint", default="latest", help="latest (default) or a checkpoint folder")
    p.add_argument("--no-ema", action="store_true", help="export the live weights instead of the EMA weights")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipelines.from_run import export_run
    from .args import writable_folder

    writable_folder(args.out, "--out")
    path = export_run(args.run, args.out, args.checkpoint, use_ema=not args.no_ema)
    print(f"pipeline folder: {path}")
    return 0
