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
import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = [
    "BOOK_STYLE", "FIGURE_SIZES", "METHOD_STYLES", "CI_FORMATS",
    "method_style", "use_book_style", "book_figure", "results_table",
    "COEFFICIENT_PRESETS", "preset_coefficients", "anl_unit", "anl_curves",
    "plot_anl", "plot_bspline_basis", "plot_sinter",
    "plot_matrices", "plot_curves", "plot_fields", "plot_clouds", "findings",
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


# ---------------------------------------------------------------------------------------------
# The ANL explorer (book/anl_explorer.md): one unit of AuroRA's Adaptive Nonlinear Layer, Eq. 5-8.
# ---------------------------------------------------------------------------------------------

COEFFICIENT_PRESETS = ("zeros", "ramp", "bump", "random 0", "random 1", "random 2", "random 3")
"""Spline-coefficient shapes for :func:`preset_coefficients`: a flat, a linear, a one-bump and seeded random curves."""

# Colours of σ and its parts (not methods, so not in METHOD_STYLES); the grid range is shaded green.
ANL_COLOURS = {"sigma": "black", "F": "#1f77b4", "L": "#ff7f0e", "slope": "#d62728", "grid": "#2ca02c",
               "sinter": "#9467bd"}


def preset_coefficients(preset: str, count: int) -> torch.Tensor:
    """``count`` spline coefficients c_1..c_count shaped like ``preset`` (one of :data:`COEFFICIENT_PRESETS`)."""
    if preset not in COEFFICIENT_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(map(repr, COEFFICIENT_PRESETS))}; got {preset!r}")
    if count < 1:
        raise ValueError(f"count must be a positive integer; got {count!r}")
    if preset == "zeros":
        return torch.zeros(count)
    if preset == "ramp":
        return torch.linspace(-1.0, 1.0, count)
    if preset == "bump":
        return torch.zeros(count).index_fill_(0, torch.tensor([count // 2]), 1.0)
    seed = int(preset.removeprefix("random "))
    return 0.5 * torch.randn(count, generator=torch.Generator().manual_seed(seed))


def anl_unit(
    grid_size: int = 5,
    spline_order: int = 3,
    grid_range: tuple[float, float] = (-1.0, 1.0),
    h: float = 1.0,
    preset: str = "random 0",
    coefficient_scale: float = 1.0,
    fixed: bool = True,
    learnable: bool = True,
):
    """A rank-1 :class:`aurora.AdaptiveNonlinearLayer` with self-projection H = h and coefficients from a preset.

    With ``spline_mode="per_unit"`` (the default) a rank-r̃ layer with H = hI acts like this unit on
    every coordinate, so one unit shows what σ(z) = tanh(H tanh z) + Σ_k c_k B_k(z) (Eq. 5-8) does.
    """
    import aurora

    layer = aurora.AdaptiveNonlinearLayer(
        1, fixed=fixed, learnable=learnable, grid_size=grid_size, spline_order=spline_order, grid_range=grid_range
    )
    with torch.no_grad():
        if fixed:
            layer.self_projection.fill_(h)
        if learnable:
            count = aurora.num_bases(grid_size, spline_order)
            layer.spline_coefficients.copy_(coefficient_scale * preset_coefficients(preset, count)[None, :])
    return layer


def anl_curves(layer, z: torch.Tensor) -> dict[str, np.ndarray]:
    """σ, dσ/dz (autograd through ``layer``), F and L of a rank-1 ANL at the inputs ``z`` (1-D)."""
    if z.ndim != 1:
        raise ValueError(f"z must be a 1-D tensor of inputs; got shape {tuple(z.shape)}")
    z = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        value = layer(z[:, None])[:, 0]
        (slope,) = torch.autograd.grad(value.sum(), z)
    with torch.no_grad():
        zero = torch.zeros_like(z)
        fixed = layer.fixed_part(z[:, None])[:, 0] if layer.self_projection is not None else zero
        learnable = layer.learnable_part(z[:, None])[:, 0] if layer.spline_coefficients is not None else zero
    return {"z": z.detach().numpy(), "sigma": value.detach().numpy(), "slope": slope.numpy(),
            "F": fixed.numpy(), "L": learnable.numpy()}


def _shade_grid(axes, knots: np.ndarray, grid_range: tuple[float, float]) -> None:
    axes.axvspan(*grid_range, color=ANL_COLOURS["grid"], alpha=0.08)
    for knot in (knots[0], knots[-1]):
        axes.axvline(knot, color=ANL_COLOURS["grid"], linestyle=":", linewidth=1)


def plot_anl(layer, z_max: float = 3.0, title: str = "") -> Figure:
    """σ with its parts F and L (left) and dσ/dz (right) of a rank-1 ANL over [-z_max, z_max].

    The layer's grid range is shaded; dotted lines mark the outermost knots, beyond which L = 0.
    """
    curves = anl_curves(layer, torch.linspace(-z_max, z_max, 601))
    figure, (left, right) = book_figure("wide", 1, 2)
    left.plot(curves["z"], curves["sigma"], color=ANL_COLOURS["sigma"], linewidth=2, label="σ(z) = F + L")
    left.plot(curves["z"], curves["F"], color=ANL_COLOURS["F"], linestyle="--", label="F(z) = tanh(h tanh z)")
    left.plot(curves["z"], curves["L"], color=ANL_COLOURS["L"], linestyle="--", label="L(z) (spline)")
    right.plot(curves["z"], curves["slope"], color=ANL_COLOURS["slope"], label="dσ/dz (autograd)")
    knots = layer.knots.numpy()
    grid_range = (float(knots[layer.spline_order]), float(knots[-layer.spline_order - 1]))
    for axes in (left, right):
        _shade_grid(axes, knots, grid_range)
        axes.set_xlabel("z")
        axes.legend(loc="upper left")
    left.set_title(title or "σ and its parts")
    right.set_title("derivative")
    return figure


def plot_bspline_basis(grid_size: int, order: int, grid_range: tuple[float, float] = (-1.0, 1.0)) -> Figure:
    """All grid_size + order B-spline basis functions on a uniform grid, and their sum (1 inside the range)."""
    import aurora

    knots = aurora.uniform_knots(grid_size, order, grid_range)
    z = torch.linspace(-2.0, 2.0, 801)
    basis = aurora.bspline_basis(z, knots, order).numpy()
    figure, axes = book_figure("wide")
    axes.plot(z, basis, linewidth=1)
    axes.plot(z, basis.sum(axis=1), color="black", linestyle="--", linewidth=1.5, label="sum of all bases")
    axes.axvspan(*grid_range, color=ANL_COLOURS["grid"], alpha=0.08)
    axes.set_ylim(-0.05, 1.15)
    axes.set_xlabel("z")
    axes.legend(loc="upper right")
    axes.set_title(f"{basis.shape[1]} B-spline basis functions: grid size {grid_size}, order {order}")
    return figure


def plot_sinter(amplitude: float, frequency: float, x: torch.Tensor | None = None) -> Figure:
    """LoRAN's Sinter(x) = a sin(ωx) x + x on LoRA-sized entries x (default 1e-4..1e-2, log axis).

    Left: the change Sinter(x) − x; right: the relative change a sin(ωx), bounded by ±a (dotted).
    """
    import aurora

    x = torch.logspace(-4, -2, 1500, dtype=torch.float64) if x is None else x
    change = (aurora.sinter(x, amplitude, frequency) - x).numpy()
    figure, (left, right) = book_figure("wide", 1, 2)
    left.plot(x, change, color=ANL_COLOURS["sinter"], linewidth=0.8)
    left.set_title("Sinter(x) − x")
    right.plot(x, change / x.numpy(), color=ANL_COLOURS["sinter"], linewidth=0.8)
    for bound in (amplitude, -amplitude):
        right.axhline(bound, color="black", linestyle=":", linewidth=1)
    right.set_title("relative change; bound ±a")
    for axes in (left, right):
        axes.set_xscale("log")
        axes.set_xlabel("x (entry of ΔW)")
        axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    return figure


def adapter_cost_figure(timings, labels: dict[str, str] | None = None) -> Figure:
    """Training step / our LoRA and merged inference / base, against rank, one row of panels per model (``book/cost.md``).

    ``timings`` is the benchmark's ``timings.csv`` as a DataFrame; error bars are the quartiles of the per-round ratios.
    """
    import numpy as np
    from matplotlib.ticker import FuncFormatter, NullLocator

    labels = labels or {}
    models = list(dict.fromkeys(timings["model"]))
    mpl.rcParams.update(BOOK_STYLE)
    width = FIGURE_SIZES["wide"][0]
    fig, axes = plt.subplots(len(models), 2, figsize=(width, 2.6 * len(models) + 1.2), squeeze=False)
    panels = [("train", "ratio_to_lora", "training step / our LoRA"), ("infer_merged", "ratio_to_base", "merged inference / base")]
    for row, model in enumerate(models):
        of_model = timings[timings["model"] == model]
        batch = of_model.groupby("batch")["rank"].nunique().idxmax()  # the rank sweep's batch size
        first = of_model.iloc[0]
        for column, (phase, ratio, ylabel) in enumerate(panels):
            ax = axes[row][column]
            data = of_model[(of_model["phase"] == phase) & (of_model["batch"] == batch) & of_model[ratio].notna()]
            if data.empty:  # this phase was not run
                ax.set_visible(False)
                continue
            for method in dict.fromkeys(data["method"]):
                if method == "base" and ratio == "ratio_to_base":
                    continue
                line = data[data["method"] == method].sort_values("rank")
                err = np.vstack([line[ratio] - line[f"{ratio}_q1"], line[f"{ratio}_q3"] - line[ratio]])
                ax.errorbar(line["rank"], line[ratio], yerr=err, ms=4, capsize=2, label=labels.get(method, method), **method_style(method))
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            ax.set_xscale("log", base=2)
            ranks = sorted(set(data["rank"]))
            ax.set_xticks(ranks, [str(r) for r in ranks])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlim(min(ranks) / 1.5, max(ranks) * 1.5)
            if data[ratio].max() > 3:  # e.g. LoRAN or full fine-tuning on the 4096-wide block
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.set_xlabel("rank r")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{model}: {first['layers']} layer(s), batch {batch} × {first['seq_len']} tokens", fontsize=9)
    handles, names = next(ax for ax in axes.flat if ax.get_visible()).get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=3, fontsize=7.5)
    return fig


# ---------------------------------------------------------------------------------------------
# Small generic panels (book/appendix_c.md): matrices, curves, 2-D fields and output clouds.
# ---------------------------------------------------------------------------------------------


def plot_matrices(matrices: Mapping[str, torch.Tensor], title: str = "", limit: float = 1.0) -> Figure:
    """Side-by-side heat maps of small matrices with their entries written in, colour range ±``limit``."""
    if not matrices:
        raise ValueError("matrices must name at least one matrix")
    figure, axes = book_figure("wide", 1, len(matrices), squeeze=False)
    for axes_, (name, matrix) in zip(axes[0], matrices.items()):
        values = matrix.detach().cpu().numpy()
        axes_.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
        for (i, j), value in np.ndenumerate(values):
            axes_.text(j, i, f"{value:.2f}", ha="center", va="center")
        axes_.set_title(name, fontsize=9)
        axes_.set_xticks(range(values.shape[1]), [f"col {j + 1}" for j in range(values.shape[1])])
        axes_.set_yticks(range(values.shape[0]), [f"row {i + 1}" for i in range(values.shape[0])])
        axes_.grid(False)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def plot_curves(x: torch.Tensor, curves: Mapping[str, torch.Tensor], xlabel: str, ylabel: str,
                band: tuple[float, float] | None = None, band_label: str = "") -> Figure:
    """Several curves over one x axis (first one dotted black as the reference), with an optional shaded band."""
    figure, axes = book_figure("single")
    for index, (name, y) in enumerate(curves.items()):
        style = dict(color="black", linestyle=":") if index == 0 else {}
        axes.plot(x.numpy(), y.detach().numpy(), label=name, **style)
    if band is not None:
        axes.axvspan(*band, color="0.9", label=band_label)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.legend()
    return figure


def plot_fields(x1: torch.Tensor, x2: torch.Tensor, fields: Mapping[str, torch.Tensor], line_normal: torch.Tensor | None = None,
                limit: float = 2.0) -> Figure:
    """Filled contours of scalar fields on a (x1, x2) mesh; ``line_normal`` a draws the line aᵀx = 0 dashed."""
    figure, axes = book_figure("wide", 1, len(fields), squeeze=False)
    for axes_, (name, field) in zip(axes[0], fields.items()):
        axes_.contourf(x1.numpy(), x2.numpy(), field.reshape(x1.shape).numpy(), levels=21, cmap="RdBu_r",
                       vmin=-limit, vmax=limit)
        if line_normal is not None:
            a1, a2 = (float(v) for v in line_normal)
            ends = np.array([float(x1.min()), float(x1.max())])
            axes_.plot(ends, -a1 / a2 * ends, "k--", linewidth=0.8)
            axes_.set_ylim(float(x2.min()), float(x2.max()))
        axes_.set_title(name, fontsize=9)
        axes_.set_xlabel("$x_1$")
        axes_.grid(False)
    axes[0][0].set_ylabel("$x_2$")
    return figure


def plot_clouds(clouds: Mapping[str, torch.Tensor], title: str = "", limit: float = 3.0) -> Figure:
    """Scatter plots of 2-D point clouds (rows of each tensor) on one square axis."""
    figure, axes = book_figure("square")
    for name, points in clouds.items():
        values = points.detach().numpy()
        axes.scatter(values[:, 0], values[:, 1], s=4, alpha=0.5, label=name)
    axes.set_xlim(-limit, limit)
    axes.set_ylim(-limit, limit)
    axes.set_aspect("equal")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7, loc="lower left")
    return figure


def findings(items: Iterable[str]):
    """A chapter's "What we found" items as a Markdown bullet list (rendered as text in the page, not as code output)."""
    from IPython.display import Markdown

    items = [str(item).strip() for item in items]
    if not items or not all(items):
        raise ValueError("findings needs at least one non-empty item")
    return Markdown("\n".join(f"* {item}" for item in items))
