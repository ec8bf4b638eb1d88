"""The ``lrfast`` command line: one argparse subcommand per module of this package.

Each subcommand lives in ``lrfast/cli/_<name>.py`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed arguments, returning an exit status) and, where some
input can only be checked after parsing, ``check`` (called first; raises ``UsageError``). Modules import
their heavy dependencies inside ``check``/``func`` so ``lrfast --help`` stays fast.

Bad input is answered argparse's way whichever route found it (see ``_args``): the subcommand's usage,
``lrfast <cmd>: error: argument ...`` on stderr and exit status 2 (``SystemExit(2)`` from ``main``),
before any work is done or any file written.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._version import __version__
from ._args import UsageError

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
        sub.choices[name].set_defaults(command_parser=sub.choices[name])  # for errors found after parsing
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    check = getattr(args, "check", None)
    if check is not None:
        try:
            check(args)
        except UsageError as exc:
            args.command_parser.error(str(exc))  # usage + "lrfast <cmd>: error: ...", exit 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
