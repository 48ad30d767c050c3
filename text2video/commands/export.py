"""``text2video export``: a run's checkpoint as a pipeline folder that `generate` loads, or as a diffusers
pipeline folder (``--format diffusers``) that diffusers' own pipeline classes load."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's checkpoint (EMA weights by default) as a pipeline folder (text2video or diffusers)",
        description="Export a training run (or a checkpoint or pipeline folder) as a pipeline folder: text2video's "
        "(model/ + pipeline.json, for `text2video generate --model`) or, with --format diffusers, a folder diffusers "
        "loads with TextToVideoSDPipeline or AnimateDiffPipeline (UNet3DConditionModel runs with "
        "text.padding=max_length).",
        epilog="example: text2video export runs/tiny-cpu --out models/tiny; "
        "text2video export runs/ft --format diffusers --out models/ft-diffusers",
    )
    p.add_argument("run", help="run folder (holds config.yaml and checkpoints/), checkpoint folder or pipeline folder")
    p.add_argument("--out", required=True, help="pipeline folder to write")
    p.add_argument(
        "--format",
        choices=("text2video", "diffusers"),
        default="text2video",
        help="text2video (default) or diffusers (TextToVideoSDPipeline / AnimateDiffPipeline)",
    )
    p.add_argument("--checkpoint", default="latest", help="latest (default) or a checkpoint folder")
    p.add_argument("--no-ema", action="store_true", help="export the live weights instead of the EMA weights")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipelines import load_pipeline
    from .args import writable_folder

    writable_folder(args.out, "--out")
    pipe = load_pipeline(args.run, checkpoint=args.checkpoint, use_ema=not args.no_ema)
    if args.format == "diffusers":
        from ..pipelines.to_diffusers import export_diffusers

        report = export_diffusers(pipe, args.out)
    else:
        path = pipe.save_pretrained(args.out)
        report = {"format": "text2video", "output": str(path), "notes": []}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        label = report.get("pipeline", "pipeline")
        print(f"{label} folder: {report['output']}")
        for note in report.get("notes", []):
            print(f"note: {note}")
    return 0
