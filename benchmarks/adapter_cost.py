"""What an adapter costs: training-step time, inference time, activation memory and parameters.

The AuroRA paper claims its nonlinear update trains in about the time of LoRA (App. B, Table 7:
15.28 h vs 15.05 h on LLaMA3-8B) and, merged, infers at no extra cost (Eq. 9). This script measures
that, in one run, for the frozen base model, full fine-tuning of the adapted layers, every method of
``aurora`` (``aurora.METHODS``), PEFT's LoRA, DoRA, HiRA and PEANuT, and reference forms that show what
the package's fast paths buy (``aurora.profiling.REFERENCE_FORWARDS``), on backbones of real width
built from configs with random weights (``aurora.counting.BACKBONES``).

    python benchmarks/adapter_cost.py                          # CPU default (about 21 min on 2 quiet cores)
    python benchmarks/adapter_cost.py --threads 1 --clock cpu  # the same on a busy, shared machine
    python benchmarks/adapter_cost.py --full                   # real depths and lengths, on a GPU
    python benchmarks/adapter_cost.py --tiny                   # seconds; a smoke test of the whole pipeline

Shapes (``hidden`` and ``intermediate`` are always those of the real model; the CPU default cuts
depth and tokens so that it runs in minutes on 2 cores, ``--full`` restores them):

============  =========================  ==========================  ==========================  ===============
backbone      width                      CPU default                 ``--full``                  adapted (paper)
============  =========================  ==========================  ==========================  ===============
roberta-base  768, 12 heads, FFN 3072    1 of 12 layers, seq 128,    12 layers, seq 128,         query, value
                                         r 2-64 at batch 2,          r 2-64 at batch 32,         (Table 1)
                                         batch 1, 8 at r 2           batch 8, 128 at r 2
vit-base      768, 12 heads, FFN 3072    1 of 12 layers, 197 tokens  12 layers, 197 tokens       query, value
                                         (224² px), r 2, 16 at       r 2-64 at batch 64,         (Table 3)
                                         batch 1, batch 4 at r 2     batch 8, 128 at r 2
llama-block   4096, 32/8 heads,          1 block, seq 16, r 2 at     1 block, seq 512, r 2-64    q, k, v, up,
              FFN 14336                  batch 1                     at batch 4, batch 1, 16     down (Table 2)
============  =========================  ==========================  ==========================  ===============

Per (model, rank, batch) case and row of :data:`VARIANTS`:

* ``train``: one training step = trainable grads set to None, forward, ``mean()`` of the last hidden
  state, backward. ``base`` (no adapter) backpropagates to its input instead; ``full_ft`` trains the
  adapted layers' weights and biases in full (LoRAN's floor: it pays the weight-sized gradient too).
* ``infer_unmerged`` / ``infer_merged``: forward under ``torch.inference_mode()`` before and after
  ``aurora.merge(model, "static")`` (PEFT: ``merge_adapter()``).
* Timing (``aurora.profiling.interleaved_timings``): the rows of a case share one set of frozen
  weights and run round after round in a shuffled order (``--repeats`` rounds; training and merged inference
  three times as many, :data:`ROUNDS_FACTOR`); ratios are medians (and quartiles) of the per-round ratios. ``--clock cpu`` times this process's CPU time (with ``--threads 1`` on a busy machine).
* Memory: ``saved_activation_bytes`` (what autograd keeps for backward, parameters and inputs
  excluded), ``gradient_bytes`` (the ``.grad`` tensors a step leaves), ``workspace_bytes`` (LoRAN's
  shared scratch matrices, ``aurora.loran.workspace_bytes``), ``cuda_peak_step_bytes`` on CUDA.
* ``dispatched_ops``, ``same_ops_as_base`` (inference): the aten ops of one forward (``torch.profiler``)
  and whether they are exactly the base model's.

Outputs (``aurora.results.write_results``) in ``data/results/benchmark/``: ``timings.csv``,
``layer_timings.csv`` (training step of one adapted 768-wide layer), ``loran_tokens.csv`` (LoRAN against full
fine-tuning of one 4096-wide layer at 16, 128 and 512 tokens), ``profile.csv`` (aten ops of that
step), ``memory_vs_grid.csv``, ``provenance.json`` and ``adapter_cost.png``. Chapter: ``book/cost.md``.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from tqdm import tqdm

import aurora
from aurora import loran, profiling
from aurora.config import require_choice
from aurora.counting import BACKBONES
from aurora.results import write_results

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)  # peft on transformers 5

RESULT_NAME = "benchmark"
FIGURE_NAME = "adapter_cost.png"
PHASES = ("train", "infer_unmerged", "infer_merged")
REFERENCES = ("lora", "base", "full_ft")  # ratio_to_<reference> columns


# -- the rows ----------------------------------------------------------------------------------
def shared_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` that shares its (frozen) parameters, so variants cost no weight memory."""
    return copy.deepcopy(model, memo={id(p): p for p in model.parameters()})


