"""The ``lrfast`` command line: one argparse subcommand per module of this package.

Each subcommand lives in ``lrfast/cli/_<name>.py`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed arguments, returning an exit status). Modules import
their heavy dependencies inside ``func`` so ``lrfast --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._version import __version__

#: Subcommand modules, in the order ``lrfast --help`` lists them.
COMMANDS = ("info", "schedule", "demo", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrfast", description="Fused, learning-rate-aware optimizer kernels: tools and demos."
    )
    parser.add_argument("--version", action="version", version=f"lrfast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}._{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
