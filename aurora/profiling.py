"""Measuring what an adapter costs: interleaved timings, saved-for-backward memory, aten op records.

The probes behind ``benchmarks/adapter_cost.py`` and ``book/cost.md``, usable on any model:

* :func:`interleaved_timings`: rounds that run every step once in a shuffled order, so slow drifts of
  a shared machine hit all steps alike; ratios are taken per round (:func:`ratio_quartiles`).
* :func:`saved_activation_bytes`: the distinct storages autograd keeps for backward
  (``torch.autograd.graph.saved_tensors_hooks``), exact and device independent.
* :func:`dispatched_ops` and :func:`op_profile`: the aten ops a step runs, from ``torch.profiler``.
* Reference forms (:data:`REFERENCE_FORWARDS`) of AuroRA's ANL and of LoRAN's layer, to measure what the
  package's closed-form spline, its single ANL node and LoRAN's fused node buy.
* :func:`ratio_table` and :func:`target_checks`: reading a benchmark table.
"""

from __future__ import annotations

import math
import time
import types
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import loran as _loran
from .config import require_choice
from .layers import AuroraLayer, LoranLayer
from .nonlinear import AdaptiveNonlinearLayer
from .spline import bspline_basis

__all__ = [
    "CLOCKS", "VIEW_OPS", "REFERENCE_FORWARDS", "TARGETS", "synchronize", "interleaved_timings", "quartiles", "ratio_quartiles",
    "saved_activation_bytes", "gradient_bytes", "peak_cuda_step_bytes", "dispatched_ops", "op_profile", "COMPILED_OP",
    "cox_de_boor_forward", "eager_loran_forward", "unfused_loran_forward", "use_reference_forward", "ratio_table", "target_checks",
]

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


