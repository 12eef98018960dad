"""The fine-tuning runner: AdamW with adapter/head learning rates, linear warmup schedule, resumable.

Follows the AuroRA paper's App. G (Tables 11 and 13): AdamW, a linear learning-rate schedule
with warmup ratio 0.06, one learning rate and weight decay for the adapters and a separate pair
for the fully trained head (``modules_to_save``); the metric is evaluated after every epoch and
the best epoch is reported, as the paper's tables do. Explained in the chapter
``book/text_classification.md``; :mod:`aurora.hf` is the same recipe through Hugging Face ``Trainer``.

Batches are either dicts (Hugging Face style, with a ``"labels"`` entry; the rest is passed as
``model(**inputs)``) or ``(inputs, labels)`` tuples (``model(inputs)``). The model returns logits
(or an object with ``.logits``); the loss is cross-entropy, or mean squared error when the metric
is ``"pearson"`` (regression, e.g. STS-B), computed here in fp32 so both batch styles agree.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import random
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .config import require_choice
from .inject import adapter_layers

__all__ = [
    "METRICS",
    "MIXED_PRECISION",
    "TrainConfig",
    "EpochRecord",
    "FitResult",
    "Callback",
    "fit",
    "evaluate",
    "parameter_groups",
    "linear_warmup_schedule",
    "compute_metric",
    "accuracy",
    "matthews_correlation",
    "pearson_correlation",
    "binary_f1",
    "CHECKPOINT_FILE",
    "resolve_device",
    "auto_mixed_precision",
]

METRICS = ("accuracy", "matthews", "pearson", "f1")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
CHECKPOINT_FILE = "checkpoint.safetensors"
# Written by earlier versions with torch.save (a pickle); never read, since unpickling can run code.
LEGACY_CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = "aurora.train.fit checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
_CHECKPOINT_METADATA_KEY = "aurora_checkpoint"
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
# Options that may change between an interrupted run and its resumption without changing the result.
_RESUME_FREE_OPTIONS = ("device", "checkpoint_dir", "resume", "progress")


@dataclass
class TrainConfig:
    """Options of :func:`fit`; defaults follow App. G of the AuroRA paper where it gives one."""

    epochs: int = field(default=10, metadata={"help": "passes over the training set (Table 13: 10)"})
    batch_size: int = field(default=32, metadata={"help": "used only when fit() is given a Dataset, not a DataLoader"})
    lr: float = field(default=5e-3, metadata={"help": "adapter learning rate (Tables 11, 13)"})
    head_lr: float | None = field(default=None, metadata={"help": "head (modules_to_save) learning rate; None: lr"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay of the adapters (Table 13)"})
    head_weight_decay: float | None = field(default=None, metadata={"help": "weight decay of the head; None: weight_decay"})
    warmup_ratio: float = field(default=0.06, metadata={"help": "fraction of steps with linear warmup (Table 11: 0.06)"})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "clip the global gradient norm; None: no clipping"})
    seed: int = field(default=0, metadata={"help": "seeds random, numpy and torch before training (App. G: 0)"})
    device: str = field(default="cpu", metadata={"help": f"one of {DEVICES}; 'auto': 'cuda' if CUDA is available, else 'cpu'"})
    mixed_precision: str = field(
        default="auto",
        metadata={"help": f"one of {MIXED_PRECISION}; 'auto': bf16 autocast on CUDA GPUs with native bf16 (compute "
                  "capability >= 8.0), fp16 on older GPUs, none on CPU"},
    )
    metric: str = field(default="accuracy", metadata={"help": f"one of {METRICS} (Table 1: MCC for CoLA, PCC for STS-B)"})
    checkpoint_dir: str | Path | None = field(default=None, metadata={"help": f"folder for {CHECKPOINT_FILE}, written every epoch"})
    resume: bool = field(default=False, metadata={"help": "continue from checkpoint_dir's checkpoint if there is one"})
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
            setattr(self, name, int(value))
        positive, non_negative, fraction = ("> 0", lambda v: v > 0), (">= 0", lambda v: v >= 0), ("in [0, 1)", lambda v: 0 <= v < 1)
        limits = {"lr": (positive, False), "head_lr": (positive, True), "weight_decay": (non_negative, False),
                   "head_weight_decay": (non_negative, True), "warmup_ratio": (fraction, False), "max_grad_norm": (positive, True)}
        for name, ((condition, holds), may_be_none) in limits.items():
            value = getattr(self, name)
            if value is None and may_be_none:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not holds(value):
                raise ValueError(f"{name} must be a finite number {condition}{' or None' if may_be_none else ''}, got {value!r}")
            setattr(self, name, float(value))
        for name in ("resume", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        require_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        require_choice("metric", self.metric, METRICS)
        resolve_device(self.device)  # validates
        if self.mixed_precision in ("bf16", "fp16") and self.device in ("cpu", "mps"):
            raise ValueError(f"mixed_precision={self.mixed_precision!r} needs a CUDA device; use 'auto' or 'no' on CPU")
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir")

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["checkpoint_dir"] = None if self.checkpoint_dir is None else str(self.checkpoint_dir)
        return values


def resolve_device(device: str) -> str:
    """``device`` checked against :data:`DEVICES`; ``"auto"`` becomes ``"cuda"`` if CUDA is available, else ``"cpu"``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str) or not (device in ("cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", device)):
        raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))} (N a GPU index), got {device!r}")
    return device


