"""Image classification with LoRA, MoSLoRA, AuroRA and LoRAN on a ViT (Table 3, Fig. 1 right).

The paper fine-tunes ViT-Base/Large (``google/vit-*-patch16-224-in21k``) on eight image sets for
10 epochs, adapting the attention query and value projections and training the classification head
in full with its own learning rate (§3.3, App. G.3, Table 13). Two modes:

* ``--quick`` (default, CPU, minutes): the tiny ViT of :mod:`aurora.experiments.pretrain_tiny_vit`
  (pre-trained on Fashion-MNIST classes 0–4) adapted to scikit-learn's digits (upscaled to 28×28)
  and to the unseen Fashion-MNIST classes 5–9. Same ``transformers`` class and code path as ViT-B.
* ``--full``: ViT-B from the hub on the paper's image sets with Table 13's hyperparameters; needs
  the internet (offline it stops with :class:`aurora.data.HubUnavailableError`).

Every setting (linear probing, LoRA at several ranks, MoSLoRA, AuroRA, LoRAN, full fine-tuning) is
run for each seed; ``data/results/vision_classification/`` (``full/`` for full mode) gets the runs,
the per-epoch history and a mean ± std summary. Chapter: ``book/vision_classification.md``.

    python -m aurora.experiments.vision_classification --quick
    python -m aurora.experiments.vision_classification --full --device cuda --tasks dtd cifar100
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm
from transformers import ViTConfig, ViTForImageClassification

import aurora
from aurora.data import ImagePreprocessing, load_image_classification, load_vision_model, vision_preprocessing
from aurora.data.specs import subsample_indices
from aurora.results import REPO_ROOT, write_results
from aurora.train import Callback, FitResult, TrainConfig, fit

__all__ = [
    "PAPER_TABLE3",
    "PAPER_TABLE13",
    "PRETRAINED_DIR",
    "TINY_VIT",
    "FULL_VIT",
    "TINY_VIT_PREPROCESSING",
    "tiny_vit_config",
    "load_tiny_vit",
    "QUICK_TASKS",
    "VisionTask",
    "load_task",
    "image_loader",
    "Setting",
    "adapter_setting",
    "QUICK_SETTINGS",
    "FULL_SETTINGS",
    "prepare_model",
    "RunOutcome",
    "run_setting",
    "VisionConfig",
    "QUICK",
    "FULL",
    "model_factory",
    "preprocessing_for",
    "train_config_for",
    "run",
    "summarize",
    "parse_count",
    "paper_vs_ours",
    "plot_parameters_vs_accuracy",
    "plot_paper_parameters_vs_accuracy",
    "main",
]

# ---------------------------------------------------------------------------------------------
# the paper's numbers (accuracy %, after 10 epochs; * = taken by the paper from FourierFT)
# ---------------------------------------------------------------------------------------------
_TABLE3_DATASETS = ("oxford_pets", "stanford_cars", "cifar10", "dtd", "eurosat", "fgvc", "resisc45", "cifar100")


def _table3_row(params: str, *accuracies: float) -> dict[str, Any]:
    return {"params": params, **dict(zip(_TABLE3_DATASETS, accuracies)), "avg": accuracies[-1]}


PAPER_TABLE3: dict[str, dict[str, dict[str, Any]]] = {
    "vit-base": {
        "Full fine-tuning*": _table3_row("85.8M", 93.1, 79.8, 98.9, 77.7, 99.1, 54.8, 96.1, 92.4, 86.5),
        "Linear probing*": _table3_row("-", 90.3, 25.8, 96.4, 69.8, 88.7, 17.4, 74.2, 84.3, 68.4),
        "LoRA*": _table3_row("581K", 93.2, 45.4, 98.8, 75.0, 98.4, 25.2, 92.7, 92.0, 77.6),
        "FourierFT*": _table3_row("239K", 93.1, 56.4, 98.7, 77.3, 98.8, 32.4, 94.3, 91.5, 80.3),
        "AuroRA": _table3_row("74K", 93.9, 75.7, 98.8, 79.6, 98.8, 48.2, 93.6, 92.0, 85.1),
    },
    "vit-large": {
        "Full fine-tuning*": _table3_row("303.3M", 94.4, 88.9, 99.2, 81.8, 99.0, 68.3, 96.4, 93.6, 90.2),
        "Linear probing*": _table3_row("-", 91.1, 37.9, 97.8, 73.3, 92.6, 24.6, 82.0, 84.3, 73.0),
        "LoRA*": _table3_row("1.57M", 94.8, 73.3, 99.1, 81.8, 98.6, 42.3, 94.7, 94.9, 84.9),
        "FourierFT*": _table3_row("480K", 94.8, 79.1, 99.1, 81.9, 98.7, 51.3, 95.2, 93.4, 86.7),
        "AuroRA": _table3_row("197K", 94.9, 82.5, 99.1, 82.1, 98.9, 59.8, 94.9, 93.3, 88.2),
    },
}
"""Table 3 of the AuroRA paper (the last value of each row is the average over the eight sets)."""


def _table13(lrs: Sequence[float], head_lrs: Sequence[float]) -> dict[str, dict[str, float]]:
    weight_decays = (8e-4, 4e-5, 9e-5, 7e-5, 3e-4, 7e-5, 3e-4, 1e-4)
    return {
        name: {"lr": lr, "head_lr": head_lr, "weight_decay": wd}
        for name, lr, head_lr, wd in zip(_TABLE3_DATASETS, lrs, head_lrs, weight_decays)
    }


PAPER_TABLE13: dict[str, dict[str, dict[str, float]]] = {
    "vit-base": _table13((5e-3, 1e-2, 1e-2, 1e-2, 5e-3, 1e-2, 8e-3, 8e-3), (5e-3, 1e-2, 3e-2, 8e-3, 8e-3, 1e-2, 1e-2, 5e-3)),
    "vit-large": _table13((5e-3, 9e-3, 8e-3, 8e-3, 4e-3, 1.5e-2, 7.5e-3, 1.5e-2), (4e-3, 8e-3, 4e-2, 9e-3, 8e-3, 1e-2, 1.5e-2, 5e-3)),
}
"""Table 13 (App. G.3): AuroRA and head learning rates and weight decay per set; all: AdamW, linear
schedule, 10 epochs, r̃ = 2, α = 4. The batch size is not given (ours: 64)."""

# ---------------------------------------------------------------------------------------------
# the tiny ViT (quick mode's stand-in for ViT-B/16 pre-trained on ImageNet-21k)
# ---------------------------------------------------------------------------------------------
PRETRAINED_DIR = REPO_ROOT / "data" / "pretrained" / "tiny_vit_fashion04"
TINY_VIT = "tiny_vit"
FULL_VIT = "google/vit-base-patch16-224-in21k"
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
TINY_VIT_PREPROCESSING = ImagePreprocessing(28, (FASHION_MNIST_MEAN,) * 3, (FASHION_MNIST_STD,) * 3)
"""Grey images repeated to RGB (as ViT-B gets them), resized to 28×28, normalised with Fashion-MNIST's statistics."""


