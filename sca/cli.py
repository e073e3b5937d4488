"""The ``sca`` command line.

Subcommands live beside the code they drive: every module named in ``COMMAND_MODULES`` has a
``register(subparsers)`` function that adds its subcommands with ``set_defaults(func=...)``; the
function gets the parsed arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "sca.models.commands",
    "sca.data.commands",
    "sca.data.download_commands",
    "sca.evaluation.commands",
    "sca.training.commands",
    "sca.training.segmenter_commands",
    "sca.app.commands",
    "sca.pipeline.commands",
]


def build_parser() -> argparse.ArgumentParser:
    from sca import __version__

    parser = argparse.ArgumentParser(prog="sca", description="Segment and Caption Anything")
    parser.add_argument("--version", action="version", version=f"sca {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as err:
        # Bad input from the user: one clear line, no traceback.
        print(f"sca {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
