"""Text classification: the AuroRA paper's RoBERTa/GLUE setting (Table 1, Fig. 1 left, App. G Table 11).

``python -m aurora.experiments.text_classification --quick`` (offline, 2 CPU cores, a few minutes):
the pretrained all-MiniLM-L6-v2 encoder (a 6-layer BERT, stand-in for RoBERTa-base) on Amazon Fine
Food reviews (binary sentiment, stand-in for SST-2), subsampled; the encoder's lower layers are frozen
*and unadapted*, so their outputs are computed once and cached, and adapters go on the query and value
projections of the top ``adapted_layers`` layers (see :func:`cache_lower_layers`).

``python -m aurora.experiments.text_classification --full --device cuda`` (GPU + internet):
roberta-base / roberta-large on GLUE SST-2, MRPC, CoLA, QNLI, RTE, STS-B with the paper's Table 11
hyperparameters (:data:`TABLE_11`), adapters on query and value of every layer. Offline it stops at the
first hub access with :class:`aurora.data.HubUnavailableError`.

Both write ``runs.csv`` (one row per run), ``epochs.csv`` (one row per run and epoch) and
``provenance.json`` through :func:`aurora.results.write_results`; quick mode to
``data/results/text_classification/``, full mode to ``data/results/text_classification_full/``.
Chapter: ``book/text_classification.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

import aurora
from aurora.config import require_choice
from aurora.data import DATASETS, MODELS, load_text_classification, load_text_model, load_tokenizer
from aurora.results import write_results
from aurora.train import TrainConfig, fit

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "TABLE_11",
    "GLUE_METRICS",
    "PAPER_TABLE_1",
    "MethodSetting",
    "QUICK_METHODS",
    "FULL_METHODS",
    "QuickSettings",
    "TensorDictDataset",
    "PassThroughEmbeddings",
    "cache_lower_layers",
    "keep_top_layers",
    "FirstTokenLayer",
    "train_run",
    "run_quick",
    "run_full",
    "run_lr_sweep",
    "best_learning_rates",
    "prepare_quick_data",
    "QuickData",
    "SWEEP_LEARNING_RATES",
    "summary_table",
    "plot_parameters_vs_metric",
    "plot_epoch_curves",
    "main",
]

QUICK_RESULTS = "text_classification"
SWEEP_RESULTS = "text_classification_lr_sweep"
FULL_RESULTS = "text_classification_full"

# App. G, Table 11: AuroRA's GLUE hyperparameters (AdamW, linear schedule, warmup ratio 0.06, r̃ = 2, α = 4).
TABLE_11: dict[str, dict[str, dict[str, Any]]] = {
    "roberta-base": {
        "stsb": dict(epochs=30, lr=6e-4, max_length=512, batch_size=64),
        "rte": dict(epochs=80, lr=5e-4, max_length=512, batch_size=16),
        "mrpc": dict(epochs=30, lr=8e-4, max_length=512, batch_size=64),
        "cola": dict(epochs=90, lr=5e-3, max_length=512, batch_size=32),
        "sst2": dict(epochs=30, lr=8e-4, max_length=512, batch_size=32),
        "qnli": dict(epochs=80, lr=5e-3, max_length=512, batch_size=32),
    },
    "roberta-large": {
        "stsb": dict(epochs=20, lr=3e-4, max_length=512, batch_size=16),
        "rte": dict(epochs=10, lr=4e-4, max_length=512, batch_size=32),
        "mrpc": dict(epochs=30, lr=1e-3, max_length=512, batch_size=16),
        "cola": dict(epochs=50, lr=5e-4, max_length=256, batch_size=16),
        "sst2": dict(epochs=40, lr=8e-4, max_length=128, batch_size=16),
        "qnli": dict(epochs=20, lr=4e-4, max_length=512, batch_size=16),
    },
}
# Table 1's metrics: Matthews correlation for CoLA, Pearson for STS-B, accuracy otherwise.
GLUE_METRICS = {"sst2": "accuracy", "mrpc": "accuracy", "cola": "matthews", "qnli": "accuracy", "rte": "accuracy", "stsb": "pearson"}
# Table 1 of the paper (medians of five seeds; RoBERTa on the GLUE validation sets) -- the paper's numbers, not ours.
PAPER_TABLE_1: dict[str, dict[str, dict[str, Any]]] = {
    "roberta-base": {
        "Full fine-tuning": dict(sst2=94.8, mrpc=90.2, cola=63.6, qnli=92.8, rte=78.7, stsb=91.2, avg=85.2, params="125M"),
        "LoRA": dict(sst2=95.1, mrpc=89.7, cola=63.4, qnli=93.3, rte=78.4, stsb=91.5, avg=85.2, params="0.3M"),
        "AuroRA": dict(sst2=95.2, mrpc=91.9, cola=65.1, qnli=93.4, rte=85.2, stsb=91.5, avg=87.1, params="0.075M"),
    },
    "roberta-large": {
        "Full fine-tuning": dict(sst2=96.4, mrpc=90.9, cola=68.0, qnli=94.7, rte=86.6, stsb=92.4, avg=88.2, params="356M"),
        "LoRA": dict(sst2=96.2, mrpc=90.2, cola=68.2, qnli=94.8, rte=85.2, stsb=92.3, avg=87.8, params="0.8M"),
        "AuroRA": dict(sst2=96.6, mrpc=91.2, cola=69.2, qnli=95.0, rte=89.9, stsb=92.5, avg=89.1, params="0.2M"),
    },
}


@dataclass(frozen=True)
class MethodSetting:
    """One configuration of the comparison; ``alpha`` defaults to ``2 · rank`` (App. G: r̃ = 2, α = 4).

    ``method="head"`` is the reference without adapters: only the classifier head trains.
    """

    label: str
    method: str
    rank: int
    lr: float
    alpha: float | None = None

    def __post_init__(self) -> None:
        require_choice("method", self.method, (*aurora.METHODS, "head"))

    def adapter_config(self, target_modules: list[str] | str) -> aurora.AdapterConfig:
        alpha = 2.0 * self.rank if self.alpha is None else self.alpha
        return aurora.AdapterConfig(
            method=self.method, rank=self.rank, alpha=alpha, target_modules=target_modules, modules_to_save=["classifier"]
        )


SWEEP_LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
# Quick mode's learning rates (adapters and head alike): for each method the rate of
# SWEEP_LEARNING_RATES with the best mean over seeds 0 and 1 on 500 validation reviews held out of
# the training split (run_lr_sweep; the chapter shows its stored result).
QUICK_METHODS: tuple[MethodSetting, ...] = (
    MethodSetting("Head only", "head", 0, 1e-1),
    MethodSetting("LoRA r=8", "lora", 8, 1e-2),
    MethodSetting("LoRA r=2", "lora", 2, 3e-3),
    MethodSetting("MoSLoRA r=2", "moslora", 2, 3e-3),
    MethodSetting("AuroRA r=2", "aurora", 2, 1e-2),
    MethodSetting("LoRAN r=8", "loran", 8, 1e-2),
    MethodSetting("LoRAN r=2", "loran", 2, 3e-3),
)
# Full mode: the LR comes from Table 11 per task (lr=0 here means "use Table 11").
FULL_METHODS: tuple[MethodSetting, ...] = (
    MethodSetting("LoRA r=8", "lora", 8, 0.0),
    MethodSetting("MoSLoRA r=2", "moslora", 2, 0.0),
    MethodSetting("AuroRA r=2", "aurora", 2, 0.0),
    MethodSetting("LoRAN r=8", "loran", 8, 0.0),
)


@dataclass(frozen=True)
class QuickSettings:
    """The offline stand-in for Table 1 (what stands in for what is in the module docstring)."""

    model: str = "minilm"
    dataset: str = "fine_foods"
    n_train: int = 1000
    n_test: int = 500
    max_length: int = 64
    adapted_layers: int = 1
    epochs: int = 5
    batch_size: int = 32
    head_lr: float | None = None  # None: the head trains at the adapters' rate, as in the paper's GLUE runs
    warmup_ratio: float = 0.06
    data_seed: int = 0


class TensorDictDataset(Dataset):
    """Rows of equally long tensors, returned as dicts (the batch format of :func:`aurora.train.fit`)."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        lengths = {name: len(t) for name, t in tensors.items()}
        if not tensors or len(set(lengths.values())) != 1:
            raise ValueError(f"tensors must be non-empty and equally long, got lengths {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: tensor[index] for name, tensor in self.tensors.items()}


class PassThroughEmbeddings(nn.Module):
    """Replaces an encoder's embedding layer when its input is already a cached hidden state."""

    def forward(self, inputs_embeds: torch.Tensor | None = None, **unused: Any) -> torch.Tensor:
        if inputs_embeds is None:
            raise ValueError("a model with cached lower layers takes inputs_embeds (the cached hidden states), not input_ids")
        return inputs_embeds


def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(getattr(model, "base_model", None), "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"expected a BERT/RoBERTa-style model with base_model.encoder.layer; got {type(model).__name__}")
    return layers


@torch.no_grad()
def cache_lower_layers(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    adapted_layers: int,
    first_token_only: bool = True,
    batch_size: int = 128,
) -> torch.Tensor:
    """Hidden states after the embeddings and the lowest ``L - adapted_layers`` encoder layers, ``(N, T, d)``.

    Those layers stay frozen and get no adapters, so their output is the same in every epoch and run
    (computed in eval mode: no dropout there, the one difference from running them during training).
    Then applies :func:`keep_top_layers` to ``model``: ``model(inputs_embeds=cached, attention_mask=...)``
    gives the full model's logits on the original tokens.
    """
    layers = _encoder_layers(model)
    if not 1 <= adapted_layers <= len(layers):
        raise ValueError(f"adapted_layers must be in 1..{len(layers)}, got {adapted_layers!r}")
    base = model.base_model
    was_training = model.training
    model.eval()
    base.encoder.layer = layers[: len(layers) - adapted_layers]
    try:
        hidden = [
            base(input_ids=input_ids[i : i + batch_size], attention_mask=attention_mask[i : i + batch_size]).last_hidden_state
            for i in range(0, len(input_ids), batch_size)
        ]
    finally:
        base.encoder.layer = layers
    keep_top_layers(model, adapted_layers, first_token_only)
    model.train(was_training)
    return torch.cat(hidden)


class FirstTokenLayer(nn.Module):
    """A BERT encoder layer computed for the first ([CLS]) token only; exact for the last layer.

    The classifier reads only the last layer's first token (through the pooler), so that layer's
    queries, attention output and feed-forward block are needed at one position; its keys and values
    still see every token. Reuses the wrapped layer's modules, so adapters on ``query``/``value`` apply.
    Output ``(batch, 1, d)``; about six times less work than the full layer at 64 tokens.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        attention = getattr(getattr(layer, "attention", None), "self", None)
        if attention is None or not all(hasattr(attention, n) for n in ("query", "key", "value", "attention_head_size")):
            raise ValueError(f"FirstTokenLayer wraps BERT/RoBERTa encoder layers; got {type(layer).__name__}")
        self.layer = layer

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        attention = self.layer.attention.self
        batch, length, _ = hidden_states.shape
        first = hidden_states[:, :1]

        def heads(x: torch.Tensor) -> torch.Tensor:  # (batch, tokens, d) -> (batch, heads, tokens, head size)
            return x.view(batch, x.shape[1], -1, attention.attention_head_size).transpose(1, 2)

        if attention_mask is not None and attention_mask.shape[-2] != 1:
            attention_mask = attention_mask[..., :1, :]  # the first token's row of a (batch, 1, T, T) mask
        context = nn.functional.scaled_dot_product_attention(
            heads(attention.query(first)),
            heads(attention.key(hidden_states)),
            heads(attention.value(hidden_states)),
            attn_mask=attention_mask,
            dropout_p=attention.dropout.p if self.training else 0.0,
            scale=attention.scaling,
        )
        attention_output = self.layer.attention.output(context.transpose(1, 2).reshape(batch, 1, -1), first)
        return self.layer.feed_forward_chunk(attention_output)


def keep_top_layers(model: nn.Module, adapted_layers: int, first_token_only: bool = True) -> nn.Module:
    """Drop the embeddings and all but the top ``adapted_layers`` encoder layers (in place).

    The model then takes the cached hidden states of :func:`cache_lower_layers` as ``inputs_embeds``.
    With ``first_token_only`` the last layer becomes a :class:`FirstTokenLayer` (same logits, less work).
    """
    layers = _encoder_layers(model)
    if not 1 <= adapted_layers <= len(layers):
        raise ValueError(f"adapted_layers must be in 1..{len(layers)}, got {adapted_layers!r}")
    top = list(layers[len(layers) - adapted_layers :])
    if first_token_only:
        top[-1] = FirstTokenLayer(top[-1])
    model.base_model.encoder.layer = nn.ModuleList(top)
    model.base_model.embeddings = PassThroughEmbeddings()
    return model


def _tokenize(tokenizer: Any, texts: Sequence[Any], max_length: int, padding: str) -> dict[str, torch.Tensor]:
    if texts and isinstance(texts[0], tuple):
        first, second = [t[0] for t in texts], [t[1] for t in texts]
        encoded = tokenizer(first, second, truncation=True, max_length=max_length, padding=padding, return_tensors="pt")
    else:
        encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding=padding, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def train_run(
    model_name: str,
    num_labels: int,
    setting: MethodSetting,
    train_data: Dataset,
    eval_data: Dataset,
    config: TrainConfig,
    adapted_layers: int | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fine-tune one fresh model with one adapter setting; returns its runs.csv row and epochs.csv rows.

    The head's initialisation depends on ``config.seed``. With ``adapted_layers``, the model's lower
    layers are dropped (their outputs come cached in the datasets as ``inputs_embeds``).
    """
    model = load_text_model(model_name, num_labels, seed=config.seed)
    if adapted_layers is not None:
        keep_top_layers(model, adapted_layers)
    if setting.method == "head":
        model.requires_grad_(False)
        model.classifier.requires_grad_(True)
    else:
        torch.manual_seed(config.seed)  # adapter initialisation (A, H, spline coefficients, mixer)
        aurora.add_adapters(model, setting.adapter_config(aurora.suggest_target_modules(model)))
    counts = aurora.parameter_report(model)
    result = fit(model, train_data, eval_data, config)
    keys = dict(model=model_name, label=setting.label, method=setting.method, rank=setting.rank, seed=config.seed)
    layers = aurora.adapter_layers(model)
    row = dict(
        **keys,
        alpha=layers[0][1].config.alpha if layers else None,
        lr=config.lr,
        head_lr=config.head_lr,
        epochs=config.epochs,
        batch_size=config.batch_size,
        metric_name=config.metric,
        best_metric=result.best_metric,
        best_epoch=result.best_epoch,
        final_metric=result.final_metric,
        adapter_params=counts["adapter"],
        head_params=counts["head"],
        adapted_modules=len(layers),
        wall_time_s=result.wall_time_s,
    )
    epochs = [dict(**keys, **dataclasses.asdict(record)) for record in result.history]
    return row, epochs


@dataclass
class QuickData:
    """Cached lower-layer outputs of the quick experiment's train and evaluation sets."""

    train: TensorDictDataset
    eval: TensorDictDataset
    num_labels: int
    majority_accuracy: float
    seconds: float


def prepare_quick_data(settings: QuickSettings, split: str = "test") -> QuickData:
    """Tokenize the Fine Food reviews and cache MiniLM's frozen lower layers (:func:`cache_lower_layers`).

    ``split="test"``: train on ``n_train`` reviews, evaluate on ``n_test`` test reviews.
    ``split="validation"``: for tuning, draw ``n_train + n_test`` training reviews and hold out a random
    ``n_test`` of them, so the test reviews play no part in choosing learning rates.
    """
    require_choice("split", split, ("test", "validation"))
    start = time.perf_counter()
    if split == "test":
        splits = load_text_classification(settings.dataset, settings.n_train, settings.n_test, seed=settings.data_seed)
        train, held_out = splits.train, splits.test
    else:
        splits = load_text_classification(settings.dataset, settings.n_train + settings.n_test, 1, seed=settings.data_seed)
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(settings.data_seed)).tolist()
        train, held_out = [splits.train[i] for i in order[: settings.n_train]], [splits.train[i] for i in order[settings.n_train :]]
    num_labels = len(splits.label_names)
    examples = train + held_out
    tokens = _tokenize(load_tokenizer(settings.model), [text for text, _ in examples], settings.max_length, padding="max_length")
    encoder = load_text_model(settings.model, num_labels, seed=0)
    hidden = cache_lower_layers(encoder, tokens["input_ids"], tokens["attention_mask"], settings.adapted_layers)
    labels = torch.tensor([label for _, label in examples])
    parts = [slice(0, len(train)), slice(len(train), None)]
    train_set, eval_set = (
        TensorDictDataset(inputs_embeds=hidden[part], attention_mask=tokens["attention_mask"][part], labels=labels[part]) for part in parts
    )
    majority = float(torch.bincount(labels[parts[1]], minlength=num_labels).max()) / len(held_out)
    return QuickData(train_set, eval_set, num_labels, majority, time.perf_counter() - start)


def _quick_runs(
    data: QuickData, settings: QuickSettings, jobs: Sequence[tuple[MethodSetting, int]], device: str, progress: bool, desc: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    runs, epochs = [], []
    for setting, seed in tqdm(jobs, desc=desc, disable=not progress):
        config = TrainConfig(
            epochs=settings.epochs, batch_size=settings.batch_size, lr=setting.lr, head_lr=settings.head_lr,
            warmup_ratio=settings.warmup_ratio, seed=seed, device=device, metric="accuracy", progress=False,
        )
        row, rows = train_run(settings.model, data.num_labels, setting, data.train, data.eval, config, settings.adapted_layers)
        runs.append(dict(mode="quick", task=settings.dataset, **row))
        epochs.extend(dict(mode="quick", task=settings.dataset, **r) for r in rows)
    return runs, epochs


def _quick_config(settings: QuickSettings, data: QuickData, **extra: Any) -> dict[str, Any]:
    return dict(
        mode="quick", settings=dataclasses.asdict(settings), majority_baseline_accuracy=data.majority_accuracy,
        cache_seconds=data.seconds,
        stands_in_for=f"{settings.model}: {MODELS[settings.model].stands_in_for}; "
        f"{settings.dataset}: {DATASETS[settings.dataset].stands_in_for}",
        **extra,
    )


def _quiet_transformers() -> None:
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # the "classifier newly initialised" report, once per run
    transformers_logging.disable_progress_bar()  # "Loading weights", once per run


def run_quick(
    seeds: Sequence[int] = (0, 1, 2),
    device: str = "cpu",
    settings: QuickSettings = QuickSettings(),
    methods: Sequence[MethodSetting] = QUICK_METHODS,
    progress: bool = True,
    results_dir: Path | None = None,
) -> Path:
    """The offline experiment (MiniLM on Fine Food reviews, test split); writes and returns the results folder."""
    _quiet_transformers()
    start = time.perf_counter()
    data = prepare_quick_data(settings, "test")
    jobs = [(setting, seed) for seed in seeds for setting in methods]
    runs, epochs = _quick_runs(data, settings, jobs, device, progress, "text classification (quick)")
    config = _quick_config(settings, data, seeds=list(seeds), methods=[dataclasses.asdict(m) for m in methods])
    return write_results(QUICK_RESULTS, {"runs": runs, "epochs": epochs}, config, device, time.perf_counter() - start, results_dir)


def run_lr_sweep(
    learning_rates: Sequence[float] = SWEEP_LEARNING_RATES,
    seeds: Sequence[int] = (0, 1),
    device: str = "cpu",
    settings: QuickSettings = QuickSettings(),
    methods: Sequence[MethodSetting] = QUICK_METHODS,
    progress: bool = True,
    results_dir: Path | None = None,
) -> Path:
    """The learning-rate sweep behind :data:`QUICK_METHODS`' rates, on a validation split of the training reviews.

    Each method then uses the rate with the best mean (over ``seeds``) best-epoch validation accuracy.
    """
    _quiet_transformers()
    start = time.perf_counter()
    data = prepare_quick_data(settings, "validation")
    jobs = [(dataclasses.replace(m, lr=lr), seed) for seed in seeds for m in methods for lr in learning_rates]
    runs, epochs = _quick_runs(data, settings, jobs, device, progress, "learning-rate sweep")
    config = _quick_config(settings, data, split="validation", seeds=list(seeds), learning_rates=list(learning_rates),
                           methods=[m.label for m in methods])
    return write_results(SWEEP_RESULTS, {"runs": runs, "epochs": epochs}, config, device, time.perf_counter() - start, results_dir)


def best_learning_rates(sweep_runs: "pd.DataFrame") -> dict[str, float]:
    """For each method label of a sweep, the learning rate with the best mean best-epoch metric over seeds.

    Means that agree to 1e-9 count as equal; of equal means the smallest rate wins (the cautious choice).
    """
    means = sweep_runs.groupby(["label", "lr"], sort=False)["best_metric"].mean()
    chosen = {}
    for label in sweep_runs["label"].unique():
        by_rate = means.loc[label].sort_index()
        chosen[label] = float(by_rate.index[(by_rate >= by_rate.max() - 1e-9).argmax()])
    return chosen


def run_full(
    models: Sequence[str] = tuple(TABLE_11),
    tasks: Sequence[str] = tuple(GLUE_METRICS),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    device: str = "cuda",
    methods: Sequence[MethodSetting] = FULL_METHODS,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    results_dir: Path | None = None,
) -> Path:
    """Table 1's setting: RoBERTa on GLUE with Table 11's hyperparameters (needs the hub and a GPU).

    With ``checkpoint_dir`` every run checkpoints each epoch and a rerun resumes where it stopped.
    """
    for model_name in models:
        if model_name not in TABLE_11:
            raise ValueError(f"models must be among {sorted(TABLE_11)}, got {model_name!r}")
    for task in tasks:
        if task not in GLUE_METRICS:
            raise ValueError(f"tasks must be among {sorted(GLUE_METRICS)}, got {task!r}")
    start = time.perf_counter()
    runs, epochs = [], []
    for model_name in models:
        tokenizer = load_tokenizer(model_name)
        for task in tasks:
            hyper = TABLE_11[model_name][task]
            splits = load_text_classification(f"glue/{task}")
            metric = GLUE_METRICS[task]
            num_labels = 1 if metric == "pearson" else len(splits.label_names)
            label_dtype = torch.float32 if metric == "pearson" else torch.long
            data = []
            for examples in (splits.train, splits.test):
                tokens = _tokenize(tokenizer, [text for text, _ in examples], hyper["max_length"], padding="longest")
                data.append(TensorDictDataset(**tokens, labels=torch.tensor([y for _, y in examples], dtype=label_dtype)))
            for seed in seeds:
                for setting in tqdm(methods, desc=f"{model_name} {task} seed {seed}", disable=not progress):
                    lr = setting.lr or hyper["lr"]
                    run_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / model_name / task / f"{setting.label.replace(' ', '_')}_seed{seed}"
                    config = TrainConfig(
                        epochs=hyper["epochs"], batch_size=hyper["batch_size"], lr=lr, head_lr=lr, seed=seed, device=device,
                        metric=metric, checkpoint_dir=run_dir, resume=run_dir is not None, progress=progress,
                    )
                    row, rows = train_run(model_name, num_labels, dataclasses.replace(setting, lr=lr), data[0], data[1], config)
                    runs.append(dict(mode="full", task=task, **row))
                    epochs.extend(dict(mode="full", task=task, **r) for r in rows)
    config = dict(mode="full", models=list(models), tasks=list(tasks), seeds=list(seeds), table_11=TABLE_11,
                  methods=[dataclasses.asdict(m) for m in methods])
    return write_results(FULL_RESULTS, {"runs": runs, "epochs": epochs}, config, device, time.perf_counter() - start, results_dir)


def summary_table(runs: "pd.DataFrame") -> "pd.DataFrame":
    """One row per (model, task, method label): adapter parameters and the best-epoch metric over seeds.

    Columns: ``adapter_params``, ``seeds``, ``mean``, ``std`` (sample std; NaN for one seed), ``min``,
    ``median`` (the paper reports medians of five seeds), ``max``, ``best_epoch`` (mean) and
    ``wall_time_s`` (mean per run). Rows keep the order in which the labels first appear.
    """
    keys = ["model", "task", "label"]
    grouped = runs.groupby(keys, sort=False)
    table = grouped.agg(
        adapter_params=("adapter_params", "first"),
        seeds=("seed", "nunique"),
        mean=("best_metric", "mean"),
        std=("best_metric", "std"),
        min=("best_metric", "min"),
        median=("best_metric", "median"),
        max=("best_metric", "max"),
        best_epoch=("best_epoch", "mean"),
        wall_time_s=("wall_time_s", "mean"),
    )
    return table.reset_index()


STYLES = {"lora": ("tab:blue", "s", "-"), "moslora": ("tab:orange", "D", "-"), "aurora": ("tab:red", "o", "-"),
          "loran": ("tab:green", "^", "--"), "head": ("grey", "x", ":")}


def _marker_face(runs: "pd.DataFrame", method: str, rank: int) -> str:
    """Filled marker for a method's largest rank in ``runs``, hollow for its smaller ranks."""
    colour = STYLES[method][0]
    return colour if rank >= runs.loc[runs["method"] == method, "rank"].max() else "white"


def plot_parameters_vs_metric(runs: "pd.DataFrame", ax: Any, reference: float | None = None) -> None:
    """The paper's Fig. 1 (left) for one model and task: adapter parameters (log scale) vs best metric.

    One marker per method at the mean over seeds (hollow for a method's smaller ranks), a bar from the
    lowest to the highest seed, and the seeds as small dots; methods with equal parameter counts are
    spread slightly sideways (a few percent of x) so that they do not hide each other. ``method="head"``
    runs (no adapter parameters) are a dashed line with a band over the seeds; ``reference`` (e.g. the
    majority-class accuracy) a dotted line.
    """
    adapted = runs[runs["method"] != "head"]
    neighbours: dict[float, list[str]] = {}
    for label, group in adapted.groupby("label", sort=False):
        neighbours.setdefault(float(group["adapter_params"].iloc[0]), []).append(label)
    for label, group in runs.groupby("label", sort=False):
        values, method, rank = group["best_metric"], group["method"].iloc[0], int(group["rank"].iloc[0])
        colour, marker, _ = STYLES[method]
        if method == "head":
            ax.axhspan(values.min(), values.max(), color=colour, alpha=0.2)
            ax.axhline(values.mean(), color=colour, linestyle="--", label=f"{label} (no adapters)")
            continue
        params = float(group["adapter_params"].iloc[0])
        shared = neighbours[params]
        x = params * (1.0 + 0.04 * (shared.index(label) - (len(shared) - 1) / 2))
        mean = values.mean()
        ax.errorbar([x], [mean], yerr=[[mean - values.min()], [values.max() - mean]], fmt=marker, color=colour,
                    markerfacecolor=_marker_face(runs, method, rank), markeredgewidth=1.5, capsize=4,
                    markersize=9 if method == "aurora" else 7, label=label)
        ax.scatter([x] * len(values), values, color=colour, s=10, alpha=0.6)
    if reference is not None:
        ax.axhline(reference, color="black", linestyle=":", label="majority class")
    ax.set_xscale("log")
    ax.set_xlabel("adapter parameters (log scale)")
    ax.set_ylabel(f"best-epoch {runs['metric_name'].iloc[0]}")
    ax.legend(fontsize=8, loc="best")


def plot_epoch_curves(runs: "pd.DataFrame", epochs: "pd.DataFrame", ax: Any) -> None:
    """Held-out metric after each epoch, mean over seeds, one line per method (styles as in the Fig. 1 plot)."""
    for label, group in epochs.groupby("label", sort=False):
        method, rank = group["method"].iloc[0], int(group["rank"].iloc[0])
        colour, marker, line = STYLES[method]
        curve = group.groupby("epoch")["metric"].mean()
        ax.plot(curve.index, curve.values, marker=marker, linestyle=line, color=colour,
                markerfacecolor=_marker_face(runs, method, rank), label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"held-out {runs['metric_name'].iloc[0]} (mean over seeds)")
    ax.set_xticks(sorted(epochs["epoch"].unique()))
    ax.legend(fontsize=8)


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m aurora.experiments.text_classification", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="offline MiniLM on Fine Food reviews (default)")
    mode.add_argument("--full", action="store_true", help="roberta-base/large on GLUE with Table 11 settings (hub + GPU)")
    mode.add_argument("--lr-sweep", action="store_true", help="the quick mode's learning-rate sweep (validation reviews)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cpu for --quick, cuda for --full)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (quick), 0 1 (--lr-sweep), 0 1 2 3 4 (full, as the paper)")
    parser.add_argument("--models", nargs="+", default=list(TABLE_11), choices=list(TABLE_11), help="full mode only")
    parser.add_argument("--tasks", nargs="+", default=list(GLUE_METRICS), choices=list(GLUE_METRICS), help="full mode only")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="full mode: per-run checkpoints, resumed on rerun")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    progress = not args.no_progress
    if args.full:
        folder = run_full(args.models, args.tasks, args.seeds or (0, 1, 2, 3, 4), args.device or "cuda",
                          checkpoint_dir=args.checkpoint_dir, progress=progress)
    elif args.lr_sweep:
        folder = run_lr_sweep(seeds=args.seeds or (0, 1), device=args.device or "cpu", progress=progress)
    else:
        folder = run_quick(args.seeds or (0, 1, 2), args.device or "cpu", progress=progress)
    print(f"results written to {folder}")
    return folder


if __name__ == "__main__":
    main()
