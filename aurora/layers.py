"""One adapter module per method, each wrapping a frozen ``nn.Linear`` or transformers' ``Conv1D`` (``h = W0 x + Δh``).

======== ============================================ ======================================
method   training forward ``Δh``                      merged update ``ΔW`` (``s = α / r``)
======== ============================================ ======================================
lora     ``s · B A x``  (Eq. 2)                        ``s · B A``  (exact)
moslora  ``s · B M A x``  (M an r×r mixer)             ``s · B M A``  (exact)
aurora   ``s · B σ(A x)``  (Eq. 4, dynamic form)       ``s · B σ(A)``  (Eq. 3/9, not exact)
         ``s · B σ(A) x``  (``form="static"``, App. B)  ``s · B σ(A)``  (exact)
loran    ``Sinter(s · B A) x``                         ``Sinter(s · B A)``  (exact)
dora     ``(m / ‖W0 + s B A‖ − 1) W0 x + …``            ``m ⊙ (W0 + s B A) / ‖W0 + s B A‖ − W0``  (exact)
======== ============================================ ======================================

Every method-specific fact lives on the layer class, behind the hooks the rest of the package asks:
:attr:`AdapterLayer.exact_merge`, :meth:`AdapterLayer.merge_update` (per merge strategy),
:meth:`AdapterLayer.low_rank_factors` and :meth:`AdapterLayer.peft_tensors` (PEFT export),
:meth:`AdapterLayer.down_projection` and :meth:`AdapterLayer.parameter_groups` (theory). A new method
is one subclass plus one :func:`aurora.registry.register_method` call (at the end of this module).

Adapter parameters are kept in fp32 whatever the base weight's dtype; the update is computed in
fp32 and cast back. transformers' ``Conv1D`` (GPT-2) stores its weight as ``(d_in, d_out)``; the
layers see every base weight as ``(d_out, d_in)`` through :meth:`AdapterLayer.base_weight`.
"""

from __future__ import annotations

import math
import sys
from typing import Any, ClassVar

import torch
from torch import nn

from .config import AdapterConfig, require_choice
from . import loran as _loran
from .nonlinear import AdaptiveNonlinearLayer, anl_update
from .registry import register_method

__all__ = [
    "AdapterLayer", "LoraLayer", "MoSLoraLayer", "AuroraLayer", "LoranLayer", "DoraLayer", "MERGE_STRATEGIES",
    "is_conv1d", "MERGED_KEY",
]

MERGE_STRATEGIES = ("static", "linearized", "least_squares")
MERGED_KEY = "merged"
"""State-dict entry (``<layer>.merged``, a 0-dim bool tensor) present only when the base weights hold the merge."""


def is_conv1d(module: nn.Module) -> bool:
    """True for transformers' ``Conv1D`` (GPT-2's ``c_attn``, ``c_proj``, ``c_fc``), without importing transformers."""
    utils = sys.modules.get("transformers.pytorch_utils")
    return utils is not None and isinstance(module, utils.Conv1D)