def tiny_vit_config(num_labels: int) -> ViTConfig:
    """A 4-layer, 64-wide ViT on 28×28 RGB images with 7×7 patches (16 patches + [CLS]), ~0.14M parameters."""
    return ViTConfig(
        image_size=28,
        patch_size=7,
        num_channels=3,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=num_labels,
    )


def load_tiny_vit(num_labels: int, seed: int = 0, path: Path = PRETRAINED_DIR) -> ViTForImageClassification:
    """The pre-trained tiny ViT with a fresh ``classifier`` head of ``num_labels`` outputs.

    The checkpoint is in the Hugging Face format (as ``google/vit-base-patch16-224-in21k``). The head
    is initialised as ViT initialises it (truncated normal, std ``initializer_range``; zero bias) from
    ``seed``, without touching the global random state. ``FileNotFoundError`` names the command that
    makes the checkpoint if it is missing.
    """
    if not (Path(path) / "model.safetensors").is_file():
        raise FileNotFoundError(f"{Path(path) / 'model.safetensors'} does not exist; "
                                "make it with `python -m aurora.experiments.pretrain_tiny_vit`")
    with torch.random.fork_rng(devices=[]):
        model = ViTForImageClassification.from_pretrained(path)
        head = nn.Linear(model.config.hidden_size, num_labels)
        torch.manual_seed(seed)
        nn.init.trunc_normal_(head.weight, std=model.config.initializer_range)
    nn.init.zeros_(head.bias)
    model.classifier = head
    model.config.num_labels = num_labels
    model.num_labels = num_labels
    return model


