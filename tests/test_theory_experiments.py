"""The theory chapters' readers: tables and figures drawn from the experiments' result tables."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from aurora import plots
from aurora.experiments import approximation, gradients, static_merge


def rank_rows() -> pd.DataFrame:
    rows = []
    for rank, (ey, linear, bound, lora, aurora_error) in {1: (0.5, 0.51, 0.49, 0.52, 0.53), 2: (0.2, 0.21, 0.19, 0.2, 0.205)}.items():
        for method, error in dict(eckart_young=ey, linear_closed_form=linear, output_bound=bound, lora=lora, aurora=aurora_error).items():
            rows.append(dict(target="gaussian", inputs="gaussian", rank=rank, grid_size=5, method=method, test_error=error,
                             train_error=error, parameters=10 * rank))
    return pd.DataFrame(rows)


def test_rank_table_ratios_and_distance_to_the_output_bound():
    table = approximation.rank_table(rank_rows())
    assert table.loc[("gaussian", 2), "aurora / eckart_young"] == pytest.approx(0.205 / 0.2)
    assert table.loc[("gaussian", 1), "aurora / linear"] == pytest.approx(0.53 / 0.51)
    assert table.loc[("gaussian", 1), "aurora - output_bound"] == pytest.approx(0.04)


def test_rank_sweep_figure_draws_each_method_present_and_rejects_unknown_targets():
    figure = approximation.plot_rank_sweep(rank_rows(), "gaussian")
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == [approximation.CURVES[m][1] for m in ("eckart_young", "linear_closed_form", "output_bound", "lora", "aurora")]
    aurora_line = figure.axes[0].get_lines()[-1]
    assert list(aurora_line.get_xdata()) == [1, 2] and list(aurora_line.get_ydata()) == [0.53, 0.205]
    assert aurora_line.get_color() == plots.method_style("aurora")["color"]
    plt.close(figure)
    with pytest.raises(ValueError, match="target must be one of \\['gaussian'\\]"):
        approximation.plot_rank_sweep(rank_rows(), "kernel")


def test_growth_summary_reads_linear_growth_and_vanishing_gradients():
    scales = [1.0, 10.0, 1e4]
    rows = []
    for method in gradients.METHODS:
        for family in ("random", "null_space"):
            for loss in ("probe", "squared"):
                for scale in scales:
                    rows.append(dict(method=method, family=family, loss=loss, quantity="A", scale=scale,
                                     max_norm=scale if method == "lora" else (0.0 if scale > 1 else 2.0)))
    summary = gradients.growth_summary(pd.DataFrame(rows)).set_index(["method", "family", "loss"])
    assert summary.loc[("lora", "random", "probe"), "A"] == pytest.approx(1e4)
    assert summary.loc[("aurora", "null_space", "squared"), "A"] == 0.0
    assert "x" not in summary.columns, "quantities without rows are left out"
    figure = gradients.plot_input_scale(pd.DataFrame(rows), "random", "probe", grid_band=(10.0, 100.0))
    assert [ax.get_title() for ax in figure.axes[:5]] == [f"||∂L/∂{q}||" for q in gradients.QUANTITIES]
    assert len(figure.axes[1].get_lines()) == len(gradients.METHODS)
    plt.close(figure)


def test_sinter_derivative_figure_stays_inside_its_envelope():
    figure = gradients.plot_sinter_derivative(amplitude=1e-2, frequency=50.0, w_max=2.0)
    derivative, upper, lower = figure.axes[0].get_lines()
    assert np.all(derivative.get_ydata() <= upper.get_ydata() + 1e-12)
    assert np.all(derivative.get_ydata() >= lower.get_ydata() - 1e-12)
    plt.close(figure)


def test_static_merge_figures_show_accuracy_in_percent_and_reject_unknown_layers():
    e2e = pd.DataFrame([dict(form="dynamic", scale=k, strategy=s, logit_relative_change=0.1 * k, accuracy_dynamic=0.8,
                             accuracy_merged=0.5 if s == "static" else 0.79, prediction_agreement=0.9)
                        for k in (0.1, 1.0) for s in ("static", "least_squares")])
    figure = static_merge.plot_end_to_end(e2e)
    right = figure.axes[1]
    assert right.get_ylabel() == "test accuracy (%)"
    assert [list(line.get_ydata()) for line in right.get_lines()] == [[50.0, 50.0], [79.0, 79.0], [80.0, 80.0]]
    plt.close(figure)
    gaps = pd.DataFrame([dict(form="dynamic", layer="bert.encoder.layer.4.query", strategy="static", z_rms=1.0, relative_gap=0.3)])
    plt.close(static_merge.plot_layer_gaps(gaps, "bert.encoder.layer.4.query"))
    with pytest.raises(ValueError, match="layer must be one of"):
        static_merge.plot_layer_gaps(gaps, "bert.encoder.layer.5.query")


def test_generic_panels_write_the_entries_and_draw_every_series():
    figure = plots.plot_matrices({"M": torch.tensor([[0.5, -0.25], [0.0, 1.0]])}, title="t")
    assert sorted(text.get_text() for text in figure.axes[0].texts) == ["-0.25", "0.00", "0.50", "1.00"]
    plt.close(figure)
    x = torch.linspace(-1, 1, 5)
    figure = plots.plot_curves(x, {"identity": x, "square": x**2}, "x", "y", band=(-0.5, 0.5), band_label="band")
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["identity", "square"]
    plt.close(figure)
    x1, x2 = torch.meshgrid(torch.linspace(-1, 1, 5), torch.linspace(-1, 1, 5), indexing="xy")
    figure = plots.plot_fields(x1, x2, {"f": (x1 + x2).flatten(), "g": (x1 - x2).flatten()}, line_normal=torch.tensor([1.0, 1.0]))
    assert len(figure.axes) == 2 and figure.axes[0].get_lines()[0].get_ydata().tolist() == [1.0, -1.0]
    plt.close(figure)
    figure = plots.plot_clouds({"a": torch.zeros(3, 2), "b": torch.ones(4, 2)})
    assert [len(collection.get_offsets()) for collection in figure.axes[0].collections] == [3, 4]
    plt.close(figure)
    with pytest.raises(ValueError, match="matrices must name at least one matrix"):
        plots.plot_matrices({})
