"""Merging adapters into the base weights for inference (Algorithm 1, App. B), unloading them, switching them off.

LoRA, MoSLoRA, LoRAN, DoRA and AuroRA-S (``form="static"``) are linear in ``x``, so their merge is exact.
AuroRA's dynamic form ``s · B σ(A x)`` is not: no matrix reproduces it for every ``x``. Strategies
(each layer's :meth:`~aurora.layers.AdapterLayer.merge_update` knows its own):

* ``"static"`` — the paper's ``ΔW = s · B σ(A)`` (σ on each column of ``A``). Note that
  ``σ(A) x ≠ σ(A x)``, and that with ``σ(0) ≠ 0`` (the spline term) ``ΔW x`` carries
  ``s · B σ(0) · Σ_j x_j``: the offset is multiplied by the sum of the input's entries.
* ``"linearized"`` — first-order Taylor expansion at ``z = 0``: ``σ(z) ≈ σ(0) + J z`` gives
  ``ΔW = s · B J A`` and a bias ``Δb = s · B σ(0)``; exact where ``A x`` stays small.
* ``"least_squares"`` — fit ``σ(z) ≈ G z + c`` by least squares on ``z = A x`` for calibration inputs
  ``x`` of that layer (see :func:`collect_calibration_inputs`): ``ΔW = s · B G A``, ``Δb = s · B c``.
  It is the best merge of that form on the calibration distribution.

:func:`merge` computes and checks every layer's update before it folds any, so a failure leaves the
model unmerged. :func:`merge_and_unload` and :func:`unload` (PEFT's names) give back the plain base
model; :func:`disable_adapters` is a context manager with the base outputs inside.

Chapter: ``book/static_merge.md``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import torch
from torch import nn

from .config import require_choice
from .inject import CONFIG_ATTRIBUTE, adapter_layers, set_submodule
from .layers import MERGE_STRATEGIES, AdapterLayer

__all__ = [
    "MERGE_STRATEGIES", "LayerMergeReport", "MergeReport", "merge_update", "merge", "unmerge", "merge_and_unload",
    "unload", "disable_adapters", "collect_calibration_inputs",
]


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


@torch.no_grad()
def merge_update(
    layer: AdapterLayer, strategy: str = "static", inputs: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(ΔW, Δb)`` that ``strategy`` folds into ``layer``; ``inputs`` are ``(n, d_in)`` calibration rows."""
    return layer.merge_update(strategy, inputs)


def _relative_gap(layer: AdapterLayer, delta_w: torch.Tensor, delta_b: torch.Tensor | None, inputs: torch.Tensor) -> float:
    x = inputs.to(layer.lora_A)
    exact = layer.adapter_output(x)
    merged = x @ delta_w.T + (0 if delta_b is None else delta_b)
    return float(torch.linalg.norm(exact - merged) / torch.linalg.norm(exact).clamp_min(1e-30))


