"""The same fine-tuning recipe through Hugging Face ``Trainer``, the multi-process path (``torchrun``, ``accelerate launch``).

:func:`make_trainer` returns an :class:`AdapterTrainer`: a ``Trainer`` whose optimizer has the two
parameter groups of :func:`aurora.train.parameter_groups` (adapters at ``args.learning_rate`` and
``args.weight_decay``, the head at ``head_lr`` / ``head_weight_decay``, App. G of the AuroRA paper),
whose loss (:func:`loss_function`) is the mean over the global batch with one process, several
(``torchrun``, ``accelerate launch``; tested on 2 CPU processes) or gradient accumulation, and
whose ``compute_metrics`` is one of :data:`aurora.train.METRICS`. :func:`training_arguments`
turns a :class:`aurora.train.TrainConfig` into the matching ``TrainingArguments`` (linear schedule,
warmup ratio, clipping, seed, bf16, evaluation every epoch), so both paths train the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from transformers import EvalPrediction, Trainer, TrainingArguments

from .config import require_choice
from .train import METRICS, TrainConfig, auto_mixed_precision, compute_metric, parameter_groups, resolve_device

__all__ = ["AdapterTrainer", "make_trainer", "training_arguments", "metric_function", "loss_function"]


def metric_function(metric: str) -> Callable[[EvalPrediction], dict[str, float]]:
    """A ``compute_metrics`` for ``Trainer``: argmax of the logits (or the single output for 'pearson') vs labels."""
    require_choice("metric", metric, METRICS)

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        labels = np.asarray(prediction.label_ids)
        outputs = np.asarray(logits).reshape(labels.shape) if metric == "pearson" else np.asarray(logits).argmax(-1)
        return {metric: compute_metric(metric, outputs, labels)}

    return compute_metrics


def loss_function(metric: str) -> Callable[..., torch.Tensor]:
    """A ``compute_loss_func`` for ``Trainer``: the loss of :mod:`aurora.train` (cross-entropy in fp32, mean squared
    error for 'pearson'), summed over the examples and divided by ``num_items_in_batch``.

    ``Trainer`` (transformers 5) passes ``num_items_in_batch``, the number of labelled examples in the whole step
    (all gradient-accumulation micro-batches, and with ``average_tokens_across_devices`` all processes), and
    multiplies the loss by the number of processes, because DDP averages gradients. That is right only for a
    loss normalised by ``num_items_in_batch``; a model's own sequence-classification loss is a per-batch mean, so
    under ``torchrun --nproc_per_node=2`` the loss and the gradient (hence ``max_grad_norm`` clipping) came out
    twice what one process computes for the same global batch, and with accumulation ``steps`` times. Normalising
    here makes one process, many processes and gradient accumulation train on, and log, the mean over the global batch.
    """
    require_choice("metric", metric, METRICS)
    regression = metric == "pearson"

    def compute_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
        if regression:
            losses = nn.functional.mse_loss(logits.float().reshape(labels.shape), labels.float(), reduction="none")
            count = labels.numel()
        else:
            losses = nn.functional.cross_entropy(logits.float(), labels.long(), reduction="none")  # ignores label -100
            count = labels.ne(-100).sum()
        return losses.sum() / (count if num_items_in_batch is None else num_items_in_batch)

    return compute_loss


class AdapterTrainer(Trainer):
    """``Trainer`` with separate AdamW groups for adapters and head (App. G, Table 13) and the loss of
    :func:`loss_function` (``metric`` picks cross-entropy or MSE), so that its loss and gradient are the same with
    one process, several (``torchrun``/``accelerate launch``) or gradient accumulation."""

    def __init__(
        self, *args: Any, head_lr: float | None = None, head_weight_decay: float | None = None, metric: str = "accuracy", **kwargs: Any
    ) -> None:
        self.head_lr = head_lr
        self.head_weight_decay = head_weight_decay
        kwargs.setdefault("compute_loss_func", loss_function(metric))
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The optimizer named by ``args.optim`` (AdamW by default) over the adapter and head groups."""
        if self.optimizer is None:
            model = self.model if model is None else model
            groups = parameter_groups(model, self.args.learning_rate, self.args.weight_decay, self.head_lr, self.head_weight_decay)
            optimizer_class, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            if "params" in optimizer_kwargs or "model" in optimizer_kwargs or not isinstance(optimizer_class, type):
                raise ValueError(f"args.optim={self.args.optim!r} builds its own parameter groups; use an AdamW variant such as 'adamw_torch'")
            self.optimizer = optimizer_class(groups, **optimizer_kwargs)
        return self.optimizer


def training_arguments(config: TrainConfig, output_dir: str | Path, **overrides: Any) -> TrainingArguments:
    """``TrainingArguments`` equivalent to ``config`` (evaluate every epoch, best epoch by the metric).

    ``config.head_lr``/``head_weight_decay`` go to :func:`make_trainer`; ``overrides`` win over the mapping.
    """
    device = resolve_device(config.device)
    precision = auto_mixed_precision(device) if config.mixed_precision == "auto" else config.mixed_precision
    values: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        max_grad_norm=config.max_grad_norm if config.max_grad_norm is not None else 0.0,
        seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        eval_strategy="epoch",
        save_strategy="epoch" if config.checkpoint_dir is not None else "no",
        logging_strategy="epoch",
        metric_for_best_model=config.metric,
        greater_is_better=True,
        disable_tqdm=not config.progress,
        report_to="none",
    )
    values.update(overrides)
    return TrainingArguments(**values)


def make_trainer(
    model: nn.Module,
    args: TrainingArguments,
    train_dataset: Any,
    eval_dataset: Any = None,
    *,
    head_lr: float | None = None,
    head_weight_decay: float | None = None,
    metric: str = "accuracy",
    **trainer_kwargs: Any,
) -> AdapterTrainer:
    """An :class:`AdapterTrainer` for a model that already has adapters (``aurora.add_adapters``).

    ``trainer_kwargs`` (data_collator, callbacks, ...) pass through to ``Trainer``; ``compute_metrics``
    defaults to :func:`metric_function` of ``metric``.
    """
    require_choice("metric", metric, METRICS)
    trainer_kwargs.setdefault("compute_metrics", metric_function(metric))
    return AdapterTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        head_lr=head_lr,
        head_weight_decay=head_weight_decay,
        metric=metric,
        **trainer_kwargs,
    )
