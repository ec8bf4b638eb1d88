"""Argument checks shared by the subcommands: bad input is answered before any work, the argparse way.

Every refusal looks like argparse's own: the subcommand's usage line, then ``lrfast <cmd>: error:
argument <name>: <what is wrong>`` on stderr, exit status 2. Two routes lead there:

* ``type=`` functions (``integer``, ``number``, ``whole_number``, ``output_file``, ``output_dir``) check
  one value while argparse parses; they raise ``argparse.ArgumentTypeError``.
* What can only be checked after parsing (a value that depends on another option, on a lazily imported
  module or on the machine) is checked by the subcommand's ``check(args)``, which raises ``UsageError``;
  ``lrfast.cli.main`` hands it to the subcommand's parser (``parser.error``). ``checked()`` turns the
  ValueError/TypeError of a library call that validates user input into that UsageError.

A subcommand's ``check`` runs before its ``func``, so nothing is computed or written before the input
is known to be good.
"""

from __future__ import annotations

import argparse
import math
import os

from .._validate import outside as _outside
from .._validate import bounds as _bounds_words


class UsageError(Exception):
    """Bad command-line input found after parsing; ``main()`` reports it like argparse (exit 2)."""

    def __init__(self, argument: str, message: str):
        self.argument = argument
        # library messages often start with the option's name already ("--sizes: ...", "--threads 9: ..."):
        # say it once
        for prefix in (f"{argument}: ", f"{argument} "):
            if message.startswith(prefix):
                message = message[len(prefix):]
                break
        if len(message) > 500:  # a message that quotes a huge value
            message = f"{message[:400]}... ({len(message):,} characters)"
        super().__init__(f"argument {argument}: {message}")


def checked(argument: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; a ValueError or TypeError it raises (bad input) becomes a UsageError
    naming ``argument``."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise UsageError(argument, str(exc)) from None


def _bounds(low, high, low_open=False, high_open=False) -> str:
    """`` >= 1``, `` in (0, 1]`` ...: the text of the bounds, for the messages (lrfast._validate's words)."""
    return _bounds_words(low, high, low_open=low_open, high_open=high_open)


def integer(low=None, high=None):
    """``type=``: a whole number (decimal digits) within [low, high]."""
    want = f"an integer{_bounds(low, high)}"

    def parse(text):
        try:
            v = int(text)
        except ValueError:  # also more digits than int() takes
            raise argparse.ArgumentTypeError(f"expected {want}, got {_short(text)}") from None
        if _outside(v, low, high, False, False):
            raise argparse.ArgumentTypeError(f"expected {want}, got {_short(text)}")
        return v

    parse.__name__ = "integer"
    return parse


def number(low=None, high=None, *, low_open=False, high_open=False):
    """``type=``: a finite number (not NaN or +-inf) within the bounds (open where asked)."""
    want = f"a finite number{_bounds(low, high, low_open, high_open)}"

    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {_short(text)}") from None
        if not math.isfinite(v) or _outside(v, low, high, low_open, high_open):
            raise argparse.ArgumentTypeError(f"expected {want}, got {_short(text)}")
        return v

    parse.__name__ = "number"
    return parse


def whole_number(low=0):
    """``type=``: a count written as an integer or in e-notation (``250000``, ``1e6``), >= ``low``."""
    want = f"a whole number >= {low} (e.g. 1e6)"

    def parse(text):
        try:
            return _check_whole(int(text), low, want, text)
        except ValueError:
            pass
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {_short(text)}") from None
        if not (math.isfinite(v) and v.is_integer()):
            raise argparse.ArgumentTypeError(f"expected {want}, got {_short(text)}")
        return _check_whole(int(v), low, want, text)

    parse.__name__ = "whole_number"
    return parse


def _check_whole(v, low, want, text):
    if v < low:
        raise argparse.ArgumentTypeError(f"expected {want}, got {_short(text)}")
    return v


#: ``type=`` for seeds: NumPy's generators take any integer >= 0 and reject negative ones.
seed = integer(low=0)


def output_file(text: str) -> str:
    """``type=``: a file path that can be written: not a directory, in an existing writable directory
    (checked, not created: nothing is written before the work is done)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file path, got ''")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; give a file path")
    parent = os.path.dirname(os.path.abspath(text))
    _writable_dir(parent, text)
    if os.path.exists(text) and not os.access(text, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not writable")
    return text


def output_dir(text: str) -> str:
    """``type=``: a directory to write into, created later if missing: an existing writable directory,
    or a path whose nearest existing ancestor is a writable directory."""
    if not text:
        raise argparse.ArgumentTypeError("expected a directory, got ''")
    path = os.path.abspath(text)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
        _writable_dir(path, text)
        return text
    ancestor = os.path.dirname(path)
    while not os.path.exists(ancestor) and os.path.dirname(ancestor) != ancestor:
        ancestor = os.path.dirname(ancestor)
    _writable_dir(ancestor, text)
    return text


def plot_format(path: str) -> None:
    """ValueError when matplotlib, if installed, has no writer for ``path``'s extension (none: PNG).
    A missing matplotlib is left to the code that draws (it says how to install it)."""
    from .._extras import figure_formats

    ext = os.path.splitext(path)[1][1:].lower()
    if not ext:
        return
    formats = figure_formats()
    if formats is None:
        return
    if ext not in formats:
        raise ValueError(f"matplotlib cannot write .{ext} files; use one of "
                         f"{', '.join('.' + f for f in sorted(formats))}")


def _writable_dir(directory: str, text: str) -> None:
    if not os.path.exists(directory):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: directory {directory!r} does not exist")
    if not os.path.isdir(directory):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {directory!r} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: directory {directory!r} is not writable")


def _short(text: str, limit: int = 40) -> str:
    """``repr(text)``, cut to ``limit`` characters (a 5,000-digit number need not be echoed whole)."""
    r = repr(text)
    return r if len(r) <= limit else f"{r[:limit - 5]}...{r[-1]} ({len(text):,} characters)"