# ---------------------------------------------------------------------------------------------
# tasks and loaders
# ---------------------------------------------------------------------------------------------
QUICK_TASKS: dict[str, str] = {
    "digits": "scikit-learn digits (8×8 → 28×28), 10 classes: far from the pre-training data, like DTD or EuroSAT for ImageNet",
    "fashion_5_9": "Fashion-MNIST classes 5–9 (Sandal, Shirt, Sneaker, Bag, Ankle boot), unseen in pre-training: "
    "near the pre-training data, like CIFAR-10 for ImageNet",
}


@dataclass
class VisionTask:
    """A downstream task: raw images ``(N, C, H, W)`` in [0, 1] with labels, and its class names."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    label_names: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def _fashion_5_9(n_train: int | None, n_test: int | None, seed: int) -> VisionTask:
    splits = load_image_classification("fashion_mnist")
    parts = []
    for images, labels, count, parameter in (
        (splits.train_images, splits.train_labels, n_train, "n_train"),
        (splits.test_images, splits.test_labels, n_test, "n_test"),
    ):
        keep = torch.nonzero(labels >= 5).flatten().numpy()
        chosen = keep[subsample_indices(labels[keep].numpy(), count, seed, stratify=True, parameter=parameter)]
        parts += [images[chosen], labels[chosen] - 5]
    return VisionTask("fashion_5_9", *parts, splits.label_names[5:])


def load_task(name: str, n_train: int | None = None, n_test: int | None = None, seed: int = 0, image_size: int | None = None) -> VisionTask:
    """A downstream task by name: ``"digits"``, ``"fashion_5_9"`` (offline) or a hub image set (full mode).

    ``n_train``/``n_test`` subsample class-stratified with ``seed`` (None: everything).
    """
    if name == "fashion_5_9":
        return _fashion_5_9(n_train, n_test, seed)
    splits = load_image_classification(name, n_train=n_train, n_test=n_test, seed=seed, image_size=image_size)
    return VisionTask(name, splits.train_images, splits.train_labels, splits.test_images, splits.test_labels, splits.label_names)


def image_loader(
    images: torch.Tensor,
    labels: torch.Tensor,
    preprocessing: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
) -> DataLoader:
    """``(pixel_values, labels)`` batches; ``preprocessing`` (resize, RGB, normalise) runs batch by batch."""

    def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, targets = zip(*batch)
        return preprocessing(torch.stack(pixels)), torch.stack(targets)

    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate)


# ---------------------------------------------------------------------------------------------
# settings: what is trained
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One fine-tuning setting: a label for tables, and either adapter options or a plain mode.

    ``method``: ``"linear_probe"`` (head only), ``"full"`` (every weight), or an adapter method of
    :class:`aurora.AdapterConfig` with ``options`` (rank, alpha, ANL options, ...).
    ``lr``/``head_lr`` override the experiment's learning rates for this setting (None: keep them).
    """

    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None
    head_lr: float | None = None

    @property
    def rank(self) -> int | None:
        return self.options.get("rank")


PLAIN_METHODS = ("linear_probe", "full")


