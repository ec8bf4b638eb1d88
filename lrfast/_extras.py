"""The optional packages, imported where they are first needed: matplotlib for plots, tqdm for progress."""

from __future__ import annotations

import sys


def pyplot(needed_for: str, hint: str = "pip install 'lrfast[plot]'"):
    """matplotlib.pyplot (the Agg backend when nothing chose one yet: files, no display needed).

    Raises ImportError naming ``needed_for`` and how to install matplotlib when it is missing."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(f"{needed_for} needs matplotlib: {hint} (missing: {exc.name})") from exc
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def progress_bar(total: int, progress, **options):
    """A tqdm bar on stderr over ``total`` items, or None: ``progress`` False, tqdm missing, or ``progress``
    None (the default) and stderr not a terminal."""
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, leave=False, file=sys.stderr, **options)
