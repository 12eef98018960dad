"""Ablations of AuroRA on image classification: Tables 4, 5 and 7 and Fig. 5's rank question.

Every setting is one :class:`~aurora.experiments.harness.Method` on the vision chapter's quick task
(the tiny ViT on Fashion-MNIST 5–9) under the same protocol (:data:`vision_classification.QUICK_PROTOCOL`):
its own learning rate from the common grid chosen on validation over two seeds, ten paired final
seeds, the epoch chosen on validation, test scored once. The settings that the vision comparison
already ran (LoRA at r = 2, 4, 8, 16 and AuroRA r̃ = 2) are copied from its results instead of
trained again (:func:`vision_classification.reuse_runs`; same task, method, protocol, rate and seed).

Groups (:data:`ABLATION_GROUPS`, AuroRA r̃ = 2 with tanh, grid 5, ``per_unit``, dynamic form is the base):

* ``components`` -- "w/o F" (no fixed nonlinearity) and "w/o L" (no B-spline part), Table 4;
* ``activation`` -- LeakyReLU and sigmoid instead of tanh in the fixed part, Table 5;
* ``rank`` -- LoRA and AuroRA at ranks 2, 4, 8, 16 (Fig. 5 asks this on LLaMA3-8B; claim F5);
* ``grid_size`` -- B-spline grid sizes 1 and 5 (the paper does not say which it uses);
* ``spline_mode`` -- two readings of Eq. 7 (``per_unit``: one spline per hidden unit, ``per_edge``:
  one per pair of units; ``sum`` is left out of the quick budget);
* ``form`` -- App. B: AuroRA trained in the static form ``B σ(A) x`` (AuroRA-S).

Table 7's question (claim T7a: dynamic training, then the static merge ``ΔW = s·B σ(A)``, is about as
good as keeping the dynamic form, AuroRA-D) is answered per final seed: the AuroRA r̃ = 2 run is
replayed (:func:`vision_classification.replay_final_run`) and its test accuracy measured unmerged,
with the paper's static merge and with this package's ``linearized`` and ``least_squares`` merges
(calibrated on training inputs moved to the model's device): ``merges.csv``.

Results: ``data/results/ablations/`` (``runs.csv``, ``epochs.csv``, ``selection.csv``, ``summary.csv``,
``merges.csv``, ``claims_inputs.json``, ``provenance.json``); full mode (ViT-B/16 on DTD, GPU +
internet): ``data/results/ablations/full/``, resumed run by run.

    python -m aurora.experiments.ablations            # quick
    python -m aurora.experiments.ablations --full

Chapter: ``book/ablations.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import aurora
from aurora.experiments import vision_classification as vc
from aurora.experiments.harness import Method, Protocol, Task, paired_comparison, run_protocol
from aurora.plots import method_style
from aurora.results import RESULTS_DIR
from aurora.train import evaluate

__all__ = [
    "PAPER_TABLE4",
    "PAPER_TABLE5",
    "PAPER_TABLE7",
    "BASE",
    "ABLATION_GROUPS",
    "SHARED_WITH_VISION",
    "QUICK_GROUPS",
    "QUICK_RESULTS",
    "FULL_RESULTS",
    "ablation_methods",
    "merge_comparison",
    "run",
    "group_table",
    "rank_spread",
    "claims_inputs",
    "plot_rank_sensitivity",
    "main",
]

PAPER_TABLE4 = {  # ViT-B, accuracy %
    "AuroRA": {"oxford_pets": 93.9, "cifar10": 98.8, "dtd": 79.6, "eurosat": 98.8},
    "AuroRA w/o F": {"oxford_pets": 93.3, "cifar10": 98.4, "dtd": 78.9, "eurosat": 98.3},
    "AuroRA w/o L": {"oxford_pets": 93.1, "cifar10": 98.2, "dtd": 77.8, "eurosat": 98.0},
}
PAPER_TABLE5 = {  # ViT-B, accuracy %
    "AuroRA (tanh)": {"stanford_cars": 75.7, "fgvc": 48.2, "resisc45": 93.6, "cifar100": 92.0},
    "AuroRA-lr (LeakyReLU)": {"stanford_cars": 75.6, "fgvc": 47.8, "resisc45": 93.4, "cifar100": 91.9},
    "AuroRA-sm (sigmoid)": {"stanford_cars": 75.2, "fgvc": 47.7, "resisc45": 92.9, "cifar100": 91.7},
}
PAPER_TABLE7 = {  # LLaMA3-8B commonsense reasoning: total training + inference time (hours), average accuracy %
    "LoRA": {"time_h": 15.05, "avg_accuracy": 80.8},
    "AuroRA-S (static train + inference)": {"time_h": 15.18, "avg_accuracy": 82.8},
    "AuroRA-D (dynamic train + inference)": {"time_h": 15.60, "avg_accuracy": 83.8},
    "AuroRA (dynamic train, static inference)": {"time_h": 15.28, "avg_accuracy": 83.6},
}


BASE = vc.AURORA_LABEL


def _aurora(label: str, rank: int = 2, **options: Any) -> Method:
    return vc.adapter_method(label, "aurora", rank, **options)


_NEW: dict[str, Method] = {m.label: m for m in (
    _aurora("AuroRA w/o F", fixed_nonlinearity=False),
    _aurora("AuroRA w/o L", learnable_nonlinearity=False),
    _aurora("AuroRA LeakyReLU", activation="leaky_relu"),
    _aurora("AuroRA sigmoid", activation="sigmoid"),
    *(_aurora(f"AuroRA r̃={rank}", rank) for rank in (4, 8, 16)),
    _aurora("AuroRA grid 1", grid_size=1),
    _aurora("AuroRA spline per_edge", spline_mode="per_edge"),
    _aurora("AuroRA-S (static training)", form="static"),
)}
_VISION = {m.label: m for m in vc.QUICK_METHODS}
SHARED_WITH_VISION = (*(f"LoRA r={rank}" for rank in vc.LORA_RANKS), BASE)
"""Settings the vision comparison runs identically; their runs are copied, not repeated."""

ABLATION_GROUPS: dict[str, dict[str, str]] = {
    "components": {"AuroRA": BASE, "w/o F": "AuroRA w/o F", "w/o L": "AuroRA w/o L"},
    "activation": {"tanh": BASE, "LeakyReLU": "AuroRA LeakyReLU", "sigmoid": "AuroRA sigmoid"},
    "rank": {**{f"LoRA r={r}": f"LoRA r={r}" for r in vc.LORA_RANKS},
             **{f"AuroRA r̃={r}": (BASE if r == 2 else f"AuroRA r̃={r}") for r in vc.LORA_RANKS}},
    "grid_size": {"grid 5": BASE, "grid 1": "AuroRA grid 1"},
    "spline_mode": {"per_unit": BASE, "per_edge": "AuroRA spline per_edge"},
    "form": {"AuroRA (dynamic training)": BASE, "AuroRA-S (static training)": "AuroRA-S (static training)"},
}
"""Per group: the name shown in its table -> the method label in ``runs.csv``."""

QUICK_GROUPS = tuple(ABLATION_GROUPS)
"""The groups of the committed quick results: all of them (the claims T4, T5, F5 and T7a rest on
components, activation, rank and the merge comparison, which needs only the base and always runs)."""
QUICK_RESULTS = RESULTS_DIR / "ablations"
FULL_RESULTS = RESULTS_DIR / "ablations" / "full"


def ablation_methods(groups: Sequence[str] | None = None) -> list[Method]:
    """The distinct methods of ``groups`` (all by default), base first; each is trained once."""
    chosen = list(ABLATION_GROUPS) if groups is None else list(groups)
    unknown = sorted(set(chosen) - set(ABLATION_GROUPS))
    if unknown:
        raise ValueError(f"groups must be among {list(ABLATION_GROUPS)}; got {unknown}")
    labels = dict.fromkeys([BASE, *(label for group in chosen for label in ABLATION_GROUPS[group].values())])
    return [_VISION.get(label) or _NEW[label] for label in labels]


# ---------------------------------------------------------------------------------------------
# Table 7: merges of the dynamically trained AuroRA
# ---------------------------------------------------------------------------------------------
MERGE_VARIANTS = (
    ("none", "AuroRA-D: dynamic inference B σ(Ax)"),
    ("static", "AuroRA: static merge ΔW = s·B σ(A) (paper)"),
    ("linearized", "linearized merge (ours)"),
    ("least_squares", "least-squares merge (ours)"),
)


def _batches(data: Any, device: torch.device, batch_size: int = 500, count: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``data`` already on ``device`` (calibration and timing never mix devices)."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    return [(x.to(device), y.to(device)) for index, (x, y) in enumerate(loader) if count is None or index < count]


def _timed(model: nn.Module, batches: list, device: torch.device, repeats: int = 3) -> tuple[float, float]:
    """Accuracy on ``batches`` and the fastest of ``repeats`` timed passes (seconds)."""
    times, accuracy = [], math.nan
    for _ in range(repeats):
        start = time.perf_counter()
        _, accuracy = evaluate(model, batches, "accuracy", device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return accuracy, min(times)


def merge_comparison(model: nn.Module, task: Task, seed: int) -> list[dict[str, Any]]:
    """App. B / Table 7 for one trained dynamic AuroRA: test accuracy unmerged and under each merge.

    Inference time is the fastest of 3 passes over the validation images; the model is left unmerged.
    """
    device = next(model.parameters()).device
    calibration_inputs = [x for x, _ in _batches(task.train, device, batch_size=64, count=4)]
    calibration = aurora.collect_calibration_inputs(model, calibration_inputs)
    test = _batches(task.test, device)
    timing = _batches(task.validation, device)
    rows = []
    for strategy, variant in MERGE_VARIANTS:
        gap = 0.0
        if strategy != "none":
            report = aurora.merge(model, strategy=strategy, calibration=calibration)
            gaps = [layer.relative_gap for layer in report.layers if layer.relative_gap is not None]
            gap = float(np.mean(gaps)) if gaps else math.nan
        _, accuracy = evaluate(model, test, "accuracy", device)
        _, seconds = _timed(model, timing, device)
        rows.append(dict(task=task.name, seed=seed, merge=strategy, variant=variant, test_metric=accuracy,
                         inference_seconds=seconds, relative_gap_mean=gap))
        if strategy != "none":
            aurora.unmerge(model)
    return rows


# ---------------------------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------------------------
def run(results_dir: Path = QUICK_RESULTS, groups: Sequence[str] | None = None, task: Task | None = None,
        protocol: Protocol = vc.QUICK_PROTOCOL, vision_results: Path | None = vc.QUICK_RESULTS, device: str = "auto",
        merges: bool = True, progress: bool = True) -> dict[str, Any]:
    """Tune and run every method of ``groups`` (runs shared with the vision comparison copied from
    ``vision_results`` when it has them), then the merge comparison; returns the claims inputs."""
    vc._threads()
    start = time.perf_counter()
    folder = Path(results_dir)
    methods = ablation_methods(groups)
    task = task or vc.quick_task()
    if vision_results is not None and Path(vision_results, "runs.csv").is_file():
        vc.reuse_runs(vision_results, folder, [m.label for m in methods if m.label in SHARED_WITH_VISION], protocol)
    finals = run_protocol(task, methods, protocol, folder, resume=True, device=device, progress=progress, reference=BASE,
                          config=dict(groups=list(groups or ABLATION_GROUPS), reused_from=str(vision_results)))
    if merges:
        base = next(m for m in methods if m.label == BASE)
        rows = []
        for _, row in tqdm(finals[finals["label"] == BASE].iterrows(), desc="merges", disable=not progress):
            model = vc.replay_final_run(task, base, protocol, row, device)
            rows += merge_comparison(model, task, int(row["seed"]))
        pd.DataFrame(rows).to_csv(folder / ".merges.csv.tmp", index=False)
        (folder / ".merges.csv.tmp").replace(folder / "merges.csv")
    inputs = claims_inputs(finals, pd.read_csv(folder / "merges.csv") if (folder / "merges.csv").is_file() else None)
    inputs["wall_time_s"] = round(time.perf_counter() - start, 1)
    (folder / "claims_inputs.json").write_text(json.dumps(inputs, indent=2) + "\n")
    return inputs


# ---------------------------------------------------------------------------------------------
# tables, claims and figures for the chapter
# ---------------------------------------------------------------------------------------------
def group_table(runs: pd.DataFrame, group: str) -> pd.DataFrame:
    """One group's settings (its display names) with accuracy, 95 % interval and the paired difference to its first row."""
    if group not in ABLATION_GROUPS:
        raise ValueError(f"group must be one of {list(ABLATION_GROUPS)}, got {group!r}")
    names = ABLATION_GROUPS[group]
    present = [label for label in names.values() if label in set(runs["label"])]
    if not present:
        raise ValueError(f"no run of group {group!r} in the table; run `python -m aurora.experiments.ablations`")
    table = paired_comparison(runs[runs["label"].isin(present)], present[0], "test_metric")
    display = {label: name for name, label in names.items()}
    table.insert(0, "setting", table["label"].map(display))
    return table.set_index("label").loc[present].reset_index()


