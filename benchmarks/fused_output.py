"""Prototype: fold the scaling and the residual add of an adapter into the up-projection GEMM.

A proposal for ``aurora/layers.py`` (owned by the lead), measured in ``book/cost.md``.
``AdapterLayer.forward`` computes ``result + s · (hidden @ Bᵀ)`` as a matrix product plus two
elementwise ops over the full ``(tokens, d_out)`` output (and their backward), where ``hidden`` is
``A x`` (LoRA), ``M A x`` (MoSLoRA) or ``σ(A x)`` (AuroRA). One ``torch.addmm(result, hidden, Bᵀ,
alpha=s)`` does the same in a single BLAS call (cuBLAS folds ``alpha`` and the add into its
epilogue). PEFT's LoRA has the same two extra ops, so this also makes our LoRA cheaper than PEFT's.

:func:`adopt_fused_output` switches the LoRA, MoSLoRA and dynamic AuroRA layers of a model to it
(LoRAN and AuroRA-S keep their path: their update is not ``s · B · hidden``).
"""

from __future__ import annotations

import torch
from torch import nn

from aurora.layers import AdapterLayer, AuroraLayer, LoraLayer, MoSLoraLayer

__all__ = ["adapter_hidden", "FusedOutputMixin", "adopt_fused_output"]


def adapter_hidden(layer: AdapterLayer, x: torch.Tensor) -> torch.Tensor | None:
    """The ``(..., r)`` activations that ``B`` maps back up, or ``None`` if ``layer``'s update has another form."""
    if isinstance(layer, AuroraLayer):
        return layer.anl(x @ layer.lora_A.T) if layer.form == "dynamic" else None
    if isinstance(layer, MoSLoraLayer):
        return (x @ layer.lora_A.T) @ layer.lora_mixer.T
    if isinstance(layer, LoraLayer):
        return x @ layer.lora_A.T
    return None


class FusedOutputMixin:
    """``forward`` = ``addmm(W0 x + b, hidden, Bᵀ, alpha=s)`` when the base output is in the adapter's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer: AdapterLayer = self  # type: ignore[assignment]
        result = layer.base_layer(x)
        if layer.merged:
            return result
        x = layer.dropout(x).to(layer.lora_A.dtype)
        hidden = adapter_hidden(layer, x)
        if hidden is None:
            return result + layer.adapter_output(x).to(result.dtype)
        if result.dtype != hidden.dtype:
            return result + (layer.scaling * (hidden @ layer.lora_B.T)).to(result.dtype)
        fused = torch.addmm(result.reshape(-1, layer.out_features), hidden.reshape(-1, layer.rank), layer.lora_B.T, alpha=layer.scaling)
        return fused.view(result.shape)


_FUSED_CLASSES: dict[type, type] = {}


def adopt_fused_output(model: nn.Module) -> int:
    """Switch every LoRA / MoSLoRA / AuroRA layer of ``model`` to the fused output in place; returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, (LoraLayer, MoSLoraLayer, AuroraLayer)) and not isinstance(module, FusedOutputMixin):
            cls = type(module)
            if cls not in _FUSED_CLASSES:
                _FUSED_CLASSES[cls] = type(f"FusedOutput{cls.__name__}", (FusedOutputMixin, cls), {})
            module.__class__ = _FUSED_CLASSES[cls]
            count += 1
    return count
