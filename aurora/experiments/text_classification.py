"""Text classification: the AuroRA paper's RoBERTa/GLUE setting (Table 1, Fig. 1 left), under one protocol.

Every run goes through :mod:`aurora.experiments.harness`: each method's learning rate is chosen on a
validation split carved from the training data (the same grid and seeds for every method), the
epoch is chosen on validation, and the test split is scored once per final run; ten paired seeds
per method give the 95 % intervals and the paired differences to LoRA r=8.

``python -m aurora.experiments.text_classification`` (quick, offline, 2 CPU cores): the pretrained
all-MiniLM-L6-v2 encoder (a 6-layer BERT, stand-in for RoBERTa-base) on two offline sets,

- ``fine_foods``: Amazon Fine Food reviews (binary sentiment, stand-in for SST-2): 500 training
  and 200 validation reviews drawn from the training split, all 1,000 test reviews;
- ``austen``: Jane Austen passages -> novel (6 classes, :mod:`aurora.data.austen`): 300 training
  and 150 validation passages, all 3,038 test passages.

Texts are cut at 32 tokens (2 CPU cores shared by several jobs: a run costs seconds).

The encoder's lower layers are frozen *and unadapted*, so their outputs are computed once and
cached; adapters go on the query and value projections of the top ``adapted_layers`` layers
(:func:`cache_lower_layers`). The methods (:data:`MAIN_METHODS`) are ours (LoRA r=8 and r=2,
MoSLoRA, AuroRA r̃=2, LoRAN with its authors' placement ``s·Sinter(BA)``) and PEFT's LoRA, DoRA,
PiSSA, VeRA and FourierFT (:data:`PEFT_METHODS`); on ``austen``, the set with the large test
split, all but the head-only reference, LoRAN and PiSSA; on ``fine_foods`` LoRA r=8 and LoRAN r=8 with the LoRAN studies (:data:`LORAN_METHODS`: LN2
other functions, LN3 rank 64). :data:`QUICK_METHODS` says what runs where (2 shared CPU cores do
not afford every method on both sets). Results: ``data/results/text_classification/<dataset>/``.

``python -m aurora.experiments.text_classification --full`` (GPU + internet): roberta-base on the
GLUE tasks, adapters on query and value of every layer, the same protocol with Table 11's epochs
and batch sizes (:data:`TABLE_11`); validation is carved from GLUE's training split because GLUE's
validation split is what the paper (and we) report as "test". Results, resumed run by run:
``data/results/text_classification_full/<model>/<task>/``. Chapter: ``book/text_classification.md``.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from aurora.config import require_choice
from aurora.data import DATASETS, MODELS, load_text_classification, load_text_model, load_tokenizer
from aurora.experiments.harness import (Method, Protocol, Task, carve_validation, paired_comparison, read_final_runs,
                                        run_protocol)
from aurora.results import RESULTS_DIR

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "TABLE_11",
    "GLUE_METRICS",
    "PAPER_TABLE_1",
    "QUICK_DATASETS",
    "OUR_METHODS",
    "PEFT_METHODS",
    "MAIN_METHODS",
    "LORAN_METHODS",
    "QUICK_METHODS",
    "QUICK_SETTINGS",
    "REFERENCE",
    "QUICK_PROTOCOL",
    "SMOKE_PROTOCOL",
    "QuickSettings",
    "TensorDictDataset",
    "PassThroughEmbeddings",
    "cache_lower_layers",
    "keep_top_layers",
    "FirstTokenLayer",
    "quick_task",
    "full_task",
    "quick_results_dir",
    "run_quick",
    "run_full",
    "final_runs",
    "results_status",
    "comparison",
    "loran_studies",
    "plot_parameters_vs_metric",
    "main",
]

QUICK_RESULTS = "text_classification"
FULL_RESULTS = "text_classification_full"
QUICK_DATASETS = ("fine_foods", "austen")
REFERENCE = "LoRA r=8"

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
        "DoRA": dict(sst2=95.0, mrpc=89.7, cola=64.9, qnli=92.9, rte=79.2, stsb=91.3, avg=85.5, params="0.3M"),
        "FourierFT": dict(sst2=94.2, mrpc=90.0, cola=63.8, qnli=92.2, rte=79.1, stsb=90.8, avg=85.0, params="0.024M"),
        "AuroRA": dict(sst2=95.2, mrpc=91.9, cola=65.1, qnli=93.4, rte=85.2, stsb=91.5, avg=87.1, params="0.075M"),
    },
    "roberta-large": {
        "Full fine-tuning": dict(sst2=96.4, mrpc=90.9, cola=68.0, qnli=94.7, rte=86.6, stsb=92.4, avg=88.2, params="356M"),
        "LoRA": dict(sst2=96.2, mrpc=90.2, cola=68.2, qnli=94.8, rte=85.2, stsb=92.3, avg=87.8, params="0.8M"),
        "FourierFT": dict(sst2=96.0, mrpc=90.9, cola=67.1, qnli=94.4, rte=87.4, stsb=91.9, avg=88.0, params="0.048M"),
        "AuroRA": dict(sst2=96.6, mrpc=91.2, cola=69.2, qnli=95.0, rte=89.9, stsb=92.5, avg=89.1, params="0.2M"),
    },
}


def _peft(kind: str, **options: Any):
    """A :class:`Method` ``peft_config`` factory for PEFT's ``kind`` config (``"lora"``, ``"vera"``, ``"fourierft"``)."""

    def factory(target_modules: list[str], modules_to_save: list[str]):
        import peft

        config_class = {"lora": peft.LoraConfig, "vera": peft.VeraConfig, "fourierft": peft.FourierFTConfig}[kind]
        return config_class(target_modules=target_modules, modules_to_save=modules_to_save, **options)

    return factory