def auto_mixed_precision(device: str | torch.device) -> str:
    """What ``mixed_precision="auto"`` means on ``device`` (``"auto"`` resolved first): ``"bf16"`` on a CUDA GPU with native bf16 (compute
    capability >= 8.0, Ampere and later), ``"fp16"`` on older GPUs (V100, T4 only emulate bf16), ``"no"`` elsewhere."""
    device = torch.device(resolve_device(device) if isinstance(device, str) else device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"


@dataclass
class EpochRecord:
    """One row of the training history; ``epoch`` counts from 1, ``lr`` is the adapters' at the epoch's end."""

    epoch: int
    train_loss: float
    eval_loss: float
    metric: float
    lr: float
    seconds: float


@dataclass
class FitResult:
    """What :func:`fit` returns: the per-epoch history and the best epoch (the paper reports the best)."""

    history: list[EpochRecord]
    best_metric: float
    best_epoch: int
    wall_time_s: float
    metric_name: str

    @property
    def final_metric(self) -> float:
        return self.history[-1].metric


class Callback(Protocol):
    """Called with ``(epoch, model)`` after each epoch, and with epoch 0 before training starts."""

    def on_epoch_end(self, epoch: int, model: nn.Module) -> None: ...


# ---------------------------------------------------------------------------------------------
# metrics (own implementations; tests compare them with scikit-learn and scipy)
# ---------------------------------------------------------------------------------------------
def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def matthews_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation coefficient (multiclass form of Gorodkin 2004); 0 when undefined."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    classes = np.union1d(predictions, labels)
    confusion = np.zeros((classes.size, classes.size), dtype=np.float64)
    np.add.at(confusion, (np.searchsorted(classes, labels), np.searchsorted(classes, predictions)), 1.0)
    true_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, total = np.trace(confusion), confusion.sum()
    numerator = correct * total - true_counts @ predicted_counts
    denominator = math.sqrt((total**2 - predicted_counts @ predicted_counts) * (total**2 - true_counts @ true_counts))
    return float(numerator / denominator) if denominator > 0 else 0.0


def pearson_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson's r of predictions and targets (STS-B's metric); 0 when either is constant."""
    x = np.asarray(predictions, dtype=np.float64) - np.mean(predictions)
    y = np.asarray(labels, dtype=np.float64) - np.mean(labels)
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y / denominator) if denominator > 0 else 0.0


def binary_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class 1 (MRPC's second metric); 0 when there are no true or predicted positives."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    true_positive = float(np.sum((predictions == 1) & (labels == 1)))
    denominator = float(np.sum(predictions == 1) + np.sum(labels == 1))
    return 2.0 * true_positive / denominator if denominator > 0 else 0.0


_METRIC_FUNCTIONS = {"accuracy": accuracy, "matthews": matthews_correlation, "pearson": pearson_correlation, "f1": binary_f1}


def compute_metric(name: str, predictions: np.ndarray, labels: np.ndarray) -> float:
    """The metric ``name`` (one of :data:`METRICS`) of predicted classes (or regression outputs) vs labels."""
    require_choice("metric", name, METRICS)
    return _METRIC_FUNCTIONS[name](predictions, labels)


# ---------------------------------------------------------------------------------------------
# optimizer and schedule
# ---------------------------------------------------------------------------------------------
def _peft_tuner_layers(model: nn.Module) -> list[nn.Module]:
    """PEFT's tuner layers in ``model`` (none when PEFT was never imported: then no PEFT model exists)."""
    if "peft" not in sys.modules:
        return []
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [module for module in model.modules() if isinstance(module, BaseTunerLayer)]


