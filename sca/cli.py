"""The ``sca`` command line.

Subcommands live beside the code they drive: every module named in ``COMMAND_MODULES`` has a
``register(subparsers)`` function that adds its subcommands with ``set_defaults(func=...)``; the
function gets the parsed arguments and returns an exit code.

Registering must stay light: ``sca --help``, ``sca caption --help`` and a rejected argument answer
without importing torch, transformers, gradio, timm, open_clip or matplotlib (a command's function
imports what it needs; tests/test_cli.py checks it). Bad input from the user (a bad argument value,
a missing or unreadable file) is one line on stderr and exit code 2, never a traceback.
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


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``sca caption: error: ... (see `sca caption --help`)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from sca import __version__

    parser = _Parser(prog="sca", description="Segment and Caption Anything")
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
    except Exception as err:
        if not _user_error(err):
            raise
        # Bad input from the user: one clear line, no traceback.
        print(f"sca {args.command}: error: {err}", file=sys.stderr)
        return 2


def _user_error(err: Exception) -> bool:
    """Errors that describe bad input (values, files) rather than a bug."""
    if isinstance(err, (ValueError, FileNotFoundError, KeyError, TypeError)):
        return True
    from sca.data.images import ImageError  # imported only on the error path: numpy + Pillow

    return isinstance(err, ImageError)


if __name__ == "__main__":
    sys.exit(main())