def _adapted(method: str, reference: str | None = None) -> Callable[[nn.Module, int, list[str]], nn.Module]:
    def build(base: nn.Module, rank: int, targets: list[str]) -> nn.Module:
        model = shared_copy(base)
        aurora.add_adapters(model, aurora.AdapterConfig(method=method, rank=rank, alpha=2.0 * rank, target_modules=targets))
        if reference is not None:
            profiling.use_reference_forward(model, reference)
        return model

    return build


def _peft(kind: str) -> Callable[[nn.Module, int, list[str]], nn.Module]:
    def build(base: nn.Module, rank: int, targets: list[str]) -> nn.Module:
        import peft

        config = {
            "lora": lambda: peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0),
            "dora": lambda: peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0, use_dora=True),
            "hira": lambda: peft.HiraConfig(r=rank, target_modules=targets),
            "peanut": lambda: peft.PeanutConfig(r=rank, target_modules=targets),
        }[kind]()
        return peft.get_peft_model(shared_copy(base), config)

    return build


def _full_fine_tuning(base: nn.Module, rank: int, targets: list[str]) -> nn.Module:
    """``base`` with the target layers' weights and biases trainable (own copies; the rest shared and frozen)."""
    model = shared_copy(base)
    for name in aurora.linear_module_names(model):
        if any(name == t or name.endswith("." + t) for t in targets):
            layer = model.get_submodule(name)
            layer.weight = nn.Parameter(layer.weight.detach().clone())
            if layer.bias is not None:
                layer.bias = nn.Parameter(layer.bias.detach().clone())
    return model


@dataclass(frozen=True)
class Variant:
    """One row of the benchmark: how to build it on the shared base, and how it merges."""

    label: str
    build: Callable[[nn.Module, int, list[str]], nn.Module] | None  # None: the base model itself
    family: str = "aurora"  # "aurora" | "peft" | "none" (how it merges)
    phases: tuple[str, ...] = PHASES


AURORA_LABELS = {"lora": "LoRA (ours)", "moslora": "MoSLoRA", "aurora": "AuroRA", "loran": "LoRAN (fused node)", "dora": "DoRA (ours)"}
VARIANTS: dict[str, Variant] = {
    "base": Variant("base (no adapter; grads to the input)", None, "none"),
    "full_ft": Variant("full fine-tuning of the adapted layers", _full_fine_tuning, "none", ("train",)),
    **{m: Variant(AURORA_LABELS.get(m, m), _adapted(m)) for m in aurora.METHODS},
    "aurora_cox_de_boor": Variant("AuroRA, Cox–de Boor basis (reference)", _adapted("aurora", "aurora_cox_de_boor")),
    "loran_autograd": Variant("LoRAN, ΔW through autograd (reference)", _adapted("loran", "loran_autograd"), phases=("train",)),
    "peft_lora": Variant("LoRA (PEFT)", _peft("lora"), "peft"),
    "peft_dora": Variant("DoRA (PEFT, use_dora=True)", _peft("dora"), "peft"),
    "peft_hira": Variant("HiRA (PEFT)", _peft("hira"), "peft"),
    "peft_peanut": Variant("PEANuT (PEFT)", _peft("peanut"), "peft"),
}
DEFAULT_VARIANTS = tuple(v for v in VARIANTS if v != "loran_autograd")  # the reference LoRAN only in the layer rows
# one adapted layer: the fast paths against their reference forms
LAYER_VARIANTS = ("base", "full_ft", "lora", "aurora", "aurora_autograd", "aurora_cox_de_boor", "loran", "loran_eager", "loran_autograd")
PROFILE_VARIANTS = ("lora", "full_ft", "aurora", "aurora_autograd", "aurora_cox_de_boor", "loran", "loran_eager", "loran_autograd")
GRID_VARIANTS = ("lora", "aurora", "aurora_autograd", "aurora_cox_de_boor")


