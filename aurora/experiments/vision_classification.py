"""Image classification with LoRA, MoSLoRA, AuroRA, LoRAN and PEFT's baselines on a ViT (Table 3, Fig. 1 right).

The paper fine-tunes ViT-Base/Large (``google/vit-*-patch16-224-in21k``) on eight image sets for
10 epochs, adapting the attention query and value projections and training the classification head
in full (§3.3, App. G.3, Table 13). Every run here goes through :mod:`aurora.experiments.harness`:
each method's learning rate is chosen on a validation split carved from the training images (the
same grid and tuning seeds for every method), the epoch is chosen on validation, the test split is
scored once per final run, and ten paired seeds give 95 % intervals and paired differences.

* quick (default, CPU): the tiny ViT of :mod:`aurora.experiments.pretrain_tiny_vit` (pre-trained on
  Fashion-MNIST classes 0–4) adapted to the unseen Fashion-MNIST classes 5–9: 384 training and
  256 validation images drawn from the training split, all 5,000 test images
  (:func:`quick_task`, :data:`QUICK_PROTOCOL`). Results: ``data/results/vision_classification/``.
* ``--full`` (GPU + internet): ViT-B/16 from the hub on the paper's sets; images are decoded and
  resized batch by batch from the memory-mapped hub table (:class:`HubImageDataset`), so no set is
  ever held decoded in memory; validation is carved from the hub's training split with Table 10's
  sizes (:data:`PAPER_TABLE10`). Results, resumed run by run: ``data/results/vision_classification/full/<set>/``.

Images are stored as ``uint8`` and normalised per batch (:class:`ImageDataset`).

    python -m aurora.experiments.vision_classification            # quick
    python -m aurora.experiments.vision_classification --full --tasks dtd cifar100

Chapter: ``book/vision_classification.md``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from transformers import ViTConfig, ViTForImageClassification

from aurora.data import ImagePreprocessing, load_image_classification, load_vision_model, vision_preprocessing
from aurora.data.specs import subsample_indices
from aurora.experiments.harness import (
    EpochStates, Method, Protocol, Task, carve_validation, paired_comparison, read_final_runs, resolve_device,
    run_protocol, write_csv_atomically,
)
from aurora.plots import method_style
from aurora.results import REPO_ROOT, RESULTS_DIR
from aurora.train import TrainConfig, fit

__all__ = [
    "PAPER_TABLE3",
    "PAPER_TABLE10",
    "PAPER_TABLE13",
    "PRETRAINED_DIR",
    "TINY_VIT",
    "FULL_VIT",
    "TINY_VIT_PREPROCESSING",
    "tiny_vit_config",
    "load_tiny_vit",
    "ImageDataset",
    "HubImageDataset",
    "image_loader",
    "QUICK_TASK",
    "quick_task",
    "full_task",
    "adapter_method",
    "peft_method",
    "QUICK_METHODS",
    "FULL_METHODS",
    "REFERENCE",
    "QUICK_PROTOCOL",
    "SMOKE_PROTOCOL",
    "FULL_PROTOCOL",
    "QUICK_RESULTS",
    "FULL_RESULTS",
    "run_quick",
    "run_full",
    "reuse_runs",
    "replay_final_run",
    "final_runs",
    "comparison",
    "claims_inputs",
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


PAPER_TABLE10: dict[str, dict[str, int]] = {
    "oxford_pets": dict(classes=37, train=3312, val=368, test=3669),
    "stanford_cars": dict(classes=196, train=7329, val=815, test=8041),
    "cifar10": dict(classes=10, train=45000, val=5000, test=10000),
    "dtd": dict(classes=47, train=4060, val=452, test=1128),
    "eurosat": dict(classes=10, train=16200, val=5400, test=5400),
    "fgvc": dict(classes=100, train=3000, val=334, test=3333),
    "resisc45": dict(classes=45, train=18900, val=6300, test=6300),
    "cifar100": dict(classes=100, train=45000, val=5000, test=10000),
}
"""Table 10 (App. F): the paper's split sizes, all images rescaled to 224×224. The hub copies that full
mode loads have a train and a test split only (their sizes differ for EuroSAT, DTD and RESISC45, and
CIFAR's 50,000 training images include the paper's 5,000 validation images), so full mode carves
Table 10's number of validation images out of the hub's training split with a fixed seed."""


def _fresh_head(model: ViTForImageClassification, num_labels: int, seed: int) -> ViTForImageClassification:
    """Replace ``classifier`` by a head initialised as ViT does (truncated normal, zero bias) from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        head = nn.Linear(model.config.hidden_size, num_labels)
        torch.manual_seed(seed)
        nn.init.trunc_normal_(head.weight, std=model.config.initializer_range)
    nn.init.zeros_(head.bias)
    model.classifier = head.to(model.device)
    model.config.num_labels = num_labels
    model.num_labels = num_labels
    return model


