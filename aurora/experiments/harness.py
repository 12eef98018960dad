"""One evaluation protocol for every fine-tuning chapter: tune on validation, test once, pair seeds.

The text, vision, trajectory and ablation experiments all describe *what* to compare with three
objects and hand them to :func:`run_protocol`:

- :class:`Method` -- one row of a results table: ``label`` (shown, e.g. ``"AuroRA r̃=2"``), ``style``
  (a key of :data:`aurora.plots.METHOD_STYLES`) and exactly one of ``adapter`` (options of
  :class:`aurora.AdapterConfig`; ``target_modules``/``modules_to_save`` come from the task),
  ``peft_config`` (a factory ``(target_modules, modules_to_save) -> peft config``: ``LoraConfig``,
  ``LoraConfig(use_dora=True)``, ``LoraConfig(init_lora_weights="pissa")``, ``VeraConfig``,
  ``FourierFTConfig``, ...) or ``plain`` (``"head"``: only the head trains; ``"full"``: everything).
- :class:`Task` -- ``name``, ``metric``, ``train``/``validation``/``test`` datasets, ``make_model(seed)``
  (a fresh model whose head is initialised from ``seed``), ``target_modules``, ``head_modules``.
  :func:`carve_validation` holds out a validation split of a training set with a fixed seed.
- :class:`Protocol` -- the learning-rate grid (one grid for every method; the head trains at the
  adapters' rate unless ``head_lr_grid`` is given, then the grid is their product), ``tuning_seeds``,
  ``final_seeds``, the epoch budget (the same for every method) and the batch size.

:func:`run_protocol` then runs

1. **tuning**: every method x every grid point x every tuning seed, trained for ``epochs``; each
   run's score is its validation metric at its best validation epoch; a method's rate is the grid
   point with the best mean score over the tuning seeds (ties: the smaller rate). The test split is
   not touched. Every run records :func:`late_validation_gain` (how much its validation curve still
   rose in the last quarter of the budget), the check that the budget was long enough.
2. **final**: every method x every final seed at its chosen rate. The epoch is chosen on validation
   (the first epoch with the best validation metric), the trainable weights of that epoch are
   restored (kept in CPU memory after each epoch by a :class:`aurora.train.Callback`) and the test
   split is scored **once**. Per-epoch test scores are never computed, so there is no
   best-test-epoch column.

Seed ``k`` gives every method the same data order (``fit`` shuffles with a generator seeded by
``k``), the same head initialisation (``make_model(k)``) and the same subsample (a task's
datasets do not depend on the seed); adapter initialisation draws from ``torch.manual_seed(k)``.

Results go to ``results_dir``: ``runs.csv`` (one row per run, appended as each run finishes),
``epochs.csv`` (one row per run and epoch), ``selection.csv`` (the tuning means and the chosen
rates), ``summary.csv`` (:func:`paired_comparison` of the final runs; removed when the final phase
starts and recomputed from ``runs.csv`` when it ends, so it is never stale) and ``provenance.json``
(``config.complete`` is false until the design is finished). Every file is written to a temporary name and renamed, so an interruption
never leaves a half-written or stale table; with ``resume=True`` a rerun skips every run whose key
(phase, task, label, method and protocol fingerprints, rates, seed) is already in ``runs.csv``.

:func:`paired_comparison` turns final runs into means with 95 % t intervals, the paired difference
to a reference method over shared seeds with its 95 % t interval, a verdict (``"better"`` /
``"worse"`` when that interval excludes 0, else ``"no detectable difference"``) and the minimum
detectable difference of the design, ``(t_{0.975,n-1} + t_{0.80,n-1}) · sd_diff / √n`` -- the true
paired difference a two-sided 5 % paired t-test finds with 80 % power (≈ 2.8 standard errors for
large n).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

import aurora
from aurora.config import require_choice
from aurora.train import METRICS, TrainConfig, evaluate, fit

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "EpochStates",
    "write_csv_atomically",
    "PLAIN_KINDS",
    "VERDICTS",
    "RUN_KEY",
    "Method",
    "Task",
    "Protocol",
    "carve_validation",
    "trainable_parameters",
    "late_validation_gain",
    "budget_binds",
    "resolve_device",
    "run_protocol",
    "select_learning_rates",
    "paired_comparison",
    "read_runs",
    "read_final_runs",
    "selection_grid",
    "plot_validation_curves",
]

PLAIN_KINDS = ("head", "full")
VERDICTS = ("better", "worse", "no detectable difference")
# what identifies a run in runs.csv (resume skips a run whose key is there)
RUN_KEY = ("phase", "task", "label", "method_id", "protocol_id", "lr", "head_lr", "seed")


def resolve_device(device: str) -> str:
    """``"auto"``: ``"cuda"`` when a CUDA device is available, else ``"cpu"``; other values pass through."""
    try:
        from aurora.train import resolve_device as train_resolve_device  # the package-wide rule, once it exists
    except ImportError:
        train_resolve_device = None
    if train_resolve_device is not None:
        return train_resolve_device(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# ---------------------------------------------------------------------------------------------
# what is compared
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    """One compared method: an aurora adapter, a PEFT config, or a plain (head-only / full) fine-tune."""

    label: str
    style: str
    adapter: Mapping[str, Any] | None = field(default=None, hash=False)
    peft_config: Callable[[list[str], list[str]], Any] | None = field(default=None, hash=False, compare=False)
    plain: str | None = None
    peft_description: str = ""  # shown in runs.csv for PEFT methods, e.g. "LoraConfig(r=8, use_dora=True)"

    def __post_init__(self) -> None:
        given = [name for name in ("adapter", "peft_config", "plain") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"Method {self.label!r} needs exactly one of adapter, peft_config, plain; got {given or 'none'}")
        if self.plain is not None:
            require_choice("plain", self.plain, PLAIN_KINDS)
        if self.adapter is not None:
            for reserved in ("target_modules", "modules_to_save"):
                if reserved in self.adapter:
                    raise ValueError(f"Method {self.label!r}: adapter must not set {reserved!r}; the Task supplies it")
            aurora.AdapterConfig(**self.adapter)  # validate now, not after hours of other runs
        if self.peft_config is not None and not self.peft_description:
            raise ValueError(f"Method {self.label!r}: a PEFT method needs peft_description (what its config is)")

    @property
    def kind(self) -> str:
        return "aurora" if self.adapter is not None else "peft" if self.peft_config is not None else self.plain

    @property
    def spec(self) -> str:
        """What the method is, as a JSON string (the ``method_spec`` column; its hash is ``method_id``)."""
        detail: Any = dict(self.adapter) if self.adapter is not None else self.peft_description or self.plain
        return json.dumps({"kind": self.kind, "detail": detail}, sort_keys=True, default=str)

    @property
    def method_id(self) -> str:
        return hashlib.sha1(self.spec.encode()).hexdigest()[:10]

    def prepare(self, model: nn.Module, target_modules: Sequence[str], head_modules: Sequence[str]) -> nn.Module:
        """``model`` with this method applied (PEFT returns a wrapping ``PeftModel``; aurora works in place)."""
        if self.adapter is not None:
            config = aurora.AdapterConfig(**self.adapter, target_modules=list(target_modules), modules_to_save=list(head_modules))
            return aurora.add_adapters(model, config)
        if self.peft_config is not None:
            import peft

            return peft.get_peft_model(model, self.peft_config(list(target_modules), list(head_modules)))
        if self.plain == "head":
            model.requires_grad_(False)
            for name in head_modules:
                model.get_submodule(name).requires_grad_(True)
        else:
            model.requires_grad_(True)
        return model


def _under(name: str, modules: Sequence[str]) -> bool:
    dotted = f".{name}."
    return any(f".{module}." in dotted for module in modules)


def trainable_parameters(model: nn.Module, head_modules: Sequence[str]) -> dict[str, int]:
    """Trainable parameter counts, the same rule for aurora, PEFT and plain models.

    ``head``: trainable parameters inside a module named in ``head_modules`` (PEFT's trainable copy
    ``classifier.modules_to_save.default`` included); ``adapter``: every other trainable parameter
    (the whole backbone for full fine-tuning); ``trainable`` = both. Frozen tensors and buffers
    (e.g. VeRA's shared random projections) do not count, as in PEFT's ``print_trainable_parameters``.
    """
    head = adapter = 0
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            if _under(name, head_modules):
                head += parameter.numel()
            else:
                adapter += parameter.numel()
    return {"adapter": adapter, "head": head, "trainable": adapter + head}


@dataclass
class Task:
    """A classification task: data splits, metric, and a model factory (head initialised from the seed)."""

    name: str
    metric: str
    train: Dataset
    validation: Dataset
    test: Dataset
    make_model: Callable[[int], nn.Module]
    target_modules: Sequence[str]
    head_modules: Sequence[str] = ("classifier",)
    info: dict[str, Any] = field(default_factory=dict)  # goes into provenance.json (sizes, baselines, stand-ins)

    def __post_init__(self) -> None:
        require_choice("metric", self.metric, METRICS)
        for split in ("train", "validation", "test"):
            if len(getattr(self, split)) == 0:
                raise ValueError(f"Task {self.name!r}: the {split} split is empty")


def carve_validation(train: Dataset, n_validation: int, seed: int = 0) -> tuple[Subset, Subset]:
    """``(train without validation, validation)``: ``n_validation`` examples drawn with ``seed``."""
    if not 0 < n_validation < len(train):
        raise ValueError(f"n_validation must be in 1..{len(train) - 1}, got {n_validation!r}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(train, sorted(order[n_validation:])), Subset(train, sorted(order[:n_validation]))


@dataclass(frozen=True)
class Protocol:
    """The tuning and final-run budget, the same for every method.

    ``smoke=True`` lifts the minimums (≥ 4 rates, ≥ 2 tuning seeds, ≥ 10 final seeds) for tests and
    the chapters' seconds-long smoke runs; its rows say so (``smoke`` column) and carry no verdict.
    """

    lr_grid: tuple[float, ...]
    head_lr_grid: tuple[float, ...] | None = None  # None: the head trains at the adapters' rate
    tuning_seeds: tuple[int, ...] = (1000, 1001)
    final_seeds: tuple[int, ...] = tuple(range(10))
    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 256
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    smoke: bool = False

    def __post_init__(self) -> None:
        for name in ("lr_grid", "head_lr_grid"):
            grid = getattr(self, name)
            if grid is not None and (not grid or not all(math.isfinite(v) and v > 0 for v in grid)):
                raise ValueError(f"{name} must be a non-empty tuple of finite rates > 0, got {grid!r}")
        if not self.tuning_seeds or not self.final_seeds:
            raise ValueError("tuning_seeds and final_seeds must not be empty")
        if set(self.tuning_seeds) & set(self.final_seeds):
            raise ValueError("tuning_seeds and final_seeds must be disjoint (final runs must not reuse tuning runs)")
        if not self.smoke:
            if len(self.lr_grid) < 4 or (self.head_lr_grid is not None and len(self.head_lr_grid) < 4):
                raise ValueError(f"lr_grid (and head_lr_grid) need >= 4 values, got {self.lr_grid!r} / {self.head_lr_grid!r}")
            if len(self.tuning_seeds) < 2:
                raise ValueError(f"tuning_seeds needs >= 2 seeds, got {self.tuning_seeds!r}")
            if len(self.final_seeds) < 10:
                raise ValueError(f"final_seeds needs >= 10 seeds, got {self.final_seeds!r}")
        TrainConfig(epochs=self.epochs, batch_size=self.batch_size, warmup_ratio=self.warmup_ratio,
                    weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm)  # validates those options

    @property
    def protocol_id(self) -> str:
        """Hash of what changes a run's result (not the grid or seeds: those are in the run key)."""
        training = dict(epochs=self.epochs, batch_size=self.batch_size, warmup_ratio=self.warmup_ratio,
                        weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm)
        return hashlib.sha1(json.dumps(training, sort_keys=True).encode()).hexdigest()[:10]

    def grid(self, method: Method) -> list[tuple[float, float | None]]:
        """``(lr, head_lr)`` points tried for ``method``; a head-only method tunes only the head's rate."""
        if method.plain == "head":
            return [(rate, None) for rate in (self.head_lr_grid or self.lr_grid)]
        if self.head_lr_grid is None:
            return [(rate, None) for rate in self.lr_grid]
        return [(rate, head) for rate in self.lr_grid for head in self.head_lr_grid]


# ---------------------------------------------------------------------------------------------
# result files: every write goes to a temporary file that replaces the old one
# ---------------------------------------------------------------------------------------------
def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_csv_atomically(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` (the union of their keys as columns) to ``path`` through a temporary file that replaces it."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({key: _format(row.get(key)) for key in columns} for row in rows)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


_INTEGER_COLUMNS = ("seed", "epoch", "epochs", "batch_size", "selected_epoch", "adapter_params", "head_params", "trainable_params")
_TEXT_COLUMNS = ("phase", "task", "label", "method_id", "protocol_id", "style", "method_kind", "method_spec", "metric_name",
                 "selected_on", "device")


def _parse(column: str, text: str) -> Any:
    """A value of a result table read back with the type it was written with ("" is None)."""
    if column in _TEXT_COLUMNS:
        return text
    if text == "":
        return None
    if column in _INTEGER_COLUMNS:
        return int(text)
    if text in ("True", "False"):
        return text == "True"
    return float(text)


def _read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{column: _parse(column, value) for column, value in row.items()} for row in csv.DictReader(handle)]


def _key(row: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(_format(row[name]) for name in RUN_KEY)


def read_final_runs(results_dir: Path | str) -> "pd.DataFrame":
    """The final runs of a results folder's current design.

    ``runs.csv`` keeps every run ever made there (so that a rerun can resume, and a grid that grows
    keeps its old points); a final run belongs to the design when its rate is the one ``selection.csv``
    chose for its method and its ``protocol_id`` is the one ``provenance.json`` names. Without those
    files every final run is returned. ``FileNotFoundError`` if ``runs.csv`` is missing.
    """
    import pandas as pd

    folder = Path(results_dir)
    runs = read_runs(folder)
    finals = runs[runs["phase"] == "final"]
    provenance = folder / "provenance.json"
    if provenance.is_file():
        protocol_id = json.loads(provenance.read_text()).get("config", {}).get("protocol_id")
        if protocol_id is not None:
            finals = finals[finals["protocol_id"].astype(str) == str(protocol_id)]
    if (folder / "selection.csv").is_file():
        chosen = pd.read_csv(folder / "selection.csv")
        chosen = chosen.loc[chosen["chosen"].astype(bool), ["label", "lr", "head_lr"]]
        keys = lambda frame: list(zip(frame["label"], frame["lr"].astype(float), frame["head_lr"].fillna(-1.0).astype(float)))
        finals = finals[pd.Series(keys(finals), index=finals.index).isin(set(keys(chosen)))]
    return finals.reset_index(drop=True)


def plot_validation_curves(results_dir: Path | str, ax: Any, labels: Sequence[str], metric: str = "validation accuracy (%)") -> Any:
    """Validation metric after each epoch, mean over the design's final seeds, one line per method of ``labels``
    (flat ends: the epoch budget was long enough)."""
    import pandas as pd

    from aurora.plots import method_style

    finals = read_final_runs(results_dir)
    epochs = pd.read_csv(Path(results_dir) / "epochs.csv")
    epochs = epochs[epochs["phase"] == "final"].merge(finals[["label", "seed", "lr", "style"]], on=["label", "seed", "lr"])
    for label in labels:
        rows = epochs[epochs["label"] == label]
        if rows.empty:
            continue
        curve = rows.groupby("epoch")["validation_metric"].mean()
        ax.plot(curve.index, 100 * curve.values, markersize=3, label=label, **method_style(str(rows["style"].iloc[0])))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, ncol=2)
    return ax


def selection_grid(results_dir: Path | str, labels: Sequence[str] | None = None) -> "pd.DataFrame":
    """The tuning phase at a glance: per method (rows) and rate (columns) the mean validation metric (%)
    over the tuning seeds, the chosen rate marked ``*``; ``labels`` picks and orders the rows."""
    import pandas as pd

    selection = pd.read_csv(Path(results_dir) / "selection.csv")
    selection["cell"] = [f"{100 * value:.1f}{'*' if chosen else ''}"
                         for value, chosen in zip(selection["mean_validation_metric"], selection["chosen"])]
    grid = selection.pivot(index="label", columns="lr", values="cell")
    if labels is not None:
        grid = grid.loc[[label for label in labels if label in grid.index]]
    grid.columns = [f"rate {rate:g}" for rate in grid.columns]
    grid.index.name = "Method"
    return grid


def read_runs(results_dir: Path | str) -> "pd.DataFrame":
    """``runs.csv`` of a results folder as a DataFrame (``FileNotFoundError`` if it is missing)."""
    import pandas as pd

    path = Path(results_dir) / "runs.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return pd.read_csv(path)


# ---------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------
class EpochStates:
    """Keeps the trainable tensors after every epoch (on the CPU) so the selected epoch can be restored."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch_end(self, epoch: int, model: nn.Module) -> None:
        if epoch >= 1:
            self.states[epoch] = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}

    def restore(self, model: nn.Module, epoch: int) -> None:
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.states[epoch].items():
                parameters[name].copy_(value)


def late_validation_gain(curve: Sequence[float], tail: float = 0.25) -> float:
    """How much the validation curve still rose at the end of the budget (0 when it had flattened).

    The best metric in the last ``tail`` of the epochs minus the best before them, floored at 0: a run
    whose best epoch lies earlier gains nothing from its last epochs. ``curve``: one value per epoch;
    NaN for a one-epoch run (there is nothing to compare with).
    """
    if len(curve) < 2:
        return math.nan
    split = min(len(curve) - 1, max(1, math.ceil(len(curve) * (1 - tail))))
    return max(0.0, float(max(curve[split:]) - max(curve[:split])))


def budget_binds(summary: "pd.DataFrame", validation_size: int) -> list[str]:
    """Labels of a :func:`paired_comparison` table whose validation curves still rose at the end of the budget.

    A method binds when its ``mean_late_validation_gain`` exceeds one validation example
    (``1 / validation_size``, the metric's resolution for accuracy): longer training might change its number.
    """
    if "mean_late_validation_gain" not in summary:
        raise ValueError("summary has no mean_late_validation_gain column (runs made before it was recorded)")
    return summary.loc[summary["mean_late_validation_gain"] > 1.0 / validation_size, "label"].tolist()


def _run_one(task: Task, method: Method, protocol: Protocol, phase: str, lr: float, head_lr: float | None, seed: int,
             device: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    model = task.make_model(seed)
    torch.manual_seed(seed)  # adapter initialisation
    model = method.prepare(model, task.target_modules, task.head_modules)
    counts = trainable_parameters(model, task.head_modules)
    config = TrainConfig(
        epochs=protocol.epochs, batch_size=protocol.batch_size, lr=lr, head_lr=head_lr, warmup_ratio=protocol.warmup_ratio,
        weight_decay=protocol.weight_decay, max_grad_norm=protocol.max_grad_norm, seed=seed, device=device,
        metric=task.metric, progress=False,
    )
    states = EpochStates() if phase == "final" else None
    result = fit(model, task.train, task.validation, config, callbacks=[states] if states else ())
    test_metric = test_loss = None
    if states is not None:
        states.restore(model, result.best_epoch)
        test_loss, test_metric = evaluate(model, task.test, task.metric, device, batch_size=protocol.eval_batch_size)
    key = dict(phase=phase, task=task.name, label=method.label, method_id=method.method_id, protocol_id=protocol.protocol_id,
               lr=float(lr), head_lr=None if head_lr is None else float(head_lr), seed=int(seed))
    row = dict(
        **key,
        style=method.style,
        method_kind=method.kind,
        method_spec=method.spec,
        metric_name=task.metric,
        epochs=protocol.epochs,
        batch_size=protocol.batch_size,
        adapter_params=counts["adapter"],
        head_params=counts["head"],
        trainable_params=counts["trainable"],
        selected_on="validation",
        selected_epoch=result.best_epoch,
        validation_metric=result.best_metric,
        last_epoch_validation_metric=result.final_metric,
        late_validation_gain=late_validation_gain([r.metric for r in result.history]),
        test_metric=test_metric,
        test_loss=test_loss,
        smoke=protocol.smoke,
        device=device,
        wall_time_s=result.wall_time_s,
    )
    epochs = [
        dict(**key, epoch=r.epoch, train_loss=r.train_loss, validation_loss=r.eval_loss, validation_metric=r.metric,
             lr_at_epoch_end=r.lr, seconds=r.seconds)
        for r in result.history
    ]
    return row, epochs


# ---------------------------------------------------------------------------------------------
# the protocol
# ---------------------------------------------------------------------------------------------
def select_learning_rates(tuning_runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per method label and grid point, the mean validation score over tuning seeds; ``chosen`` marks the best.

    Means within 1e-12 of the best count as equal; of those the smallest ``(lr, head_lr)`` wins.
    """
    groups: dict[tuple[str, float, float | None], list[float]] = {}
    for row in tuning_runs:
        head = row["head_lr"]
        head = None if head is None or (isinstance(head, float) and math.isnan(head)) else float(head)
        groups.setdefault((row["label"], float(row["lr"]), head), []).append(float(row["validation_metric"]))
    rows = [dict(label=label, lr=lr, head_lr=head, tuning_seeds=len(values), mean_validation_metric=sum(values) / len(values))
            for (label, lr, head), values in groups.items()]
    for label in dict.fromkeys(row["label"] for row in rows):
        candidates = [row for row in rows if row["label"] == label]
        best = max(row["mean_validation_metric"] for row in candidates)
        winner = min((row for row in candidates if row["mean_validation_metric"] >= best - 1e-12),
                     key=lambda row: (row["lr"], row["head_lr"] or 0.0))
        for row in candidates:
            row["chosen"] = row is winner
    return rows


def run_protocol(
    task: Task,
    methods: Sequence[Method],
    protocol: Protocol,
    results_dir: Path | str,
    resume: bool = True,
    device: str = "auto",
    progress: bool = True,
    reference: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> "pd.DataFrame":
    """Tune every method on validation, then run its final seeds and score test once (module docstring).

    Returns this design's final runs (a DataFrame). ``reference``: the label ``summary.csv`` pairs
    against (default: the first method). ``config``: extra provenance (e.g. the experiment's settings).
    ``resume=False`` starts a fresh ``runs.csv``/``epochs.csv`` in ``results_dir``.
    """
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"method labels must be unique, got {labels}")
    reference = labels[0] if reference is None else reference
    require_choice("reference", reference, labels)
    device = resolve_device(device)
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runs = _read_csv(folder / "runs.csv") if resume else []
    epochs = _read_csv(folder / "epochs.csv") if resume else []
    done = {_key(row): row for row in runs}
    design = dict(task=task.name, task_info=task.info, protocol=dataclasses.asdict(protocol), protocol_id=protocol.protocol_id,
                  methods=[dict(label=m.label, style=m.style, method_id=m.method_id, spec=json.loads(m.spec)) for m in methods],
                  reference=reference, **(config or {}))

    def write_provenance(complete: bool) -> None:
        from aurora.results import provenance

        record = provenance({**design, "complete": complete}, device, time.perf_counter() - start)
        _atomic_write_text(folder / "provenance.json", json.dumps(record, indent=2, default=str) + "\n")

    def execute(jobs: list[tuple[str, Method, float, float | None, int]], desc: str) -> list[dict[str, Any]]:
        finished = []
        todo = []
        for job in jobs:
            phase, method, lr, head_lr, seed = job
            key = _key(dict(phase=phase, task=task.name, label=method.label, method_id=method.method_id,
                            protocol_id=protocol.protocol_id, lr=float(lr), head_lr=None if head_lr is None else float(head_lr),
                            seed=int(seed)))
            if key in done:
                finished.append(done[key])
            else:
                todo.append(job)
        for phase, method, lr, head_lr, seed in tqdm(todo, desc=desc, disable=not progress):
            row, rows = _run_one(task, method, protocol, phase, lr, head_lr, seed, device)
            runs.append(row)
            epochs.extend(rows)
            write_csv_atomically(folder / "epochs.csv", epochs)  # epochs first: a run in runs.csv always has its epochs
            write_csv_atomically(folder / "runs.csv", runs)
            done[_key(row)] = row
            finished.append(row)
        return finished

    write_provenance(complete=False)
    tuning_jobs = [("tuning", m, lr, head, seed) for m in methods for lr, head in protocol.grid(m) for seed in protocol.tuning_seeds]
    tuned = execute(tuning_jobs, f"{task.name}: tuning")
    selection = select_learning_rates(tuned)
    write_csv_atomically(folder / "selection.csv", [dict(task=task.name, **row) for row in selection])
    chosen = {row["label"]: (row["lr"], row["head_lr"]) for row in selection if row["chosen"]}
    final_jobs = [("final", m, *chosen[m.label], seed) for seed in protocol.final_seeds for m in methods]
    (folder / "summary.csv").unlink(missing_ok=True)  # absent until it is recomputed from this design's runs
    finals = execute(final_jobs, f"{task.name}: final runs")
    _write_summary(folder, finals, reference)
    write_provenance(complete=True)
    import pandas as pd

    return pd.DataFrame(finals)


def _write_summary(folder: Path, final_rows: list[Mapping[str, Any]], reference: str) -> None:
    import pandas as pd

    frame = pd.DataFrame(final_rows)
    if reference not in set(frame["label"]):
        return
    tables = []
    for task_name, rows in frame.groupby("task", sort=False):
        table = paired_comparison(rows, reference, "test_metric")
        table.insert(0, "task", task_name)
        tables.append(table)
    write_csv_atomically(folder / "summary.csv", pd.concat(tables).to_dict("records"))


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------
def _t_interval(values: Sequence[float]) -> tuple[float, float, float, float]:
    """``(mean, sd, ci_low, ci_high)``: the 95 % t interval of the mean (NaN bounds for fewer than 2 values)."""
    from scipy import stats

    n = len(values)
    mean = float(sum(values) / n)
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def minimum_detectable_difference(sd_difference: float, n: int, power: float = 0.8) -> float:
    """Smallest true paired difference a two-sided 5 % paired t-test detects with ``power``.

    ``(t_{0.975,n-1} + t_{power,n-1}) · sd_diff / √n`` (the usual normal-approximation formula with
    t quantiles; ≈ 2.8 standard errors at 80 % power and large n).
    """
    from scipy import stats

    if n < 2 or not math.isfinite(sd_difference):
        return math.nan
    return float((stats.t.ppf(0.975, n - 1) + stats.t.ppf(power, n - 1)) * sd_difference / math.sqrt(n))


def verdict(ci_low: float, ci_high: float) -> str:
    """``"better"``/``"worse"`` when the 95 % interval of the difference excludes 0, else ``"no detectable difference"``."""
    if math.isfinite(ci_low) and ci_low > 0:
        return "better"
    if math.isfinite(ci_high) and ci_high < 0:
        return "worse"
    return "no detectable difference"


def paired_comparison(runs: "pd.DataFrame", reference_label: str, metric: str = "test_metric") -> "pd.DataFrame":
    """Per method: mean and 95 % t interval of ``metric`` over seeds, and its paired difference to the reference.

    ``runs``: final runs of one task (columns ``label``, ``seed``, ``metric``; optional ``adapter_params``,
    ``lr``, ``head_lr``, ``selected_epoch``, ``epochs``, ``late_validation_gain``: then also
    ``mean_selected_epoch``, ``share_selected_last_epoch`` and ``mean_late_validation_gain``, which say
    whether the epoch budget was long enough). The difference pairs runs with the same seed;
    its columns are ``difference``, ``difference_ci_low``/``_high``, ``paired_seeds``,
    ``minimum_detectable_difference`` (:func:`minimum_detectable_difference`) and ``verdict``
    (:func:`verdict`; ``"reference"`` for the reference itself). Rows keep the order of first appearance.
    """
    import pandas as pd

    if "task" in runs and runs["task"].nunique() > 1:
        raise ValueError(f"runs hold several tasks {sorted(runs['task'].unique())}; compare one task at a time")
    if reference_label not in set(runs["label"]):
        raise ValueError(f"reference_label must be one of {list(dict.fromkeys(runs['label']))}, got {reference_label!r}")
    if runs.duplicated(["label", "seed"]).any():
        raise ValueError("runs has more than one row per (label, seed); pass one design's final runs")
    reference = runs[runs["label"] == reference_label].set_index("seed")[metric].astype(float)
    rows = []
    for label, group in runs.groupby("label", sort=False):
        values = group[metric].astype(float).tolist()
        mean, sd, low, high = _t_interval(values)
        row: dict[str, Any] = dict(label=label, seeds=len(values), mean=mean, std=sd, ci_low=low, ci_high=high)
        for column in ("style", "adapter_params", "head_params", "lr", "head_lr"):
            if column in group:
                row[column] = group[column].iloc[0]
        if "selected_epoch" in group:
            row["mean_selected_epoch"] = float(group["selected_epoch"].mean())
            if "epochs" in group:
                row["share_selected_last_epoch"] = float((group["selected_epoch"] == group["epochs"]).mean())
        if "late_validation_gain" in group:
            row["mean_late_validation_gain"] = float(group["late_validation_gain"].mean())
        paired = group.set_index("seed")[metric].astype(float)
        shared = sorted(set(paired.index) & set(reference.index))
        differences = [float(paired[s] - reference[s]) for s in shared]
        if label == reference_label:
            row.update(difference=0.0, difference_ci_low=0.0, difference_ci_high=0.0, paired_seeds=len(shared),
                       difference_std=0.0, minimum_detectable_difference=math.nan, verdict="reference")
        elif shared:
            d_mean, d_sd, d_low, d_high = _t_interval(differences)
            row.update(difference=d_mean, difference_ci_low=d_low, difference_ci_high=d_high, paired_seeds=len(shared),
                       difference_std=d_sd, minimum_detectable_difference=minimum_detectable_difference(d_sd, len(shared)),
                       verdict=verdict(d_low, d_high))
        else:
            row.update(difference=math.nan, difference_ci_low=math.nan, difference_ci_high=math.nan, paired_seeds=0,
                       difference_std=math.nan, minimum_detectable_difference=math.nan, verdict="no detectable difference")
        rows.append(row)
    return pd.DataFrame(rows)
