"""One adapter module per method, each wrapping a frozen ``nn.Linear`` (``h = W0 x + Δh``).

======== ============================================ ======================================
method   training forward ``Δh``                      merged update ``ΔW`` (``s = α / r``)
======== ============================================ ======================================
lora     ``s · B A x``  (Eq. 2)                        ``s · B A``  (exact)
moslora  ``s · B M A x``  (M an r×r mixer)             ``s · B M A``  (exact)
aurora   ``s · B σ(A x)``  (Eq. 4, dynamic form)       ``s · B σ(A)``  (Eq. 3/9, not exact)
         ``s · B σ(A) x``  (``form="static"``, App. B)  ``s · B σ(A)``  (exact)
loran    ``Sinter(s · B A) x``                         ``Sinter(s · B A)``  (exact)
======== ============================================ ======================================

Adapter parameters are kept in fp32 whatever the base weight's dtype; the update is computed in
fp32 and cast back. Merging lives in :mod:`aurora.merge`; here are only the primitives that fold
a given ``(ΔW, Δb)`` into the base layer and restore it bit-exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import AdapterConfig
from . import loran as _loran
from .nonlinear import AdaptiveNonlinearLayer, sinter

__all__ = ["AdapterLayer", "LoraLayer", "MoSLoraLayer", "AuroraLayer", "LoranLayer", "LAYER_CLASSES"]


class AdapterLayer(nn.Module):
    """Common part: the frozen base layer, the low-rank factors ``A`` (r × d_in) and ``B`` (d_out × r)."""

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise ValueError(f"adapters wrap nn.Linear layers; got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.config = config
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.rank = config.rank
        self.scaling = config.scaling
        self.dropout: nn.Module = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        device = base_layer.weight.device
        # A: Kaiming-uniform as nn.Linear and PEFT; B: zeros, so ΔW = 0 at the start of training.
        self.lora_A = nn.Parameter(torch.empty(self.rank, self.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, self.rank, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.merged = False
        self._saved_weight: torch.Tensor | None = None
        self._saved_bias: torch.Tensor | None = None
        self._created_bias = False

    # -- the update -------------------------------------------------------------------------
    def delta_weight(self) -> torch.Tensor:
        """``ΔW`` as a ``(d_out, d_in)`` fp32 tensor: the update that a merge folds into ``W0``."""
        raise NotImplementedError

    def hidden(self, x: torch.Tensor) -> torch.Tensor | None:
        """The ``(..., r)`` activations that ``B`` maps up when ``Δh = s · B · hidden(x)``; ``None`` otherwise."""
        return None

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        """``Δh`` for fp32 input ``x`` of shape ``(..., d_in)``."""
        hidden = self.hidden(x)
        if hidden is None:
            return x @ self.delta_weight().T
        return self.scaling * (hidden @ self.lora_B.T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:
            return result
        x = self.dropout(x).to(self.lora_A.dtype)
        hidden = self.hidden(x)
        if hidden is None:
            return result + self.adapter_output(x).to(result.dtype)
        if hidden.dtype != result.dtype:  # half-precision base: adapter math in fp32, then cast
            return result + (self.scaling * (hidden @ self.lora_B.T)).to(result.dtype)
        # one BLAS call for W0 x + b + s · hidden Bᵀ (the scaling and the add fold into the GEMM)
        fused = torch.addmm(result.reshape(-1, self.out_features), hidden.reshape(-1, self.rank), self.lora_B.T, alpha=self.scaling)
        return fused.view(result.shape)

    # -- merge primitives --------------------------------------------------------------------
    def fold(self, delta_weight: torch.Tensor, delta_bias: torch.Tensor | None, reversible: bool = True) -> None:
        """Add ``ΔW`` (and ``Δb``) to the base layer in fp32, keeping the originals for :meth:`unfold`."""
        if self.merged:
            raise ValueError("layer is already merged; call aurora.unmerge(model) first")
        base = self.base_layer
        weight = base.weight
        if reversible:
            self._saved_weight = weight.detach().clone()
            self._saved_bias = None if base.bias is None else base.bias.detach().clone()
        with torch.no_grad():
            weight.copy_((weight.float() + delta_weight.to(weight.device)).to(weight.dtype))
            if delta_bias is not None:
                if base.bias is None:
                    base.bias = nn.Parameter(torch.zeros(self.out_features, dtype=weight.dtype, device=weight.device), requires_grad=False)
                    self._created_bias = True
                base.bias.copy_((base.bias.float() + delta_bias.to(weight.device)).to(base.bias.dtype))
        self.merged = True

    def unfold(self) -> None:
        """Restore the base layer exactly as it was before :meth:`fold`."""
        if not self.merged:
            raise ValueError("layer is not merged; nothing to unmerge")
        if self._saved_weight is None:
            raise ValueError("this layer was merged with reversible=False; its original weights were not kept")
        base = self.base_layer
        with torch.no_grad():
            base.weight.copy_(self._saved_weight)
            if self._created_bias:
                base.bias = None
            elif self._saved_bias is not None:
                base.bias.copy_(self._saved_bias)
        self._saved_weight = self._saved_bias = None
        self._created_bias = False
        self.merged = False

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, scaling={self.scaling:g}, merged={self.merged}"


class LoraLayer(AdapterLayer):
    """LoRA (Eq. 1–2): ``Δh = s · B A x``."""

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * self.lora_B @ self.lora_A

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.lora_A.T


class MoSLoraLayer(AdapterLayer):
    """MoSLoRA: ``Δh = s · B M A x`` with a learnable r × r mixer ``M`` (a linear LoRA variant, §1)."""

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig) -> None:
        super().__init__(base_layer, config)
        mixer = torch.empty(self.rank, self.rank, device=self.lora_A.device)
        if config.mixer_init == "kaiming":
            nn.init.kaiming_uniform_(mixer, a=math.sqrt(5))
        elif config.mixer_init == "orthogonal":
            nn.init.orthogonal_(mixer)
        else:
            nn.init.eye_(mixer)
        self.lora_mixer = nn.Parameter(mixer)

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * self.lora_B @ self.lora_mixer @ self.lora_A

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.lora_A.T) @ self.lora_mixer.T


class AuroraLayer(AdapterLayer):
    """AuroRA (Eq. 4): ``Δh = s · B σ(A x)`` with the ANL σ; ``form="static"`` trains ``s · B σ(A) x`` (AuroRA-S)."""

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig) -> None:
        super().__init__(base_layer, config)
        self.form = config.form
        self.anl = AdaptiveNonlinearLayer(
            config.rank,
            activation=config.activation,
            fixed=config.fixed_nonlinearity,
            learnable=config.learnable_nonlinearity,
            grid_size=config.grid_size,
            spline_order=config.spline_order,
            grid_range=config.grid_range,
            spline_mode=config.spline_mode,
            spline_init_scale=config.spline_init_scale,
            self_projection_init=config.self_projection_init,
            leaky_relu_slope=config.leaky_relu_slope,
        ).to(self.lora_A.device)

    def activated_down_projection(self) -> torch.Tensor:
        """``σ(A)``: σ applied to each column of ``A`` (each column is the r-vector ``A e_j``), ``(r, d_in)``.

        The transpose matters: ``A`` is ``(r, d_in)``, so a reshape to ``(-1, r)`` would mix units.
        """
        return self.anl(self.lora_A.T).T

    def delta_weight(self) -> torch.Tensor:
        """The paper's static update ``s · B σ(A)`` (Eq. 3, Algorithm 1)."""
        return self.scaling * self.lora_B @ self.activated_down_projection()

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "static":
            return x @ self.activated_down_projection().T
        return self.anl(x @ self.lora_A.T)


