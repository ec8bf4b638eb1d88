"""The optional packages, imported where they are first needed: matplotlib for plots, tqdm for progress."""

from __future__ import annotations

import sys


PLOT_HINT = "pip install 'lrfast[plot]'"


def matplotlib(needed_for: str, hint: str = PLOT_HINT):
    """The matplotlib module; ImportError naming ``needed_for`` and how to install it when missing.
    Every use of matplotlib in lrfast goes through this module (``pyplot``, ``figure``, ``figure_formats``)."""
    try:
        import matplotlib as mpl
    except ImportError as exc:
        raise ImportError(f"{needed_for} needs matplotlib: {hint} (missing: {exc.name})") from exc
    return mpl


def pyplot(needed_for: str, hint: str = PLOT_HINT):
    """matplotlib.pyplot (the Agg backend when nothing chose one yet: files, no display needed).

    Raises ImportError naming ``needed_for`` and how to install matplotlib when it is missing."""
    mpl = matplotlib(needed_for, hint)
    if "matplotlib.pyplot" not in sys.modules:
        mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure(needed_for: str, hint: str = PLOT_HINT, **options):
    """A new ``matplotlib.figure.Figure`` that pyplot does not track (nothing to close, no global state;
    ``fig.savefig`` writes it). ImportError as ``pyplot`` when matplotlib is missing."""
    matplotlib(needed_for, hint)
    from matplotlib.figure import Figure

    return Figure(**options)


def figure_formats():
    """The file extensions matplotlib can write (``{"png": ..., "pdf": ...}``), or None without matplotlib."""
    try:
        matplotlib("figure_formats")
    except ImportError:
        return None
    from matplotlib.backend_bases import FigureCanvasBase

    return FigureCanvasBase.get_supported_filetypes()


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
