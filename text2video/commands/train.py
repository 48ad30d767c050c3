"""``text2video train``: train a config (preset or YAML) into a run folder, with dotted overrides."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a config (preset or YAML) with dotted overrides",
        description=(
            "Train a text-to-video model. CONFIG is a preset name (tiny-cpu, text2video-from-scratch, moving-digits, gpu-64, ...; "
            "`text2video config presets` lists them) or a YAML file, also text2video-from-scratch's configs/default.yaml "
            "(migrated on the fly; the new key names are printed); any key can be overridden as section.key=value "
            "(values are YAML). Run on several GPUs or processes with `accelerate launch -m text2video.cli train ...`."
        ),
        epilog="example: text2video train --config tiny-cpu train.steps=500 model.dim=32 --run-dir runs/tiny",
    )
    p.add_argument("--config", "-c", default="tiny-cpu", help="preset name or YAML path (default: tiny-cpu)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=2e-4 model.dim=32")
    p.add_argument("--run-dir", "-o", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument(
        "--resume",
        default=None,
        metavar="latest|PATH",
        help="continue from the run folder's latest checkpoint, or from a checkpoint / run folder",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a run folder that holds an earlier run: its checkpoints, metrics and samples are deleted",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run, intermixed="overrides")


def run(args: argparse.Namespace) -> int:
    import sys

    from ..compat import load_any_config
    from ..errors import ConfigError
    from ..runs.folder import refuse_existing_run
    from ..runs.lock import RunLock

    config, migration = load_any_config(args.config, args.overrides)
    if migration is not None:  # text2video-from-scratch's layout: say what each key is called here
        print(f"{args.config} is a text2video-from-scratch config; read as text2video's (write it out with "
              f"`text2video config migrate {args.config} --out NEW.yaml`):", file=sys.stderr)  # fmt: skip
        for line in migration.notes:
            print(f"  {line}", file=sys.stderr)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    if args.resume is not None and args.overwrite:
        raise ConfigError("--resume continues a run and --overwrite deletes it: give one of them")
    default_dir = migration.run_dir if migration is not None and migration.run_dir else Path("runs") / Path(str(args.config)).stem
    run_dir = Path(args.run_dir) if args.run_dir else Path(default_dir)
    if os.environ.get("RANK", "0") == "0":  # (under accelerate launch the Trainer checks on every process)
        # refused before anything is built: a folder another process trains into, or an earlier run
        with RunLock(run_dir):
            if args.resume is None and not args.overwrite:
                refuse_existing_run(run_dir)
    from ..train.trainer import Trainer

    trainer = Trainer(config, run_dir, progress=not args.no_progress, overwrite=args.overwrite)
    if trainer.lora is not None and trainer.accelerator.is_main_process:
        total = sum(p.numel() for p in trainer.unwrapped.parameters())
        print(
            f"LoRA: {trainer.lora['parameters']:,} trainable parameters of {total:,} "
            f"({trainer.lora['parameters'] / total:.2%}); adapter {trainer.lora['bytes'] / 2**20:.2f} MB per checkpoint file"
        )
    result = trainer.train(resume=args.resume)
    if trainer.accelerator.is_main_process:
        print(f"trained to step {result.step} ({result.stopped}); run folder: {run_dir}")
        if result.checkpoint is not None:
            print(f"checkpoint: {result.checkpoint}")
    return 130 if result.stopped == "interrupted" else 0