class LoranLayer(AdapterLayer):
    """LoRAN: ``ΔW = s · f(B A)`` (``loran_scaling="outside"``, the authors' code) or ``f(s · B A)`` (``"inside"``),
    ``f`` = Sinter ``a·sin(ωx)⊙x + x`` or, for the paper's comparison, tanh / sigmoid / ReLU; the merge is exact.

    Training runs ``(W0 + ΔW) x + b`` as one fused node (:class:`aurora.loran.LoranLinear`: one GEMM, saves
    ``A``, ``B`` and ``x`` only); with adapter dropout the frozen and the adapter path see different inputs,
    so the layer then adds ``ΔW x'`` to ``W0 x`` instead.
    """

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig) -> None:
        super().__init__(base_layer, config)
        self.loran_spec = _loran.LoranSpec(
            config.loran_function, self.scaling, config.loran_scaling, config.sinter_amplitude, config.sinter_frequency
        ).validate()

    def delta_weight(self) -> torch.Tensor:
        return _loran.delta_weight(self.lora_A, self.lora_B, self.loran_spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        if not isinstance(self.dropout, nn.Identity):
            return self.base_layer(x) + (self.dropout(x).to(self.lora_A.dtype) @ self.delta_weight().T).to(x.dtype)
        base = self.base_layer
        return _loran.loran_linear(x, base.weight, base.bias, self.lora_A, self.lora_B, self.loran_spec).to(x.dtype)


LAYER_CLASSES: dict[str, type[AdapterLayer]] = {
    "lora": LoraLayer,
    "moslora": MoSLoraLayer,
    "aurora": AuroraLayer,
    "loran": LoranLayer,
}