@functools.lru_cache(maxsize=1)
def _tiny_vit_state(path: str) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in ViTForImageClassification.from_pretrained(path).state_dict().items()}


def load_tiny_vit(num_labels: int, seed: int = 0, path: Path = PRETRAINED_DIR) -> ViTForImageClassification:
    """The pre-trained tiny ViT with a fresh ``classifier`` head of ``num_labels`` outputs.

    The checkpoint is in the Hugging Face format (as ``google/vit-base-patch16-224-in21k``); it is
    read once per process and copied into every new model. The head is initialised from ``seed``
    without touching the global random state. ``FileNotFoundError`` names the command that makes
    the checkpoint if it is missing.
    """
    if not (Path(path) / "model.safetensors").is_file():
        raise FileNotFoundError(f"{Path(path) / 'model.safetensors'} does not exist; "
                                "make it with `python -m aurora.experiments.pretrain_tiny_vit`")
    state = _tiny_vit_state(str(path))
    config = ViTConfig.from_pretrained(path)
    with torch.random.fork_rng(devices=[]):
        model = ViTForImageClassification(config)
    model.load_state_dict(state)
    return _fresh_head(model, num_labels, seed)


# ---------------------------------------------------------------------------------------------
# data: compact images, preprocessed batch by batch
# ---------------------------------------------------------------------------------------------
class ImageDataset(Dataset):
    """``uint8`` images ``(N, C, H, W)`` and labels; ``preprocessing`` (resize, RGB, normalise) runs per batch.

    ``scale`` is the pixel value of white (255, or 16 for scikit-learn's digits). The DataLoader
    fetches a whole batch through ``__getitems__``, so preprocessing is one tensor operation per batch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, preprocessing: Callable[[torch.Tensor], torch.Tensor],
                 scale: float = 255.0, label_names: Sequence[str] = ()) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W); got {images.dtype} of shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},); got {tuple(labels.shape)}")
        self.images, self.labels, self.preprocessing, self.scale = images, labels.long(), preprocessing, float(scale)
        self.label_names = tuple(label_names)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        pixels = self.preprocessing(self.images[index].float() / self.scale)
        return list(zip(pixels.unbind(0), self.labels[index].unbind(0)))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]


class HubImageDataset(Dataset):
    """A hub image split decoded lazily: each batch's images are decoded, made RGB, resized and normalised.

    ``table`` is a ``datasets.Dataset`` (memory-mapped Arrow); only the rows in ``indices`` are used.
    """

    def __init__(self, table: Any, image_column: str, label_column: str, indices: Sequence[int],
                 preprocessing: ImagePreprocessing, label_names: Sequence[str] = ()) -> None:
        self.table, self.image_column, self.label_column = table, image_column, label_column
        self.indices = [int(i) for i in indices]
        self.preprocessing, self.label_names = preprocessing, tuple(label_names)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        rows = self.table[[self.indices[i] for i in indices]]
        side = self.preprocessing.image_size
        pictures = [np.asarray(image.convert("RGB").resize((side, side))) for image in rows[self.image_column]]
        pixels = self.preprocessing(torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 255.0)
        labels = torch.as_tensor(rows[self.label_column], dtype=torch.long)
        return list(zip(pixels.unbind(0), labels.unbind(0)))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]


def image_loader(images: torch.Tensor, labels: torch.Tensor, preprocessing: Callable[[torch.Tensor], torch.Tensor],
                 batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """``(pixel_values, labels)`` batches of ``images`` (uint8 0–255, or floats in [0, 1]), preprocessed batch by batch
    (used by :mod:`aurora.experiments.pretrain_tiny_vit`)."""

    def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, targets = zip(*batch)
        pixels = torch.stack(pixels)
        return preprocessing(pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels), torch.stack(targets)

    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=collate)


QUICK_TASK = "fashion_5_9"
QUICK_TASK_DESCRIPTION = ("Fashion-MNIST classes 5–9 (sandal, shirt, sneaker, bag, ankle boot), unseen in the tiny ViT's "
                          "pre-training on classes 0–4")


def quick_task(n_train: int = 384, n_validation: int = 256, n_test: int | None = None, data_seed: int = 0) -> Task:
    """Fashion-MNIST classes 5–9 on the tiny ViT: ``n_train + n_validation`` training images drawn class-stratified
    with ``data_seed``, split by :func:`carve_validation`; ``n_test`` test images (None: all 5,000)."""
    splits = load_image_classification("fashion_mnist", dtype=torch.uint8)
    parts = {}
    for split, images, labels, count in (("train", splits.train_images, splits.train_labels, n_train + n_validation),
                                         ("test", splits.test_images, splits.test_labels, n_test)):
        keep = torch.nonzero(labels >= 5).flatten().numpy()
        chosen = keep[subsample_indices(labels[keep].numpy(), count, data_seed, stratify=True,
                                        parameter="n_train + n_validation" if split == "train" else "n_test")]
        parts[split] = ImageDataset(images[chosen], labels[chosen] - 5, TINY_VIT_PREPROCESSING,
                                    label_names=splits.label_names[5:])
    train, validation = carve_validation(parts["train"], n_validation, seed=data_seed)
    return Task(
        name=QUICK_TASK, metric="accuracy", train=train, validation=validation, test=parts["test"],
        make_model=lambda seed: load_tiny_vit(5, seed), target_modules=("q_proj", "v_proj"), head_modules=("classifier",),
        info=dict(description=QUICK_TASK_DESCRIPTION, backbone="tiny ViT (data/pretrained/tiny_vit_fashion04)",
                  train=len(train), validation=len(validation), test=len(parts["test"]), data_seed=data_seed),
    )


def full_task(name: str, model: str = FULL_VIT, data_seed: int = 0, n_train: int | None = None,
              n_test: int | None = None) -> Task:
    """A Table 3 set from the hub for ``model``, decoded lazily (:class:`HubImageDataset`).

    Validation: Table 10's number of images (at most a fifth of the hub's training split) carved out
    of the training split with ``data_seed``; ``n_train``/``n_test`` subsample (class-stratified) for rehearsals.
    """
    from aurora.data.images import HUB_IMAGE_SETS, OFFLINE_IMAGE_SUBSTITUTE
    from aurora.data.specs import load_hub_dataset

    if name not in HUB_IMAGE_SETS:
        raise ValueError(f"name must be one of {sorted(HUB_IMAGE_SETS)}, got {name!r}")
    hub = HUB_IMAGE_SETS[name]
    splits = load_hub_dataset(f"image set {name!r} ({hub.hub_id})", OFFLINE_IMAGE_SUBSTITUTE, hub.hub_id)
    import datasets

    features = splits[hub.train_split].features
    image_column = next(column for column, feature in features.items() if isinstance(feature, datasets.Image))
    label_names = tuple(features[hub.label_column].names)
    preprocessing = vision_preprocessing(model)
    tables = {split: splits[split] for split in (hub.train_split, hub.test_split)}
    labels = {split: np.asarray(table[hub.label_column], dtype=np.int64) for split, table in tables.items()}
    train_rows = subsample_indices(labels[hub.train_split], n_train, data_seed, stratify=True, parameter="n_train")
    test_rows = subsample_indices(labels[hub.test_split], n_test, data_seed, stratify=True, parameter="n_test")
    pool = HubImageDataset(tables[hub.train_split], image_column, hub.label_column, train_rows, preprocessing, label_names)
    n_validation = max(1, min(PAPER_TABLE10.get(name, {}).get("val", len(pool) // 10), len(pool) // 5))
    train, validation = carve_validation(pool, n_validation, seed=data_seed)
    test = HubImageDataset(tables[hub.test_split], image_column, hub.label_column, test_rows, preprocessing, label_names)
    return Task(
        name=name, metric="accuracy", train=train, validation=validation, test=test,
        make_model=lambda seed: load_vision_model(model, len(label_names), seed=seed),
        target_modules=("q_proj", "v_proj"), head_modules=("classifier",),
        info=dict(hub_id=hub.hub_id, backbone=model, train=len(train), validation=len(validation), test=len(test),
                  paper_split=PAPER_TABLE10.get(name), data_seed=data_seed),
    )


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------
def adapter_method(label: str, method: str, rank: int, style: str | None = None, **options: Any) -> Method:
    """An aurora adapter with ``alpha = 2 · rank`` (App. G's r̃ = 2, α = 4: scaling α/r = 2 at every rank)."""
    return Method(label, style or method, adapter={"method": method, "rank": rank, "alpha": 2.0 * rank, **options})


def _peft_factory(kind: str, options: Mapping[str, Any]) -> Callable[[list[str], list[str]], Any]:
    def factory(target_modules: list[str], modules_to_save: list[str]) -> Any:
        import peft

        config_class = {"lora": peft.LoraConfig, "vera": peft.VeraConfig, "fourierft": peft.FourierFTConfig}[kind]
        return config_class(target_modules=target_modules, modules_to_save=modules_to_save, **options)

    return factory


def peft_method(label: str, style: str, kind: str, **options: Any) -> Method:
    """A PEFT baseline: ``kind`` ``"lora"`` (``use_dora=True`` for DoRA, ``init_lora_weights="pissa"`` for PiSSA), ``"vera"`` or ``"fourierft"`` with ``options``."""
    name = {"lora": "LoraConfig", "vera": "VeraConfig", "fourierft": "FourierFTConfig"}[kind]
    description = f"{name}(" + ", ".join(f"{key}={value!r}" for key, value in sorted(options.items())) + ")"
    return Method(label, style, peft_config=_peft_factory(kind, options), peft_description=description)


LORA_RANKS = (2, 4, 8, 16)
REFERENCE = "LoRA r=16"  # the paper's LoRA row (FourierFT's baseline: r = 16 on query and value)
AURORA_LABEL = "AuroRA r̃=2"

# Budgets on the tiny ViT (8 adapted 64×64 projections): LoRA r=2 trains 2,048 weights; VeRA r=192
# ((192 + 64) · 8) and FourierFT n=256 (256 · 8) are matched to it, DoRA r=2 adds 64 magnitudes per layer, PiSSA r=2
# (LoRA initialised from the principal singular vectors, α = r as in its paper) trains what LoRA r=2 trains.
QUICK_METHODS: tuple[Method, ...] = (
    Method("Linear probing", "linear_probe", plain="head"),
    *(adapter_method(f"LoRA r={rank}", "lora", rank) for rank in LORA_RANKS),
    adapter_method("MoSLoRA r=2", "moslora", 2),
    adapter_method(AURORA_LABEL, "aurora", 2),
    adapter_method("LoRAN r=2", "loran", 2),
    peft_method("PEFT LoRA r=8", "peft_lora", "lora", r=8, lora_alpha=16),
    peft_method("PEFT DoRA r=2", "peft_dora", "lora", r=2, lora_alpha=4, use_dora=True),
    peft_method("PEFT PiSSA r=2", "peft_pissa", "lora", r=2, lora_alpha=2, init_lora_weights="pissa"),
    peft_method("PEFT VeRA r=192", "peft_vera", "vera", r=192),
    peft_method("PEFT FourierFT n=256", "peft_fourierft", "fourierft", n_frequency=256),
    Method("Full fine-tuning", "full", plain="full"),
)
"""Table 3's rows on the tiny ViT; ``PEFT LoRA r=8`` is the fairness check against our ``LoRA r=8``."""

FULL_METHODS: tuple[Method, ...] = (
    Method("Linear probing", "linear_probe", plain="head"),
    *(adapter_method(f"LoRA r={rank}", "lora", rank) for rank in (2, 4, 8, 16)),
    adapter_method("MoSLoRA r=2", "moslora", 2),
    adapter_method(AURORA_LABEL, "aurora", 2),
    adapter_method("LoRAN r=2", "loran", 2),
    peft_method("PEFT LoRA r=16", "peft_lora", "lora", r=16, lora_alpha=32),
    peft_method("PEFT DoRA r=16", "peft_dora", "lora", r=16, lora_alpha=32, use_dora=True),
    peft_method("PEFT VeRA r=256", "peft_vera", "vera", r=256),
    peft_method("PEFT FourierFT n=3000", "peft_fourierft", "fourierft", n_frequency=3000),  # FourierFT's ViT-B setting
)
"""ViT-B: Fig. 1's LoRA ranks, ours at r = 2, and PEFT's baselines as Table 3 runs them (FourierFT n = 3000)."""

QUICK_PROTOCOL = Protocol(lr_grid=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0), tuning_seeds=(1000, 1001),
                          final_seeds=tuple(range(10)), epochs=16, batch_size=64, eval_batch_size=500, weight_decay=1e-4)