def adapter_setting(label: str, method: str, rank: int, **options: Any) -> Setting:
    """An adapter setting with ``alpha = 2 · rank`` (scaling α/r = 2, App. G's r̃ = 2, α = 4 at every rank)."""
    return Setting(label, method, {"rank": rank, "alpha": 2.0 * rank, **options})


LORA_RANKS_QUICK = (2, 4, 8, 16)
LORA_RANKS_FULL = (2, 4, 6, 8, 12, 16)  # Fig. 1 (right): LoRA ranks on DTD

QUICK_SETTINGS: tuple[Setting, ...] = (
    Setting("Linear probing", "linear_probe"),
    *(adapter_setting(f"LoRA r={r}", "lora", r) for r in LORA_RANKS_QUICK),
    adapter_setting("MoSLoRA r=2", "moslora", 2),
    adapter_setting("AuroRA r=2", "aurora", 2),
    adapter_setting("LoRAN r=2", "loran", 2),
    Setting("Full fine-tuning", "full", lr=1e-3, head_lr=1e-3),
)
FULL_SETTINGS: tuple[Setting, ...] = (
    Setting("Linear probing", "linear_probe"),
    *(adapter_setting(f"LoRA r={r}", "lora", r) for r in LORA_RANKS_FULL),
    adapter_setting("MoSLoRA r=2", "moslora", 2),
    adapter_setting("AuroRA r=2", "aurora", 2),
    adapter_setting("LoRAN r=2", "loran", 2),
)


def prepare_model(model: nn.Module, setting: Setting, head: str = "classifier") -> nn.Module:
    """Make exactly the weights of ``setting`` trainable: the head, plus adapters or every weight."""
    if setting.method == "full":
        model.requires_grad_(True)
        return model
    if setting.method == "linear_probe":
        model.requires_grad_(False)
        model.get_submodule(head).requires_grad_(True)
        return model
    options = {"target_modules": aurora.suggest_target_modules(model), "modules_to_save": [head], **setting.options}
    return aurora.add_adapters(model, aurora.AdapterConfig(method=setting.method, **options))


# ---------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------
@dataclass
class RunOutcome:
    """A trained model and what :func:`run_setting` measured.

    ``row`` is one line of the runs table; its ``params`` counts the trained weights besides the head
    (adapters; 0 for linear probing; the backbone for full fine-tuning), as the paper's "Params" column.
    """

    model: nn.Module
    fit: FitResult
    row: dict[str, Any]


def run_setting(
    task: VisionTask,
    setting: Setting,
    model_factory: Callable[[int, int], nn.Module],
    preprocessing: Callable[[torch.Tensor], torch.Tensor],
    train_config: TrainConfig,
    callbacks: Sequence[Callback] = (),
) -> RunOutcome:
    """Fine-tune ``model_factory(num_labels, seed)`` on ``task`` in ``setting``; seed = ``train_config.seed``.

    Adapters are initialised right after seeding torch with the seed, so a seed fixes the head,
    the adapters and the batch order.
    """
    seed = train_config.seed
    if setting.method not in PLAIN_METHODS:
        aurora.AdapterConfig(method=setting.method, **setting.options)  # fail on a bad setting before loading anything
    model = model_factory(task.num_labels, seed)
    torch.manual_seed(seed)
    prepare_model(model, setting)
    head_params = sum(p.numel() for p in model.get_submodule("classifier").parameters())
    config = dataclasses.replace(
        train_config,
        lr=setting.lr or train_config.lr,
        head_lr=setting.head_lr or train_config.head_lr,
    )
    train = image_loader(task.train_images, task.train_labels, preprocessing, config.batch_size, shuffle=True, seed=seed)
    test = image_loader(task.test_images, task.test_labels, preprocessing, 256, shuffle=False)
    result = fit(model, train, test, config, callbacks=callbacks)
    row = {
        "task": task.name,
        "setting": setting.label,
        "method": setting.method,
        "rank": setting.rank,
        "seed": seed,
        "params": aurora.parameter_report(model)["trainable"] - head_params,
        "head_params": head_params,
        "best_accuracy": result.best_metric,
        "best_epoch": result.best_epoch,
        "final_accuracy": result.final_metric,
        "train_seconds": result.wall_time_s,
        "seconds_per_epoch": result.wall_time_s / len(result.history),
    }
    return RunOutcome(model, result, row)


