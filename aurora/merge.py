"""Merging adapters into the base weights for inference (Algorithm 1, App. B) and measuring the cost.

LoRA, MoSLoRA, LoRAN and AuroRA-S (``form="static"``) are linear in ``x``, so their merge is exact.
AuroRA's dynamic form ``s · B σ(A x)`` is not: no matrix reproduces it for every ``x``. Strategies:

* ``"static"`` — the paper's ``ΔW = s · B σ(A)`` (σ on each column of ``A``). Note that
  ``σ(A) x ≠ σ(A x)``, and that with ``σ(0) ≠ 0`` (the spline term) ``ΔW x`` carries
  ``s · B σ(0) · Σ_j x_j``: the offset is multiplied by the sum of the input's entries.
* ``"linearized"`` — first-order Taylor expansion at ``z = 0``: ``σ(z) ≈ σ(0) + J z`` gives
  ``ΔW = s · B J A`` and a bias ``Δb = s · B σ(0)``; exact where ``A x`` stays small.
* ``"least_squares"`` — fit ``σ(z) ≈ G z + c`` by least squares on ``z = A x`` for calibration inputs
  ``x`` of that layer (see :func:`collect_calibration_inputs`): ``ΔW = s · B G A``, ``Δb = s · B c``.
  It is the best merge of that form on the calibration distribution.

Chapter: ``book/static_merge.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn

from .config import require_choice
from .inject import adapter_layers
from .layers import AdapterLayer, AuroraLayer

__all__ = ["MERGE_STRATEGIES", "LayerMergeReport", "MergeReport", "merge_update", "merge", "unmerge", "collect_calibration_inputs"]

MERGE_STRATEGIES = ("static", "linearized", "least_squares")


@dataclass
class LayerMergeReport:
    """How well one layer's merged update reproduces its training-time update on calibration inputs."""

    name: str
    method: str
    strategy: str
    exact: bool
    relative_gap: float | None  # ||Δh_dynamic - Δh_merged|| / ||Δh_dynamic|| on calibration inputs


@dataclass
class MergeReport:
    layers: list[LayerMergeReport]

    @property
    def max_relative_gap(self) -> float | None:
        gaps = [layer.relative_gap for layer in self.layers if layer.relative_gap is not None]
        return max(gaps) if gaps else None

    def __str__(self) -> str:
        rows = [f"{'layer':<60} {'method':<8} {'strategy':<14} {'exact':<6} relative gap"]
        for layer in self.layers:
            gap = "n/a (no calibration)" if layer.relative_gap is None else f"{layer.relative_gap:.3e}"
            rows.append(f"{layer.name:<60} {layer.method:<8} {layer.strategy:<14} {str(layer.exact):<6} {gap}")
        return "\n".join(rows)


def _is_exact(layer: AdapterLayer) -> bool:
    return not (isinstance(layer, AuroraLayer) and layer.form == "dynamic")