"""Quick: one grid (factor ≈ 3 over three decades) for every method, the head at the same rate, 2 tuning seeds,
10 final seeds, 16 epochs of 6 steps (384 training images; the selected rates' validation curves have
flattened by then: ``late_validation_gain``), validation on 256 images after every epoch, test on 5,000 once."""
SMOKE_PROTOCOL = Protocol(lr_grid=(3e-2,), tuning_seeds=(1000,), final_seeds=(0, 1), epochs=1, batch_size=64,
                          eval_batch_size=500, weight_decay=1e-4, smoke=True)
"""The chapters' seconds-long smoke run of the same code (no verdicts)."""
FULL_PROTOCOL = Protocol(lr_grid=(1e-3, 3e-3, 1e-2, 3e-2), tuning_seeds=(1000, 1001), final_seeds=tuple(range(10)),
                         epochs=10, batch_size=64, eval_batch_size=256, weight_decay=1e-4)
"""Full: 10 epochs as the paper; the grid brackets Table 13's rates (5e-3 … 1.5e-2)."""

QUICK_RESULTS = RESULTS_DIR / "vision_classification"
FULL_RESULTS = RESULTS_DIR / "vision_classification" / "full"


def _threads() -> None:
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # tiny matrices gain nothing from a second thread on a shared 2-core machine