def _paired(runs: pd.DataFrame, label: str, reference: str) -> dict[str, Any] | None:
    if not {label, reference} <= set(runs["label"]):
        return None  # the group was not run
    table = paired_comparison(runs[runs["label"].isin([label, reference])], reference, "test_metric").set_index("label")
    row = table.loc[label]
    return dict(setting=f"{label} − {reference}", value=float(row["difference"]), ci_low=float(row["difference_ci_low"]),
                ci_high=float(row["difference_ci_high"]), seeds=int(row["paired_seeds"]), verdict=str(row["verdict"]),
                minimum_detectable_difference=float(row["minimum_detectable_difference"]))


def _interval(values: Sequence[float]) -> tuple[float, float, float]:
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def rank_spread(runs: pd.DataFrame) -> dict[str, Any] | None:
    """Claim F5: how much each method's test accuracy varies over ranks 2–16.

    Per seed (every rank of both methods shares the seed's data order and head), the spread is the
    max minus min accuracy over the four ranks; the claim's number is LoRA's spread minus AuroRA's,
    mean and 95 % t interval over the paired seeds (> 0: AuroRA varies less). The spreads of the
    mean curves are given too.
    """
    labels = ABLATION_GROUPS["rank"]
    if not set(labels.values()) <= set(runs["label"]):
        return None  # the rank group was not run
    per_seed = {}
    curves = {}
    for method in ("LoRA", "AuroRA"):
        chosen = [label for name, label in labels.items() if name.startswith(method + " ")]
        rows = runs[runs["label"].isin(chosen)].pivot(index="seed", columns="label", values="test_metric")[chosen].dropna()
        per_seed[method] = rows.max(axis=1) - rows.min(axis=1)
        curves[method] = float(rows.mean().max() - rows.mean().min())
    seeds = sorted(set(per_seed["LoRA"].index) & set(per_seed["AuroRA"].index))
    difference = [float(per_seed["LoRA"][s] - per_seed["AuroRA"][s]) for s in seeds]
    mean, low, high = _interval(difference)
    verdict = "better" if low > 0 else "worse" if high < 0 else "no detectable difference"
    return dict(setting="per-seed spread over ranks 2, 4, 8, 16: LoRA − AuroRA", value=mean, ci_low=low, ci_high=high,
                seeds=len(seeds), verdict=verdict, lora_spread_mean=float(per_seed["LoRA"].mean()),
                aurora_spread_mean=float(per_seed["AuroRA"].mean()), lora_curve_spread=curves["LoRA"],
                aurora_curve_spread=curves["AuroRA"])