# -- timing ------------------------------------------------------------------------------------
def synchronize(device: str | torch.device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def interleaved_timings(
    steps: Mapping[str, Callable[[], None]], repeats: int, warmup: int = 1, min_sample_s: float = 0.05,
    device: str = "cpu", seed: int = 0, clock: str = "wall",
) -> tuple[dict[str, list[float]], int]:
    """Seconds per call of each step: ``repeats`` rounds, each running every step once in a shuffled order.

    ``clock="wall"`` measures elapsed time; ``"cpu"`` the CPU time of this process (CPU only), which time
    slices taken by other processes do not inflate (use it with one torch thread on a shared machine).
    Returns ``(samples, inner)``: each sample averages ``inner`` back-to-back calls (one sync per sample),
    ``inner`` chosen so that the fastest step's sample lasts ``min_sample_s``.
    """
    if clock not in CLOCKS or (clock == "cpu" and not str(device).startswith("cpu")):
        raise ValueError(f"clock must be 'wall', or 'cpu' on the CPU; got clock={clock!r} on device={device!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    now = CLOCKS[clock]
    names = list(steps)
    first_call = {}
    for name in names:
        for _ in range(max(warmup, 1)):
            synchronize(device)
            start = now()
            steps[name]()
            synchronize(device)
            first_call[name] = now() - start
    inner = max(1, math.ceil(min_sample_s / max(min(first_call.values()), 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in names}
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        for index in rng.permutation(len(names)):
            name = names[index]
            synchronize(device)
            start = now()
            for _ in range(inner):
                steps[name]()
            synchronize(device)
            samples[name].append((now() - start) / inner)
    return samples, inner


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """``(q1, median, q3)``."""
    q1, median, q3 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return float(q1), float(median), float(q3)


def ratio_quartiles(times: Sequence[float], reference: Sequence[float]) -> tuple[float, float, float]:
    """Quartiles of the per-round ratios ``times[i] / reference[i]`` (cancels drifts common to a round)."""
    return quartiles([t / u for t, u in zip(times, reference)])


# -- memory ------------------------------------------------------------------------------------
def saved_activation_bytes(forward: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``forward()`` runs.

    Storages of ``exclude`` (parameters, buffers, inputs: memory held anyway) are not counted; views
    of one storage count once.
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = forward()
    del output
    return sum(saved.values())


def gradient_bytes(parameters: Iterable[torch.Tensor]) -> int:
    """Bytes of the ``.grad`` tensors of ``parameters`` (what a step leaves for the optimizer)."""
    return sum(p.grad.numel() * p.grad.element_size() for p in parameters if p.grad is not None)


def peak_cuda_step_bytes(step: Callable[[], None], device: str) -> int | None:
    """``torch.cuda.max_memory_allocated`` over one call of ``step`` minus what was held before; ``None`` off CUDA."""
    if not str(device).startswith("cuda"):
        return None
    step()  # warm-up: first-call allocations (e.g. the cuBLAS workspace) are not the step's
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)


# -- what runs ---------------------------------------------------------------------------------
# aten ops that only make views or metadata (no kernel of their own)
VIEW_OPS = frozenset({
    "aten::view", "aten::_unsafe_view", "aten::reshape", "aten::t", "aten::numpy_T", "aten::transpose", "aten::permute",
    "aten::unsqueeze", "aten::squeeze", "aten::expand", "aten::slice", "aten::select", "aten::as_strided", "aten::alias",
    "aten::unbind", "aten::view_as", "aten::flatten", "aten::unflatten",
    "aten::detach", "aten::lift_fresh", "aten::to", "aten::_to_copy_noop", "aten::chunk", "aten::split", "aten::unfold",
    "aten::empty", "aten::empty_strided", "aten::new_empty_strided", "aten::resolve_conj", "aten::resolve_neg",
})


def _is_top_level(event: Any) -> bool:
    return not (event.cpu_parent is not None and event.cpu_parent.name.startswith("aten::"))


def dispatched_ops(step: Callable[[], None], top_level_only: bool = False) -> list[str]:
    """The aten ops one call of ``step`` runs on this thread, in order (``torch.profiler``), nested ones included
    unless ``top_level_only``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted((e for e in prof.events() if e.name.startswith("aten::")), key=lambda e: e.time_range.start)
    return [e.name for e in events if not top_level_only or _is_top_level(e)]


COMPILED_OP = "inductor::compiled_graph"
"""The name :func:`op_profile` gives to calls of ``torch.compile``'d graphs (LoRAN's elementwise passes), whose kernels
are no aten ops; their time is the graph call's."""


def _op_name(key: str) -> str | None:
    """An aten op's name, :data:`COMPILED_OP` for a compiled graph's call, ``None`` for other profiler events."""
    if key.startswith("aten::"):
        return key
    return COMPILED_OP if key.startswith("## Call CompiledFxGraph") else None


def op_profile(step: Callable[[], None], steps: int = 20, device: str = "cpu", warmup: int = 3) -> list[dict[str, Any]]:
    """Per aten op of ``step`` (and :data:`COMPILED_OP`): calls and self time per call of ``step``, from ``torch.profiler``.

    ``calls_per_step`` counts every dispatch, nested ones included; ``top_level_calls_per_step`` only
    those not issued by another aten op, and ``launches_work`` marks ops that are not mere views
    (a proxy for GPU kernel launches).
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if str(device).startswith("cuda") else [])
    for _ in range(warmup):
        step()
    synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    top_level = Counter(_op_name(e.name) for e in prof.events() if _op_name(e.name) and _is_top_level(e))
    totals: dict[str, list[float]] = {}
    for event in prof.key_averages():
        name = _op_name(event.key)
        if name is not None:
            total = totals.setdefault(name, [0.0, 0.0, 0.0])
            total[0] += event.count
            total[1] += event.self_cpu_time_total
            total[2] += getattr(event, "self_device_time_total", 0.0)
    return [
        {
            "op": name, "calls_per_step": count / steps, "top_level_calls_per_step": top_level[name] / steps,
            "launches_work": name not in VIEW_OPS, "self_cpu_us_per_step": cpu / steps, "self_device_us_per_step": device_us / steps,
        }
        for name, (count, cpu, device_us) in totals.items()
    ]


# -- reference forms of the ANL ----------------------------------------------------------------
def cox_de_boor_forward(anl: AdaptiveNonlinearLayer, z: torch.Tensor) -> torch.Tensor:
    """``σ(z) = F(z) + L(z)`` in plain autograd with ``L`` from the full Cox–de Boor basis (``aurora.bspline_basis``).

    The same function as the ANL's closed form in every spline mode: the curves are evaluated where the ANL
    evaluates them (``anl._points``), each with its row of coefficients, and summed over inputs as the ANL sums.
    """
    out = anl.fixed_part(z) if anl.self_projection is not None else None
    if anl.spline_coefficients is not None:
        coefficients = anl.spline_coefficients.to(z.dtype)
        if anl.spline_mode == "sum":  # curve (j, i) is curve j for every input i
            coefficients = coefficients.unsqueeze(1).expand(anl.rank, anl.rank, -1)
        basis = bspline_basis(anl._points(z), anl.knots, anl.spline_order)  # (..., curves, n)
        spline = (basis * coefficients.reshape(-1, coefficients.shape[-1])).sum(-1)
        if anl.spline_mode != "per_unit":
            spline = spline.unflatten(-1, (anl.rank, anl.rank)).sum(-1)
        out = spline if out is None else out + spline
    assert out is not None
    return out


def eager_loran_forward(layer: LoranLayer, x: torch.Tensor) -> torch.Tensor:
    """LoRAN's fused node with its elementwise passes as eager ops (``LoranSpec.compiled=False``), what compiling them buys."""
    return _loran.loran_linear(x, layer.base_weight(), layer.base_layer.bias, layer.lora_A, layer.lora_B,
                               layer.loran_spec._replace(compiled=False)).to(x.dtype)


def unfused_loran_forward(layer: LoranLayer, x: torch.Tensor) -> torch.Tensor:
    """LoRAN left to autograd: ``W0 x + b`` plus ``x ΔWᵀ`` with ``ΔW`` from plain ops (what :class:`aurora.loran.LoranLinear` fuses)."""
    return layer.base_layer(x) + (x.to(layer.lora_A.dtype) @ layer.delta_weight().T).to(x.dtype)


# reference forms the benchmark compares with the package's: (module class whose forward they replace, forward)
REFERENCE_FORWARDS: dict[str, tuple[type[nn.Module], Callable[..., torch.Tensor]]] = {
    "aurora_cox_de_boor": (AdaptiveNonlinearLayer, cox_de_boor_forward),  # the textbook recursion, autograd
    "aurora_autograd": (AdaptiveNonlinearLayer, AdaptiveNonlinearLayer.autograd_forward),  # closed form, autograd
    "loran_autograd": (LoranLayer, unfused_loran_forward),  # ΔW formed and differentiated by autograd, two GEMMs
    "loran_eager": (LoranLayer, eager_loran_forward),  # the fused node without compiled elementwise passes
}


def use_reference_forward(model: nn.Module, variant: str) -> int:
    """Make every ANL (or LoRAN layer) in ``model`` compute with ``REFERENCE_FORWARDS[variant]``; returns how many.

    Only the ``forward`` of these instances changes (parameters, buffers and state dicts do not); AuroRA layers
    then call their ANL as a module (``AuroraLayer.fused_update = False``) instead of their one-node update.
    """
    require_choice("variant", variant, tuple(REFERENCE_FORWARDS))
    kind, forward = REFERENCE_FORWARDS[variant]
    count = 0
    for module in model.modules():
        if isinstance(module, kind):
            module.forward = types.MethodType(forward, module)  # type: ignore[method-assign]
            count += 1
        if kind is AdaptiveNonlinearLayer and isinstance(module, AuroraLayer):
            module.fused_update = False
    return count


# -- reading a benchmark table -----------------------------------------------------------------
TARGETS = (
    # (what, method, phase, ratio column, bound, devices, rank limit); issues "AuroRA costs what LoRA costs" and 15
    ("AuroRA training step / our LoRA (r ≤ 16), CPU, median", "aurora", "train", "ratio_to_lora", 1.03, ("cpu",), 16),
    ("AuroRA training step / our LoRA (r ≤ 16), CPU, worst case", "aurora", "train", "ratio_to_lora", 1.05, ("cpu",), 16),
    ("AuroRA training step / our LoRA (r = 64), CPU", "aurora", "train", "ratio_to_lora", 1.08, ("cpu",), (64, 64)),
    ("AuroRA training step / our LoRA (r ≤ 16), GPU", "aurora", "train", "ratio_to_lora", 1.03, ("cuda",), 16),
    ("LoRAN training step / full fine-tuning of the same layers", "loran", "train", "ratio_to_full_ft", 1.20, ("cpu", "cuda"), None),
    ("our LoRA training step / PEFT's LoRA, not slower", "peft_lora", "train", "ratio_to_lora", 1.02, ("cpu", "cuda"), None),
    ("our LoRA training step / PEFT's LoRA, either way", "peft_lora", "train", "ratio_to_lora", 0.02, ("cpu", "cuda"), None),
    ("merged AuroRA inference / base model", "aurora", "infer_merged", "ratio_to_base", 1.01, ("cpu", "cuda"), None),
    ("merged LoRA inference / base model", "lora", "infer_merged", "ratio_to_base", 1.01, ("cpu", "cuda"), None),
)


def ratio_table(timings: Any, phase: str, ratio: str, methods: Sequence[str] | None = None) -> Any:
    """``"median ±half-IQR"`` of ``ratio`` per (model, batch, rank) row and method column, for one ``phase``.

    Columns follow ``methods`` (default: the table's own order of methods).
    """
    import pandas as pd

    data = timings[(timings["phase"] == phase) & timings[ratio].notna()]
    present = list(dict.fromkeys(data["method"]))
    methods = [m for m in (methods or present) if m in present]
    half_iqr = (data[f"{ratio}_q3"] - data[f"{ratio}_q1"]) / 2
    cells = data.assign(cell=[f"{m:.3f} ±{h:.3f}" for m, h in zip(data[ratio], half_iqr)])
    table = cells.pivot_table(index=["model", "batch", "rank"], columns="method", values="cell", aggfunc="first")
    return table[methods] if not table.empty else pd.DataFrame()


def target_checks(timings: Any) -> list[dict[str, Any]]:
    """Each target of :data:`TARGETS` measurable on this table's device: median over cases, worst case, met or not.

    A bound ``b > 1`` means ``ratio ≤ b``, a bound ``b < 1`` means ``|ratio - 1| ≤ b``. The rank limit is an upper
    bound or an inclusive ``(low, high)`` range. For PEFT's LoRA the ratio is our LoRA / PEFT's (its
    ``ratio_to_lora``, PEFT / ours, inverted), checked both as "not slower by more than 2 %" and literally.
    """
    device = str(timings["device"].iloc[0]).split(":")[0]
    rows = []
    for what, method, phase, ratio, bound, devices, ranks in TARGETS:
        if device not in devices or ratio not in timings:
            continue
        data = timings[(timings["method"] == method) & (timings["phase"] == phase) & timings[ratio].notna()]
        if ranks is not None:
            low, high = ranks if isinstance(ranks, tuple) else (1, ranks)
            data = data[data["rank"].between(low, high)]
        if data.empty:
            continue
        values = data[ratio].to_numpy(dtype=float)
        if method == "peft_lora":
            values = 1.0 / values  # our LoRA / PEFT's
        if bound < 1:
            deviation = np.abs(values - 1.0)
            median, worst = float(np.median(values)), float(values[np.argmax(deviation)])
            median_met, worst_met = bool(np.median(deviation) <= bound), bool(deviation.max() <= bound)
            limit = f"within ±{bound:.0%}"
        else:
            median, worst = float(np.median(values)), float(values.max())
            median_met, worst_met = median <= bound, worst <= bound
            limit = f"≤ {bound:.2f}"
        rows.append({"target": what, "limit": limit, "cases": len(values), "median over cases": median,
                     "worst case": worst, "median meets it": median_met, "every case meets it": worst_met})
    return rows
