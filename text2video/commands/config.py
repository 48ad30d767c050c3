"""``text2video config``: list the presets, print one resolved, or migrate a text2video-from-scratch config."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="list presets, show a resolved config, migrate a text2video-from-scratch config",
        description="Work with training configs: `config presets` lists the presets shipped with text2video, `config show "
        "CONFIG [overrides]` prints one with every key resolved, `config migrate FILE` turns text2video-from-scratch's "
        "configs/default.yaml (training_data_dir, model, diffusion, trainer) into a text2video config and says what "
        "each key became.",
        epilog="example: text2video config migrate configs/default.yaml --out configs/text2video.yaml",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    presets = actions.add_parser("presets", help="list the presets")
    presets.set_defaults(func=run_presets)
    show = actions.add_parser("show", help="print a preset or YAML file with every key resolved")
    show.add_argument("config", help="preset name or YAML path (either layout)")
    show.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=2e-4")
    show.set_defaults(func=run_show)
    migrate = actions.add_parser("migrate", help="write a text2video-from-scratch config as a text2video config")
    migrate.add_argument("file", help="the seed's YAML (training_data_dir, model, diffusion, trainer)")
    migrate.add_argument("--out", "-o", default=None, help="where to write the new YAML (default: print it)")
    migrate.add_argument("--force", action="store_true", help="replace --out if it exists")
    migrate.set_defaults(func=run_migrate)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_presets(args: argparse.Namespace) -> int:
    from ..config import PRESET_ALIASES, preset_names

    for name in preset_names():
        print(name)
    for old, new in PRESET_ALIASES.items():
        print(f"{old} (the old name of {new})")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from ..compat import load_any_config

    config, migration = load_any_config(args.config, args.overrides)
    if migration is not None:
        print("\n".join(f"# {line}" for line in migration.notes))
    print(config.to_yaml(), end="")
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    import sys

    from ..compat import migrate_file
    from ..errors import ConfigError

    migration = migrate_file(args.file)
    text = migration.to_yaml()
    if args.out is None:
        print(text, end="")
        return 0
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to replace it, or another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"{args.file} (text2video-from-scratch) -> {out}:", file=sys.stderr)
    for line in migration.notes:
        print(f"  {line}", file=sys.stderr)
    print(
        f"train it with: text2video train --config {out}" + (f" --run-dir {migration.run_dir}" if migration.run_dir else ""),
        file=sys.stderr,
    )
    return 0