def parameter_groups(
    model: nn.Module, lr: float, weight_decay: float, head_lr: float | None = None, head_weight_decay: float | None = None
) -> list[dict[str, Any]]:
    """AdamW parameter groups: adapter parameters, then every other trainable parameter (the head).

    App. G (Table 13) tunes the adapters' and the classification head's learning rates separately.
    Adapter parameters are those of aurora's adapter layers and, in a PEFT model, of PEFT's tuner layers
    (LoRA, DoRA, VeRA, FourierFT, ...), so ``head_lr`` means the same for both.
    Groups without parameters are left out; ``ValueError`` if nothing is trainable.
    """
    layers = [layer for _, layer in adapter_layers(model)] + _peft_tuner_layers(model)
    adapter_ids = {id(p) for layer in layers for n, p in layer.named_parameters() if not n.startswith("base_layer.")}
    adapter = [p for p in model.parameters() if p.requires_grad and id(p) in adapter_ids]
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in adapter_ids]
    groups = [
        {"params": adapter, "lr": lr, "weight_decay": weight_decay, "name": "adapter"},
        {
            "params": head,
            "lr": lr if head_lr is None else head_lr,
            "weight_decay": weight_decay if head_weight_decay is None else head_weight_decay,
            "name": "head",
        },
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("model has no trainable parameters; add adapters or set modules_to_save")
    return groups


def linear_warmup_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``ceil(warmup_ratio · total_steps)`` steps, then linear decay to 0 (App. G).

    The same factor as ``transformers.get_linear_schedule_with_warmup``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps!r}")
    warmup_steps = math.ceil(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------------------------
# batches, loss, evaluation
# ---------------------------------------------------------------------------------------------
def _to_device(value: Any, device: torch.device) -> Any:
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


def _forward(model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, labels)`` of one batch (dict with ``"labels"`` or ``(inputs, labels)``)."""
    if isinstance(batch, Mapping):
        if "labels" not in batch:
            raise ValueError(f"dict batches need a 'labels' entry; got keys {sorted(batch)}")
        inputs = {k: _to_device(v, device) for k, v in batch.items() if k != "labels"}
        labels = _to_device(batch["labels"], device)
        outputs = model(**inputs)
    elif isinstance(batch, Sequence) and len(batch) == 2:
        inputs, labels = _to_device(batch[0], device), _to_device(batch[1], device)
        outputs = model(inputs)
    else:
        raise ValueError(f"batches must be dicts with 'labels' or (inputs, labels) pairs; got {type(batch).__name__}")
    logits = outputs if isinstance(outputs, torch.Tensor) else outputs.logits
    return logits, labels


def _loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    if regression:
        return nn.functional.mse_loss(logits.float().reshape(labels.shape), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels.long())


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or config.mixed_precision == "no":
        return None
    precision = auto_mixed_precision(device) if config.mixed_precision == "auto" else config.mixed_precision
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def _as_loader(data: DataLoader | Dataset | Iterable, batch_size: int, shuffle: bool, seed: int) -> Iterable:
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)
    return data


def evaluate(
    model: nn.Module,
    data: DataLoader | Dataset | Iterable,
    metric: str = "accuracy",
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    batch_size: int = 64,
) -> tuple[float, float]:
    """``(mean loss, metric)`` of ``model`` over ``data`` (batches, or a Dataset batched with ``batch_size``).

    Runs in eval mode without gradients and restores the model's training mode.
    """
    require_choice("metric", metric, METRICS)
    loader = _as_loader(data, batch_size, shuffle=False, seed=0)
    device = torch.device(resolve_device(device) if isinstance(device, str) else device)
    regression = metric == "pearson"
    was_training = model.training
    model.eval()
    total_loss, count, predictions, targets = 0.0, 0, [], []
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        for batch in loader:
            logits, labels = _forward(model, batch, device)
            total_loss += _loss(logits, labels, regression).item() * labels.shape[0]
            count += labels.shape[0]
            predicted = logits.float().reshape(labels.shape) if regression else logits.argmax(dim=-1)
            predictions.append(predicted.cpu().numpy())
            targets.append(labels.cpu().numpy())
    model.train(was_training)
    if count == 0:
        raise ValueError("eval loader yielded no batches")
    return total_loss / count, compute_metric(metric, np.concatenate(predictions), np.concatenate(targets))


# ---------------------------------------------------------------------------------------------
# seeds and checkpoints
# ---------------------------------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _loader_generator(loader: Iterable) -> torch.Generator | None:
    """The generator that orders a DataLoader's shuffling, if it has its own (else the global RNG does)."""
    generator = getattr(loader, "generator", None)
    if generator is None:
        generator = getattr(getattr(loader, "sampler", None), "generator", None)
    return generator


def _rng_state(loader: Iterable) -> dict[str, Any]:
    generator = _loader_generator(loader)
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), position, has_gauss, cached_gaussian],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": None if generator is None else generator.get_state(),
    }