def claims_inputs(runs: pd.DataFrame, merges: pd.DataFrame | None) -> dict[str, Any]:
    """T4, T5, F5 and T7a from the final runs (test accuracy as a fraction; differences over paired seeds, 95 % t)."""
    runs = runs[runs["phase"] == "final"] if "phase" in runs else runs
    inputs: dict[str, Any] = {
        "metric": "test accuracy (fraction) on Fashion-MNIST 5-9 (tiny ViT); value = mean paired difference, 95 % t interval",
        # T4: removing L hurts more than removing F  <=>  (w/o L) − (w/o F) < 0
        "T4": {"w/o L − w/o F": _paired(runs, "AuroRA w/o L", "AuroRA w/o F"),
               "w/o F − AuroRA": _paired(runs, "AuroRA w/o F", BASE), "w/o L − AuroRA": _paired(runs, "AuroRA w/o L", BASE)},
        # T5: tanh beats LeakyReLU and sigmoid  <=>  both differences > 0
        "T5": {"tanh − LeakyReLU": _paired(runs, BASE, "AuroRA LeakyReLU"), "tanh − sigmoid": _paired(runs, BASE, "AuroRA sigmoid")},
        "F5": rank_spread(runs),
    }
    if merges is not None and not merges.empty:
        table = merges.pivot(index="seed", columns="merge", values="test_metric")
        t7a = {}
        for strategy in ("static", "linearized", "least_squares"):
            mean, low, high = _interval((table[strategy] - table["none"]).tolist())
            t7a[f"{strategy} merge − AuroRA-D"] = dict(value=mean, ci_low=low, ci_high=high, seeds=len(table),
                                                      verdict="better" if low > 0 else "worse" if high < 0 else "no detectable difference")
        inputs["T7a"] = t7a
    return inputs