def run_quick(results_dir: Path = QUICK_RESULTS, methods: Sequence[Method] = QUICK_METHODS,
              protocol: Protocol = QUICK_PROTOCOL, task: Task | None = None, device: str = "auto",
              resume: bool = True, progress: bool = True) -> pd.DataFrame:
    """The quick comparison through the harness; returns the final runs (``runs.csv`` etc. in ``results_dir``)."""
    _threads()
    task = task or quick_task()
    finals = run_protocol(task, methods, protocol, results_dir, resume=resume, device=device, progress=progress,
                          reference=REFERENCE if REFERENCE in [m.label for m in methods] else None)
    _write_claims_inputs(Path(results_dir), finals)
    return finals


def _write_claims_inputs(folder: Path, finals: pd.DataFrame) -> None:
    temporary = folder / ".claims_inputs.json.tmp"
    temporary.write_text(json.dumps(claims_inputs(finals), indent=2) + "\n")
    temporary.replace(folder / "claims_inputs.json")


def run_full(tasks: Sequence[str] = ("dtd", "cifar10", "eurosat", "oxford_pets", "stanford_cars", "resisc45", "cifar100"),
             results_dir: Path = FULL_RESULTS, methods: Sequence[Method] = FULL_METHODS, protocol: Protocol = FULL_PROTOCOL,
             model: str = FULL_VIT, device: str = "auto", n_train: int | None = None, n_test: int | None = None) -> list[Path]:
    """Every task in its own folder ``results_dir/<task>/``, resumed run by run; returns the folders."""
    folders = []
    for name in tasks:
        folder = Path(results_dir) / name
        finals = run_protocol(full_task(name, model, n_train=n_train, n_test=n_test), methods, protocol, folder, resume=True,
                              device=device, reference=REFERENCE if REFERENCE in [m.label for m in methods] else None)
        _write_claims_inputs(folder, finals)
        folders.append(folder)
    return folders