# ---------------------------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------------------------
@dataclass
class VisionConfig:
    """Everything one mode of the experiment needs.

    ``model``: ``"tiny_vit"`` or a hub name; ``hyperparameters``: per-task overrides of
    ``lr``/``head_lr``/``weight_decay`` (full mode: Table 13).
    """

    mode: str
    model: str
    tasks: tuple[str, ...]
    settings: tuple[Setting, ...]
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int
    lr: float
    head_lr: float
    weight_decay: float
    n_train: int | None = None
    n_test: int | None = None
    hyperparameters: dict[str, dict[str, float]] = field(default_factory=dict)
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["settings"] = [dataclasses.asdict(s) for s in self.settings]
        return values


QUICK = VisionConfig(
    mode="quick",
    model=TINY_VIT,
    tasks=("digits",),
    settings=QUICK_SETTINGS,
    seeds=(0, 1),
    epochs=8,
    batch_size=64,
    lr=2e-2,  # one learning rate for every adapter method: the best of {5e-3, 1e-2, 2e-2} for LoRA, MoSLoRA and AuroRA (pilot)
    head_lr=2e-2,
    weight_decay=1e-4,
    n_train=1000,
    threads=1,  # tiny matrices gain nothing from a second thread, and on a shared machine OpenMP waits for it
)
"""Quick mode: tiny ViT on digits (1,000 of the 1,437 training images, all 360 test images), 8 epochs,
2 seeds (about a minute and a half on one CPU core).

``--tasks fashion_5_9`` (or both) runs the near-domain task as well (30,000 training images: subsample
with ``--n-train``)."""

FULL = VisionConfig(
    mode="full",
    model=FULL_VIT,
    tasks=("oxford_pets", "stanford_cars", "cifar10", "dtd", "eurosat", "resisc45", "cifar100"),  # FGVC: no hub copy
    settings=FULL_SETTINGS,
    seeds=(0, 1),
    epochs=10,
    batch_size=64,
    lr=1e-2,
    head_lr=1e-2,
    weight_decay=1e-4,
    hyperparameters=PAPER_TABLE13["vit-base"],
)
"""Full mode: ViT-B/16 (ImageNet-21k) from the hub, Table 13's learning rates and weight decay, 10 epochs."""


def model_factory(config: VisionConfig) -> Callable[[int, int], nn.Module]:
    """``(num_labels, seed) -> model`` for the mode's backbone (tiny ViT, or a hub model with a fresh head)."""
    if config.model == TINY_VIT:
        return lambda num_labels, seed: load_tiny_vit(num_labels, seed)
    return lambda num_labels, seed: load_vision_model(config.model, num_labels, seed=seed)


def preprocessing_for(config: VisionConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """Resize / RGB / normalise as the backbone was pre-trained (tiny ViT: Fashion-MNIST statistics)."""
    return TINY_VIT_PREPROCESSING if config.model == TINY_VIT else vision_preprocessing(config.model)


def train_config_for(config: VisionConfig, task: str, seed: int, device: str) -> TrainConfig:
    """The :class:`TrainConfig` of one task and seed: the mode's defaults, then the task's overrides (Table 13)."""
    overrides = config.hyperparameters.get(task, {})
    return TrainConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=overrides.get("lr", config.lr),
        head_lr=overrides.get("head_lr", config.head_lr),
        weight_decay=overrides.get("weight_decay", config.weight_decay),
        seed=seed,
        device=device,
        progress=False,
    )


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over seeds of every (task, setting), in first-seen order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in runs:
        groups.setdefault((row["task"], row["setting"]), []).append(row)
    summary = []
    for (task, setting), rows in groups.items():
        best = np.array([r["best_accuracy"] for r in rows])
        final = np.array([r["final_accuracy"] for r in rows])
        seconds = np.array([r["train_seconds"] for r in rows])
        summary.append({
            "task": task,
            "setting": setting,
            "method": rows[0]["method"],
            "rank": rows[0]["rank"],
            "params": rows[0]["params"],
            "head_params": rows[0]["head_params"],
            "seeds": len(rows),
            "best_accuracy_mean": float(best.mean()),
            "best_accuracy_std": float(best.std(ddof=1)) if len(rows) > 1 else math.nan,
            "final_accuracy_mean": float(final.mean()),
            "train_seconds_mean": float(seconds.mean()),
        })
    return summary