def checked_calibration(layers: list[tuple[str, AdapterLayer]], calibration: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Check ``calibration``: a mapping from adapter layer names to finite ``(n, d_in)`` tensors."""
    if calibration is None:
        return {}
    if not isinstance(calibration, Mapping):
        raise ValueError(f"calibration must map layer names to (n, d_in) tensors, got {type(calibration).__name__}")
    widths = dict((name, layer.in_features) for name, layer in layers)
    if unknown := sorted(set(calibration) - set(widths)):
        raise ValueError(f"calibration names {unknown[:5]} are not adapter layers of the model; they are {sorted(widths)[:5]}...")
    for name, rows in calibration.items():
        if not isinstance(rows, torch.Tensor) or rows.ndim != 2 or rows.shape[1] != widths[name]:
            shape = tuple(rows.shape) if isinstance(rows, torch.Tensor) else type(rows).__name__
            raise ValueError(f"calibration[{name!r}] must be an (n, {widths[name]}) tensor of input rows, got {shape}")
        if not torch.isfinite(rows).all():
            raise ValueError(f"calibration[{name!r}] holds inf or NaN rows; calibration inputs must be finite")
    return dict(calibration)


@torch.no_grad()
def merge(
    model: nn.Module,
    strategy: str = "static",
    calibration: Mapping[str, torch.Tensor] | None = None,
    reversible: bool = True,
    safe_merge: bool = False,
) -> MergeReport:
    """Fold every adapter of ``model`` into its base weights; returns a per-layer :class:`MergeReport`.

    ``calibration`` maps layer names to input rows (from :func:`collect_calibration_inputs`); with it the
    report measures each layer's gap, and ``"least_squares"`` needs it. ``reversible=False`` skips keeping
    the original weights (saves memory; :func:`unmerge` then raises). Every update is computed and checked
    (finite, and with ``safe_merge=True`` also the merged weights in the base dtype, as PEFT's ``safe_merge``)
    before any layer changes: on ``ValueError`` the model is as it was. Merging a merged model raises.
    """
    require_choice("strategy", strategy, MERGE_STRATEGIES)
    if not isinstance(safe_merge, bool) or not isinstance(reversible, bool):
        raise ValueError(f"safe_merge and reversible must be True or False, got {safe_merge!r} and {reversible!r}")
    layers = adapter_layers(model)
    if not layers:
        raise ValueError("model has no adapters; call aurora.add_adapters(model, config) first")
    if merged := [name for name, layer in layers if layer.merged]:
        raise ValueError(f"model is already merged (layers {merged[:3]}); call aurora.unmerge(model) first")
    calibration = checked_calibration(layers, calibration)
    updates, reports = [], []
    for name, layer in layers:
        inputs = calibration.get(name)
        if strategy == "least_squares" and inputs is None and not layer.exact_merge:
            raise ValueError(f"strategy='least_squares' needs calibration inputs for layer {name!r}")
        try:
            delta_w, delta_b = layer.merge_update(strategy, inputs)
        except ValueError as error:
            raise ValueError(f"layer {name!r}: {error}") from None
        if not torch.isfinite(delta_w).all() or (delta_b is not None and not torch.isfinite(delta_b).all()):
            raise ValueError(f"layer {name!r}: its merge update holds inf or NaN; nothing was merged")
        if safe_merge:
            weight = layer.base_weight()
            if not torch.isfinite((weight.float() + delta_w.to(weight.device)).to(weight.dtype)).all():
                raise ValueError(f"layer {name!r}: the merged weights overflow {weight.dtype} (inf or NaN); nothing was merged")
        gap = None if inputs is None or inputs.shape[0] == 0 else _relative_gap(layer, delta_w, delta_b, inputs)
        updates.append((layer, delta_w, delta_b))
        reports.append(LayerMergeReport(name, layer.method, strategy, layer.exact_merge, gap))
    for layer, delta_w, delta_b in updates:  # everything checked: now change the model
        layer.fold(delta_w, delta_b, reversible=reversible)
    return MergeReport(reports)


def unmerge(model: nn.Module) -> None:
    """Restore every merged adapter layer's base weights exactly (bit for bit)."""
    layers = [(name, layer) for name, layer in adapter_layers(model) if layer.merged]
    if not layers:
        raise ValueError("no merged adapter layers in model; nothing to unmerge")
    if kept_none := [name for name, layer in layers if layer._saved_weight is None]:
        raise ValueError(f"layers {kept_none[:3]} were merged with reversible=False (or loaded merged); their original weights were not kept")
    for _, layer in layers:
        layer.unfold()


def _replace_with_base_layers(model: nn.Module, layers: list[tuple[str, AdapterLayer]]) -> nn.Module:
    for name, layer in layers:
        set_submodule(model, name, layer.base_layer)
    if hasattr(model, CONFIG_ATTRIBUTE):
        delattr(model, CONFIG_ATTRIBUTE)
    return model


def merge_and_unload(
    model: nn.Module,
    strategy: str = "static",
    calibration: Mapping[str, torch.Tensor] | None = None,
    safe_merge: bool = False,
) -> nn.Module:
    """Merge (see :func:`merge`) and replace every adapter layer by its base module, holding the merged weights.

    Returns ``model`` without any ``aurora`` module in it, so ``model.save_pretrained`` writes the original class's
    keys (PEFT's ``merge_and_unload``). An already merged model is only unloaded. ``modules_to_save`` stay trained.
    """
    layers = adapter_layers(model)
    if not layers:
        raise ValueError("model has no adapters; call aurora.add_adapters(model, config) first")
    merged = [layer.merged for _, layer in layers]
    if not all(merged):
        if any(merged):
            raise ValueError("model is partly merged; call aurora.unmerge(model) first")
        merge(model, strategy, calibration, reversible=False, safe_merge=safe_merge)
    return _replace_with_base_layers(model, layers)


def unload(model: nn.Module) -> nn.Module:
    """Replace every adapter layer by its original base module (unmerging merged layers first); returns ``model``.

    PEFT's ``unload``: the adapters are dropped. Raises before changing anything if a layer was merged with
    ``reversible=False``.
    """
    layers = adapter_layers(model)
    if not layers:
        raise ValueError("model has no adapters; call aurora.add_adapters(model, config) first")
    if any(layer.merged for _, layer in layers):
        unmerge(model)
    return _replace_with_base_layers(model, layers)


@contextmanager
def disable_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """``with aurora.disable_adapters(model): ...`` computes the base model's outputs (PEFT's ``disable_adapter``).

    Inside the block every adapter layer is swapped for its base module (merged layers are unmerged first);
    on exit, also when the body raises, the adapters and any merge are put back bit for bit.
    """
    layers = adapter_layers(model)
    if not layers:
        raise ValueError("model has no adapters; call aurora.add_adapters(model, config) first")
    if kept_none := [name for name, layer in layers if layer.merged and layer._saved_weight is None]:
        raise ValueError(f"layers {kept_none[:3]} were merged with reversible=False; their base weights are gone")
    snapshots = [layer.suspend_merge() if layer.merged else None for _, layer in layers]
    for name, layer in layers:
        set_submodule(model, name, layer.base_layer)
    try:
        yield model
    finally:
        for (name, layer), snapshot in zip(layers, snapshots):
            set_submodule(model, name, layer)
            if snapshot is not None:
                layer.resume_merge(snapshot)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


@torch.no_grad()
def collect_calibration_inputs(model: nn.Module, batches: Iterable[object], max_rows: int = 4096) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``batches`` and keep up to ``max_rows`` input rows of every adapter layer.

    A batch is passed as ``model(**batch)`` if it is a mapping, ``model(*batch)`` if a tuple/list, else
    ``model(batch)``; its tensors are moved to the model's device first. A mapping's ``attention_mask`` drops
    padding positions from layer inputs shaped ``(batch, sequence, d_in)``. Returns ``{layer name: (n, d_in)
    fp32 tensor}`` on the CPU.
    """
    collected: dict[str, list[torch.Tensor]] = {}
    handles = []
    mask: torch.Tensor | None = None
    device = next(model.parameters()).device

    def recorder(name: str):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            inputs = args[0].detach()
            if mask is not None and inputs.shape[:-1] == mask.shape:
                inputs = inputs[mask.bool()]
            rows = inputs.reshape(-1, inputs.shape[-1]).float()
            have = sum(t.shape[0] for t in collected.setdefault(name, []))
            if have < max_rows:
                collected[name].append(rows[: max_rows - have].cpu())

        return hook

    for name, layer in adapter_layers(model):
        handles.append(layer.register_forward_pre_hook(recorder(name)))
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            batch = _to_device(batch, device)
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