# ---------------------------------------------------------------------------------------------
# sharing runs between experiments, and replaying a final run with callbacks
# ---------------------------------------------------------------------------------------------
def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


_RUN_IDENTITY = ("phase", "task", "label", "method_id", "protocol_id", "lr", "head_lr", "seed")


def reuse_runs(source: Path, target: Path, labels: Sequence[str], protocol: Protocol | None = None) -> int:
    """Copy the runs of ``labels`` (and their epochs) from the results folder ``source`` into ``target``.

    The harness then skips them on ``resume=True`` (its run key matches only for the same task, method,
    protocol, rate and seed, so nothing that would train differently is reused). With ``protocol`` only
    runs made under it are copied (so a folder never mixes two designs). Runs already in ``target`` are
    kept. Returns the number of runs copied.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    wanted = set(labels)
    source_runs = [row for row in _read_rows(Path(source) / "runs.csv") if row["label"] in wanted
                   and (protocol is None or row["protocol_id"] == protocol.protocol_id)]
    runs = _read_rows(target / "runs.csv")
    have = {tuple(row[k] for k in _RUN_IDENTITY) for row in runs}
    new = [row for row in source_runs if tuple(row[k] for k in _RUN_IDENTITY) not in have]
    if not new:
        return 0
    keys = {tuple(row[k] for k in _RUN_IDENTITY) for row in new}
    epochs = _read_rows(target / "epochs.csv")
    epochs += [row for row in _read_rows(Path(source) / "epochs.csv") if tuple(row[k] for k in _RUN_IDENTITY) in keys]
    write_csv_atomically(target / "epochs.csv", epochs)  # epochs first, as the harness writes them
    write_csv_atomically(target / "runs.csv", runs + new)
    return len(new)


def replay_final_run(task: Task, method: Method, protocol: Protocol, row: Mapping[str, Any], device: str = "auto",
                     callbacks: Sequence[Any] = ()) -> nn.Module:
    """Train ``method`` again exactly as the harness trained the final run ``row`` (its seed and rates), with ``callbacks``.

    The harness keeps no models; experiments that need one (ΔW trajectories, merges) replay the run.
    The model comes back at the epoch selected on validation. ``ValueError`` if the replay's validation
    score differs from ``row["validation_metric"]`` (the replay would not be the run the table reports).
    """
    device = resolve_device(device)
    seed = int(row["seed"])
    head_lr = row.get("head_lr")
    head_lr = None if head_lr in (None, "") or (isinstance(head_lr, float) and math.isnan(head_lr)) else float(head_lr)
    model = task.make_model(seed)
    torch.manual_seed(seed)  # adapter initialisation, as in the harness
    model = method.prepare(model, task.target_modules, task.head_modules)
    config = TrainConfig(epochs=protocol.epochs, batch_size=protocol.batch_size, lr=float(row["lr"]), head_lr=head_lr,
                         warmup_ratio=protocol.warmup_ratio, weight_decay=protocol.weight_decay,
                         max_grad_norm=protocol.max_grad_norm, seed=seed, device=device, metric=task.metric, progress=False)
    weights = EpochStates()
    result = fit(model, task.train, task.validation, config, callbacks=[*callbacks, weights])
    if not math.isclose(result.best_metric, float(row["validation_metric"]), abs_tol=1e-9):
        raise ValueError(f"replay of {method.label!r} seed {seed} scored {result.best_metric} on validation, the run table "
                         f"{row['validation_metric']}; it is not the same run (device or library differences?)")
    weights.restore(model, result.best_epoch)
    return model


# ---------------------------------------------------------------------------------------------
# tables and figures for the chapter
# ---------------------------------------------------------------------------------------------
def final_runs(folder: Path, command: str = "python -m aurora.experiments.vision_classification") -> pd.DataFrame:
    """The final runs of a results folder's design (:func:`~aurora.experiments.harness.read_final_runs`);
    ``FileNotFoundError`` names ``command`` (``--full`` added for a full-mode folder), the command that makes it."""
    path = Path(folder) / "runs.csv"
    if not path.is_file():
        full = " --full" if "full" in Path(folder).parts else ""
        raise FileNotFoundError(f"{path} does not exist; produce it with `{command}{full}`")
    return read_final_runs(folder)


def comparison(runs: pd.DataFrame, reference: str = REFERENCE, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Means, 95 % intervals and paired differences to ``reference`` (harness :func:`paired_comparison`), in ``labels`` order."""
    if labels is not None:
        runs = runs[runs["label"].isin(labels)]
    table = paired_comparison(runs, reference, "test_metric")
    if labels is not None:
        table = table.set_index("label").loc[[label for label in labels if label in set(table["label"])]].reset_index()
    return table