@torch.no_grad()
def merge_update(
    layer: AdapterLayer, strategy: str = "static", inputs: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(ΔW, Δb)`` that ``strategy`` folds into ``layer``; ``inputs`` are ``(n, d_in)`` calibration rows."""
    require_choice("strategy", strategy, MERGE_STRATEGIES)
    if _is_exact(layer) or strategy == "static":
        return layer.delta_weight(), None
    assert isinstance(layer, AuroraLayer)
    anl, down, up, s = layer.anl, layer.lora_A, layer.lora_B, layer.scaling
    if strategy == "linearized":
        zero = torch.zeros(layer.rank, dtype=down.dtype, device=down.device)
        jacobian = torch.func.jacrev(anl)(zero)  # (r, r): ∂σ_i/∂z_j at z = 0
        return s * up @ jacobian @ down, s * up @ anl(zero)
    if inputs is None:
        raise ValueError("strategy='least_squares' needs calibration inputs: pass calibration=collect_calibration_inputs(model, batches)")
    z = inputs.to(down) @ down.T  # (n, r)
    design = torch.cat([z, torch.ones_like(z[:, :1])], dim=1).double()
    solution = torch.linalg.lstsq(design, anl(z).double()).solution.to(down.dtype)  # (r + 1, r)
    gain, offset = solution[:-1].T, solution[-1]
    return s * up @ gain @ down, s * up @ offset


def _relative_gap(layer: AdapterLayer, delta_w: torch.Tensor, delta_b: torch.Tensor | None, inputs: torch.Tensor) -> float:
    x = inputs.to(layer.lora_A)
    exact = layer.adapter_output(x)
    merged = x @ delta_w.T + (0 if delta_b is None else delta_b)
    return float(torch.linalg.norm(exact - merged) / torch.linalg.norm(exact).clamp_min(1e-30))


@torch.no_grad()
def merge(
    model: nn.Module,
    strategy: str = "static",
    calibration: Mapping[str, torch.Tensor] | None = None,
    reversible: bool = True,
) -> MergeReport:
    """Fold every adapter of ``model`` into its base weights; returns a per-layer :class:`MergeReport`.

    ``calibration`` maps layer names to input rows (from :func:`collect_calibration_inputs`); with it the
    report measures each layer's gap, and ``"least_squares"`` needs it. ``reversible=False`` skips keeping
    the original weights (saves memory; :func:`unmerge` then raises).
    """
    require_choice("strategy", strategy, MERGE_STRATEGIES)
    layers = adapter_layers(model)
    if not layers:
        raise ValueError("model has no adapters; call aurora.add_adapters(model, config) first")
    reports = []
    for name, layer in layers:
        inputs = None if calibration is None else calibration.get(name)
        if strategy == "least_squares" and inputs is None and not _is_exact(layer):
            raise ValueError(f"strategy='least_squares' needs calibration inputs for layer {name!r}")
        delta_w, delta_b = merge_update(layer, strategy, inputs)
        gap = None if inputs is None else _relative_gap(layer, delta_w, delta_b, inputs)
        layer.fold(delta_w, delta_b, reversible=reversible)
        reports.append(LayerMergeReport(name, layer.config.method, strategy, _is_exact(layer), gap))
    return MergeReport(reports)


def unmerge(model: nn.Module) -> None:
    """Restore every merged adapter layer's base weights exactly (bit for bit)."""
    layers = [layer for _, layer in adapter_layers(model) if layer.merged]
    if not layers:
        raise ValueError("no merged adapter layers in model; nothing to unmerge")
    for layer in layers:
        layer.unfold()


@torch.no_grad()
def collect_calibration_inputs(model: nn.Module, batches: Iterable[object], max_rows: int = 4096) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``batches`` and keep up to ``max_rows`` input rows of every adapter layer.

    A batch is passed as ``model(**batch)`` if it is a mapping, ``model(*batch)`` if a tuple/list, else
    ``model(batch)``. A mapping's ``attention_mask`` drops padding positions from layer inputs shaped
    ``(batch, sequence, d_in)``. Returns ``{layer name: (n, d_in) fp32 tensor}``.
    """
    collected: dict[str, list[torch.Tensor]] = {}
    handles = []
    mask: torch.Tensor | None = None

    def recorder(name: str):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            inputs = args[0].detach()
            if mask is not None and inputs.shape[:-1] == mask.shape:
                inputs = inputs[mask.bool()]
            rows = inputs.reshape(-1, inputs.shape[-1]).float()
            have = sum(t.shape[0] for t in collected.setdefault(name, []))
            if have < max_rows:
                collected[name].append(rows[: max_rows - have])

        return hook

    for name, layer in adapter_layers(model):
        handles.append(layer.register_forward_pre_hook(recorder(name)))
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            if isinstance(batch, Mapping):
                mask = batch.get("attention_mask")
                model(**batch)
            elif isinstance(batch, (tuple, list)):
                model(*batch)
            else:
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: torch.cat(rows) for name, rows in collected.items()}