class AdapterLayer(nn.Module):
    """Common part: the frozen base layer, the low-rank factors ``A`` (r × d_in) and ``B`` (d_out × r).

    Subclasses define the update (:meth:`delta_weight`, optionally :meth:`hidden`) and the method facts.
    """

    method: ClassVar[str] = ""  # set by register_method
    exact_merge: bool = True
    """Whether a merged ``ΔW`` reproduces the training forward for every input (False only for dynamic AuroRA)."""

    def __init__(self, base_layer: nn.Module, config: AdapterConfig) -> None:
        super().__init__()
        self.fan_in_fan_out = is_conv1d(base_layer)
        if not (isinstance(base_layer, nn.Linear) or self.fan_in_fan_out):
            raise ValueError(f"adapters wrap nn.Linear or transformers' Conv1D layers; got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.config = config
        self.out_features, self.in_features = self.base_weight().shape
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
        self.register_state_dict_post_hook(_record_merged_state)
        self.register_load_state_dict_pre_hook(_follow_merged_state)

    def base_weight(self) -> torch.Tensor:
        """The base weight as ``(d_out, d_in)`` (a transposed view for ``Conv1D``)."""
        weight = self.base_layer.weight
        return weight.T if self.fan_in_fan_out else weight

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

    # -- method facts (hooks) ----------------------------------------------------------------
    def merge_update(self, strategy: str = "static", inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(ΔW, Δb)`` that merge ``strategy`` folds in; ``inputs`` are ``(n, d_in)`` calibration rows.

        Exact methods ignore the strategy and the inputs: their ``ΔW`` is :meth:`delta_weight`, ``Δb`` is None.
        """
        require_choice("strategy", strategy, MERGE_STRATEGIES)
        return self.delta_weight(), None

    def down_projection(self) -> torch.Tensor | None:
        """The ``(r, d_in)`` factor ``D`` with merged ``ΔW = s · B · D`` (LoRA ``A``, MoSLoRA ``M A``, AuroRA ``σ(A)``);
        ``None`` where the update has no such form (LoRAN, DoRA)."""
        return None

    def low_rank_factors(
        self, strategy: str = "static", inputs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(B', A', Δb)`` with ``B' A' = ΔW`` of ``merge_update(strategy, inputs)``: a LoRA adapter (scaling 1)
        that computes the merged update. Raises ``ValueError`` if the update is not rank r."""
        require_choice("strategy", strategy, MERGE_STRATEGIES)
        down = self.down_projection()
        if down is None:
            raise ValueError(
                f"the {self.method} update is not a rank-{self.rank} product B'A', so it has no PEFT LoRA form; "
                "use aurora.merge_and_unload(model) and save the merged model with save_pretrained instead"
            )
        return self.scaling * self.lora_B, down, None

    def peft_tensors(self, strategy: str = "static", inputs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """This layer as a PEFT LoRA layer with scaling 1: ``{"lora_A.weight", "lora_B.weight"[, "lora_B.bias"]}``."""
        up, down, bias = self.low_rank_factors(strategy, inputs)
        tensors = {"lora_A.weight": down, "lora_B.weight": up}
        if bias is not None:
            tensors["lora_B.bias"] = bias
        return tensors

    def parameter_groups(self) -> dict[str, nn.Parameter]:
        """The adapter's parameter groups by short name (``A``, ``B`` and the method's own, e.g. ``mixer``, ``H``)."""
        return {"A": self.lora_A, "B": self.lora_B}

    # -- merge primitives --------------------------------------------------------------------
    def fold(self, delta_weight: torch.Tensor, delta_bias: torch.Tensor | None, reversible: bool = True) -> None:
        """Add ``ΔW`` (and ``Δb``) to the base layer in fp32, keeping the originals for :meth:`unfold`."""
        if self.merged:
            raise ValueError("layer is already merged; call aurora.unmerge(model) first")
        base = self.base_layer
        if reversible:
            self._saved_weight = base.weight.detach().clone()
            self._saved_bias = None if base.bias is None else base.bias.detach().clone()
        with torch.no_grad():
            weight = self.base_weight()
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
            raise ValueError("this layer was merged with reversible=False (or loaded merged); its original weights were not kept")
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

    def suspend_merge(self) -> tuple[Any, ...]:
        """:meth:`unfold` a merged layer, returning what :meth:`resume_merge` needs to put the merge back bit-exactly."""
        base = self.base_layer
        snapshot = (base.weight.detach().clone(), None if base.bias is None else base.bias.detach().clone(),
                    self._saved_weight, self._saved_bias, self._created_bias)
        self.unfold()
        return snapshot

    def resume_merge(self, snapshot: tuple[Any, ...]) -> None:
        weight, bias, self._saved_weight, self._saved_bias, self._created_bias = snapshot
        base = self.base_layer
        with torch.no_grad():
            base.weight.copy_(weight)
            if self._created_bias:
                base.bias = nn.Parameter(bias, requires_grad=False)
            elif bias is not None:
                base.bias.copy_(bias)
        self.merged = True

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, scaling={self.scaling:g}, merged={self.merged}"


def _record_merged_state(layer: AdapterLayer, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """A merged layer's state dict says so (``<prefix>merged``): its base weights already hold ``ΔW``."""
    if layer.merged:
        state_dict[prefix + MERGED_KEY] = torch.ones((), dtype=torch.bool)


def _follow_merged_state(layer: AdapterLayer, state_dict: dict, prefix: str, *args: Any) -> None:
    """Loading base weights makes the layer merged exactly when they were saved merged, so ``ΔW`` is never added twice.

    Weights loaded merged carry no originals (:meth:`AdapterLayer.unfold` then raises). Loading adapter weights
    alone into a merged layer would leave a stale merge behind; it is refused.
    """
    saved_merged = bool(state_dict.pop(prefix + MERGED_KEY, False))
    base = layer.base_layer
    if prefix + "base_layer.weight" not in state_dict:
        if saved_merged or (layer.merged and any(k.startswith(prefix) for k in state_dict)):
            raise ValueError(
                f"{prefix.rstrip('.') or 'layer'}: a merged layer and its base weights load together; "
                "call aurora.unmerge(model) first, or load a full state dict"
            )
        return
    if layer.merged and layer._created_bias and not saved_merged:
        base.bias = None  # the merge created this bias; the unmerged state has none
    if saved_merged and base.bias is None and prefix + "base_layer.bias" in state_dict:
        base.bias = nn.Parameter(torch.zeros_like(state_dict[prefix + "base_layer.bias"], device=base.weight.device), requires_grad=False)
    layer._saved_weight = layer._saved_bias = None
    layer._created_bias = False
    layer.merged = saved_merged


class LoraLayer(AdapterLayer):
    """LoRA (Eq. 1–2): ``Δh = s · B A x``."""

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * self.lora_B @ self.lora_A

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.lora_A.T

    def down_projection(self) -> torch.Tensor:
        return self.lora_A


class MoSLoraLayer(AdapterLayer):
    """MoSLoRA: ``Δh = s · B M A x`` with a learnable r × r mixer ``M`` (a linear LoRA variant, §1)."""

    def __init__(self, base_layer: nn.Module, config: AdapterConfig) -> None:
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

    def down_projection(self) -> torch.Tensor:
        return self.lora_mixer @ self.lora_A

    def low_rank_factors(self, strategy: str = "static", inputs: torch.Tensor | None = None):
        """``(s · B M, A)``: the mixer goes into the up-projection, so ``A`` is exported as trained."""
        require_choice("strategy", strategy, MERGE_STRATEGIES)
        return self.scaling * self.lora_B @ self.lora_mixer, self.lora_A, None

    def parameter_groups(self) -> dict[str, nn.Parameter]:
        return {**super().parameter_groups(), "mixer": self.lora_mixer}


class AuroraLayer(AdapterLayer):
    """AuroRA (Eq. 4): ``Δh = s · B σ(A x)`` with the ANL σ; ``form="static"`` trains ``s · B σ(A) x`` (AuroRA-S).

    Merge strategies for the dynamic form (``book/static_merge.md``): ``"static"`` ``ΔW = s · B σ(A)`` (Eq. 3);
    ``"linearized"`` ``σ(z) ≈ σ(0) + J z`` at ``z = 0``: ``ΔW = s · B J A``, ``Δb = s · B σ(0)``;
    ``"least_squares"`` ``σ(z) ≈ G z + c`` fitted on ``z = A x`` of calibration rows: ``ΔW = s · B G A``, ``Δb = s · B c``.
    """

    def __init__(self, base_layer: nn.Module, config: AdapterConfig) -> None:
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

    @property
    def exact_merge(self) -> bool:  # type: ignore[override]
        return self.form == "static"

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

    def down_projection(self) -> torch.Tensor:
        return self.activated_down_projection()

    fused_update: bool = True
    """Whether the dynamic form runs as one autograd node (:func:`aurora.nonlinear.anl_update`); ``False`` calls the
    ANL as a module between two products, as :func:`aurora.profiling.use_reference_forward` needs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The dynamic form as one autograd node, ``W0 x + b + s · B σ(A x)`` (:attr:`fused_update`); the static form,
        merged or half-precision layers, autocast and ``torch.func`` transforms take the generic path."""
        if (not self.fused_update or self.merged or self.form == "static" or self.base_layer.weight.dtype != self.lora_A.dtype
                or torch._C._are_functorch_transforms_active() or torch.is_autocast_enabled(x.device.type)):
            return super().forward(x)
        result = self.base_layer(x)
        flat = self.dropout(x).reshape(-1, self.in_features)
        fused = anl_update(result.reshape(-1, self.out_features), flat, self.lora_A, self.lora_B, self.scaling, self.anl)
        return fused.view(result.shape)

    def low_rank_factors(self, strategy: str = "static", inputs: torch.Tensor | None = None):
        require_choice("strategy", strategy, MERGE_STRATEGIES)
        up, down = self.scaling * self.lora_B, self.lora_A
        if self.exact_merge or strategy == "static":
            return up, self.activated_down_projection(), None
        if strategy == "linearized":
            zero = torch.zeros(self.rank, dtype=down.dtype, device=down.device)
            jacobian = torch.func.jacrev(self.anl)(zero)  # (r, r): ∂σ_i/∂z_j at z = 0
            return up, jacobian @ down, up @ self.anl(zero)
        z = self.calibration_rows(inputs) @ down.T  # (n, r)
        design = torch.cat([z, torch.ones_like(z[:, :1])], dim=1).double()
        solution = torch.linalg.lstsq(design, self.anl(z).double()).solution.to(down.dtype)  # (r + 1, r)
        gain, offset = solution[:-1].T, solution[-1]
        return up, gain @ down, up @ offset

    def calibration_rows(self, inputs: torch.Tensor | None) -> torch.Tensor:
        """Check least-squares calibration rows: ``(n, d_in)``, finite, ``n >= r + 1`` (the fit has r + 1 unknowns)."""
        if inputs is None:
            raise ValueError("strategy='least_squares' needs calibration inputs: pass calibration=collect_calibration_inputs(model, batches)")
        if inputs.ndim != 2 or inputs.shape[1] != self.in_features:
            raise ValueError(f"calibration inputs must be (n, {self.in_features}) rows, got shape {tuple(inputs.shape)}")
        if inputs.shape[0] < self.rank + 1:
            raise ValueError(
                f"strategy='least_squares' needs at least rank + 1 = {self.rank + 1} calibration rows per layer "
                f"(it fits {self.rank + 1} unknowns per unit), got {inputs.shape[0]}"
            )
        if not torch.isfinite(inputs).all():
            raise ValueError("calibration inputs hold inf or NaN rows; strategy='least_squares' needs finite rows")
        return inputs.to(self.lora_A)

    def merge_update(self, strategy: str = "static", inputs: torch.Tensor | None = None):
        require_choice("strategy", strategy, MERGE_STRATEGIES)
        if self.exact_merge or strategy == "static":
            return self.delta_weight(), None
        up, down, bias = self.low_rank_factors(strategy, inputs)
        return up @ down, bias

    def parameter_groups(self) -> dict[str, nn.Parameter]:
        groups = super().parameter_groups()
        if self.anl.self_projection is not None:
            groups["H"] = self.anl.self_projection
        if self.anl.spline_coefficients is not None:
            groups["spline"] = self.anl.spline_coefficients
        return groups


class DoraLayer(AdapterLayer):
    """DoRA (Liu et al. 2024, Eq. 5): ``W = m ⊙ (W0 + s B A) / ‖W0 + s B A‖_c`` with a learnable magnitude ``m``
    (one entry per output unit, row norms of the ``(d_out, d_in)`` weight), as PEFT's ``LoraConfig(use_dora=True)``.

    The norm is treated as a constant in the backward pass (DoRA §4.3, and PEFT). ``m`` starts at ``‖W0‖``, so
    the layer starts at ``W0``. The merge ``ΔW = m ⊙ (W0 + s B A) / ‖·‖ − W0`` is exact.
    """

    def __init__(self, base_layer: nn.Module, config: AdapterConfig) -> None:
        super().__init__(base_layer, config)
        with torch.no_grad():
            magnitude = torch.linalg.norm(self.base_weight().float(), dim=1)
        self.lora_magnitude = nn.Parameter(magnitude)

    def magnitude_scale(self, weight: torch.Tensor) -> torch.Tensor:
        """``m / ‖W0 + s B A‖`` per output unit, the norm detached (DoRA §4.3); ``weight`` is ``W0`` as (d_out, d_in)."""
        norm = torch.linalg.norm(weight + self.scaling * (self.lora_B @ self.lora_A).detach(), dim=1)
        return self.lora_magnitude / norm.detach()

    def delta_weight(self) -> torch.Tensor:
        weight = self.base_weight().float()
        combined = weight + self.scaling * self.lora_B @ self.lora_A
        return self.magnitude_scale(weight)[:, None] * combined - weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:
            return result
        dropped = self.dropout(x).to(self.lora_A.dtype)
        scale = self.magnitude_scale(self.base_weight().to(self.lora_A.dtype))
        if isinstance(self.dropout, nn.Identity) or not self.training:
            bias = self.base_layer.bias
            frozen = result.to(scale.dtype) - (0 if bias is None else bias.to(scale.dtype))  # W0 x, as PEFT reuses it
        else:
            frozen = dropped @ self.base_weight().to(scale.dtype).T
        update = self.scaling * ((dropped @ self.lora_A.T) @ self.lora_B.T)
        return result + ((scale - 1) * frozen + scale * update).to(result.dtype)

    def peft_tensors(self, strategy: str = "static", inputs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """PEFT DoRA with scaling 1: ``lora_A``, ``s · B`` and ``lora_magnitude_vector`` (the strategy is irrelevant: exact)."""
        require_choice("strategy", strategy, MERGE_STRATEGIES)
        return {"lora_A.weight": self.lora_A, "lora_B.weight": self.scaling * self.lora_B, "lora_magnitude_vector": self.lora_magnitude}

    def low_rank_factors(self, strategy: str = "static", inputs: torch.Tensor | None = None):
        raise ValueError(
            "DoRA's update rescales W0 and is not a rank-r product B'A'; aurora.export_peft writes it as PEFT DoRA "
            "(use_dora=True), or use aurora.merge_and_unload(model)"
        )

    def parameter_groups(self) -> dict[str, nn.Parameter]:
        return {**super().parameter_groups(), "magnitude": self.lora_magnitude}


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
        # base_weight() is (d_out, d_in) for nn.Linear and a transposed view for transformers' Conv1D
        return _loran.loran_linear(x, self.base_weight(), self.base_layer.bias, self.lora_A, self.lora_B, self.loran_spec).to(x.dtype)


register_method("lora", LoraLayer)
register_method("moslora", MoSLoraLayer)
register_method("aurora", AuroraLayer)
register_method("loran", LoranLayer)
register_method("dora", DoraLayer)