def plot_rank_sensitivity(runs: pd.DataFrame, ax: Axes) -> Axes:
    """Fig. 5's question on our task: test accuracy (mean and 95 % interval) against rank for LoRA and AuroRA."""
    labels = ABLATION_GROUPS["rank"]
    for method, style in (("LoRA", "lora"), ("AuroRA", "aurora")):
        chosen = [(int(name.split("=")[-1]), label) for name, label in labels.items() if name.startswith(method + " ")]
        present = [(rank, label) for rank, label in chosen if label in set(runs["label"])]
        if not present:
            continue
        table = paired_comparison(runs[runs["label"].isin([label for _, label in present])], present[0][1]).set_index("label")
        ranks = [rank for rank, _ in present]
        means = np.array([table.loc[label, "mean"] for _, label in present])
        lows = np.array([table.loc[label, "ci_low"] for _, label in present])
        highs = np.array([table.loc[label, "ci_high"] for _, label in present])
        ax.errorbar(ranks, 100 * means, yerr=100 * np.vstack([means - lows, highs - means]), capsize=3, label=method,
                    **method_style(style))
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(vc.LORA_RANKS), [str(r) for r in vc.LORA_RANKS])
    ax.set_xlabel("rank r (AuroRA: r̃)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    return ax


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="AuroRA ablations (Tables 4, 5, 7; Fig. 5's rank question)")
    parser.add_argument("--full", action="store_true", help="ViT-B/16 on DTD (GPU + internet)")
    parser.add_argument("--groups", nargs="+", choices=list(ABLATION_GROUPS))
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cuda', 'cpu'")
    parser.add_argument("--no-merges", action="store_true", help="skip the merge comparison (Table 7)")
    parser.add_argument("--smoke", action="store_true", help="the seconds-long smoke protocol (no verdicts)")
    parser.add_argument("--results-dir", type=Path)
    args = parser.parse_args(argv)
    if args.full:
        protocol = vc.SMOKE_PROTOCOL if args.smoke else vc.FULL_PROTOCOL
        inputs = run(args.results_dir or FULL_RESULTS, args.groups, task=vc.full_task("dtd"), protocol=protocol,
                     vision_results=vc.FULL_RESULTS / "dtd", device=args.device, merges=not args.no_merges)
    else:
        protocol = vc.SMOKE_PROTOCOL if args.smoke else vc.QUICK_PROTOCOL
        inputs = run(args.results_dir or QUICK_RESULTS, args.groups or QUICK_GROUPS, protocol=protocol,
                     vision_results=None if args.smoke else vc.QUICK_RESULTS, device=args.device, merges=not args.no_merges)
    print(json.dumps(inputs, indent=2))
    return inputs


if __name__ == "__main__":
    main()