def build_variant(base: nn.Module, variant: str, rank: int, targets: list[str]) -> nn.Module:
    """``base`` (shared weights) with the row ``variant`` at ``rank``; ``"base"`` returns ``base``."""
    require_choice("variant", variant, tuple(VARIANTS))
    build = VARIANTS[variant].build
    return base if build is None else build(base, rank, targets)


def trainable_tensors(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def merge_variant(model: nn.Module, variant: str) -> None:
    family = VARIANTS[variant].family
    if family == "peft":
        model.merge_adapter()
    elif family == "aurora":
        aurora.merge(model, strategy="static")


def unmerge_variant(model: nn.Module, variant: str) -> None:
    family = VARIANTS[variant].family
    if family == "peft":
        model.unmerge_adapter()
    elif family == "aurora":
        aurora.unmerge(model)


# -- settings ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sweep:
    """One backbone's cases: ``ranks`` at ``batch``, and ``batch_sizes`` at ``batch_sweep_rank``."""

    backbone: str
    layers: int
    seq_len: int
    ranks: tuple[int, ...]
    batch: int
    batch_sizes: tuple[int, ...] = ()
    batch_sweep_rank: int = 2

    def cases(self) -> list[tuple[int, int]]:
        """``(rank, batch)`` pairs, rank sweep first, without duplicates."""
        pairs = [(rank, self.batch) for rank in self.ranks] + [(self.batch_sweep_rank, b) for b in self.batch_sizes]
        return list(dict.fromkeys(pairs))


@dataclass
class Settings:
    """Everything a run depends on (written to provenance.json)."""

    sweeps: list[Sweep]
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    phases: tuple[str, ...] = PHASES
    device: str = "cpu"
    dtype: str = "float32"
    clock: str = "wall"
    repeats: int = 5
    warmup: int = 1
    min_sample_s: float = 0.05
    seed: int = 0
    profile_tokens: int = 512
    profile_width: int = 768
    profile_rank: int = 2
    grid_sizes: tuple[int, ...] = (5, 10, 20, 50)
    token_width: int = 4096  # the LLaMA-style width of LoRAN's token sweep (loran_tokens.csv)
    token_counts: tuple[int, ...] = (16, 128, 512)
    extra: dict[str, Any] = field(default_factory=dict)


# timed rounds per phase, in units of --repeats: training carries the finest targets (AuroRA within 3-5 % of LoRA,
# on a shared machine whose single steps scatter by about ±10 %); merged inference is cheap and its target (1 %) fine
ROUNDS_FACTOR = {"train": 3, "infer_unmerged": 1, "infer_merged": 3}
CPU_SWEEPS = [
    Sweep("roberta-base", layers=1, seq_len=128, ranks=(2, 8, 16, 64), batch=2, batch_sizes=(1, 8)),
    Sweep("vit-base", layers=1, seq_len=197, ranks=(2, 16), batch=1, batch_sizes=(4,)),
    Sweep("llama-block", layers=1, seq_len=16, ranks=(2,), batch=1),
]
FULL_SWEEPS = [
    Sweep("roberta-base", layers=12, seq_len=128, ranks=(2, 4, 8, 16, 32, 64), batch=32, batch_sizes=(8, 128)),
    Sweep("vit-base", layers=12, seq_len=197, ranks=(2, 4, 8, 16, 32, 64), batch=64, batch_sizes=(8, 128)),
    Sweep("llama-block", layers=1, seq_len=512, ranks=(2, 8, 16, 32, 64), batch=4, batch_sizes=(1, 16)),
]
TINY_SWEEPS = [
    Sweep("tiny-roberta", layers=1, seq_len=8, ranks=(2, 4), batch=2),
    Sweep("tiny-llama", layers=1, seq_len=8, ranks=(2,), batch=1, batch_sizes=(3,)),
]


# -- one case ----------------------------------------------------------------------------------
def training_step(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> Callable[[], None]:
    """A closure running one forward+backward step (grads of the trainable tensors reset first)."""
    trainable = trainable_tensors(model) + [x for x in inputs.values() if x.requires_grad]

    def step() -> None:
        for tensor in trainable:
            tensor.grad = None
        model(**inputs).last_hidden_state.mean().backward()

    return step


def inference_step(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> Callable[[], None]:
    def step() -> None:
        with torch.inference_mode():
            model(**inputs)

    return step


def memory_info(model: nn.Module, inputs: Mapping[str, torch.Tensor], device: str) -> dict[str, Any]:
    """Trainable parameters and the memory columns of one training step of ``model``."""
    held = [*model.parameters(), *model.buffers(), *inputs.values()]
    step = training_step(model, inputs)
    loran.clear_workspace()
    step()
    info = {
        "trainable_params": sum(p.numel() for p in trainable_tensors(model)),
        "saved_activation_bytes": profiling.saved_activation_bytes(lambda: model(**inputs).last_hidden_state.mean(), held),
        "gradient_bytes": profiling.gradient_bytes(trainable_tensors(model)),
        "workspace_bytes": loran.workspace_bytes(),
        "cuda_peak_step_bytes": profiling.peak_cuda_step_bytes(step, device),
    }
    loran.clear_workspace()
    return info


def run_case(sweep: Sweep, rank: int, batch: int, base: nn.Module, settings: Settings) -> list[dict[str, Any]]:
    """All phases of all rows for one (backbone, rank, batch): rows of ``timings.csv``."""
    backbone = BACKBONES[sweep.backbone]
    device = settings.device
    targets = backbone.target_modules(base)
    models = {v: build_variant(base, v, rank, targets).to(device) for v in settings.variants}
    inputs = backbone.inputs(batch, sweep.seq_len, device, requires_grad=False, seed=settings.seed, dtype=getattr(torch, settings.dtype))
    base_inputs = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    inputs_of = {v: (base_inputs if v == "base" else inputs) for v in models}
    for model in models.values():
        model.train()
    info = {v: memory_info(model, inputs_of[v], device) for v, model in models.items()}
    samples: dict[str, tuple[dict[str, list[float]], int]] = {}
    op_info: dict[str, dict[str, dict[str, Any]]] = {}
    for phase in settings.phases:
        in_phase = {v: m for v, m in models.items() if phase in VARIANTS[v].phases}
        if phase == "train":
            for model in in_phase.values():
                model.train()
            steps = {v: training_step(model, inputs_of[v]) for v, model in in_phase.items()}
        else:
            for model in in_phase.values():
                model.eval()
            if phase == "infer_merged":
                for v, model in in_phase.items():
                    merge_variant(model, v)
            steps = {v: inference_step(model, inputs) for v, model in in_phase.items()}
            ops = {v: profiling.dispatched_ops(step) for v, step in steps.items()}
            op_info[phase] = {v: {"dispatched_ops": len(o), "same_ops_as_base": o == ops["base"] if "base" in ops else None}
                              for v, o in ops.items()}
        try:
            samples[phase] = profiling.interleaved_timings(
                steps, settings.repeats * ROUNDS_FACTOR[phase], settings.warmup,
                settings.min_sample_s, device, settings.seed, settings.clock,
            )
        finally:
            if phase == "infer_merged":
                for v, model in reversed(list(in_phase.items())):
                    unmerge_variant(model, v)
    loran.clear_workspace()
    rows = []
    tokens = backbone.tokens_per_example(sweep.seq_len)
    for phase, (per_variant, inner) in samples.items():
        for variant, times in per_variant.items():
            q1, median, q3 = profiling.quartiles(times)
            row: dict[str, Any] = {
                "model": sweep.backbone, "layers": sweep.layers, "seq_len": tokens, "batch": batch, "tokens": batch * tokens,
                "rank": rank, "method": variant, "phase": phase, "median_ms": 1e3 * median, "q1_ms": 1e3 * q1, "q3_ms": 1e3 * q3,
                "repeats": len(times), "inner": inner,
            }
            for reference in REFERENCES:
                r1, rm, r3 = profiling.ratio_quartiles(times, per_variant[reference]) if reference in per_variant else (None,) * 3
                row |= {f"ratio_to_{reference}": rm, f"ratio_to_{reference}_q1": r1, f"ratio_to_{reference}_q3": r3}
            row |= info[variant] | op_info.get(phase, {}).get(variant, {"dispatched_ops": None, "same_ops_as_base": None})
            row |= {"frozen_params": sum(p.numel() for p in base.parameters()), "dtype": settings.dtype,
                    "clock": settings.clock, "device": device}
            rows.append(row)
    return rows


# -- one adapted layer ---------------------------------------------------------------------------
def single_layer(variant: str, width: int, rank: int, grid_size: int = 5, device: str = "cpu") -> nn.Module:
    """One frozen ``nn.Linear(width, width)`` named ``query`` with the row ``variant`` (not PEFT's) applied."""
    allowed = [v for v, row in VARIANTS.items() if row.family != "peft"] + list(profiling.REFERENCE_FORWARDS)
    require_choice("variant", variant, tuple(dict.fromkeys(allowed)))
    holder = nn.Sequential()
    holder.add_module("query", nn.Linear(width, width, device=device))
    holder.requires_grad_(False)
    if variant == "base":
        return holder
    if variant == "full_ft":
        return _full_fine_tuning(holder, rank, ["query"])
    reference = variant if variant in profiling.REFERENCE_FORWARDS else None
    method = variant.split("_")[0] if reference else variant
    aurora.add_adapters(holder, aurora.AdapterConfig(method=method, rank=rank, alpha=2.0 * rank, target_modules=["query"], grid_size=grid_size))
    if reference:
        profiling.use_reference_forward(holder, reference)
    return holder


def layer_step(layer: nn.Module, x: torch.Tensor, to_input: bool) -> Callable[[], None]:
    inputs = x.clone().requires_grad_(to_input)
    trainable = trainable_tensors(layer) + ([inputs] if to_input else [])

    def step() -> None:
        for tensor in trainable:
            tensor.grad = None
        layer(inputs).mean().backward()

    return step


def layer_timing_rows(settings: Settings, ranks: Sequence[int] = (2, 16)) -> list[dict[str, Any]]:
    """Training-step time of one adapted layer per row of :data:`LAYER_VARIANTS`, interleaved."""
    device = settings.device
    x = torch.randn(settings.profile_tokens, settings.profile_width, generator=torch.Generator().manual_seed(settings.seed)).to(device)
    rows = []
    for rank in ranks:
        steps = {v: layer_step(single_layer(v, settings.profile_width, rank, device=device), x, v == "base") for v in LAYER_VARIANTS}
        rows += interleaved_rows(steps, settings, max(settings.repeats, 5) * 3, settings.warmup + 2, ("lora", "full_ft"), "us",
                                 {"rank": rank, "tokens": settings.profile_tokens, "width": settings.profile_width})
    loran.clear_workspace()
    return rows


def interleaved_rows(
    steps: Mapping[str, Callable[[], None]], settings: Settings, rounds: int, warmup: int, references: Sequence[str], unit: str,
    keys: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One row per step of an interleaved timing: ``keys``, median and quartiles in ``unit`` ("us" | "ms"), and the
    per-round ratios to each of ``references``."""
    scale = {"us": 1e6, "ms": 1e3}[unit]
    samples, inner = profiling.interleaved_timings(steps, rounds, warmup, settings.min_sample_s, settings.device, settings.seed, settings.clock)
    rows = []
    for variant, times in samples.items():
        q1, median, q3 = profiling.quartiles(times)
        row = {"variant": variant, **keys, f"median_{unit}": scale * median, f"q1_{unit}": scale * q1, f"q3_{unit}": scale * q3}
        for reference in references:
            r1, rm, r3 = profiling.ratio_quartiles(times, samples[reference])
            row |= {f"ratio_to_{reference}": rm, f"ratio_to_{reference}_q1": r1, f"ratio_to_{reference}_q3": r3}
        rows.append(row | {"repeats": len(times), "inner": inner, "clock": settings.clock, "device": settings.device})
    return rows


def loran_token_rows(settings: Settings, rank: int = 2) -> list[dict[str, Any]]:
    """Training step of one ``token_width``-wide layer inside a network (gradient to its input too), LoRAN against full
    fine-tuning and LoRA, per token count: LoRAN's elementwise passes over the weight are fixed, the GEMMs grow with
    the tokens."""
    device, width = settings.device, settings.token_width
    rows = []
    for tokens in settings.token_counts:
        x = torch.randn(tokens, width, generator=torch.Generator().manual_seed(settings.seed)).to(device)
        steps = {v: layer_step(single_layer(v, width, rank, device=device), x, True) for v in ("full_ft", "lora", "loran")}
        rows += interleaved_rows(steps, settings, settings.repeats * ROUNDS_FACTOR["train"], settings.warmup + 1, ("full_ft",), "ms",
                                 {"rank": rank, "tokens": tokens, "width": width})
        del steps
        loran.clear_workspace()
    return rows


def profile_rows(settings: Settings) -> list[dict[str, Any]]:
    """The aten ops of one training step of one adapted layer, per row of :data:`PROFILE_VARIANTS`."""
    device = settings.device
    x = torch.randn(settings.profile_tokens, settings.profile_width, generator=torch.Generator().manual_seed(settings.seed)).to(device)
    rows = []
    for variant in PROFILE_VARIANTS:
        step = layer_step(single_layer(variant, settings.profile_width, settings.profile_rank, device=device), x, False)
        rows += [{"method": variant, **op, "tokens": settings.profile_tokens, "width": settings.profile_width,
                  "rank": settings.profile_rank, "device": device} for op in profiling.op_profile(step, device=device)]
    loran.clear_workspace()
    return rows


def memory_vs_grid_rows(settings: Settings) -> list[dict[str, Any]]:
    """Saved-for-backward bytes of one adapted layer versus ``grid_size``, next to the basis tensor's size."""
    tokens, width, rank = settings.profile_tokens, settings.profile_width, settings.profile_rank
    x = torch.randn(tokens, width, generator=torch.Generator().manual_seed(settings.seed))
    rows = []
    for grid_size in settings.grid_sizes:
        for variant in GRID_VARIANTS:
            layer = single_layer(variant, width, rank, grid_size=grid_size)
            rows.append({
                "method": variant, "grid_size": grid_size, "tokens": tokens, "width": width, "rank": rank,
                "saved_bytes": profiling.saved_activation_bytes(lambda: layer(x), [*layer.parameters(), *layer.buffers(), x]),
                "basis_bytes": tokens * rank * aurora.num_bases(grid_size, 3) * x.element_size(),
            })
    return rows


# -- command line ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--full", action="store_true", help="real depths and sequence lengths (GPU)")
    preset.add_argument("--tiny", action="store_true", help="toy widths: a few seconds, for tests")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--models", nargs="+", choices=sorted(BACKBONES), help="only these backbones of the preset")
    parser.add_argument("--ranks", nargs="+", type=int, help="override the rank sweep of every backbone")
    parser.add_argument("--batch-sizes", nargs="+", type=int, help="override the batch sweep (at rank 2)")
    parser.add_argument("--methods", nargs="+", choices=list(VARIANTS), default=list(DEFAULT_VARIANTS),
                        help="rows to run (base, full_ft and lora are always added: the ratios refer to them)")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default 5 CPU, 10 CUDA, 2 --tiny)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per row before timing")
    parser.add_argument("--min-sample-s", type=float, default=None, help="shortest timed sample (default 0.05 s CPU, 0.1 s CUDA, 0 --tiny)")
    parser.add_argument("--results-dir", type=Path, default=None, help="parent folder of benchmark/ (default data/results)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="dtype of the frozen backbone and its inputs (adapters stay float32, as in aurora and PEFT)")
    parser.add_argument("--clock", choices=sorted(profiling.CLOCKS), default="wall",
                        help="wall: elapsed time (default); cpu: this process's CPU time, robust on a shared machine with --threads 1")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device must be 'cpu' when CUDA is unavailable; got {device!r}")
    preset = FULL_SWEEPS if args.full else TINY_SWEEPS if args.tiny else CPU_SWEEPS
    sweeps = preset
    if args.models:
        sweeps = [s for s in preset if s.backbone in args.models]
        if not sweeps:
            raise ValueError(f"--models {args.models} has none of this preset's backbones {[s.backbone for s in preset]}")
    if args.ranks:
        sweeps = [replace(s, ranks=tuple(args.ranks)) for s in sweeps]
    if args.batch_sizes:
        sweeps = [replace(s, batch_sizes=tuple(args.batch_sizes)) for s in sweeps]
    if any(r < 1 for s in sweeps for r in s.ranks) or any(b < 1 for s in sweeps for b in s.batch_sizes):
        raise ValueError("ranks and batch sizes must be integers >= 1")
    if args.clock == "cpu" and not device.startswith("cpu"):
        raise ValueError(f"clock must be 'wall' on {device!r}: CPU time does not see GPU work")
    if args.repeats is not None and args.repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {args.repeats}")
    variants = tuple(dict.fromkeys(["base", "full_ft", "lora", *args.methods]))
    settings = Settings(
        sweeps=sweeps, variants=variants, phases=tuple(dict.fromkeys(args.phases)), device=device, dtype=args.dtype, clock=args.clock,
        repeats=args.repeats or (2 if args.tiny else 10 if device.startswith("cuda") else 5), warmup=args.warmup,
        min_sample_s=args.min_sample_s if args.min_sample_s is not None else 0.0 if args.tiny else 0.1 if device.startswith("cuda") else 0.05,
        seed=args.seed,
    )
    if args.tiny:
        settings = replace(settings, profile_tokens=16, profile_width=32, grid_sizes=(5, 50), token_width=32, token_counts=(4, 16))
    settings.extra = {"preset": "full" if args.full else "tiny" if args.tiny else "cpu-default", "results_dir": args.results_dir}
    return settings


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark; returns the folder with the tables and the figure."""
    settings = parse_args(argv)
    torch.manual_seed(settings.seed)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    cases = [(sweep, rank, batch) for sweep in settings.sweeps for rank, batch in sweep.cases()]
    rows: list[dict[str, Any]] = []
    bases: dict[str, nn.Module] = {}
    with tqdm(cases, desc="adapter cost", unit="case") as progress:
        for sweep, rank, batch in progress:
            progress.set_postfix_str(f"{sweep.backbone} r={rank} b={batch}")
            if sweep.backbone not in bases:
                bases.clear()  # keep one backbone in memory at a time
                torch.manual_seed(settings.seed)
                bases[sweep.backbone] = BACKBONES[sweep.backbone].build(sweep.layers).to(settings.device, getattr(torch, settings.dtype))
            rows += run_case(sweep, rank, batch, bases[sweep.backbone], settings)
    bases.clear()
    tables = {"timings": rows, "layer_timings": layer_timing_rows(settings), "loran_tokens": loran_token_rows(settings),
              "profile": profile_rows(settings),
              "memory_vs_grid": memory_vs_grid_rows(settings)}
    config = {
        "preset": settings.extra["preset"],
        "sweeps": [s.__dict__ for s in settings.sweeps],
        "methods": list(settings.variants), "labels": {v: VARIANTS[v].label for v in settings.variants},
        "phases": list(settings.phases), "repeats": settings.repeats, "rounds_factor": ROUNDS_FACTOR,
        "warmup": settings.warmup, "min_sample_s": settings.min_sample_s, "seed": settings.seed,
        "torch_threads": torch.get_num_threads(), "dtype": settings.dtype, "clock": settings.clock,
        "profile": {"tokens": settings.profile_tokens, "width": settings.profile_width, "rank": settings.profile_rank},
        "grid_sizes": list(settings.grid_sizes),
        "loran_tokens": {"width": settings.token_width, "tokens": list(settings.token_counts)},
        # other processes compete for the CPU when the 1-minute load average exceeds the core count
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0], "cpu_count": os.cpu_count()},
    }
    folder = write_results(RESULT_NAME, tables, config, device=settings.device,
                           wall_time_s=round(time.perf_counter() - started, 1), results_dir=settings.extra["results_dir"])
    import pandas as pd

    from aurora.plots import adapter_cost_figure

    adapter_cost_figure(pd.read_csv(folder / "timings.csv"), config["labels"]).savefig(folder / FIGURE_NAME)
    print(f"wrote {folder} in {time.perf_counter() - started:.0f} s")
    return folder


if __name__ == "__main__":
    main()
