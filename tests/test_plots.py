"""aurora.plots: the book's figure style, results tables, and the ANL explorer's helpers."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

import aurora
from aurora import plots


def test_method_style_is_fixed_per_method_and_distinct_for_the_papers_methods():
    styles = {method: plots.method_style(method) for method in ("lora", "moslora", "aurora", "loran", "peft_dora")}
    assert len({style["color"] for style in styles.values()}) == len(styles)
    assert plots.method_style("aurora") == plots.method_style("aurora")
    assert plots.method_style("no such method")["color"] == "#555555"
    line, = plt.plot([0, 1], [0, 1], **plots.method_style("lora"))
    assert matplotlib.colors.to_hex(line.get_color()) == "#1f77b4"
    plt.close("all")


def test_book_figure_uses_the_book_sizes_and_a_white_background():
    figure, axes = plots.book_figure("single", 1, 2)
    assert tuple(figure.get_size_inches()) == plots.FIGURE_SIZES["single"]
    assert len(axes) == 2
    assert matplotlib.colors.to_hex(figure.get_facecolor()) == "#ffffff", "legible in the dark theme"
    plt.close(figure)
    with pytest.raises(ValueError, match="size must be one of 'wide'"):
        plots.book_figure("huge")
    with plots.use_book_style():
        assert matplotlib.rcParams["axes.facecolor"] == "white"


SUMMARY = pd.DataFrame({
    "label": ["LoRA r=8", "AuroRA r=2"],
    "mean": [0.81234, 0.83],
    "ci_low": [0.8, 0.81],
    "ci_high": [0.82, 0.852],
    "params": [12288, 3072],
    "seconds": [1.234, float("nan")],
    "difference": [0.0, 0.0177],
    "difference_ci_low": [0.0, -0.004],
    "difference_ci_high": [0.0, 0.0394],
})


def test_results_table_shows_human_names_percentages_and_intervals():
    table = plots.results_table(
        SUMMARY,
        {"label": "Method", "params": "Parameters", "mean": "Accuracy (%)", "difference": "Δ vs LoRA (points)",
         "seconds": "Time (s)"},
        percent=["mean", "difference"], index="label",
    )
    assert list(table.columns) == ["Parameters", "Accuracy (%)", "Δ vs LoRA (points)", "Time (s)"]
    assert table.index.name == "Method" and list(table.index) == ["LoRA r=8", "AuroRA r=2"]
    assert table.loc["LoRA r=8", "Accuracy (%)"] == "81.2 [80.0, 82.0]"
    assert table.loc["AuroRA r=2", "Δ vs LoRA (points)"] == "1.8 [-0.4, 3.9]"
    assert table.loc["LoRA r=8", "Parameters"] == "12,288"
    assert table.loc["LoRA r=8", "Time (s)"] == "1.23" and table.loc["AuroRA r=2", "Time (s)"] == "–"
    assert SUMMARY["mean"].iloc[0] == 0.81234, "the input is not changed"


def test_results_table_plus_minus_and_plain_modes():
    plus_minus = plots.results_table(SUMMARY, {"label": "Method", "mean": "Accuracy (%)"}, percent=["mean"], ci="pm")
    assert list(plus_minus["Accuracy (%)"]) == ["81.2 ± 1.0", "83.0 ± 2.1"]
    assert list(plus_minus.index) == [1, 2]
    plain = plots.results_table(SUMMARY, {"mean": "Accuracy"}, ci=None, digits=2)
    assert list(plain["Accuracy"]) == ["0.812", "0.83"]


@pytest.mark.parametrize("arguments, message", [
    (dict(columns={"nope": "x"}), "columns not in the table: \\['nope'\\]"),
    (dict(columns={"mean": "m"}, percent=["params"]), "percent names columns that are not in columns"),
    (dict(columns={"mean": "m"}, ci="sd"), "ci must be one of"),
    (dict(columns={"mean": "m"}, index="label"), "index must be one of the keys of columns"),
])
def test_results_table_rejects_bad_options(arguments, message):
    with pytest.raises(ValueError, match=message):
        plots.results_table(SUMMARY, **arguments)


def test_preset_coefficients_shapes():
    assert torch.equal(plots.preset_coefficients("zeros", 4), torch.zeros(4))
    assert torch.equal(plots.preset_coefficients("bump", 5), torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]))
    ramp = plots.preset_coefficients("ramp", 8)
    assert ramp[0] == -1 and ramp[-1] == 1 and bool((ramp.diff() > 0).all())
    assert torch.equal(plots.preset_coefficients("random 3", 6), plots.preset_coefficients("random 3", 6))
    assert not torch.equal(plots.preset_coefficients("random 3", 6), plots.preset_coefficients("random 2", 6))
    with pytest.raises(ValueError, match="preset must be one of 'zeros'"):
        plots.preset_coefficients("random 9", 4)


def test_anl_unit_and_curves_match_the_closed_forms():
    h = 1.7
    layer = plots.anl_unit(h=h, preset="ramp", grid_size=4, spline_order=2, grid_range=(-2.0, 2.0))
    assert layer.self_projection.item() == pytest.approx(h)
    count = aurora.num_bases(4, 2)
    np.testing.assert_allclose(layer.spline_coefficients[0].detach(), torch.linspace(-1, 1, count), rtol=0, atol=1e-7)
    z = torch.linspace(-6.0, 6.0, 241, dtype=torch.float32)
    curves = plots.anl_curves(layer, z)
    fixed = np.tanh(h * np.tanh(z.numpy()))
    np.testing.assert_allclose(curves["F"], fixed, atol=1e-6)
    knots = aurora.uniform_knots(4, 2, (-2.0, 2.0))
    spline = aurora.bspline_basis(z, knots, 2) @ torch.linspace(-1, 1, count)
    np.testing.assert_allclose(curves["L"], spline.numpy(), atol=1e-5)
    np.testing.assert_allclose(curves["sigma"], curves["F"] + curves["L"], atol=1e-5)
    # slope by central differences of σ, away from the knots where the spline's derivative jumps (order 2)
    step = 1e-3
    inner = torch.tensor([-1.3, 0.3, 4.0])
    numeric = (plots.anl_curves(layer, inner + step)["sigma"] - plots.anl_curves(layer, inner - step)["sigma"]) / (2 * step)
    np.testing.assert_allclose(plots.anl_curves(layer, inner)["slope"], numeric, rtol=2e-3, atol=2e-3)
    without_fixed = plots.anl_curves(plots.anl_unit(fixed=False), torch.tensor([0.5, 10.0]))
    assert without_fixed["F"].tolist() == [0.0, 0.0] and without_fixed["sigma"][1] == 0.0
    with pytest.raises(ValueError, match="1-D tensor"):
        plots.anl_curves(layer, torch.zeros(2, 2))


def test_explorer_figures_draw_the_curves_they_promise():
    figure = plots.plot_anl(plots.anl_unit(), title="check")
    left, right = figure.axes
    assert [line.get_label() for line in left.get_lines()][:3] == ["σ(z) = F + L", "F(z) = tanh(h tanh z)", "L(z) (spline)"]
    assert left.get_title() == "check" and right.get_lines()[0].get_label() == "dσ/dz (autograd)"
    plt.close(figure)
    basis = plots.plot_bspline_basis(3, 2)
    lines = basis.axes[0].get_lines()
    assert len(lines) == aurora.num_bases(3, 2) + 1
    total = lines[-1].get_ydata()
    z = lines[-1].get_xdata()
    inside = (z > -1) & (z < 1)
    np.testing.assert_allclose(total[inside], 1.0, atol=1e-6)
    plt.close(basis)
    sinter = plots.plot_sinter(1e-3, 1e4)
    relative = sinter.axes[1].get_lines()[0].get_ydata()
    assert np.abs(relative).max() <= 1e-3 * (1 + 1e-9)
    assert np.abs(relative).max() > 0.9e-3, "the sine reaches its bound over two decades of x"
    plt.close(sinter)
    assert math.isclose(plots.FIGURE_SIZES["wide"][0], tuple(sinter.get_size_inches())[0])


def test_findings_are_a_markdown_bullet_list():
    shown = plots.findings(["first 1.5", " second "])
    assert shown.data == "* first 1.5\n* second"
    with pytest.raises(ValueError, match="at least one non-empty item"):
        plots.findings([])
    with pytest.raises(ValueError, match="at least one non-empty item"):
        plots.findings(["ok", "  "])