def _pair(runs: pd.DataFrame, label: str, reference: str) -> dict[str, Any]:
    row = comparison(runs, reference, [reference, label]).set_index("label").loc[label]
    return dict(setting=f"{label} − {reference}", value=float(row["difference"]), ci_low=float(row["difference_ci_low"]),
                ci_high=float(row["difference_ci_high"]), seeds=int(row["paired_seeds"]), verdict=str(row["verdict"]),
                params=int(row["adapter_params"]), reference_params=int(
                    runs[runs["label"] == reference]["adapter_params"].iloc[0]))


def claims_inputs(runs: pd.DataFrame) -> dict[str, Any]:
    """T3 (AuroRA r̃=2 minus LoRA at every rank), EQ (minus LoRA r=2), MOS (MoSLoRA r=2 minus LoRA r=2), BL (AuroRA
    minus each PEFT baseline) and the PEFT-LoRA fairness check, as paired differences of test accuracy."""
    labels = set(runs["label"])
    return {
        "T3": [_pair(runs, AURORA_LABEL, f"LoRA r={rank}") for rank in LORA_RANKS if {f"LoRA r={rank}", AURORA_LABEL} <= labels],
        "peft_lora_agreement": _pair(runs, "PEFT LoRA r=8", "LoRA r=8") if {"PEFT LoRA r=8", "LoRA r=8"} <= labels else None,
        "EQ": _pair(runs, AURORA_LABEL, "LoRA r=2") if {AURORA_LABEL, "LoRA r=2"} <= labels else None,
        "MOS": _pair(runs, "MoSLoRA r=2", "LoRA r=2") if {"MoSLoRA r=2", "LoRA r=2"} <= labels else None,
        "BL": [_pair(runs, AURORA_LABEL, label) for label in sorted(labels) if label.startswith("PEFT ") and AURORA_LABEL in labels],
        "metric": "test accuracy (fraction), difference of means over paired seeds, 95 % t interval",
    }


