"""Fig. 2: the trajectory of ΔW during training for LoRA, MoSLoRA and AuroRA at rank 2, seen through PCA.

The paper fine-tunes ViT-Base at r = 2 on DTD and RESISC45, records ``ΔW`` at epochs 0–9, runs one
PCA over all of them and plots each method's path; AuroRA's path is the widest ("explores a broader
parameter space"). The lower panel gives the accuracies; the text quotes MoSLoRA vs LoRA:
+2.2 points on DTD, −0.56 on RESISC45 (§1).

Here a :class:`aurora.trajectory.DeltaWeightRecorder` is passed to the training engine, ``ΔW`` of
all adapted layers is flattened into one vector per epoch, and :func:`aurora.trajectory.fit_trajectory_pca`
fits one PCA per (task, seed) on the snapshots of the three methods. Only the 2-D projections, the
explained variance and path statistics in the full ``ΔW`` space are stored (not ``ΔW`` itself):
``data/results/trajectories/`` (``full/`` for full mode).

    python -m aurora.experiments.trajectories --quick
    python -m aurora.experiments.trajectories --full --device cuda

Chapter: ``book/trajectories.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from tqdm.auto import tqdm

from aurora.experiments.vision_classification import (
    FULL_VIT,
    PAPER_TABLE13,
    TINY_VIT,
    VisionConfig,
    model_factory,
    adapter_setting,
    load_task,
    preprocessing_for,
    run_setting,
    train_config_for,
)
from aurora.results import write_results
from aurora.trajectory import DeltaWeightRecorder, fit_trajectory_pca, path_length

__all__ = ["PAPER_FIG2", "TRAJECTORY_SETTINGS", "QUICK", "FULL", "run", "plot_trajectories", "main"]

PAPER_FIG2 = {
    "setting": "ViT-Base, r = 2, ΔW recorded at epochs 0-9, one PCA over LoRA, MoSLoRA and AuroRA",
    "moslora_minus_lora_points": {"dtd": 2.2, "resisc45": -0.56},
    "claim": "AuroRA is capable of exploring a broader parameter space",
}
"""What the paper states about Fig. 2 in its text (the figure's bars are not given as numbers)."""

TRAJECTORY_SETTINGS = (
    adapter_setting("LoRA r=2", "lora", 2),
    adapter_setting("MoSLoRA r=2", "moslora", 2),
    adapter_setting("AuroRA r=2", "aurora", 2),
)

QUICK = VisionConfig(
    mode="quick",
    model=TINY_VIT,
    tasks=("digits",),
    settings=TRAJECTORY_SETTINGS,
    seeds=(0,),
    epochs=9,  # snapshots at epochs 0 (before training), 1, ..., 9, as in Fig. 2
    batch_size=64,
    lr=2e-2,
    head_lr=2e-2,
    weight_decay=1e-4,
    n_train=1000,
    threads=1,
)
"""Quick mode: the tiny ViT on digits, one seed, 9 epochs (snapshots 0-9)."""

FULL = VisionConfig(
    mode="full",
    model=FULL_VIT,
    tasks=("dtd", "resisc45"),
    settings=TRAJECTORY_SETTINGS,
    seeds=(0,),
    epochs=9,
    batch_size=64,
    lr=1e-2,
    head_lr=1e-2,
    weight_decay=1e-4,
    hyperparameters=PAPER_TABLE13["vit-base"],
)
"""Full mode: ViT-B/16 on DTD and RESISC45 (Fig. 2's sets) with Table 13's hyperparameters."""


def run(config: VisionConfig, device: str = "cpu", results_dir: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Train each setting with a ΔW recorder, fit one PCA per (task, seed), write the result tables.

    Tables: ``projections`` (task, seed, setting, epoch, pc1, pc2, accuracy after that epoch),
    ``explained_variance`` (per component), ``summary`` (accuracy, path lengths in the PCA plane and
    in the full ΔW space, ``‖ΔW‖`` at the end, training time).
    """
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    factory, preprocessing = model_factory(config), preprocessing_for(config)
    storage = np.float32 if config.model == TINY_VIT else np.float16  # ViT-B: 14M coordinates per snapshot
    projections, variance, summary = [], [], []
    jobs = [(task, seed) for task in config.tasks for seed in config.seeds]
    for task_name, seed in tqdm(jobs, desc=f"trajectories ({config.mode})", unit="task"):
        task = load_task(task_name, config.n_train, config.n_test, seed=0)
        snapshots: dict[str, np.ndarray] = {}
        outcomes = {}
        for setting in config.settings:
            recorder = DeltaWeightRecorder(dtype=storage)
            outcome = run_setting(task, setting, factory, preprocessing, train_config_for(config, task_name, seed, device), callbacks=[recorder])
            snapshots[setting.label] = recorder.stacked()
            outcomes[setting.label] = (outcome, recorder.epochs)
        pca = fit_trajectory_pca(snapshots, n_components=2)
        for component, ratio in enumerate(pca.explained_variance_ratio, start=1):
            variance.append({"task": task_name, "seed": seed, "component": component, "explained_variance_ratio": float(ratio)})
        for label, (outcome, epochs) in outcomes.items():
            accuracy = {record.epoch: record.metric for record in outcome.fit.history}
            points = pca.projections[label]
            for epoch, (pc1, pc2) in zip(epochs, points):
                projections.append({"task": task_name, "seed": seed, "setting": label, "epoch": epoch,
                                    "pc1": float(pc1), "pc2": float(pc2), "accuracy": accuracy.get(epoch, np.nan)})
            full = snapshots[label].astype(np.float64)
            summary.append({
                **{key: outcome.row[key] for key in ("task", "seed", "setting", "method", "rank", "params")},
                "best_accuracy": outcome.fit.best_metric,
                "final_accuracy": outcome.fit.final_metric,
                "path_length_pca": path_length(points),
                "path_length_full": path_length(full),
                "final_delta_norm": float(np.linalg.norm(full[-1])),
                "train_seconds": outcome.row["train_seconds"],
            })
    tables = {"projections": projections, "explained_variance": variance, "summary": summary}
    name = "trajectories" if config.mode == "quick" else "trajectories/full"
    write_results(name, tables, config.to_dict(), device=device, wall_time_s=round(time.perf_counter() - started, 1), results_dir=results_dir)
    return tables


def plot_trajectories(projections: pd.DataFrame, upto_epoch: int | None = None, ax: Axes | None = None) -> Axes:
    """Each setting's path in the PCA plane (one task and seed), epochs ``0..upto_epoch`` (all if None).

    The whole path is drawn faintly so the axes stay fixed while a slider moves ``upto_epoch``.
    """
    if projections[["task", "seed"]].drop_duplicates().shape[0] != 1:
        raise ValueError("projections must hold one task and seed; filter the table first")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    last = int(projections["epoch"].max()) if upto_epoch is None else upto_epoch
    for (label, rows), color in zip(projections.groupby("setting", sort=False), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        rows = rows.sort_values("epoch")
        ax.plot(rows["pc1"], rows["pc2"], color=color, alpha=0.15)
        shown = rows[rows["epoch"] <= last]
        ax.plot(shown["pc1"], shown["pc2"], marker="o", markersize=4, color=color, label=label)
        ax.annotate(str(int(shown["epoch"].iloc[-1])), (shown["pc1"].iloc[-1], shown["pc2"].iloc[-1]),
                    textcoords="offset points", xytext=(4, 4), fontsize=8, color=color)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"ΔW trajectories, epochs 0–{last}")
    ax.legend(loc="best", fontsize=8)
    return ax


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ΔW trajectories of LoRA / MoSLoRA / AuroRA at r=2 (Fig. 2)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny ViT on digits (default)")
    mode.add_argument("--full", action="store_true", help="ViT-B/16 on DTD and RESISC45 (needs the internet)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", nargs="+", type=int)
    args = parser.parse_args(argv)
    config = FULL if args.full else QUICK
    if args.seeds:
        config = dataclasses.replace(config, seeds=tuple(args.seeds))
    tables = run(config, device=args.device)
    for row in tables["summary"]:
        print(f"{row['task']:<10} seed {row['seed']} {row['setting']:<12} best acc {row['best_accuracy']:.4f}  "
              f"path (PCA) {row['path_length_pca']:.3f}  path (full) {row['path_length_full']:.3f}")


if __name__ == "__main__":
    main()
