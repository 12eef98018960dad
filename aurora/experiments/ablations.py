"""Ablations of AuroRA on image classification: Tables 4, 5 and 7 and Fig. 5's rank question.

Groups (each a set of settings trained the same way; the shared AuroRA r̃ = 2 run is trained once):

* ``components`` — AuroRA vs "w/o F" (no fixed nonlinearity) vs "w/o L" (no B-spline part), Table 4;
* ``activation`` — tanh vs LeakyReLU vs sigmoid in the fixed part, Table 5;
* ``rank`` — LoRA / MoSLoRA / AuroRA at ranks {2, 4, 8, 16} (Fig. 5 asks this on LLaMA3-8B; here
  on the vision task);
* ``grid_size`` — B-spline grid sizes {1, 3, 5, 10, 20} (the paper does not say which it uses);
* ``spline_mode`` — the three readings of Eq. 7 (``per_unit``, ``sum``, ``per_edge``; see
  :class:`aurora.AdaptiveNonlinearLayer`);
* ``form`` — App. B: AuroRA trained in the dynamic form ``B σ(Ax)`` and AuroRA-S trained in the
  static form ``B σ(A) x``.

For App. B's inference comparison (Table 7) the trained dynamic AuroRA is evaluated four ways:
unmerged (AuroRA-D), merged with the paper's static ``ΔW = s·B σ(A)`` (AuroRA), and with this
package's ``"linearized"`` and ``"least_squares"`` merges (calibrated on training inputs), each with
its test accuracy and inference time; AuroRA-S and LoRA r = 2 are merged exactly for reference.
Results: ``data/results/ablations/`` (``runs``, ``inference``; ``full/`` for full mode).

    python -m aurora.experiments.ablations --quick
    python -m aurora.experiments.ablations --quick --groups components activation

Chapter: ``book/ablations.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.axes import Axes
from torch import nn
from tqdm.auto import tqdm

import aurora
from aurora.experiments.vision_classification import (
    FULL_VIT,
    PAPER_TABLE13,
    TINY_VIT,
    Setting,
    VisionConfig,
    VisionTask,
    adapter_setting,
    image_loader,
    load_task,
    model_factory,
    preprocessing_for,
    run_setting,
    train_config_for,
)
from aurora.results import write_results
from aurora.train import evaluate

__all__ = [
    "PAPER_TABLE4",
    "PAPER_TABLE5",
    "PAPER_TABLE7",
    "ABLATION_GROUPS",
    "QUICK",
    "FULL",
    "setting_key",
    "inference_comparison",
    "run",
    "group_table",
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


def _aurora(label: str, rank: int = 2, **options: Any) -> Setting:
    return adapter_setting(label, "aurora", rank, **options)


ABLATION_GROUPS: dict[str, tuple[Setting, ...]] = {
    "components": (
        _aurora("AuroRA"),
        _aurora("w/o F", fixed_nonlinearity=False),
        _aurora("w/o L", learnable_nonlinearity=False),
    ),
    "activation": (
        _aurora("tanh"),
        _aurora("leaky_relu", activation="leaky_relu"),
        _aurora("sigmoid", activation="sigmoid"),
    ),
    "rank": tuple(
        adapter_setting(f"{name} r={rank}", method, rank)
        for name, method in (("LoRA", "lora"), ("MoSLoRA", "moslora"), ("AuroRA", "aurora"))
        for rank in (2, 4, 8, 16)
    ),
    "grid_size": tuple(_aurora(f"grid {size}", grid_size=size) for size in (1, 3, 5, 10, 20)),
    "spline_mode": tuple(_aurora(mode, spline_mode=mode) for mode in ("per_unit", "sum", "per_edge")),
    "form": (
        _aurora("AuroRA (dynamic training)"),
        _aurora("AuroRA-S (static training)", form="static"),
    ),
}
"""Settings of each ablation; AuroRA's defaults (r̃ = 2, α = 4, tanh, grid 5, per_unit, dynamic) are the base."""

QUICK = VisionConfig(
    mode="quick",
    model=TINY_VIT,
    tasks=("digits",),
    settings=tuple(s for group in ABLATION_GROUPS.values() for s in group),
    seeds=(0,),
    epochs=8,
    batch_size=64,
    lr=2e-2,
    head_lr=2e-2,
    weight_decay=1e-4,
    n_train=1000,
    threads=1,
)
"""Quick mode: the tiny ViT on digits, 1 seed, 8 epochs (same recipe as the vision chapter's quick mode)."""