def parse_count(text: str) -> float:
    """A parameter count as the paper prints it (``"74K"``, ``"1.57M"``) as a number; ``"-"`` is 0."""
    if text == "-":
        return 0.0
    factor = {"K": 1e3, "M": 1e6}.get(text[-1])
    if factor is None:
        raise ValueError(f"text must be a count like '74K' or '1.57M' (or '-'), got {text!r}")
    return float(text[:-1]) * factor


# paper row (Table 3, ViT-B) -> our method of the same kind
PAPER_TO_OURS = {
    "Full fine-tuning*": "Full fine-tuning",
    "Linear probing*": "Linear probing",
    "LoRA*": "LoRA r=16",  # FourierFT's LoRA baseline (r = 16 on query and value)
    "FourierFT*": "PEFT FourierFT n=256",
    "AuroRA": AURORA_LABEL,
}


def paper_vs_ours(summary: pd.DataFrame, paper_dataset: str = "dtd") -> pd.DataFrame:
    """Table 3 (ViT-B) rows beside ours: the paper's params and accuracy on ``paper_dataset`` and on average,
    our method of the same kind with its adapter parameters and test accuracy (mean and 95 % interval, %)."""
    ours = summary.set_index("label")
    rows = []
    for paper_method, values in PAPER_TABLE3["vit-base"].items():
        label = PAPER_TO_OURS.get(paper_method)
        mine = ours.loc[label] if label in ours.index else None
        rows.append({
            "paper method": paper_method,
            "paper params (ViT-B)": values["params"],
            f"paper accuracy, {paper_dataset} (%)": values[paper_dataset],
            "paper accuracy, average (%)": values["avg"],
            "our method": label if mine is not None else "(not run)",
            "our params (tiny ViT)": "–" if mine is None else f"{int(mine['adapter_params']):,}",
            "our accuracy (%)": "–" if mine is None else f"{100 * mine['mean']:.1f} [{100 * mine['ci_low']:.1f}, {100 * mine['ci_high']:.1f}]",
        })
    return pd.DataFrame(rows)


def _style_key(row: pd.Series) -> str:
    return str(row["style"]) if "style" in row and isinstance(row["style"], str) else "lora"