def _peft_method(label: str, style: str, kind: str, **options: Any) -> Method:
    name = {"lora": "LoraConfig", "vera": "VeraConfig", "fourierft": "FourierFTConfig"}[kind]
    description = f"peft.{name}({', '.join(f'{k}={v!r}' for k, v in options.items())})"
    return Method(label, style, peft_config=_peft(kind, **options), peft_description=description)


# Table 1's rows that run offline. α = 2·r for our adapters (App. G: r̃ = 2, α = 4). PEFT's baselines
# at the budgets the paper gives them on RoBERTa: DoRA and PiSSA at LoRA's r = 8 (PiSSA with α = r, its
# paper's choice), FourierFT with 1,000 spectral coefficients per adapted matrix (FourierFT's GLUE
# setting), VeRA with PEFT's default rank 256 (shared random projections; trainable: two vectors).
OUR_METHODS: tuple[Method, ...] = (
    Method("Head only", "head", plain="head"),
    Method("LoRA r=8", "lora", adapter=dict(method="lora", rank=8, alpha=16.0)),
    Method("LoRA r=2", "lora", adapter=dict(method="lora", rank=2, alpha=4.0)),
    Method("MoSLoRA r=2", "moslora", adapter=dict(method="moslora", rank=2, alpha=4.0)),
    Method("AuroRA r̃=2", "aurora", adapter=dict(method="aurora", rank=2, alpha=4.0)),
    Method("LoRAN r=8", "loran", adapter=dict(method="loran", rank=8, alpha=16.0)),
)
PEFT_METHODS: tuple[Method, ...] = (
    _peft_method("PEFT LoRA r=8", "peft_lora", "lora", r=8, lora_alpha=16),
    _peft_method("PEFT DoRA r=8", "peft_dora", "lora", r=8, lora_alpha=16, use_dora=True),
    _peft_method("PEFT PiSSA r=8", "peft_pissa", "lora", r=8, lora_alpha=8, init_lora_weights="pissa"),
    _peft_method("PEFT VeRA r=256", "peft_vera", "vera", r=256),
    _peft_method("PEFT FourierFT n=1000", "peft_fourierft", "fourierft", n_frequency=1000),
)
MAIN_METHODS = OUR_METHODS + PEFT_METHODS
# The LoRAN studies (LN2: Sinter against other functions at r = 8; LN3: LoRAN's gain at r = 64 against
# r = 8), with the authors' placement ΔW = s·f(BA) (aurora.AdapterConfig loran_scaling="outside").
LORAN_METHODS: tuple[Method, ...] = (
    Method("LoRAN r=8 tanh", "loran", adapter=dict(method="loran", rank=8, alpha=16.0, loran_function="tanh")),
    Method("LoRAN r=8 sigmoid", "loran", adapter=dict(method="loran", rank=8, alpha=16.0, loran_function="sigmoid")),
    Method("LoRAN r=8 relu", "loran", adapter=dict(method="loran", rank=8, alpha=16.0, loran_function="relu")),
    Method("LoRA r=64", "lora", adapter=dict(method="lora", rank=64, alpha=128.0)),
    Method("LoRAN r=64", "loran", adapter=dict(method="loran", rank=64, alpha=128.0)),
)
# What runs on which offline set: Table 1's rows on the Austen passages, the LoRAN studies on the reviews.
QUICK_METHODS: dict[str, tuple[Method, ...]] = {
    "austen": MAIN_METHODS,
    "fine_foods": tuple(m for m in OUR_METHODS if m.label in ("LoRA r=8", "LoRAN r=8")) + LORAN_METHODS,
}
# One grid for every method, a factor of about 3 per step over three decades (the head trains at the
# adapters' rate, as in the paper's GLUE runs), and one epoch budget: 12 epochs, by which the validation
# curves of the selected rates have flattened (``late_validation_gain`` in runs.csv says by how much).
QUICK_PROTOCOL = Protocol(lr_grid=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0), tuning_seeds=(1000, 1001),
                          final_seeds=tuple(range(10)), epochs=12, batch_size=32)