def run(config: VisionConfig, device: str = "cpu", results_dir: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run every task × setting × seed of ``config`` and write ``runs``, ``history`` and ``summary`` tables."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    factory, preprocessing = model_factory(config), preprocessing_for(config)
    runs: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    jobs = [(task, setting, seed) for task in config.tasks for setting in config.settings for seed in config.seeds]
    tasks = {name: load_task(name, config.n_train, config.n_test, seed=0) for name in config.tasks}
    for task_name, setting, seed in tqdm(jobs, desc=f"vision ({config.mode})", unit="run"):
        outcome = run_setting(tasks[task_name], setting, factory, preprocessing, train_config_for(config, task_name, seed, device))
        runs.append(outcome.row)
        history += [{"task": task_name, "setting": setting.label, "seed": seed, **dataclasses.asdict(record)} for record in outcome.fit.history]
    tables = {"runs": runs, "history": history, "summary": summarize(runs)}
    name = "vision_classification" if config.mode == "quick" else "vision_classification/full"
    write_results(name, tables, config.to_dict(), device=device, wall_time_s=round(time.perf_counter() - started, 1), results_dir=results_dir)
    return tables


# ---------------------------------------------------------------------------------------------
# tables and figures for the chapter
# ---------------------------------------------------------------------------------------------
def parse_count(text: str) -> float:
    """A parameter count as the paper prints it (``"74K"``, ``"1.57M"``) as a number; ``"-"`` is 0."""
    if text == "-":
        return 0.0
    factor = {"K": 1e3, "M": 1e6}.get(text[-1])
    if factor is None:
        raise ValueError(f"text must be a count like '74K' or '1.57M' (or '-'), got {text!r}")
    return float(text[:-1]) * factor


# paper row (Table 3, ViT-B) -> our setting of the same kind; FourierFT has no counterpart here
PAPER_TO_OURS = {
    "Linear probing*": "Linear probing",
    "LoRA*": "LoRA r=16",  # FourierFT's LoRA baseline (r = 16 on query and value)
    "AuroRA": "AuroRA r=2",
    "Full fine-tuning*": "Full fine-tuning",
}


def paper_vs_ours(summary: pd.DataFrame, task: str, paper_dataset: str = "dtd") -> pd.DataFrame:
    """Table 3 (ViT-B) next to our summary: paper params and accuracy on ``paper_dataset`` and on average, ours on ``task``."""
    ours = summary[summary["task"] == task].set_index("setting")
    rows = []
    for paper_method, values in PAPER_TABLE3["vit-base"].items():
        setting = PAPER_TO_OURS.get(paper_method)
        mine = ours.loc[setting] if setting in ours.index else None
        rows.append({
            "paper method": paper_method,
            "paper params (ViT-B)": values["params"],
            f"paper acc. {paper_dataset} (%)": values[paper_dataset],
            "paper acc. avg (%)": values["avg"],
            "our setting": setting or "(not run)",
            "our params (tiny ViT)": None if mine is None else int(mine["params"]),
            f"our acc. {task} (%)": None if mine is None else round(100 * mine["best_accuracy_mean"], 1),
        })
    return pd.DataFrame(rows).astype({"our params (tiny ViT)": "Int64"})


def plot_parameters_vs_accuracy(summary: pd.DataFrame, task: str, ax: Axes | None = None) -> Axes:
    """Fig. 1 (right) from our summary: LoRA's ranks as a line, other adapters as points (mean ± std over seeds).

    Linear probing and full fine-tuning are drawn as horizontal reference lines.
    """
    rows = summary[summary["task"] == task]
    if rows.empty:
        raise ValueError(f"task {task!r} is not in the summary; it has {sorted(summary['task'].unique())}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    lora = rows[rows["method"] == "lora"].sort_values("params")
    ax.errorbar(lora["params"], 100 * lora["best_accuracy_mean"], yerr=100 * lora["best_accuracy_std"].fillna(0),
                marker="o", capsize=3, label="LoRA (r = " + ", ".join(str(int(r)) for r in lora["rank"]) + ")")
    for _, row in rows[~rows["method"].isin(["lora", *PLAIN_METHODS])].iterrows():
        ax.errorbar(row["params"], 100 * row["best_accuracy_mean"], yerr=100 * np.nan_to_num(row["best_accuracy_std"]),
                    marker="s" if row["method"] == "aurora" else "^", markersize=8, capsize=3, linestyle="none", label=row["setting"])
    for method, style in (("linear_probe", ":"), ("full", "--")):
        for _, row in rows[rows["method"] == method].iterrows():
            ax.axhline(100 * row["best_accuracy_mean"], color="grey", linestyle=style, label=row["setting"])
    ax.set_xscale("log")
    ax.set_xlabel("trained adapter parameters (head not counted)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"ours: tiny ViT on {task}")
    ax.legend(fontsize=8)
    return ax


def plot_paper_parameters_vs_accuracy(dataset: str = "dtd", ax: Axes | None = None) -> Axes:
    """The paper's own points for ViT-B on ``dataset`` (Table 3), drawn like :func:`plot_parameters_vs_accuracy`."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for method, values in PAPER_TABLE3["vit-base"].items():
        if method in ("Linear probing*", "Full fine-tuning*"):
            ax.axhline(values[dataset], color="grey", linestyle=":" if method.startswith("Linear") else "--", label=method)
        else:
            ax.plot(parse_count(values["params"]), values[dataset], marker="s" if method == "AuroRA" else "o",
                    markersize=8, linestyle="none", label=f"{method} ({values['params']})")
    ax.set_xscale("log")
    ax.set_xlabel("trained adapter parameters")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"paper: ViT-B on {dataset} (Table 3)")
    ax.legend(fontsize=8)
    return ax


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="LoRA / MoSLoRA / AuroRA / LoRAN on image classification (Table 3, Fig. 1)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny ViT on digits and Fashion-MNIST 5-9 (default)")
    mode.add_argument("--full", action="store_true", help="ViT-B/16 from the hub on the paper's sets (needs the internet)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", nargs="+", help="subset of the mode's tasks")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the mode's)")
    parser.add_argument("--n-train", type=int, help="subsample the training sets (class-stratified)")
    parser.add_argument("--n-test", type=int, help="subsample the test sets (class-stratified)")
    args = parser.parse_args(argv)
    config = FULL if args.full else QUICK
    if args.tasks:
        allowed = list(QUICK_TASKS) if config.mode == "quick" else list(config.tasks)
        unknown = sorted(set(args.tasks) - set(allowed))
        if unknown:
            raise ValueError(f"--tasks must be among {allowed} in {config.mode} mode; got {unknown}")
        config = dataclasses.replace(config, tasks=tuple(args.tasks))
    if args.seeds:
        config = dataclasses.replace(config, seeds=tuple(args.seeds))
    if args.n_train or args.n_test:
        config = dataclasses.replace(config, n_train=args.n_train or config.n_train, n_test=args.n_test or config.n_test)
    tables = run(config, device=args.device)
    for row in tables["summary"]:
        print(f"{row['task']:<14} {row['setting']:<18} params {row['params']:>7}  "
              f"best acc {row['best_accuracy_mean']:.4f} ± {row['best_accuracy_std']:.4f}")


if __name__ == "__main__":
    main()
