"""The ``text2video`` command. Each sub-command lives in ``text2video/commands/<name>.py`` and exposes
``add_parser(subparsers)``; the parser it adds sets ``func(args) -> int``. Command modules import heavy
libraries inside their ``func`` so that ``--help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from . import __version__
from .errors import Text2VideoError

#: Sub-commands in the order ``--help`` lists them. A command whose module is not part of this
#: installation is left out of the parser.
COMMANDS: tuple[str, ...] = (
    "info",
    "data",
    "config",
    "train",
    "generate",
    "interpolate",
    "animate",
    "convert",
    "export",
    "eval",
    "demo",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="text2video",
        description="Train and sample text-to-video diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"text2video {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"text2video.commands.{name}").add_parser(sub)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; a command that sets ``intermixed`` (the name of its positional list) takes
    those positionals anywhere between its options (``train --config x a=1 --run-dir r b=2``)."""
    args, extras = parser.parse_known_args(argv)
    target = getattr(args, "intermixed", None)
    unknown = []
    for item in extras:
        if target and not item.startswith("-") and (target != "overrides" or "=" in item):
            getattr(args, target).append(item)
        else:
            unknown.append(item)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Text2VideoError as exc:
        print(f"text2video {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the command could not read or write: the system's reason, with the path
        if args.verbose:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"text2video {args.command}: error: {exc.strerror or exc}{where}; run with -v for details", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"text2video {args.command}: error: out of memory; use a smaller size, fewer frames or a smaller batch", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"text2video {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
