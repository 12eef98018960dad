"""One figure style for the whole book: sizes, fonts, and a fixed colour and marker per method.

Every chapter draws through these helpers so that a method looks the same on every page
(``book/README.md``). Figures have a white background, so they stay legible in the theme's dark mode.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["BOOK_STYLE", "FIGURE_SIZES", "METHOD_STYLES", "method_style", "use_book_style", "book_figure"]

# Page text is ~720 px wide at 100 % zoom; at dpi 100 these widths fill it without scaling fonts down.
FIGURE_SIZES = {"wide": (7.2, 3.4), "single": (5.0, 3.4), "square": (4.6, 4.2), "tall": (7.2, 5.6)}

BOOK_STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.constrained_layout.use": True,
}

# (colour, marker, line style) per method; keys are aurora method names, PEFT baselines ("peft_*"),
# and the non-adapter references. Unknown labels fall back to grey so a new method never crashes a plot.
METHOD_STYLES: dict[str, tuple[str, str, str]] = {
    "lora": ("#1f77b4", "s", "-"),
    "moslora": ("#ff7f0e", "D", "-"),
    "aurora": ("#d62728", "o", "-"),
    "loran": ("#2ca02c", "^", "--"),
    "dora": ("#9467bd", "v", "-"),
    "peft_lora": ("#17becf", "s", ":"),
    "peft_dora": ("#8c564b", "v", ":"),
    "peft_pissa": ("#bcbd22", "P", ":"),
    "peft_vera": ("#e377c2", "X", ":"),
    "peft_fourierft": ("#7f7f7f", "*", ":"),
    "full": ("black", "h", "-."),
    "linear_probe": ("#aaaaaa", "x", ":"),
    "head": ("#aaaaaa", "x", ":"),
}
_FALLBACK = ("#555555", ".", "-")


def method_style(method: str) -> dict[str, str]:
    """``color``, ``marker`` and ``linestyle`` keyword arguments for ``method`` (one look in every chapter)."""
    colour, marker, line = METHOD_STYLES.get(method, _FALLBACK)
    return {"color": colour, "marker": marker, "linestyle": line}


@contextmanager
def use_book_style() -> Iterator[None]:
    """Matplotlib settings of the book (``BOOK_STYLE``) inside a ``with`` block."""
    with mpl.rc_context(BOOK_STYLE):
        yield


def book_figure(size: str = "wide", nrows: int = 1, ncols: int = 1, **subplots) -> tuple[Figure, object]:
    """``plt.subplots`` in the book's style at one of ``FIGURE_SIZES`` ('wide', 'single', 'square', 'tall')."""
    if size not in FIGURE_SIZES:
        raise ValueError(f"size must be one of {', '.join(map(repr, FIGURE_SIZES))}; got {size!r}")
    mpl.rcParams.update(BOOK_STYLE)
    return plt.subplots(nrows, ncols, figsize=FIGURE_SIZES[size], **subplots)
