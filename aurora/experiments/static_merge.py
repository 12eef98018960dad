"""How far is AuroRA's merged ``ΔW = B σ(A)`` (App. B, Eq. 9) from the dynamic ``B σ(A x)`` it was trained as?

AuroRA trains ``Δh = s · B σ(A x)`` (Eq. 4) and, for inference, folds the static ``ΔW = s · B σ(A)`` into
``W0`` (Algorithm 1). ``σ(A) x ≠ σ(A x)``, so the merged model is a different model. We measure the gap on
MiniLM with AuroRA adapters (r̃ = 2, query and value of its top layers) trained on Fine Food reviews:

* per layer, the relative gap ``||Δh_dynamic − Δh_merged|| / ||Δh_dynamic||`` on held-out layer inputs for
  the three :data:`aurora.MERGE_STRATEGIES` (``static`` is the paper's; ``linearized`` and
  ``least_squares`` are the package's alternatives; least squares is fitted on training inputs);
* end to end, the relative change of the logits and the change of test accuracy after merging;
* both as a function of the scale of ``A x``: every layer's ``(A, B)`` becomes ``(κA, B/κ)``, which keeps
  the linear part ``B J A`` and moves ``A x`` along σ's domain;
* AuroRA-S (``form="static"``, trained as ``B σ(A) x``) for which the merge is exact.

``python -m aurora.experiments.static_merge --quick|--full`` writes ``data/results/static_merge/``
``{training,layer_gaps,end_to_end}.csv`` and the trained adapters. Chapter: ``book/static_merge.md``.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

import aurora
from aurora.experiments.approximation import MiniLMFineFoods, minilm_fine_foods
from aurora.plots import book_figure
from aurora.results import RESULTS_DIR, write_results
from aurora.theory import adapter_map

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["STRATEGY_STYLES", "plot_synthetic_gaps", "plot_layer_gaps", "plot_end_to_end", "RESULTS_NAME", "Settings", "QUICK", "SMOKE", "FULL", "train_adapters", "batches", "logits_of",
           "rescale_down_projections", "down_projection_stats", "layer_gaps", "end_to_end", "ANL_VARIANTS",
           "synthetic_gap_sweep", "run", "main"]

RESULTS_NAME = "static_merge"


@dataclass(frozen=True)
class Settings:
    n_train: int = 1024
    n_test: int = 256
    adapted_layers: int = 3
    max_length: int = 64
    epochs: int = 3
    learning_rate: float = 5e-3
    head_learning_rate: float = 2e-3
    rank: int = 2
    scales: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    calibration_rows: int = 4096
    seed: int = 0


QUICK = Settings()
FULL = Settings(n_train=4000, n_test=1000, adapted_layers=6, max_length=128, epochs=6, calibration_rows=16384,
                scales=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0))
SMOKE = Settings(n_train=64, n_test=32, adapted_layers=1, max_length=16, epochs=1, calibration_rows=256, scales=(1.0,))
"""Toy sizes: the same code in seconds (the book's quick build runs it next to the committed results)."""


def batches(dataset: torch.utils.data.Dataset, batch_size: int = 64, labels: bool = False) -> list[dict[str, torch.Tensor]]:
    """The dataset as dict batches for ``model(**batch)`` (without ``labels`` unless asked)."""
    out = []
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        keys = [k for k in rows[0] if labels or k != "labels"]
        out.append({k: torch.stack([r[k] for r in rows]) for k in keys})
    return out


@torch.no_grad()
def logits_of(model: nn.Module, dataset: torch.utils.data.Dataset) -> torch.Tensor:
    """``(n, classes)`` logits of ``model`` in eval mode."""
    model.eval()
    return torch.cat([model(**batch).logits for batch in batches(dataset)])


def _labels(dataset: torch.utils.data.Dataset) -> torch.Tensor:
    return torch.stack([dataset[i]["labels"] for i in range(len(dataset))])


def train_adapters(data: MiniLMFineFoods, form: str, settings: Settings) -> tuple[nn.Module, float]:
    """A copy of ``data.model`` with AuroRA adapters (``form`` "dynamic" or "static") on query and value, trained.

    Adapters and the classifier head are trained on ``data.train``; returns the model and its test accuracy.
    """
    from aurora.train import TrainConfig, fit

    model = copy.deepcopy(data.model)
    torch.manual_seed(settings.seed)
    config = aurora.AdapterConfig(method="aurora", rank=settings.rank, alpha=2.0 * settings.rank, form=form,
                                  target_modules=aurora.suggest_target_modules(model), modules_to_save=["classifier"])
    aurora.add_adapters(model, config)
    train_config = TrainConfig(epochs=settings.epochs, batch_size=16, lr=settings.learning_rate,
                               head_lr=settings.head_learning_rate, seed=settings.seed, progress=True)
    result = fit(model, data.train, data.test, train_config)
    return model, result.final_metric


@torch.no_grad()
def rescale_down_projections(model: nn.Module, factor: float) -> None:
    """``(A, B) → (κA, B/κ)`` in every adapter layer: the same ``B A`` (and ``B J A``), ``A x`` scaled by ``κ``."""
    for _, layer in aurora.adapter_layers(model):
        layer.lora_A.mul_(factor)
        layer.lora_B.div_(factor)


@torch.no_grad()
def down_projection_stats(layer: aurora.AdapterLayer, inputs: torch.Tensor) -> dict[str, float]:
    """RMS of ``z = A x`` and the fraction of its entries outside the spline grid range, over ``inputs``."""
    z = inputs @ layer.lora_A.T
    low, high = layer.config.grid_range
    return dict(z_rms=float(z.square().mean().sqrt()), outside_grid=float(((z < low) | (z >= high)).float().mean()))


@torch.no_grad()
def layer_gaps(model: nn.Module, fit_inputs: dict[str, torch.Tensor], eval_inputs: dict[str, torch.Tensor]) -> list[dict]:
    """Per layer and strategy, the relative gap of the merged update on ``eval_inputs`` (least squares fitted on ``fit_inputs``)."""
    rows = []
    for name, layer in aurora.adapter_layers(model):
        x = eval_inputs[name]
        exact = layer.adapter_output(x)
        for strategy in aurora.MERGE_STRATEGIES:
            delta_w, delta_b = aurora.merge_update(layer, strategy, fit_inputs[name])
            merged = x @ delta_w.T + (0 if delta_b is None else delta_b)
            gap = float((exact - merged).norm() / exact.norm().clamp_min(1e-30))
            rows.append(dict(layer=name, strategy=strategy, relative_gap=gap, **down_projection_stats(layer, x)))
    return rows


@torch.no_grad()
def end_to_end(model: nn.Module, test: torch.utils.data.Dataset, calibration: dict[str, torch.Tensor]) -> list[dict]:
    """Per strategy: relative logit change and accuracies of the merged vs the unmerged (dynamic) model."""
    labels = _labels(test)
    dynamic = logits_of(model, test)
    rows = []
    for strategy in aurora.MERGE_STRATEGIES:
        aurora.merge(model, strategy, calibration=calibration)
        merged = logits_of(model, test)
        aurora.unmerge(model)
        rows.append(dict(
            strategy=strategy,
            logit_relative_change=float((merged - dynamic).norm() / dynamic.norm()),
            logit_max_abs_change=float((merged - dynamic).abs().max()),
            accuracy_dynamic=float((dynamic.argmax(-1) == labels).float().mean()),
            accuracy_merged=float((merged.argmax(-1) == labels).float().mean()),
            prediction_agreement=float((merged.argmax(-1) == dynamic.argmax(-1)).float().mean()),
        ))
    return rows


ANL_VARIANTS: dict[str, dict] = {
    "AuroRA (F + L)": {},
    "w/o L (F only)": dict(learnable_nonlinearity=False),
    "w/o F (L only)": dict(fixed_nonlinearity=False),
    "AuroRA-S (static form)": dict(form="static"),
}
"""AdapterConfig options of the ANL variants in :func:`synthetic_gap_sweep` (Table 4's ablations, App. B's AuroRA-S)."""


@torch.no_grad()
def synthetic_gap_sweep(inputs: torch.Tensor, scales: tuple[float, ...], rank: int = 2, seed: int = 0) -> list[dict]:
    """Relative merge gaps of one freshly initialised AuroRA layer per ANL variant, with ``A`` scaled by ``κ``.

    ``A`` keeps its Kaiming init times ``κ``, ``B`` gets ``N(0, 1/d_out)`` entries, ``H`` and the spline
    coefficients their inits. Half the ``inputs`` rows fit the least-squares merge, the other half measure.
    """
    half = inputs.shape[0] // 2
    fit_rows, eval_rows = inputs[:half], inputs[half:]
    d = inputs.shape[1]
    rows = []
    for variant, options in ANL_VARIANTS.items():
        torch.manual_seed(seed)
        layer = adapter_map(d, d, aurora.AdapterConfig(method="aurora", rank=rank, alpha=2.0 * rank, **options))
        layer.lora_B.normal_(0.0, d**-0.5)
        initial = layer.lora_A.clone()
        for scale in scales:
            layer.lora_A.copy_(scale * initial)
            exact = layer.adapter_output(eval_rows)
            for strategy in aurora.MERGE_STRATEGIES:
                delta_w, delta_b = aurora.merge_update(layer, strategy, fit_rows)
                merged = eval_rows @ delta_w.T + (0 if delta_b is None else delta_b)
                rows.append(dict(variant=variant, scale=scale, strategy=strategy,
                                 relative_gap=float((exact - merged).norm() / exact.norm().clamp_min(1e-30)),
                                 **down_projection_stats(layer, eval_rows)))
    return rows


def run(settings: Settings = QUICK, progress: bool = True, write: bool = True, results_dir: Path | None = None) -> dict[str, list[dict]]:
    """Train AuroRA and AuroRA-S on MiniLM, then measure every merge; writes ``data/results/static_merge/``."""
    start = time.perf_counter()
    tables: dict[str, list[dict]] = dict(training=[], layer_gaps=[], end_to_end=[])
    data = minilm_fine_foods(settings.n_train, settings.n_test, settings.adapted_layers, settings.max_length, settings.seed)
    for form in tqdm(("dynamic", "static"), desc="forms", disable=not progress):
        model, accuracy = train_adapters(data, form, settings)
        if write:
            aurora.save_adapters(model, (results_dir or RESULTS_DIR) / RESULTS_NAME / f"adapters_{form}")
        tables["training"].append(dict(form=form, test_accuracy=accuracy, adapter_parameters=aurora.trainable_parameters(model),
                                       adapted_layers=len(aurora.adapter_layers(model))))
        for scale in settings.scales if form == "dynamic" else (1.0,):
            rescale_down_projections(model, scale)
            # layer inputs depend on the adapters below, so they are collected again at every scale
            fit_inputs = aurora.collect_calibration_inputs(model, batches(data.train), settings.calibration_rows)
            eval_inputs = aurora.collect_calibration_inputs(model, batches(data.test), settings.calibration_rows)
            keys = dict(form=form, scale=scale)
            tables["layer_gaps"] += [dict(keys, **row) for row in layer_gaps(model, fit_inputs, eval_inputs)]
            tables["end_to_end"] += [dict(keys, **row) for row in end_to_end(model, data.test, fit_inputs)]
            rescale_down_projections(model, 1.0 / scale)
    if write:
        write_results(RESULTS_NAME, tables, asdict(settings), wall_time_s=time.perf_counter() - start, results_dir=results_dir)
    return tables


# ---------------------------------------------------------------------------------------------
# reading the results: the chapter's figures (book/static_merge.md)
# ---------------------------------------------------------------------------------------------

# merge strategy -> line style (the three merges of aurora.MERGE_STRATEGIES; colours are not methods)
STRATEGY_STYLES = {
    "static": dict(color="#d62728", marker="o", linestyle="-"),
    "linearized": dict(color="#1f77b4", marker="s", linestyle="--"),
    "least_squares": dict(color="#2ca02c", marker="^", linestyle="-"),
}


def plot_synthetic_gaps(synthetic: "pd.DataFrame", offset_prediction: float) -> Figure:
    """Relative merge gap against the RMS of z = A x, one panel per ANL variant, one line per strategy.

    ``offset_prediction`` (dotted, full ANL only) is the first-order gap of the static merge, RMS(Σ_j x_j − 1).
    """
    variants = list(dict.fromkeys(synthetic.variant))
    fig, axes = book_figure("tall", 2, (len(variants) + 1) // 2, sharey=True, squeeze=False)
    flat = axes.flatten()
    for ax, variant in zip(flat, variants):
        part = synthetic[synthetic.variant == variant]
        for strategy, rows in part.groupby("strategy", sort=False):
            ax.loglog(rows.z_rms, rows.relative_gap.clip(lower=1e-9), markersize=3, label=strategy,
                      **STRATEGY_STYLES.get(strategy, {}))
        if variant.startswith("AuroRA (F"):
            ax.axhline(offset_prediction, color="black", linestyle=":", linewidth=1, label="RMS(Σx_j − 1)")
        ax.set_title(variant, fontsize=9)
        ax.set_xlabel("RMS of z = A x")
    for ax in flat[len(variants):]:
        ax.axis("off")
    for row in axes:
        row[0].set_ylabel("relative gap")
    flat[0].legend(fontsize=7)
    return fig


def plot_layer_gaps(gaps: "pd.DataFrame", layer: str) -> Figure:
    """Relative merge gap of one trained layer against the RMS of z, as (A, B) → (κA, B/κ) rescales it."""
    rows = gaps[(gaps.form == "dynamic") & (gaps.layer == layer)]
    if rows.empty:
        raise ValueError(f"layer must be one of {sorted(set(gaps.layer))}; got {layer!r}")
    fig, ax = book_figure("single")
    for strategy, part in rows.groupby("strategy", sort=False):
        ax.loglog(part.z_rms, part.relative_gap, markersize=3, label=strategy, **STRATEGY_STYLES.get(strategy, {}))
    ax.set_xlabel("RMS of z = A x")
    ax.set_ylabel("relative gap")
    ax.set_title(layer.replace("bert.encoder.", ""), fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_end_to_end(e2e: "pd.DataFrame") -> Figure:
    """For the dynamic model: relative logit change (left) and test accuracy (right) after each merge, against κ."""
    sweep = e2e[e2e.form == "dynamic"]
    fig, (left, right) = book_figure("wide", 1, 2)
    for strategy, part in sweep.groupby("strategy", sort=False):
        style = STRATEGY_STYLES.get(strategy, {})
        left.loglog(part.scale, part.logit_relative_change, markersize=3, label=strategy, **style)
        right.semilogx(part.scale, 100 * part.accuracy_merged, markersize=3, label=f"merged: {strategy}", **style)
    unmerged = sweep[sweep.strategy == sweep.strategy.iloc[0]]
    right.semilogx(unmerged.scale, 100 * unmerged.accuracy_dynamic, "k--", label="dynamic (unmerged)")
    left.set_xlabel("κ")
    left.set_ylabel("relative logit change")
    right.set_xlabel("κ")
    right.set_ylabel("test accuracy (%)")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="top 3 MiniLM layers, 1,024 reviews, 3 epochs (default; ~15 min on 2 CPU cores)")
    mode.add_argument("--full", action="store_true", help="all 6 layers, 4,000 reviews, 6 epochs")
    args = parser.parse_args(argv)
    run(FULL if args.full else QUICK)


if __name__ == "__main__":
    main()
