"""One figure style for the whole book: sizes, fonts, and a fixed colour and marker per method.

Every chapter draws through these helpers so that a method looks the same on every page
(``book/README.md``). Figures have a white background, so they stay legible in the theme's dark mode.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from typing import Iterator

import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = [
    "BOOK_STYLE", "FIGURE_SIZES", "METHOD_STYLES", "CI_FORMATS",
    "method_style", "use_book_style", "book_figure", "results_table",
]

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


CI_FORMATS = ("interval", "pm", None)
"""``results_table(ci=...)``: ``"interval"`` → ``mean [low, high]``, ``"pm"`` → ``mean ± half-width``, None → mean."""


def _ci_columns(frame, column: str) -> tuple[str, str] | None:
    """The 95 % CI bound columns of ``column``: ``<column>_ci_low/_high``, or ``ci_low/ci_high`` for ``mean``."""
    candidates = [(f"{column}_ci_low", f"{column}_ci_high")]
    if column == "mean":
        candidates.append(("ci_low", "ci_high"))
    if column.endswith("_mean"):
        stem = column.removesuffix("_mean")
        candidates.append((f"{stem}_ci_low", f"{stem}_ci_high"))
    for low, high in candidates:
        if low in frame.columns and high in frame.columns:
            return low, high
    return None


def _format_number(value, scale: float, digits: int | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        return str(value)
    number = float(value) * scale
    if digits is not None:
        return f"{number:.{digits}f}"
    if float(value).is_integer() and scale == 1.0:
        return f"{int(number):,}"
    return f"{number:.3g}" if abs(number) < 1000 else f"{number:,.0f}"


def results_table(
    frame,
    columns: Mapping[str, str],
    *,
    percent: Iterable[str] = (),
    ci: str | None = "interval",
    digits: int = 1,
    index: str | None = None,
):
    """A results table for the page: human column names, percentages, and the 95 % CI beside the mean.

    ``columns`` maps raw column names of ``frame`` to the names the reader sees, in display order.
    Columns in ``percent`` (fractions in [0, 1] such as accuracies) are shown ×100 with ``digits``
    decimals; put the unit in the human name, e.g. ``"Accuracy (%)"``. A column whose CI bounds are
    in ``frame`` (``<col>_ci_low``/``<col>_ci_high``; ``ci_low``/``ci_high`` for ``mean``;
    ``<stem>_ci_low`` for ``<stem>_mean``) is shown as ``mean [low, high]`` (``ci="interval"``),
    ``mean ± half-width`` (``ci="pm"``, for symmetric intervals) or the mean alone (``ci=None``).
    Integers get thousands separators; missing or non-finite values show as "–".
    ``index`` (a raw column, also listed in ``columns``) becomes the row labels; otherwise rows are
    numbered from 1. Returns a new ``pandas.DataFrame`` of strings; ``frame`` is not changed.
    """
    import pandas as pd

    if ci not in CI_FORMATS:
        raise ValueError(f"ci must be one of {CI_FORMATS!r}; got {ci!r}")
    if digits < 0:
        raise ValueError(f"digits must be a non-negative integer; got {digits!r}")
    percent = set(percent)
    missing = [column for column in [*columns, *percent] if column not in frame.columns]
    if missing:
        raise ValueError(f"columns not in the table: {missing}; the table has {list(frame.columns)}")
    unlisted = sorted(percent - set(columns))
    if unlisted:
        raise ValueError(f"percent names columns that are not in columns: {unlisted}")
    if index is not None and index not in columns:
        raise ValueError(f"index must be one of the keys of columns; got {index!r}")

    shown = {}
    for column, human in columns.items():
        scale = 100.0 if column in percent else 1.0
        decimals = digits if column in percent else None
        bounds = _ci_columns(frame, column) if ci is not None else None
        cells = []
        for _, row in frame.iterrows():
            text = _format_number(row[column], scale, decimals)
            if bounds is not None and text != "–":
                low, high = row[bounds[0]], row[bounds[1]]
                if all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high)):
                    if ci == "pm":
                        text += " ± " + _format_number((high - low) / 2, scale, decimals)
                    else:
                        text += f" [{_format_number(low, scale, decimals)}, {_format_number(high, scale, decimals)}]"
            cells.append(text)
        shown[human] = cells
    table = pd.DataFrame(shown)
    if index is not None:
        table = table.set_index(columns[index])
    else:
        table.index = pd.RangeIndex(1, len(table) + 1)
    return table