def _set_rng_state(state: dict[str, Any], loader: Iterable) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator = _loader_generator(loader)
    if state["loader"] is not None and generator is not None:
        generator.set_state(state["loader"])


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


# A checkpoint is data only: one safetensors file whose tensors are the trainable weights, the optimizer's state
# tensors and the RNG states, and whose metadata holds everything else as JSON, with each tensor replaced by
# {"tensor": key}, tuples by {"tuple": [...]}, integer-keyed dicts (optimizer state) by {"int_keys": {...}} and
# other dicts by {"dict": {...}}; lists, strings, numbers, booleans and null are themselves.
def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        if key in tensors:
            raise ValueError(f"two checkpoint entries would share the tensor name {key!r}")
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"tensor": key}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if value and all(isinstance(k, int) and not isinstance(k, bool) for k in value):
            return {"int_keys": {str(k): _encode(v, f"{key}.{k}", tensors) for k, v in value.items()}}
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"cannot store a dict with keys {list(value)[:3]} in a checkpoint")
        return {"dict": {k: _encode(v, f"{key}.{k}", tensors) for k, v in value.items()}}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint (at {key})")


def _decode(value: Any, tensors: dict[str, torch.Tensor], used: set[str]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, used) for v in value]
    if isinstance(value, dict):
        if len(value) != 1 or next(iter(value)) not in ("tensor", "tuple", "int_keys", "dict"):
            raise ValueError(f"unexpected entry {sorted(value)[:3]} in the metadata")
        (kind, content), = value.items()
        if kind == "tensor":
            if content not in tensors:
                raise ValueError(f"tensor {content!r} is missing")
            used.add(content)
            return tensors[content]
        if kind == "tuple":
            return tuple(_decode(v, tensors, used) for v in content)
        if kind == "int_keys":
            return {int(k): _decode(v, tensors, used) for k, v in content.items()}
        return {k: _decode(v, tensors, used) for k, v in content.items()}
    return value


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    metadata = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION, "payload": _encode(payload, "payload", tensors)}
    temporary = path.with_name(path.name + ".tmp")
    save_file(tensors, str(temporary), metadata={_CHECKPOINT_METADATA_KEY: json.dumps(metadata)})
    os.replace(temporary, path)  # atomic: an interruption never leaves a half-written checkpoint


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """The payload of the checkpoint at ``path``, parsed without running anything; ``ValueError`` if it is not one."""
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = json.loads((file.metadata() or {})[_CHECKPOINT_METADATA_KEY])
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"checkpoint {path} is not an aurora.train checkpoint (a safetensors file with its metadata): {error}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path} is a safetensors file but not one written by aurora.train.fit")
    if metadata.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format_version {metadata.get('format_version')!r}; this version of aurora reads "
            f"only {CHECKPOINT_FORMAT_VERSION}"
        )
    used: set[str] = set()
    try:
        payload = _decode(metadata.get("payload"), tensors, used)
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"checkpoint {path} is damaged: {error}") from None
    if set(tensors) != used:
        raise ValueError(f"checkpoint {path} holds tensors its metadata does not name: {sorted(set(tensors) - used)[:5]}")
    required = {"epoch", "config", "trainable", "optimizer", "scheduler", "scaler", "rng", "history", "wall_time_s"}
    if not isinstance(payload, dict) or not required <= set(payload):
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"checkpoint {path} is damaged: expected entries {sorted(required)}, found {found}")
    return payload


def _check_tensor(path: Path, what: str, saved: Any, like: torch.Tensor) -> None:
    if not isinstance(saved, torch.Tensor) or saved.shape != like.shape or saved.dtype != like.dtype:
        found = f"{tuple(saved.shape)} {saved.dtype}" if isinstance(saved, torch.Tensor) else type(saved).__name__
        raise ValueError(f"checkpoint {path}: {what} should be a {tuple(like.shape)} {like.dtype} tensor, found {found}")
    if saved.is_floating_point() and not torch.isfinite(saved).all():
        raise ValueError(f"checkpoint {path}: {what} holds non-finite values (inf or NaN)")


