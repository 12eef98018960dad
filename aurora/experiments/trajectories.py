"""Fig. 2: the path of ΔW during training for LoRA, MoSLoRA and AuroRA at rank 2, and its length (claim F2).

The paper fine-tunes ViT-Base at r = 2 on DTD and RESISC45, records ``ΔW`` at epochs 0–9, runs one
PCA over all of them and plots each method's path; AuroRA's path is the widest ("explores a broader
parameter space"). The text quotes MoSLoRA vs LoRA: +2.2 points on DTD, −0.56 on RESISC45 (§1).

Here the three methods are the vision comparison's runs (same task, protocol, tuned rates and ten
final seeds; copied with :func:`vision_classification.reuse_runs` when it has them, else run through
the harness). Each final run is replayed (:func:`vision_classification.replay_final_run`, checked to
reproduce the run's validation score) with a :class:`aurora.trajectory.DeltaWeightRecorder`: ``ΔW`` of
all adapted layers flattened into one vector after every epoch (epoch 0 = before training). Per seed
one PCA is fitted on the three methods' snapshots (:func:`aurora.trajectory.fit_trajectory_pca`).
Stored: ``projections.csv`` (seed, method, epoch, PC 1, PC 2), ``explained_variance.csv``,
``paths.csv`` (per run: path length in the full ``ΔW`` space and in the PCA plane, ``‖ΔW‖`` at the
end, their ratio) and ``claims_inputs.json`` (F2: AuroRA's path length minus LoRA's and MoSLoRA's,
paired over seeds with 95 % t intervals), next to the harness's tables.

    python -m aurora.experiments.trajectories            # quick (tiny ViT, Fashion-MNIST 5-9)
    python -m aurora.experiments.trajectories --full     # ViT-B/16 on DTD and RESISC45 (GPU + internet)

Chapter: ``book/trajectories.md``.
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
from matplotlib.axes import Axes
from tqdm.auto import tqdm

from aurora.experiments import vision_classification as vc
from aurora.experiments.harness import Protocol, Task, run_protocol
from aurora.plots import method_style
from aurora.results import RESULTS_DIR
from aurora.trajectory import DeltaWeightRecorder, fit_trajectory_pca, path_length

__all__ = [
    "PAPER_FIG2",
    "TRAJECTORY_LABELS",
    "QUICK_RESULTS",
    "FULL_RESULTS",
    "run",
    "path_comparison",
    "claims_inputs",
    "plot_trajectories",
    "plot_path_lengths",
    "main",
]

PAPER_FIG2 = {
    "setting": "ViT-Base, r = 2, ΔW recorded at epochs 0-9, one PCA over LoRA, MoSLoRA and AuroRA",
    "moslora_minus_lora_points": {"dtd": 2.2, "resisc45": -0.56},
    "claim": "AuroRA is capable of exploring a broader parameter space",
}
"""What the paper states about Fig. 2 in its text (the figure's bars are not given as numbers)."""

TRAJECTORY_LABELS = ("LoRA r=2", "MoSLoRA r=2", vc.AURORA_LABEL)
QUICK_RESULTS = RESULTS_DIR / "trajectories"
FULL_RESULTS = RESULTS_DIR / "trajectories" / "full"
_PATH_COLUMNS = ("path_length_full", "path_length_pca", "final_delta_norm", "path_to_displacement")


def _atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    frame.to_csv(temporary, index=False)
    temporary.replace(path)


def run(results_dir: Path = QUICK_RESULTS, task: Task | None = None, protocol: Protocol = vc.QUICK_PROTOCOL,
        vision_results: Path | None = vc.QUICK_RESULTS, device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Final runs of the three rank-2 methods (reused or run), replayed with a ΔW recorder; writes the tables."""
    vc._threads()
    start = time.perf_counter()
    folder = Path(results_dir)
    methods = [m for m in vc.QUICK_METHODS if m.label in TRAJECTORY_LABELS]
    task = task or vc.quick_task()
    if vision_results is not None and Path(vision_results, "runs.csv").is_file():
        vc.reuse_runs(vision_results, folder, TRAJECTORY_LABELS, protocol)
    finals = run_protocol(task, methods, protocol, folder, resume=True, device=device, progress=progress,
                          reference="LoRA r=2", config=dict(reused_from=str(vision_results)))
    projections, variance, paths = [], [], []
    seeds = sorted(finals["seed"].unique())
    for seed in tqdm(seeds, desc="ΔW trajectories", disable=not progress):
        snapshots, epochs = {}, {}
        for method in methods:
            row = finals[(finals["label"] == method.label) & (finals["seed"] == seed)].iloc[0]
            recorder = DeltaWeightRecorder(dtype=np.float32 if task.name == vc.QUICK_TASK else np.float16)  # ViT-B: 14M per snapshot
            vc.replay_final_run(task, method, protocol, row, device, callbacks=[recorder])
            snapshots[method.label], epochs[method.label] = recorder.stacked(), recorder.epochs
            paths.append(dict(task=task.name, seed=int(seed), label=method.label, method=method.adapter["method"], style=method.style,
                              test_metric=float(row["test_metric"]), adapter_params=int(row["adapter_params"])))
        pca = fit_trajectory_pca(snapshots, n_components=2)
        variance += [dict(task=task.name, seed=int(seed), component=k, explained_variance_ratio=float(ratio))
                     for k, ratio in enumerate(pca.explained_variance_ratio, start=1)]
        for row in paths[-len(methods):]:
            full = snapshots[row["label"]].astype(np.float64)
            points = pca.projections[row["label"]]
            norm = float(np.linalg.norm(full[-1]))
            row.update(path_length_full=path_length(full), path_length_pca=path_length(points), final_delta_norm=norm,
                       path_to_displacement=path_length(full) / norm if norm > 0 else math.nan)
            projections += [dict(task=task.name, seed=int(seed), label=row["label"], style=row["style"], epoch=int(epoch),
                                 pc1=float(pc1), pc2=float(pc2)) for epoch, (pc1, pc2) in zip(epochs[row["label"]], points)]
    _atomic_csv(pd.DataFrame(projections), folder / "projections.csv")
    _atomic_csv(pd.DataFrame(variance), folder / "explained_variance.csv")
    _atomic_csv(pd.DataFrame(paths), folder / "paths.csv")
    inputs = claims_inputs(pd.DataFrame(paths))
    inputs["wall_time_s"] = round(time.perf_counter() - start, 1)
    (folder / "claims_inputs.json").write_text(json.dumps(inputs, indent=2) + "\n")
    return inputs


def path_comparison(paths: pd.DataFrame, column: str = "path_length_full", reference: str = vc.AURORA_LABEL) -> pd.DataFrame:
    """Per method: mean ``column`` with its 95 % t interval, and ``reference`` minus it, paired over seeds."""
    from aurora.experiments.harness import paired_comparison

    if column not in _PATH_COLUMNS:
        raise ValueError(f"column must be one of {_PATH_COLUMNS}, got {column!r}")
    return paired_comparison(paths, reference, column)


def claims_inputs(paths: pd.DataFrame) -> dict[str, Any]:
    """F2: AuroRA's ΔW path length minus LoRA's and MoSLoRA's (full ΔW space; PCA plane and path/‖ΔW‖ too)."""
    inputs: dict[str, Any] = {"metric": "length of the ΔW path over epochs 0..E (Σ‖ΔW_{t+1} − ΔW_t‖); value = mean paired "
                                        "difference AuroRA − other over seeds, 95 % t interval"}
    for column in _PATH_COLUMNS:
        table = path_comparison(paths, column, reference=TRAJECTORY_LABELS[0]).set_index("label")
        aurora_row = table.loc[vc.AURORA_LABEL]
        inputs[column] = {}
        for other in TRAJECTORY_LABELS[:2]:
            pair = path_comparison(paths[paths["label"].isin([other, vc.AURORA_LABEL])], column, reference=other)
            row = pair.set_index("label").loc[vc.AURORA_LABEL]
            inputs[column][f"AuroRA − {other}"] = dict(
                value=float(row["difference"]), ci_low=float(row["difference_ci_low"]), ci_high=float(row["difference_ci_high"]),
                seeds=int(row["paired_seeds"]), verdict=str(row["verdict"]), aurora_mean=float(aurora_row["mean"]),
                other_mean=float(table.loc[other, "mean"]))
    inputs["F2"] = inputs["path_length_full"]
    return inputs


def plot_trajectories(projections: pd.DataFrame, ax: Axes, upto_epoch: int | None = None) -> Axes:
    """Each method's path in the PCA plane (one seed), epochs ``0..upto_epoch`` (all if None).

    The whole path is drawn faintly so the axes stay fixed while a slider moves ``upto_epoch``.
    """
    if projections[["task", "seed"]].drop_duplicates().shape[0] != 1:
        raise ValueError("projections must hold one task and seed; filter the table first")
    last = int(projections["epoch"].max()) if upto_epoch is None else upto_epoch
    for label, rows in projections.groupby("label", sort=False):
        rows = rows.sort_values("epoch")
        style = method_style(str(rows["style"].iloc[0]))
        ax.plot(rows["pc1"], rows["pc2"], color=style["color"], alpha=0.15)
        shown = rows[rows["epoch"] <= last]
        ax.plot(shown["pc1"], shown["pc2"], markersize=4, label=label, **style)
        ax.annotate(str(int(shown["epoch"].iloc[-1])), (shown["pc1"].iloc[-1], shown["pc2"].iloc[-1]),
                    textcoords="offset points", xytext=(4, 4), fontsize=8, color=style["color"])
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"ΔW paths, epochs 0–{last}")
    ax.legend(loc="best", fontsize=8)
    return ax


def plot_path_lengths(paths: pd.DataFrame, ax: Axes, column: str = "path_length_full") -> Axes:
    """``column`` per seed (thin lines join one seed's methods) with each method's mean and 95 % interval."""
    table = path_comparison(paths, column, reference=TRAJECTORY_LABELS[0]).set_index("label")
    labels = [label for label in TRAJECTORY_LABELS if label in table.index]
    wide = paths.pivot(index="seed", columns="label", values=column)[labels]
    for _, values in wide.iterrows():
        ax.plot(range(len(labels)), values.values, color="#bbbbbb", linewidth=0.7, zorder=1)
    for position, label in enumerate(labels):
        row = table.loc[label]
        style = method_style(str(row["style"]))
        ax.errorbar([position], [row["mean"]], yerr=[[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]],
                    capsize=4, markersize=8, zorder=2, **{**style, "linestyle": "none"})
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel({"path_length_full": "ΔW path length", "path_length_pca": "path length in the PCA plane",
                   "final_delta_norm": "‖ΔW‖ after training", "path_to_displacement": "path length / ‖ΔW‖"}[column])
    return ax


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="ΔW trajectories of LoRA / MoSLoRA / AuroRA at r=2 (Fig. 2)")
    parser.add_argument("--full", action="store_true", help="ViT-B/16 on DTD and RESISC45 (GPU + internet)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cuda', 'cpu'")
    parser.add_argument("--smoke", action="store_true", help="the seconds-long smoke protocol (no verdicts)")
    parser.add_argument("--results-dir", type=Path)
    args = parser.parse_args(argv)
    if args.full:
        results = {}
        for name in ("dtd", "resisc45"):
            results[name] = run((args.results_dir or FULL_RESULTS) / name, vc.full_task(name),
                                vc.SMOKE_PROTOCOL if args.smoke else vc.FULL_PROTOCOL, vc.FULL_RESULTS / name, args.device)
    else:
        results = run(args.results_dir or QUICK_RESULTS, protocol=vc.SMOKE_PROTOCOL if args.smoke else vc.QUICK_PROTOCOL,
                      vision_results=None if args.smoke else vc.QUICK_RESULTS, device=args.device)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