def plot_parameters_vs_accuracy(summary: pd.DataFrame, ax: Axes, title: str = "") -> Axes:
    """Fig. 1 (right) from our summary: LoRA's ranks as a line, every other adapter as a point, each with
    its 95 % interval; linear probing and full fine-tuning as horizontal reference lines."""
    if summary.empty:
        raise ValueError("summary is empty; pass comparison(final_runs(folder))")
    lora = summary[summary["style"] == "lora"].sort_values("adapter_params")
    error = lambda rows: 100 * np.vstack([rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]])
    if not lora.empty:
        ax.errorbar(lora["adapter_params"], 100 * lora["mean"], yerr=error(lora), capsize=3,
                    label="LoRA, r = " + ", ".join(label.split("=")[-1] for label in lora["label"]), **method_style("lora"))
    for _, row in summary[~summary["style"].isin(["lora", "linear_probe", "head", "full"])].iterrows():
        frame = row.to_frame().T
        ax.errorbar([row["adapter_params"]], [100 * row["mean"]], yerr=error(frame.astype({"mean": float, "ci_low": float, "ci_high": float})),
                    capsize=3, markersize=7, label=row["label"], **{**method_style(_style_key(row)), "linestyle": "none"})
    for _, row in summary[summary["style"].isin(["linear_probe", "head", "full"])].iterrows():
        style = method_style(_style_key(row))
        ax.axhline(100 * row["mean"], color=style["color"], linestyle=style["linestyle"], label=row["label"])
    ax.set_xscale("log")
    ax.set_xlabel("trained adapter parameters (head not counted)")
    ax.set_ylabel("test accuracy (%)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return ax


def plot_paper_parameters_vs_accuracy(ax: Axes, dataset: str = "dtd") -> Axes:
    """The paper's own points for ViT-B on ``dataset`` (Table 3), drawn like :func:`plot_parameters_vs_accuracy`."""
    if dataset not in _TABLE3_DATASETS:
        raise ValueError(f"dataset must be one of {list(_TABLE3_DATASETS)}, got {dataset!r}")
    styles = {"Full fine-tuning*": "full", "Linear probing*": "linear_probe", "LoRA*": "lora",
              "FourierFT*": "peft_fourierft", "AuroRA": "aurora"}
    for method, values in PAPER_TABLE3["vit-base"].items():
        style = method_style(styles[method])
        if method in ("Linear probing*", "Full fine-tuning*"):
            ax.axhline(values[dataset], color=style["color"], linestyle=style["linestyle"], label=method)
        else:
            ax.plot(parse_count(values["params"]), values[dataset], markersize=8, label=f"{method} ({values['params']})",
                    **{**style, "linestyle": "none"})
    ax.set_xscale("log")
    ax.set_xlabel("trained adapter parameters")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"paper: ViT-B on {dataset} (Table 3)")
    ax.legend(fontsize=7)
    return ax


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description="Table 3 / Fig. 1 (right): adapters on a ViT under one protocol")
    parser.add_argument("--full", action="store_true", help="ViT-B/16 on the paper's sets from the hub (GPU + internet)")
    parser.add_argument("--tasks", nargs="+", help="full mode: a subset of the sets")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cuda', 'cpu'")
    parser.add_argument("--smoke", action="store_true", help="the seconds-long smoke protocol (no verdicts)")
    parser.add_argument("--n-train", type=int, help="full mode: subsample the training split (rehearsals)")
    parser.add_argument("--n-test", type=int, help="full mode: subsample the test split (rehearsals)")
    parser.add_argument("--results-dir", type=Path)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.full:
        from aurora.data.images import HUB_IMAGE_SETS

        tasks = args.tasks or list(HUB_IMAGE_SETS)
        unknown = sorted(set(tasks) - set(HUB_IMAGE_SETS))
        if unknown:
            raise ValueError(f"--tasks must be among {sorted(HUB_IMAGE_SETS)}; got {unknown}")
        folders = run_full(tasks, args.results_dir or FULL_RESULTS, protocol=SMOKE_PROTOCOL if args.smoke else FULL_PROTOCOL,
                           device=args.device, n_train=args.n_train, n_test=args.n_test)
    else:
        if args.tasks and args.tasks != [QUICK_TASK]:
            raise ValueError(f"--tasks: quick mode has the one task {QUICK_TASK!r}; got {args.tasks}")
        folder = args.results_dir or QUICK_RESULTS
        run_quick(folder, protocol=SMOKE_PROTOCOL if args.smoke else QUICK_PROTOCOL, device=args.device)
        folders = [folder]
    for folder in folders:
        summary = comparison(final_runs(folder))
        print(folder)
        for _, row in summary.iterrows():
            print(f"  {row['label']:<22} {int(row['adapter_params']):>9,}  {100 * row['mean']:.1f} "
                  f"[{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]  {row['verdict']}")
    print(f"{time.perf_counter() - start:.0f} s")
    return folders


if __name__ == "__main__":
    main()