def _load_checkpoint(
    path: Path,
    model: nn.Module,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    loader: Iterable,
) -> dict[str, Any]:
    """Validate everything in the checkpoint against the run, then restore it into the model, optimizer, schedule, scaler and RNGs."""
    payload = _read_checkpoint(path)
    try:
        saved = {k: v for k, v in payload["config"].items() if k not in _RESUME_FREE_OPTIONS}
        current = {k: v for k, v in config.to_dict().items() if k not in _RESUME_FREE_OPTIONS}
        if saved != current:
            changed = sorted(k for k in set(current) | set(saved) if saved.get(k) != current.get(k))
            raise ValueError(f"checkpoint {path} was written with a different TrainConfig (changed: {changed}); use a new checkpoint_dir")
        expected = _trainable_state(model)
        if not isinstance(payload["trainable"], dict) or set(payload["trainable"]) != set(expected):
            raise ValueError(f"checkpoint {path} does not fit this model's trainable parameters")
        for name, tensor in expected.items():
            _check_tensor(path, f"trainable parameter {name}", payload["trainable"][name], tensor)
        _check_optimizer_state(path, payload["optimizer"], optimizer)
        if set(payload["scheduler"]) != set(scheduler.state_dict()):
            raise ValueError(f"checkpoint {path}: the learning-rate schedule's state has entries {sorted(payload['scheduler'])}")
        if bool(payload["scaler"]) != scaler.is_enabled():
            raise ValueError(f"checkpoint {path}: the grad scaler was {'en' if payload['scaler'] else 'dis'}abled when it was written")
        rng = payload["rng"]
        _check_tensor(path, "the torch RNG state", rng["torch"], torch.get_rng_state())
        generator = _loader_generator(loader)
        if rng["loader"] is not None and generator is not None:
            _check_tensor(path, "the data loader's RNG state", rng["loader"], generator.get_state())
        history = [EpochRecord(**record) for record in payload["history"]]
        if not isinstance(payload["epoch"], int) or not 1 <= payload["epoch"] == len(history):
            raise ValueError(f"checkpoint {path}: epoch {payload['epoch']!r} does not match its history of {len(history)} epochs")
        try:  # restore the Python and NumPy states into scratch generators first: they validate them
            random.Random().setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
            np.random.RandomState().set_state((rng["numpy"][0], np.asarray(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))
        except (ValueError, OverflowError) as error:
            raise ValueError(f"checkpoint {path}: the Python or NumPy RNG state is damaged: {error}") from None
    except (KeyError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(f"checkpoint {path} is damaged: {type(error).__name__}: {error}") from None
    # everything checked: now change the run's state
    model.load_state_dict(payload["trainable"], strict=False)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    _set_rng_state(rng, loader)
    payload["history"] = history
    return payload


def _check_optimizer_state(path: Path, saved: Any, optimizer: torch.optim.Optimizer) -> None:
    """The saved AdamW state fits ``optimizer``: the same groups with the same parameters, state tensors of their shapes."""
    current = optimizer.state_dict()
    groups, state = saved["param_groups"], saved["state"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in current["param_groups"]]:
        raise ValueError(f"checkpoint {path}: the optimizer's parameter groups do not match this model's")
    if [sorted(set(g) - {"params"}) for g in groups] != [sorted(set(g) - {"params"}) for g in current["param_groups"]]:
        raise ValueError(f"checkpoint {path}: the optimizer's options differ from this optimizer's")
    parameters = {index: p for saved_group, group in zip(groups, optimizer.param_groups) for index, p in zip(saved_group["params"], group["params"])}
    if not set(state) <= set(parameters):
        raise ValueError(f"checkpoint {path}: optimizer state for unknown parameters {sorted(set(state) - set(parameters))[:5]}")
    for index, entries in state.items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                _check_tensor(path, f"optimizer state {name} of parameter {index}", value, parameters[index].detach().cpu())


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
def fit(
    model: nn.Module,
    train_data: DataLoader | Dataset,
    eval_data: DataLoader | Dataset,
    config: TrainConfig,
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Train the trainable parameters of ``model`` (adapters + head) and evaluate after every epoch.

    ``train_data``/``eval_data``: DataLoaders, or Datasets (then batched with ``config.batch_size``,
    the training set shuffled by a generator seeded with ``config.seed``). With ``checkpoint_dir``,
    the trainable weights, optimizer, scheduler, grad scaler, RNG states and history are saved after
    every epoch in :data:`CHECKPOINT_FILE`, data only (safetensors tensors, the rest as JSON in its
    metadata); ``resume=True`` checks all of it against the run, then continues from there and reproduces
    an uninterrupted run bit for bit (callbacks then run only for the epochs that are still to do). A
    damaged, foreign or mismatched checkpoint raises ``ValueError`` naming it. Frozen weights are never touched.

    One process: ``fit`` neither shards the data nor reduces losses across ranks; multi-process training
    (``torchrun``, ``accelerate launch``) goes through :mod:`aurora.hf`, which is tested to train and log like one process.
    """
    start_time = time.perf_counter()
    device = torch.device(resolve_device(config.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={config.device!r} but CUDA is not available; use device='cpu' or 'auto'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={config.device!r} but MPS is not available; use device='cpu' or 'auto'")
    if config.mixed_precision in ("bf16", "fp16") and device.type != "cuda":
        raise ValueError(f"mixed_precision={config.mixed_precision!r} needs a CUDA device; use 'auto' or 'no' on {device.type}")
    _seed_everything(config.seed)
    train_loader = _as_loader(train_data, config.batch_size, shuffle=True, seed=config.seed)
    eval_loader = _as_loader(eval_data, config.batch_size, shuffle=False, seed=config.seed)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError("train_data yields no batches")

    model.to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.lr, config.weight_decay, config.head_lr, config.head_weight_decay))
    scheduler = linear_warmup_schedule(optimizer, config.epochs * steps_per_epoch, config.warmup_ratio)
    autocast_dtype = _autocast_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    regression = config.metric == "pearson"

    history: list[EpochRecord] = []
    first_epoch = 1
    elapsed_before = 0.0
    checkpoint = None if config.checkpoint_dir is None else Path(config.checkpoint_dir) / CHECKPOINT_FILE
    if checkpoint is not None and checkpoint.parent.exists() and not checkpoint.parent.is_dir():
        raise ValueError(f"checkpoint_dir must be a folder; {checkpoint.parent} is a file")
    if config.resume and checkpoint is not None and not checkpoint.exists() and (checkpoint.parent / LEGACY_CHECKPOINT_FILE).exists():
        raise ValueError(
            f"checkpoint {checkpoint.parent / LEGACY_CHECKPOINT_FILE} is a pickle (written by an older aurora); it is not "
            "loaded because unpickling can run code. Start the run again with a new checkpoint_dir"
        )
    if config.resume and checkpoint is not None and checkpoint.exists():
        payload = _load_checkpoint(checkpoint, model, config, optimizer, scheduler, scaler, train_loader)
        history = payload["history"]
        first_epoch = payload["epoch"] + 1
        elapsed_before = payload["wall_time_s"]
    else:
        for callback in callbacks:
            if hasattr(callback, "on_epoch_end"):
                callback.on_epoch_end(0, model)

    bar = tqdm(
        total=config.epochs * steps_per_epoch,
        initial=(first_epoch - 1) * steps_per_epoch,
        disable=not config.progress,
        desc="fit",
        unit="step",
        leave=False,
    )
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    for epoch in range(first_epoch, config.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        total_loss, count = 0.0, 0
        for batch in train_loader:
            with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
                logits, labels = _forward(model, batch, device)
            loss = _loss(logits, labels, regression)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.max_grad_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total_loss += loss.item() * labels.shape[0]
            count += labels.shape[0]
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
        eval_loss, metric = evaluate(model, eval_loader, config.metric, device, autocast_dtype)
        history.append(
            EpochRecord(
                epoch=epoch,
                train_loss=total_loss / count,
                eval_loss=eval_loss,
                metric=metric,
                lr=optimizer.param_groups[0]["lr"],
                seconds=time.perf_counter() - epoch_start,
            )
        )
        if checkpoint is not None:
            _save_checkpoint(
                checkpoint,
                {
                    "epoch": epoch,
                    "config": config.to_dict(),
                    "trainable": _trainable_state(model),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": _rng_state(train_loader),
                    "history": [dataclasses.asdict(r) for r in history],
                    "wall_time_s": elapsed_before + time.perf_counter() - start_time,
                },
            )
        for callback in callbacks:
            if hasattr(callback, "on_epoch_end"):
                callback.on_epoch_end(epoch, model)
    bar.close()

    best = max(history, key=lambda record: record.metric)  # first of equal bests
    return FitResult(
        history=history,
        best_metric=best.metric,
        best_epoch=best.epoch,
        wall_time_s=elapsed_before + time.perf_counter() - start_time,
        metric_name=config.metric,
    )
