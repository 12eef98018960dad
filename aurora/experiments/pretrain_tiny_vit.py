"""Pre-train the tiny ViT that stands in for ImageNet-21k ViT-B/16 in quick mode (Table 3, Fig. 2).

The paper adapts ``google/vit-base-patch16-224-in21k`` (86M parameters, pre-trained on ImageNet-21k)
to eight downstream image sets. Offline there is no pretrained ViT, so this script makes a small one
with the same ``transformers`` class (``ViTForImageClassification``; attention projections
``q_proj``/``v_proj`` as in ViT-B under transformers 5) and pre-trains all its weights from scratch on
one part of the data: **Fashion-MNIST classes 0–4** (T-shirt/top, Trouser, Pullover, Dress, Coat;
30,000 images). The downstream tasks of :mod:`aurora.experiments.vision_classification` are the
unseen classes 5–9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) and scikit-learn's digits.

The result is committed under ``data/pretrained/tiny_vit_fashion04/`` (``config.json``,
``model.safetensors``, ``provenance.json`` with the command, time and accuracy), so quick mode never
pre-trains again::

    python -m aurora.experiments.pretrain_tiny_vit                      # re-make the committed checkpoint
    python -m aurora.experiments.pretrain_tiny_vit --epochs 1 --output /tmp/tiny_vit   # a short try

Chapter: ``book/vision_classification.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from transformers import ViTForImageClassification

from aurora.data import load_image_classification
from aurora.experiments.vision_classification import PRETRAINED_DIR, TINY_VIT_PREPROCESSING, image_loader, tiny_vit_config
from aurora.results import provenance
from aurora.train import TrainConfig, fit

__all__ = ["PRETRAIN_CLASSES", "pretrain", "main"]

PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
"""Fashion-MNIST classes the backbone is pre-trained on; the downstream task ``fashion_5_9`` uses the other five."""


def _pretraining_split(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = torch.isin(labels, torch.tensor(PRETRAIN_CLASSES))
    return images[keep], labels[keep]  # classes 0-4 keep their labels 0-4


def pretrain(
    output: Path = PRETRAINED_DIR,
    epochs: int = 8,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    batch_size: int = 128,
    seed: int = 0,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Train the tiny ViT from scratch on Fashion-MNIST classes 0–4; save it (safetensors) with provenance."""
    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    splits = load_image_classification("fashion_mnist")
    train_images, train_labels = _pretraining_split(splits.train_images, splits.train_labels)
    test_images, test_labels = _pretraining_split(splits.test_images, splits.test_labels)
    train = image_loader(train_images, train_labels, TINY_VIT_PREPROCESSING, batch_size, shuffle=True, seed=seed)
    test = image_loader(test_images, test_labels, TINY_VIT_PREPROCESSING, 512, shuffle=False)
    torch.manual_seed(seed)
    model = ViTForImageClassification(tiny_vit_config(len(PRETRAIN_CLASSES)))
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, head_lr=lr, weight_decay=weight_decay, seed=seed)
    result = fit(model, train, test, config)
    output = Path(output)
    model.save_pretrained(output)
    record = provenance(
        {
            "what": "tiny ViT pre-trained from scratch (all weights) on Fashion-MNIST classes 0-4; "
            "quick mode's stand-in for google/vit-base-patch16-224-in21k",
            "pretrain_classes": list(PRETRAIN_CLASSES),
            "train_images": len(train_labels),
            "test_images": len(test_labels),
            "train_config": config.to_dict(),
            "torch_threads": torch.get_num_threads(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "test_accuracy_per_epoch": [round(record.metric, 4) for record in result.history],
        },
        wall_time_s=round(time.perf_counter() - started, 1),
    )
    (output / "provenance.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Pre-train the tiny ViT on Fashion-MNIST classes 0-4")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--output", type=Path, default=PRETRAINED_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: best on a shared 2-core machine)")
    args = parser.parse_args(argv)
    record = pretrain(args.output, epochs=args.epochs, lr=args.lr, seed=args.seed, threads=args.threads)
    print(f"saved to {args.output} in {record['wall_time_s']} s; test accuracy per epoch "
          f"{record['config']['test_accuracy_per_epoch']}")


if __name__ == "__main__":
    main()