# The chapter's seconds-long run of the same code (no verdicts rest on it).
SMOKE_PROTOCOL = Protocol(lr_grid=(1e-2,), tuning_seeds=(1000,), final_seeds=(0, 1), epochs=2, batch_size=32, smoke=True)


@dataclass(frozen=True)
class QuickSettings:
    """The offline stand-in for Table 1 (what stands in for what is in the module docstring)."""

    model: str = "minilm"
    n_train: int = 500
    n_validation: int = 200
    n_test: int | None = None  # None: the whole test split (1,000 reviews; 3,038 passages)
    max_length: int = 32
    adapted_layers: int = 1
    data_seed: int = 0


# The Austen passages get a smaller training budget (the shared 2 cores; its test split is three times larger).
QUICK_SETTINGS: dict[str, QuickSettings] = {"fine_foods": QuickSettings(), "austen": QuickSettings(n_train=300, n_validation=150)}


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


def _quiet_transformers() -> None:
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # the "classifier newly initialised" report
    transformers_logging.disable_progress_bar()  # "Loading weights"


def _fresh_head(template: nn.Module, seed: int) -> nn.Module:
    """A copy of ``template`` whose classifier is drawn again from ``seed`` (BERT's init: N(0, 0.02²), bias 0)."""
    model = copy.deepcopy(template)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.classifier.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=model.config.initializer_range)
                nn.init.zeros_(module.bias)
    return model


def quick_task(dataset: str, settings: QuickSettings = QuickSettings(), n_train: int | None = None,
               n_validation: int | None = None, n_test: int | None = None) -> Task:
    """The offline task on ``dataset`` (``"fine_foods"`` or ``"austen"``): MiniLM's lower layers cached.

    ``n_train + n_validation`` examples are drawn (class-stratified, ``data_seed``) from the training
    split and ``n_validation`` of them held out with :func:`~aurora.experiments.harness.carve_validation`;
    the test split is not looked at until a final run scores it. The ``n_*`` arguments override
    ``settings`` (the chapter's smoke run uses a few dozen examples).
    """
    if dataset not in QUICK_DATASETS:
        raise ValueError(f"dataset must be one of {QUICK_DATASETS}, got {dataset!r}")
    _quiet_transformers()
    start = time.perf_counter()
    n_train = settings.n_train if n_train is None else n_train
    n_validation = settings.n_validation if n_validation is None else n_validation
    n_test = settings.n_test if n_test is None else n_test
    splits = load_text_classification(dataset, n_train + n_validation, n_test, seed=settings.data_seed)
    num_labels = len(splits.label_names)
    examples = splits.train + splits.test
    tokens = _tokenize(load_tokenizer(settings.model), [text for text, _ in examples], settings.max_length, padding="max_length")
    encoder = load_text_model(settings.model, num_labels, seed=0)
    hidden = cache_lower_layers(encoder, tokens["input_ids"], tokens["attention_mask"], settings.adapted_layers)
    labels = torch.tensor([label for _, label in examples])
    cut = len(splits.train)
    train_pool = TensorDictDataset(inputs_embeds=hidden[:cut], attention_mask=tokens["attention_mask"][:cut], labels=labels[:cut])
    test = TensorDictDataset(inputs_embeds=hidden[cut:], attention_mask=tokens["attention_mask"][cut:], labels=labels[cut:])
    train, validation = carve_validation(train_pool, n_validation, seed=settings.data_seed)
    majority = float(torch.bincount(labels[cut:], minlength=num_labels).max()) / len(splits.test)
    spec = DATASETS[dataset]
    info = dict(
        dataset=dataset, model=settings.model, settings=settings.__dict__, n_train=len(train), n_validation=len(validation),
        n_test=len(test), classes=list(splits.label_names), majority_test_accuracy=majority,
        cache_seconds=time.perf_counter() - start,
        stands_in_for=f"{settings.model}: {MODELS[settings.model].stands_in_for}; {dataset}: {spec.stands_in_for}",
        source=spec.source,
    )
    return Task(dataset, "accuracy", train, validation, test, lambda seed: _fresh_head(encoder, seed), ["query", "value"],
                ["classifier"], info)


