"""``text2video convert``: import another project's checkpoint as a text2video model folder."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from text2video.models.convert import CONVERTERS

    p = sub.add_parser(
        "convert",
        help="convert another project's checkpoint into a text2video model folder",
        description="Convert a checkpoint written by another project into a save_pretrained folder.",
    )
    p.add_argument("--from", dest="source", required=True, choices=sorted(CONVERTERS), help="the project that wrote the checkpoint")
    p.add_argument("input", metavar="IN", help="checkpoint file (.pt/.pth/.safetensors)")
    p.add_argument("--out", required=True, help="output folder (written with save_pretrained)")
    ema = p.add_mutually_exclusive_group()
    ema.add_argument("--ema", dest="use_ema", action="store_const", const=True, default=None, help="take the EMA weights")
    ema.add_argument("--no-ema", dest="use_ema", action="store_const", const=False, help="take the trained (non-EMA) weights")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from text2video.models.convert import convert

    from .args import readable_file, writable_folder

    if not Path(args.input).is_dir():  # a folder (diffusers layouts) is checked by its converter
        readable_file(args.input, "checkpoint")
    writable_folder(args.out, "--out")
    # only sources with EMA weights take the option; the others keep their own defaults
    options = {} if args.use_ema is None else {"use_ema": args.use_ema}
    report = convert(args.source, args.input, args.out, **options)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        config = ", ".join(f"{k}={v}" for k, v in report.get("config", {}).items())
        print(f"wrote {report.get('output', args.out)} ({report.get('weights', 'weights')}); config: {config}")
        for note in report.get("notes", []):
            print(f"note: {note}")
    return 0
