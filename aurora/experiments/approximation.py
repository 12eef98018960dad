"""Proposition 2.1 measured: how close does ``x ↦ B σ(A x)`` get to a target update, compared with rank-r LoRA?

Prop. 2.1 compares the *function* ``x ↦ M x`` with ``x ↦ B σ(A x)`` on bounded inputs. We fit both on
input rows and report the relative mean-squared error ``Σ||Mx − f(x)||² / Σ||Mx||²`` on held-out rows:

* ``eckart_young`` — the best rank-r linear error for isotropic inputs, in closed form (``ε_r(M)²/||M||²``;
  matrix targets on Gaussian inputs only);
* ``linear_closed_form`` — the best rank-r linear map on the training rows (reduced-rank regression);
* ``output_bound`` — the floor of *any* map whose outputs lie in an r-dimensional subspace, on the test rows;
* ``lora`` / ``aurora`` — the two adapters fitted with :func:`aurora.theory.fit_adapter_map`, ``A`` started on
  the best linear map's row space (:func:`aurora.theory.linear_warm_start`), so AuroRA starts near LoRA's
  optimum and only has to find something better;
* ``aurora_static`` — the merged ``ΔW = B σ(A)`` fitted to ``M`` itself (relative squared Frobenius error;
  the same number as the isotropic-input error of that matrix, so Gaussian-input rows only).

Targets: random Gaussian ``M`` (flat spectrum), a smooth kernel ``M``, an elementwise nonlinearity of a
low-rank matrix, the weight update ``ΔW = W_ft − W0`` of two query projections of MiniLM fully fine-tuned
on Fine Food reviews (made by :func:`make_real_update`, stored with provenance), and — outside Prop. 2.1,
which is about linear targets — a nonlinear function ``y = U tanh(2 V x)``.

``python -m aurora.experiments.approximation --quick|--full [--make-real-update]`` writes
``data/results/approximation/{rank_sweep,grid_sweep,spectra}.csv``. Chapter: ``book/approximation.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

import aurora
from aurora.plots import book_figure, method_style
from aurora.results import RESULTS_DIR, write_results
from aurora.theory import (
    adapter_map,
    eckart_young_error,
    fit_adapter_map,
    fit_static_update,
    linear_warm_start,
    output_subspace_bound,
    reduced_rank_regression,
    relative_error,
    single_thread,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RESULTS_NAME",
    "REAL_UPDATE_FILE",
    "Settings",
    "QUICK", "SMOKE",
    "FULL",
    "Target",
    "synthetic_targets",
    "load_real_targets",
    "MiniLMFineFoods",
    "minilm_fine_foods",
    "make_real_update",
    "rank_sweep",
    "grid_sweep",
    "run",
    "main",
    "CURVES",
    "rank_table",
    "plot_rank_sweep",
    "plot_spectra",
    "plot_grid_sweep",
]

RESULTS_NAME = "approximation"
REAL_UPDATE_FILE = RESULTS_DIR / RESULTS_NAME / "minilm_query_update.safetensors"


@dataclass(frozen=True)
class Settings:
    """Sizes of one run; :data:`QUICK` takes about 8 minutes on 2 busy CPU cores (mostly the 384-wide MiniLM targets)."""

    dim: int = 32
    n_train: int = 1024
    n_test: int = 4096
    ranks: tuple[int, ...] = (1, 2, 4, 8)
    grid_sizes: tuple[int, ...] = (2, 5, 10, 20)
    grid_rank: int = 2
    steps: int = 300
    learning_rate: float = 2e-2
    real_train_rows: int = 2048
    seed: int = 0


QUICK = Settings()
FULL = Settings(dim=64, n_train=4096, n_test=8192, ranks=(1, 2, 4, 8, 16), grid_sizes=(2, 3, 5, 10, 20, 40), steps=1500, learning_rate=1e-2)
SMOKE = Settings(dim=8, n_train=64, n_test=64, ranks=(1, 2), grid_sizes=(2,), steps=5, real_train_rows=64)
"""Toy sizes: the same code in seconds (the book's quick build runs it next to the committed results)."""


@dataclass
class Target:
    """A target update: a matrix ``M`` (``y = M x``) or, beyond Prop. 2.1, a nonlinear function ``y = f(x)``."""

    name: str
    description: str
    function: Callable[[torch.Tensor], torch.Tensor]
    in_features: int
    matrix: torch.Tensor | None = None  # None for nonlinear targets
    inputs: torch.Tensor | None = None  # real input rows (n, d_in); None: x ~ N(0, I)


def _linear(matrix: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: x @ matrix.T


def synthetic_targets(dim: int, seed: int = 0) -> list[Target]:
    """Four ``dim × dim`` targets with different spectra, and one nonlinear function of a rank-2 projection."""
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(dim, dim, generator=generator) / math.sqrt(dim)
    index = torch.arange(dim, dtype=torch.float32)
    kernel = torch.exp(-((index[:, None] - index[None, :]) ** 2) / (2 * (dim / 8) ** 2))
    left, right = torch.randn(dim, 2, generator=generator), torch.randn(2, dim, generator=generator)
    elementwise = torch.tanh(left @ right / math.sqrt(2))
    up = torch.randn(dim, 2, generator=generator)
    down = torch.linalg.qr(torch.randn(dim, 2, generator=generator))[0].T  # orthonormal rows: V x ~ N(0, I_2)
    nonlinear = Target(
        "nonlinear_function", "y = U tanh(2 V x), U: d×2, V: 2×d orthonormal (not a matrix: outside Prop. 2.1)",
        lambda x: torch.tanh(2 * x @ down.T) @ up.T, dim,
    )
    return [
        Target("gaussian", "M_ij ~ N(0, 1/d): full rank, flat spectrum", _linear(gaussian), dim, gaussian),
        Target("kernel", "M_ij = exp(-(i-j)²/(2(d/8)²)): smooth kernel, fast-decaying spectrum", _linear(kernel), dim, kernel),
        Target("elementwise", "M = tanh(U V / √2), U: d×2, V: 2×d: low rank + elementwise nonlinearity", _linear(elementwise), dim, elementwise),
        nonlinear,
    ]


def load_real_targets(path: Path = REAL_UPDATE_FILE) -> list[Target]:
    """The fine-tuned MiniLM query updates stored by :func:`make_real_update`, once with their real inputs."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; make it with `python -m aurora.experiments.approximation --make-real-update`")
    tensors = load_file(str(path))
    targets = []
    for key in sorted(k for k in tensors if k.endswith(".delta_weight")):
        layer = key.removesuffix(".delta_weight")
        matrix = tensors[key].float()
        inputs = tensors[f"{layer}.inputs"].float()
        short = layer.replace("bert.encoder.", "").replace(".attention.self", "")
        d_in = matrix.shape[1]
        targets.append(Target(f"minilm_{short}", f"ΔW = W_ft − W0 of MiniLM {layer}, x ~ N(0, I)", _linear(matrix), d_in, matrix))
        targets.append(Target(f"minilm_{short}_real_inputs", f"ΔW of MiniLM {layer} on its real input rows", _linear(matrix), d_in, matrix, inputs))
    return targets


def _inputs(target: Target, settings: Settings, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if target.inputs is not None:
        rows = target.inputs[torch.randperm(target.inputs.shape[0], generator=generator)]
        return rows[: settings.real_train_rows], rows[settings.real_train_rows :]
    d = target.in_features
    return torch.randn(settings.n_train, d, generator=generator), torch.randn(settings.n_test, d, generator=generator)


def _aurora_config(rank: int, grid_size: int = 5) -> aurora.AdapterConfig:
    # α = r makes the scaling α/r = 1: the scale is absorbed by B, so it does not change what can be fitted.
    return aurora.AdapterConfig(method="aurora", rank=rank, alpha=float(rank), grid_size=grid_size)


def _parameters(layer: aurora.AdapterLayer) -> int:
    return sum(p.numel() for n, p in layer.named_parameters() if not n.startswith("base_layer."))


def rank_sweep(targets: list[Target], settings: Settings, progress: bool = True) -> list[dict]:
    """Every method at every rank on every target: one row per (target, rank, method)."""
    rows = []
    jobs = [(t, r) for t in targets for r in settings.ranks]
    for target, rank in tqdm(jobs, desc="rank sweep", disable=not progress):
        generator = torch.Generator().manual_seed(settings.seed)
        train_x, test_x = _inputs(target, settings, generator)
        train_y, test_y = target.function(train_x), target.function(test_x)
        d_in, d_out = train_x.shape[1], train_y.shape[1]
        base = dict(target=target.name, inputs="real" if target.inputs is not None else "gaussian", rank=rank, grid_size=5)

        def add(method: str, test_error: float, train_error: float | None = None, parameters: int | None = None) -> None:
            rows.append(dict(base, method=method, test_error=test_error, train_error=train_error, parameters=parameters))

        isotropic_matrix = target.matrix is not None and target.inputs is None  # Eckart–Young is the x ~ N(0, I) value
        if isotropic_matrix:
            add("eckart_young", eckart_young_error(target.matrix, rank, relative=True) ** 2)
        linear = reduced_rank_regression(train_x, train_y, rank)
        add("linear_closed_form", relative_error(test_y, test_x @ linear.T), relative_error(train_y, train_x @ linear.T), rank * (d_in + d_out))
        add("output_bound", output_subspace_bound(test_y, rank))
        for method, config in (("lora", aurora.AdapterConfig(method="lora", rank=rank, alpha=float(rank))), ("aurora", _aurora_config(rank))):
            torch.manual_seed(settings.seed)
            layer = adapter_map(d_in, d_out, config)
            linear_warm_start(layer, train_x, train_y)
            fit = fit_adapter_map(layer, train_x, train_y, test_x, test_y, settings.steps, settings.learning_rate, seed=settings.seed)
            add(method, fit.test_error, fit.train_error, _parameters(layer))
        if isotropic_matrix:
            torch.manual_seed(settings.seed)
            layer = adapter_map(d_in, d_out, _aurora_config(rank))
            error = fit_static_update(layer, target.matrix, settings.steps, settings.learning_rate, seed=settings.seed)
            add("aurora_static", error, error, _parameters(layer))
    return rows


def grid_sweep(targets: list[Target], settings: Settings, progress: bool = True) -> list[dict]:
    """AuroRA at rank ``settings.grid_rank`` for each B-spline grid size, with the rank's linear references."""
    rows = []
    for target in tqdm(targets, desc="grid sweep", disable=not progress):
        generator = torch.Generator().manual_seed(settings.seed)
        train_x, test_x = _inputs(target, settings, generator)
        train_y, test_y = target.function(train_x), target.function(test_x)
        rank = settings.grid_rank
        linear = reduced_rank_regression(train_x, train_y, rank)
        reference = dict(
            linear_closed_form=relative_error(test_y, test_x @ linear.T), output_bound=output_subspace_bound(test_y, rank)
        )
        for grid_size in settings.grid_sizes:
            torch.manual_seed(settings.seed)
            layer = adapter_map(train_x.shape[1], train_y.shape[1], _aurora_config(rank, grid_size))
            linear_warm_start(layer, train_x, train_y)
            fit = fit_adapter_map(layer, train_x, train_y, test_x, test_y, settings.steps, settings.learning_rate, seed=settings.seed)
            rows.append(dict(target=target.name, rank=rank, grid_size=grid_size, test_error=fit.test_error,
                             train_error=fit.train_error, parameters=_parameters(layer), **reference))
    return rows


def spectra(targets: list[Target]) -> list[dict]:
    """Singular values of every matrix target (what Eckart–Young truncates)."""
    rows = []
    for target in targets:
        if target.matrix is None or target.inputs is not None:
            continue
        s = torch.linalg.svdvals(target.matrix.double())
        energy = (s.square().cumsum(0) / s.square().sum()).tolist()
        rows += [dict(target=target.name, index=i + 1, singular_value=float(v), energy_kept=e) for i, (v, e) in enumerate(zip(s, energy))]
    return rows


# ----------------------------------------------------------------------------------------------
# The real target: ΔW of MiniLM query projections after full fine-tuning on Fine Food reviews
# ----------------------------------------------------------------------------------------------


@dataclass
class MiniLMFineFoods:
    """MiniLM cut to its top ``adapted_layers`` layers, with the lower layers' outputs cached per review."""

    model: torch.nn.Module
    train: "torch.utils.data.Dataset"
    test: "torch.utils.data.Dataset"
    adapted_layers: int
    max_length: int


def minilm_fine_foods(n_train: int, n_test: int, adapted_layers: int = 2, max_length: int = 64, seed: int = 0) -> MiniLMFineFoods:
    """Pretrained MiniLM (``aurora.data.load_text_model("minilm", 2)``) and Fine Food reviews, lower layers cached.

    The frozen lower ``6 − adapted_layers`` layers are run once (``cache_lower_layers`` of
    :mod:`aurora.experiments.text_classification`); the model keeps only its top layers and head, and its
    last layer is computed for the [CLS] position only (exact for the logits: the classifier reads nothing else).
    """
    from transformers.utils import logging as transformers_logging

    from aurora.data import load_text_classification, load_text_model, load_tokenizer
    from aurora.experiments.text_classification import TensorDictDataset, cache_lower_layers

    transformers_logging.set_verbosity_error()
    splits = load_text_classification("fine_foods", n_train, n_test, seed=seed)
    tokenizer = load_tokenizer("minilm")
    model = load_text_model("minilm", 2, seed=seed)
    texts = [text for text, _ in splits.train + splits.test]
    encoded = tokenizer(texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    hidden = cache_lower_layers(model, encoded["input_ids"], encoded["attention_mask"], adapted_layers, first_token_only=True)
    labels = torch.tensor([label for _, label in splits.train + splits.test])
    cut = len(splits.train)
    make = lambda part: TensorDictDataset(  # noqa: E731
        inputs_embeds=hidden[part], attention_mask=encoded["attention_mask"][part], labels=labels[part]
    )
    return MiniLMFineFoods(model, make(slice(0, cut)), make(slice(cut, None)), adapted_layers, max_length)


@torch.no_grad()
def _query_inputs(model: torch.nn.Module, dataset: "torch.utils.data.Dataset", names: list[str], rows: int, seed: int) -> dict[str, torch.Tensor]:
    """``rows`` random non-padding token rows entering each query projection ``names``, over ``dataset``."""
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    masks = []
    handles = [
        model.get_submodule(name).register_forward_pre_hook(lambda module, args, name=name: collected[name].append(args[0].detach()))
        for name in names
    ]
    model.eval()
    try:
        for start in range(0, len(dataset), 64):
            batch = [dataset[i] for i in range(start, min(start + 64, len(dataset)))]
            embeds = torch.stack([b["inputs_embeds"] for b in batch])
            mask = torch.stack([b["attention_mask"] for b in batch])
            model(inputs_embeds=embeds, attention_mask=mask)
            masks.append(mask)
    finally:
        for handle in handles:
            handle.remove()
    valid = torch.cat(masks).flatten().bool()
    chosen = torch.randperm(int(valid.sum()), generator=torch.Generator().manual_seed(seed))[:rows]
    return {name: torch.cat(parts).flatten(0, 1)[valid][chosen] for name, parts in collected.items()}


def make_real_update(
    n_train: int = 1024,
    n_test: int = 256,
    epochs: int = 4,
    learning_rate: float = 3e-4,
    head_learning_rate: float = 3e-3,
    adapted_layers: int = 3,
    rows: int = 3072,
    seed: int = 0,
    path: Path = REAL_UPDATE_FILE,
) -> Path:
    """Fully fine-tune the query and value projections of MiniLM's top ``adapted_layers`` layers and the head;
    store the query updates ``ΔW = W_ft − W0``.

    AdamW with App. G's linear schedule (warmup 0.06), batch 16, one learning rate for the projection weights
    and one for the freshly initialised classifier head. (Fine-tuning the queries alone left this model at the
    majority-class accuracy: its [CLS] state needs new values to carry the sentiment.) Writes ``path``
    (safetensors) for every kept layer but the last: ``<layer>.delta_weight`` (fp32, ``(384, 384)``) and
    ``<layer>.inputs`` (fp16, ``rows`` token rows entering that layer on test reviews), with the provenance and
    test accuracy in the metadata. The last layer is left out because only its [CLS] query reaches the logits,
    so its inputs are one row per review.
    """
    from safetensors.torch import save_file
    from torch.utils.data import DataLoader

    from aurora.results import provenance
    from aurora.train import evaluate, linear_warmup_schedule

    start = time.perf_counter()
    data = minilm_fine_foods(n_train, n_test, adapted_layers, seed=seed)
    model = data.model
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    names = [n for n, m in model.named_modules() if n.endswith("attention.self.query")]
    projections = [n for n, m in model.named_modules() if n.endswith(("attention.self.query", "attention.self.value"))]
    weights = [model.get_submodule(name).weight.requires_grad_(True) for name in projections]
    head = [p.requires_grad_(True) for p in model.classifier.parameters()]
    initial = {name: model.get_submodule(name).weight.detach().clone() for name in names}
    loader = DataLoader(data.train, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW([dict(params=weights, lr=learning_rate, weight_decay=0.0),
                                   dict(params=head, lr=head_learning_rate, weight_decay=0.0)])
    schedule = linear_warmup_schedule(optimizer, epochs * len(loader), 0.06)
    test_loader = DataLoader(data.test, batch_size=64)
    accuracy_before = evaluate(model, test_loader)[1]
    model.train()
    for _ in tqdm(range(epochs), desc="fine-tuning MiniLM query and value"):
        for batch in loader:
            logits = model(inputs_embeds=batch["inputs_embeds"], attention_mask=batch["attention_mask"]).logits
            loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(weights + head, 1.0)
            optimizer.step()
            schedule.step()
    accuracy = evaluate(model, test_loader)[1]
    names = names[:-1]  # full-sequence layers only (see above)
    deltas = {name: (model.get_submodule(name).weight.detach() - initial[name]).float().contiguous() for name in names}
    inputs = _query_inputs(model, data.test, names, rows, seed)
    offset = model.config.num_hidden_layers - adapted_layers  # kept layers are re-indexed from 0: use MiniLM's numbering
    layer_names = {name: re.sub(r"layer\.(\d+)\.", lambda m: f"layer.{int(m.group(1)) + offset}.", name) for name in names}
    tensors = {}
    norms = {}
    for name in names:
        tensors[f"{layer_names[name]}.delta_weight"] = deltas[name]
        tensors[f"{layer_names[name]}.inputs"] = inputs[name].half().contiguous()
        norms[layer_names[name]] = float(deltas[name].norm() / initial[name].norm())
    settings = dict(n_train=n_train, n_test=n_test, epochs=epochs, learning_rate=learning_rate, head_learning_rate=head_learning_rate,
                    adapted_layers=adapted_layers, rows=rows, seed=seed, trained="query and value weights of the kept layers + classifier")
    metadata = dict(
        provenance=json.dumps(provenance(settings, "cpu", time.perf_counter() - start)),
        test_accuracy=f"{accuracy:.4f}",
        test_accuracy_before=f"{accuracy_before:.4f}",
        relative_update_norms=json.dumps(norms),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def run(
    settings: Settings = QUICK, include_real: bool = True, progress: bool = True, write: bool = True, results_dir: Path | None = None
) -> dict[str, list[dict]]:
    """All tables of the experiment; writes them to ``data/results/approximation/`` when ``write``."""
    start = time.perf_counter()
    targets = synthetic_targets(settings.dim, settings.seed)
    real = load_real_targets() if include_real and REAL_UPDATE_FILE.is_file() else []
    grid_targets = [t for t in targets if t.name in ("gaussian", "nonlinear_function")] + [t for t in real if t.inputs is not None][:1]
    with single_thread():
        tables = dict(
            rank_sweep=rank_sweep(targets + real, settings, progress),
            grid_sweep=grid_sweep(grid_targets, settings, progress),
            spectra=spectra(targets + real),
        )
    if write:
        config = dict(asdict(settings), real_update=str(REAL_UPDATE_FILE.relative_to(RESULTS_DIR.parent.parent)) if real else None)
        write_results(RESULTS_NAME, tables, config, wall_time_s=time.perf_counter() - start, results_dir=results_dir)
    return tables


# ---------------------------------------------------------------------------------------------
# reading the results: the chapter's tables and figures (book/approximation.md)
# ---------------------------------------------------------------------------------------------

# method column of rank_sweep -> (plot keyword arguments, legend label); the adapters use the book's method styles
CURVES: dict[str, tuple[dict, str]] = {
    "eckart_young": (dict(color="black", linestyle="-", marker=""), "Eckart–Young (closed form)"),
    "linear_closed_form": (dict(color="0.5", linestyle="--", marker=""), "best rank-r linear, fitted"),
    "output_bound": (dict(color="black", linestyle=":", marker=""), "output bound (any map, r dims)"),
    "lora": (method_style("lora"), "LoRA, fitted"),
    "aurora": (method_style("aurora"), "AuroRA B σ(Ax), fitted"),
    "aurora_static": (dict(method_style("moslora"), marker="^"), "AuroRA static B σ(A), fitted to M"),
}


def rank_table(ranks: "pd.DataFrame") -> "pd.DataFrame":
    """Test error per (target, rank) and method, with AuroRA's ratio to Eckart–Young and to the best linear map
    and its distance to the output bound (negative would beat every rank-r map)."""
    table = ranks.pivot_table(index=["target", "rank"], columns="method", values="test_error")
    table["aurora / eckart_young"] = table["aurora"] / table["eckart_young"]
    table["aurora / linear"] = table["aurora"] / table["linear_closed_form"]
    table["aurora - output_bound"] = table["aurora"] - table["output_bound"]
    return table


def plot_rank_sweep(ranks: "pd.DataFrame", target: str) -> Figure:
    """Relative test MSE against rank for one target: the fitted adapters next to the linear limits."""
    rows = ranks[ranks.target == target]
    if rows.empty:
        raise ValueError(f"target must be one of {sorted(set(ranks.target))}; got {target!r}")
    fig, ax = book_figure("single")
    for method, (style, label) in CURVES.items():
        part = rows[rows.method == method].sort_values("rank")
        if len(part):
            ax.plot(part["rank"], part.test_error, markersize=4, label=label, **style)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("rank r")
    ax.set_ylabel("relative MSE (test)")
    ax.set_title(target)
    ax.legend(fontsize=7)
    return fig


def plot_spectra(spectra_table: "pd.DataFrame") -> Figure:
    """Normalised singular values s_i / s_1 of every matrix target (log scale)."""
    fig, ax = book_figure("wide")
    for target, part in spectra_table.groupby("target", sort=False):
        ax.semilogy(part["index"], part.singular_value / part.singular_value.max(), label=target)
    ax.set_xlabel("i")
    ax.set_ylabel("s_i / s_1")
    ax.set_title("singular values of the matrix targets")
    ax.legend(fontsize=7)
    return fig


def plot_grid_sweep(grids: "pd.DataFrame") -> Figure:
    """AuroRA's test error against the spline grid size, one panel per target, with the linear limits."""
    targets = list(dict.fromkeys(grids.target))
    fig, axes = book_figure("wide", 1, len(targets), squeeze=False)
    for ax, target in zip(axes[0], targets):
        part = grids[grids.target == target].sort_values("grid_size")
        ax.plot(part.grid_size, part.test_error, label=f"AuroRA r={part['rank'].iloc[0]}", **method_style("aurora"))
        ax.axhline(part.linear_closed_form.iloc[0], color="0.5", linestyle="--", label="best rank-r linear")
        if part.output_bound.iloc[0] > 1e-9:
            ax.axhline(part.output_bound.iloc[0], color="black", linestyle=":", label="output bound")
        ax.set_xscale("log")
        ax.set_xticks(part.grid_size, [str(g) for g in part.grid_size])
        ax.minorticks_off()
        if part.test_error.max() / part.test_error.min() > 100:
            ax.set_yscale("log")
        ax.set_xlabel("grid size")
        ax.set_title(target, fontsize=9)
    axes[0][0].set_ylabel("relative MSE (test)")
    axes[0][0].legend(fontsize=7)
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes (default; about two minutes on 2 CPU cores)")
    mode.add_argument("--full", action="store_true", help="larger dimensions, more ranks, longer fits")
    parser.add_argument("--make-real-update", action="store_true", help=f"fine-tune MiniLM first and write {REAL_UPDATE_FILE.name}")
    parser.add_argument("--no-real", action="store_true", help="skip the MiniLM targets")
    args = parser.parse_args(argv)
    if args.make_real_update:
        print(f"wrote {make_real_update()}")
    run(FULL if args.full else QUICK, include_real=not args.no_real)


if __name__ == "__main__":
    main()