def full_task(model_name: str, glue_task: str, n_validation: int = 1000, data_seed: int = 0, limit: int | None = None) -> Task:
    """GLUE ``glue_task`` on ``model_name`` from the hub: adapters on every layer's query and value.

    GLUE's labelled validation split is the test split (as in the paper's Table 1); validation is
    ``n_validation`` examples carved from the training split (at most a tenth of it). ``limit`` caps
    the training and test examples (stratified subsamples; for rehearsals of the full path).
    """
    if model_name not in TABLE_11:
        raise ValueError(f"model_name must be one of {sorted(TABLE_11)}, got {model_name!r}")
    if glue_task not in GLUE_METRICS:
        raise ValueError(f"glue_task must be one of {sorted(GLUE_METRICS)}, got {glue_task!r}")
    _quiet_transformers()
    hyper = TABLE_11[model_name][glue_task]
    metric = GLUE_METRICS[glue_task]
    splits = load_text_classification(f"glue/{glue_task}", limit, limit, seed=data_seed) if limit else load_text_classification(f"glue/{glue_task}")
    num_labels = 1 if metric == "pearson" else len(splits.label_names)
    label_dtype = torch.float32 if metric == "pearson" else torch.long
    tokenizer = load_tokenizer(model_name)
    data = []
    for examples in (splits.train, splits.test):
        tokens = _tokenize(tokenizer, [text for text, _ in examples], hyper["max_length"], padding="max_length")
        data.append(TensorDictDataset(**tokens, labels=torch.tensor([y for _, y in examples], dtype=label_dtype)))
    train, validation = carve_validation(data[0], max(1, min(n_validation, len(data[0]) // 10)), seed=data_seed)
    info = dict(model=model_name, glue_task=glue_task, table_11=hyper, n_train=len(train), n_validation=len(validation),
                n_test=len(data[1]), test_split="GLUE validation (the paper's Table 1 reports it)")
    return Task(f"{model_name}/{glue_task}", metric, train, validation, data[1],
                lambda seed: load_text_model(model_name, num_labels, seed=seed), ["query", "value"], ["classifier"], info)


def quick_results_dir(dataset: str, results_dir: Path | None = None) -> Path:
    return (results_dir or RESULTS_DIR) / QUICK_RESULTS / dataset


def run_quick(
    datasets: Sequence[str] = QUICK_DATASETS,
    device: str = "auto",
    protocol: Protocol = QUICK_PROTOCOL,
    settings: Mapping[str, QuickSettings] = QUICK_SETTINGS,
    progress: bool = True,
    resume: bool = True,
    results_dir: Path | None = None,
) -> list[Path]:
    """The offline experiment; one results folder per dataset (returned); :data:`QUICK_METHODS` and
    :data:`QUICK_SETTINGS` say what runs on which set."""
    folders = []
    for dataset in datasets:
        task = quick_task(dataset, settings[dataset])
        methods = QUICK_METHODS[dataset]
        folder = quick_results_dir(dataset, results_dir)
        run_protocol(task, methods, protocol, folder, resume=resume, device=device, progress=progress, reference=REFERENCE,
                     config=dict(mode="quick", experiment="aurora.experiments.text_classification",
                                 torch_threads=torch.get_num_threads()))
        folders.append(folder)
    return folders


def run_full(
    models: Sequence[str] = ("roberta-base",),
    tasks: Sequence[str] = tuple(GLUE_METRICS),
    device: str = "auto",
    lr_grid: Sequence[float] = (1e-4, 3e-4, 1e-3, 3e-3),
    final_seeds: Sequence[int] = tuple(range(10)),
    methods: Sequence[Method] = MAIN_METHODS,
    progress: bool = True,
    resume: bool = True,
    results_dir: Path | None = None,
    tuning_seeds: Sequence[int] = (1000, 1001),
    limit: int | None = None,
    smoke: bool = False,
) -> list[Path]:
    """Table 1's setting on the hub (GPU): the quick protocol with Table 11's epochs and batch sizes per task.

    Every run is appended to ``runs.csv`` as it finishes and a rerun resumes where it stopped.
    ``limit`` (examples per split) and ``smoke`` (lift the protocol's minimums) are for rehearsals.
    """
    for model_name in models:
        require_choice("models", model_name, tuple(TABLE_11))
    for glue_task in tasks:
        require_choice("tasks", glue_task, tuple(GLUE_METRICS))
    folders = []
    for model_name in models:
        for glue_task in tasks:
            hyper = TABLE_11[model_name][glue_task]
            protocol = Protocol(lr_grid=tuple(lr_grid), tuning_seeds=tuple(tuning_seeds), final_seeds=tuple(final_seeds),
                                epochs=hyper["epochs"], batch_size=hyper["batch_size"], smoke=smoke)
            task = full_task(model_name, glue_task, limit=limit)
            folder = (results_dir or RESULTS_DIR) / FULL_RESULTS / model_name / glue_task
            run_protocol(task, methods, protocol, folder, resume=resume, device=device, progress=progress, reference=REFERENCE,
                         config=dict(mode="full", experiment="aurora.experiments.text_classification --full"))
            folders.append(folder)
    return folders


# ---------------------------------------------------------------------------------------------
# reading the results: the comparisons the chapter and the claims ledger report
# ---------------------------------------------------------------------------------------------
def final_runs(folder: Path) -> "pd.DataFrame":
    """The final runs of a results folder's design (validation-selected epoch, test scored once)."""
    return read_final_runs(folder)


def comparison(folder: Path, reference: str = REFERENCE, labels: Sequence[str] | None = None) -> "pd.DataFrame":
    """:func:`~aurora.experiments.harness.paired_comparison` of a folder's final runs against ``reference``."""
    runs = final_runs(folder)
    if labels is not None:
        runs = runs[runs["label"].isin(list(labels))]
    return paired_comparison(runs, reference, "test_metric")


def loran_studies(folder: Path) -> dict[str, "pd.DataFrame"]:
    """LN1-LN3 from a folder with :data:`LORAN_METHODS`: paired comparisons (LN3: difference of gains per seed).

    ``LN1``: LoRAN r=8 against LoRA r=8. ``LN2``: the other functions against Sinter (LoRAN r=8).
    ``LN3``: per seed, (LoRAN − LoRA at r=8) − (LoRAN − LoRA at r=64); > 0 means the gain is larger at r=8.
    """
    import pandas as pd

    runs = final_runs(folder)
    ln1 = paired_comparison(runs[runs["label"].isin(["LoRA r=8", "LoRAN r=8"])], "LoRA r=8")
    ln2 = paired_comparison(runs[runs["label"].str.startswith("LoRAN r=8")], "LoRAN r=8")
    score = runs.pivot(index="seed", columns="label", values="test_metric")
    gains = pd.DataFrame({
        "label": "gain at r=8 minus gain at r=64",
        "seed": score.index,
        "test_metric": (score["LoRAN r=8"] - score["LoRA r=8"]) - (score["LoRAN r=64"] - score["LoRA r=64"]),
    }).dropna()
    zero = gains.assign(label="no difference", test_metric=0.0)
    ln3 = paired_comparison(pd.concat([zero, gains]), "no difference")
    return {"LN1": ln1, "LN2": ln2, "LN3": ln3[ln3["label"] != "no difference"].reset_index(drop=True)}


def results_status(folder: Path) -> dict[str, Any]:
    """What a results folder holds: ``exists``, ``complete`` (its design finished), final runs and seeds so far,
    ``wall_time_s`` (the last command's wall time; a resumed design took several) and ``training_s`` (every
    run's training time in ``runs.csv`` added up, over all the commands that made them)."""
    import json

    import pandas as pd

    folder = Path(folder)
    if not (folder / "runs.csv").is_file():
        return dict(exists=False, complete=False, final_runs=0, seeds=0, wall_time_s=None, training_s=None, command=None)
    provenance = json.loads((folder / "provenance.json").read_text()) if (folder / "provenance.json").is_file() else {}
    finals = final_runs(folder)
    return dict(exists=True, complete=bool(provenance.get("config", {}).get("complete")), final_runs=len(finals),
                seeds=int(finals.groupby("label")["seed"].nunique().min()) if len(finals) else 0,
                wall_time_s=provenance.get("wall_time_s"), command=provenance.get("command"),
                training_s=float(pd.read_csv(folder / "runs.csv")["wall_time_s"].sum()),
                git_commit=provenance.get("git_commit"), device=provenance.get("device_description"))


def plot_parameters_vs_metric(summary: "pd.DataFrame", ax: Any, reference: float | None = None) -> None:
    """The paper's Fig. 1 (left): trainable adapter parameters (log scale) against test accuracy.

    One marker per method at its mean over seeds with the 95 % interval as error bar, in the book's
    style for the method (:func:`aurora.plots.method_style`); the head-only reference is a dashed
    line with its interval as a band, ``reference`` (majority class) a dotted line.
    """
    from aurora.plots import method_style

    for _, row in summary.iterrows():
        style = method_style(row["style"])
        if row["style"] == "head":
            ax.axhspan(100 * row["ci_low"], 100 * row["ci_high"], color=style["color"], alpha=0.2)
            ax.axhline(100 * row["mean"], color=style["color"], linestyle="--", label=f"{row['label']} (no adapters)")
            continue
        mean = 100 * row["mean"]
        ax.errorbar([row["adapter_params"]], [mean], yerr=[[mean - 100 * row["ci_low"]], [100 * row["ci_high"] - mean]],
                    fmt=style["marker"], color=style["color"], capsize=3, markersize=9 if row["style"] == "aurora" else 6,
                    label=row["label"])
    if reference is not None:
        ax.axhline(100 * reference, color="black", linestyle=":", label="majority class")
    ax.set_xscale("log")
    ax.set_xlabel("trainable adapter parameters (log scale)")
    ax.set_ylabel("test accuracy (%)")


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m aurora.experiments.text_classification", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="roberta on GLUE from the hub (GPU); default: the offline quick mode")
    parser.add_argument("--datasets", nargs="+", default=list(QUICK_DATASETS), choices=list(QUICK_DATASETS), help="quick mode")
    parser.add_argument("--models", nargs="+", default=["roberta-base"], choices=list(TABLE_11), help="full mode")
    parser.add_argument("--tasks", nargs="+", default=list(GLUE_METRICS), choices=list(GLUE_METRICS), help="full mode")
    parser.add_argument("--limit", type=int, default=None, help="full mode: cap training and test examples per task (rehearsals)")
    parser.add_argument("--smoke", action="store_true", help="full mode: one rate, one tuning seed, two final seeds (rehearsals)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N")
    parser.add_argument("--restart", action="store_true", help="ignore finished runs in the results folder (default: resume)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; 1 is faster on a busy machine)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    common = dict(device=args.device, progress=not args.no_progress, resume=not args.restart)
    if args.full:
        smoke = dict(lr_grid=(1e-3,), tuning_seeds=(1000,), final_seeds=(0, 1), smoke=True) if args.smoke else {}
        folders = run_full(args.models, args.tasks, limit=args.limit, **smoke, **common)
    else:
        folders = run_quick(args.datasets, **common)
    for folder in folders:
        print(f"results in {folder}")
    print(f"wall time {time.perf_counter() - start:.0f} s")
    return folders


if __name__ == "__main__":
    main()