FULL = VisionConfig(
    mode="full",
    model=FULL_VIT,
    tasks=("dtd",),
    settings=QUICK.settings,
    seeds=(0,),
    epochs=10,
    batch_size=64,
    lr=1e-2,
    head_lr=1e-2,
    weight_decay=1e-4,
    hyperparameters=PAPER_TABLE13["vit-base"],
)
"""Full mode: ViT-B/16 on DTD with Table 13's hyperparameters."""


def setting_key(setting: Setting) -> str:
    """The complete adapter configuration of ``setting`` (defaults filled in): equal keys train identically."""
    config = aurora.AdapterConfig(method=setting.method, **setting.options).to_dict()
    return json.dumps({**config, "lr": setting.lr, "head_lr": setting.head_lr}, sort_keys=True)


def _timed_accuracy(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], device: str, repeats: int = 3) -> tuple[float, float]:
    """Test accuracy and the fastest of ``repeats`` timed passes over ``batches`` (seconds)."""
    times, accuracy = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        _, accuracy = evaluate(model, batches, "accuracy", device)
        times.append(time.perf_counter() - start)
    return accuracy, min(times)


def inference_comparison(
    dynamic: nn.Module,
    static: nn.Module | None,
    lora: nn.Module | None,
    test_batches: list[tuple[torch.Tensor, torch.Tensor]],
    calibration_batches: Iterable[torch.Tensor],
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """App. B / Table 7: accuracy and inference time of a dynamically trained AuroRA under each merge.

    ``dynamic``: AuroRA trained with ``form="dynamic"``; ``static``: AuroRA-S (``form="static"``);
    ``lora``: LoRA for reference. Models are left unmerged afterwards.
    """
    calibration = aurora.collect_calibration_inputs(dynamic, calibration_batches)
    accuracy, seconds = _timed_accuracy(dynamic, test_batches, device)
    rows = [{"variant": "AuroRA-D: dynamic inference B σ(Ax)", "model": "AuroRA (dynamic training)", "merge": "none",
             "accuracy": accuracy, "inference_seconds": seconds, "relative_gap_mean": 0.0}]
    for strategy, variant in (
        ("static", "AuroRA: static merge ΔW = B σ(A) (paper)"),
        ("linearized", "AuroRA: linearized merge (ours)"),
        ("least_squares", "AuroRA: least-squares merge (ours)"),
    ):
        report = aurora.merge(dynamic, strategy=strategy, calibration=calibration)
        accuracy, seconds = _timed_accuracy(dynamic, test_batches, device)
        gaps = [layer.relative_gap for layer in report.layers if layer.relative_gap is not None]
        rows.append({"variant": variant, "model": "AuroRA (dynamic training)", "merge": strategy, "accuracy": accuracy,
                     "inference_seconds": seconds, "relative_gap_mean": sum(gaps) / len(gaps)})
        aurora.unmerge(dynamic)
    for model, variant, name in ((static, "AuroRA-S: static training, exact merge", "AuroRA-S (static training)"),
                                 (lora, "LoRA: exact merge", "LoRA r=2")):
        if model is None:
            continue
        aurora.merge(model, strategy="static")
        accuracy, seconds = _timed_accuracy(model, test_batches, device)
        rows.append({"variant": variant, "model": name, "merge": "exact", "accuracy": accuracy,
                     "inference_seconds": seconds, "relative_gap_mean": 0.0})
        aurora.unmerge(model)
    return rows


def _preprocessed_batches(task: VisionTask, config: VisionConfig, train: bool, count: int | None = None) -> list:
    images, labels = (task.train_images, task.train_labels) if train else (task.test_images, task.test_labels)
    loader = image_loader(images, labels, preprocessing_for(config), 256, shuffle=False)
    return [batch for index, batch in enumerate(loader) if count is None or index < count]


def run(
    config: VisionConfig, groups: Iterable[str] | None = None, device: str = "cpu", results_dir: Path | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Train every distinct setting of the chosen ``groups`` once per task and seed; write ``runs`` and ``inference``.

    ``runs`` has one row per (group, setting, task, seed) — a setting shared by several groups is trained
    once and listed in each. ``inference`` (when the ``form`` group is run) compares the merges of App. B.
    """
    chosen = list(ABLATION_GROUPS) if groups is None else list(groups)
    unknown = sorted(set(chosen) - set(ABLATION_GROUPS))
    if unknown:
        raise ValueError(f"groups must be among {list(ABLATION_GROUPS)}; got {unknown}")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    factory = model_factory(config)
    preprocessing = preprocessing_for(config)
    distinct: dict[str, Setting] = {}
    for group in chosen:
        for setting in ABLATION_GROUPS[group]:
            distinct.setdefault(setting_key(setting), setting)
    runs, inference = [], []
    for task_name in config.tasks:
        task = load_task(task_name, config.n_train, config.n_test, seed=0)
        for seed in config.seeds:
            outcomes = {}
            for key, setting in tqdm(distinct.items(), desc=f"ablations {task_name} seed {seed}", unit="run"):
                outcomes[key] = run_setting(task, setting, factory, preprocessing, train_config_for(config, task_name, seed, device))
            for group in chosen:
                for setting in ABLATION_GROUPS[group]:
                    row = outcomes[setting_key(setting)].row
                    runs.append({"group": group, "label": setting.label, **row})
            if "form" in chosen:
                base, static = (outcomes[setting_key(s)].model for s in ABLATION_GROUPS["form"])
                lora_key = setting_key(adapter_setting("LoRA r=2", "lora", 2))
                lora = outcomes[lora_key].model if lora_key in outcomes else None
                rows = inference_comparison(base, static, lora, _preprocessed_batches(task, config, train=False),
                                            [x for x, _ in _preprocessed_batches(task, config, train=True, count=4)], device)
                inference += [{"task": task_name, "seed": seed, **row} for row in rows]
    tables = {"runs": runs}
    if inference:
        tables["inference"] = inference
    name = "ablations" if config.mode == "quick" else "ablations/full"
    record = {**config.to_dict(), "groups": chosen}
    write_results(name, tables, record, device=device, wall_time_s=round(time.perf_counter() - started, 1), results_dir=results_dir)
    return tables


def group_table(runs: pd.DataFrame, group: str) -> pd.DataFrame:
    """One ablation group's settings with their parameters, accuracies and training time (mean over seeds)."""
    rows = runs[runs["group"] == group]
    if rows.empty:
        raise ValueError(f"group {group!r} is not in the runs table; it has {sorted(runs['group'].unique())}")
    table = rows.groupby("label", sort=False).agg(
        params=("params", "first"), best_accuracy=("best_accuracy", "mean"), final_accuracy=("final_accuracy", "mean"),
        train_seconds=("train_seconds", "mean"), seeds=("seed", "nunique"))
    return table


def plot_rank_sensitivity(runs: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Fig. 5's question on our task: best accuracy against rank for LoRA, MoSLoRA and AuroRA."""
    rows = runs[runs["group"] == "rank"]
    if rows.empty:
        raise ValueError("the runs table has no 'rank' group; run the ablations with it")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for method, label in (("lora", "LoRA"), ("moslora", "MoSLoRA"), ("aurora", "AuroRA")):
        curve = rows[rows["method"] == method].groupby("rank")["best_accuracy"].mean()
        ax.plot(curve.index, 100 * curve.values, marker="s" if method == "aurora" else "o", label=label)
    ranks = sorted(int(r) for r in rows["rank"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks, [str(r) for r in ranks])
    ax.set_xlabel("rank r")
    ax.set_ylabel("best test accuracy (%)")
    ax.legend()
    return ax


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="AuroRA ablations (Tables 4, 5, 7; Fig. 5's rank question)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny ViT on digits (default)")
    mode.add_argument("--full", action="store_true", help="ViT-B/16 on DTD (needs the internet)")
    parser.add_argument("--groups", nargs="+", choices=list(ABLATION_GROUPS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", nargs="+", type=int)
    args = parser.parse_args(argv)
    config = FULL if args.full else QUICK
    if args.seeds:
        config = dataclasses.replace(config, seeds=tuple(args.seeds))
    tables = run(config, groups=args.groups, device=args.device)
    for row in tables["runs"]:
        print(f"{row['group']:<12} {row['label']:<28} params {row['params']:>6}  best acc {row['best_accuracy']:.4f}  "
              f"{row['train_seconds']:.1f} s")
    for row in tables.get("inference", []):
        print(f"{row['variant']:<45} acc {row['accuracy']:.4f}  {row['inference_seconds'] * 1e3:.0f} ms  gap {row['relative_gap_mean']:.3g}")


if __name__ == "__main__":
    main()
