"""Nonlinearities between the low-rank projectors.

* AuroRA's Adaptive Nonlinear Layer (ANL), Eq. 5–8:
  ``σ(z) = F(z) + L(z)`` with the fixed part ``F(z) = act(H act(z))`` (Eq. 6, H an r×r self-projection)
  and the learnable B-spline part ``L(z)`` (Eq. 7).
* LoRAN's ``Sinter(x) = a·sin(ωx)⊙x + x``.

The ANL's ``forward`` is one autograd node with a hand-written backward (fewer, larger steps than
autograd would record for the same function, :meth:`AdaptiveNonlinearLayer.autograd_forward`); the
tests hold the two to the same values and first and second derivatives.

Chapter: ``book/anl_explorer.md``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import ACTIVATIONS, SELF_PROJECTION_INITS, SPLINE_MODES, require_choice
from .spline import (
    first_rows, horner, horner_derivative, locate, num_bases, polynomial_table, shared_interval_polynomial_map, uniform_knots,
)

__all__ = ["get_activation", "sinter", "AdaptiveNonlinearLayer"]

Activation = Callable[[torch.Tensor], torch.Tensor]


def get_activation(name: str, leaky_relu_slope: float = 0.01) -> Activation:
    """The fixed activation of Eq. 6: ``"tanh"`` (paper default), ``"leaky_relu"`` or ``"sigmoid"`` (Table 5)."""
    require_choice("activation", name, ACTIVATIONS)
    if name == "tanh":
        return torch.tanh
    if name == "sigmoid":
        return torch.sigmoid
    return lambda z: F.leaky_relu(z, negative_slope=leaky_relu_slope)


def sinter(x: torch.Tensor, amplitude: float, frequency: float) -> torch.Tensor:
    """LoRAN's structured nonlinearity ``Sinter(x) = a·sin(ωx)⊙x + x`` (elementwise)."""
    return amplitude * torch.sin(frequency * x) * x + x


class AdaptiveNonlinearLayer(nn.Module):
    """AuroRA's ANL ``σ(z) = act(H act(z)) + L(z)`` acting on r-vectors (Eq. 8).

    The paper writes ``L(Z) = w_s · s(Z)`` with ``s(Z) = Σ_i B(z_i)`` and calls ``w_s ∈ R^r`` the weights of
    the basis functions; it does not pin down the shapes. ``spline_mode`` makes the reading explicit
    (``n = grid_size + spline_order`` bases, coefficients ``c``):

    * ``"per_unit"`` (default): ``L_j(z) = Σ_k c_jk B_k(z_j)``, an elementwise learnable curve per unit, matching
      "element-wise ANL" (Eq. 3) and Prop. 2.2's ``∂s/∂z = [B'(z_1), …, B'(z_r)]``; ``c`` is ``(r, n)``.
    * ``"sum"``: ``L_j(z) = Σ_k c_jk Σ_i B_k(z_i)``, Eq. 7 taken literally; ``c`` is ``(r, n)``.
    * ``"per_edge"``: ``L_j(z) = Σ_i Σ_k c_jik B_k(z_i)``, a full KAN layer r → r; ``c`` is ``(r, r, n)``.

    Args:
        rank: r̃, the width of the hidden layer.
        fixed: keep ``F`` (``False`` = ablation "w/o F", Table 4).
        learnable: keep ``L`` (``False`` = ablation "w/o L", Table 4).
        self_projection_init: ``"identity"`` (F ≈ identity near 0, so training starts LoRA-like) or ``"kaiming"``.
        spline_init_scale: std of the initial coefficients; nonzero so that "w/o F" can leave its
            initial state (with B = 0 and c = 0 nothing would ever receive a gradient).

    Shapes: ``forward`` maps ``(..., r)`` to ``(..., r)``.
    """

    def __init__(
        self,
        rank: int,
        activation: str = "tanh",
        fixed: bool = True,
        learnable: bool = True,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] = (-1.0, 1.0),
        spline_mode: str = "per_unit",
        spline_init_scale: float = 0.1,
        self_projection_init: str = "identity",
        leaky_relu_slope: float = 0.01,
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
        if not (fixed or learnable):
            raise ValueError("fixed_nonlinearity and learnable_nonlinearity cannot both be False (that is plain LoRA)")
        for option, value in (("leaky_relu_slope", leaky_relu_slope), ("spline_init_scale", spline_init_scale)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{option} must be a finite number >= 0, got {value!r}")
        require_choice("spline_mode", spline_mode, SPLINE_MODES)
        require_choice("self_projection_init", self_projection_init, SELF_PROJECTION_INITS)
        self.rank = rank
        self.activation_name = activation
        self.activation = get_activation(activation, leaky_relu_slope)
        self.leaky_relu_slope = leaky_relu_slope
        self.spline_order = spline_order
        self.spline_mode = spline_mode
        self.self_projection: nn.Parameter | None = None
        self.spline_coefficients: nn.Parameter | None = None
        if fixed:
            projection = torch.empty(rank, rank)
            if self_projection_init == "identity":
                nn.init.eye_(projection)
            else:
                nn.init.kaiming_uniform_(projection, a=math.sqrt(5))
            self.self_projection = nn.Parameter(projection)
        self.register_buffer("knots", uniform_knots(grid_size, spline_order, grid_range), persistent=True)
        self.grid_step = (float(grid_range[1]) - float(grid_range[0])) / grid_size
        self.grid_start = float(grid_range[0]) - spline_order * self.grid_step  # = knots[0], in float64
        n = num_bases(grid_size, spline_order)
        # one map shared by every ANL with this grid size and order (re-shared after .to(), see _apply)
        self.register_buffer(
            "spline_polynomial_map", shared_interval_polynomial_map(n, spline_order, torch.float64, torch.device("cpu")), persistent=False
        )
        if learnable:
            shape = (rank, rank, n) if spline_mode == "per_edge" else (rank, n)
            self.spline_coefficients = nn.Parameter(torch.randn(shape) * spline_init_scale)
            curves = rank if spline_mode == "per_unit" else rank * rank
            self.register_buffer("spline_curve_rows", first_rows(curves, self.spline_polynomial_map.shape[1]), persistent=False)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "AdaptiveNonlinearLayer":
        """``Module._apply`` (``.to()``, ``.cuda()``, ``.double()``, …), then point the map at the shared copy for its new
        dtype and device, so that moving a model does not leave one copy per layer."""
        super()._apply(fn, recurse)
        moved = self.spline_polynomial_map
        self._buffers["spline_polynomial_map"] = shared_interval_polynomial_map(moved.shape[0], self.spline_order, moved.dtype, moved.device)
        return self

    def fixed_part(self, z: torch.Tensor) -> torch.Tensor:
        """``F(z) = act(H act(z))`` (Eq. 6)."""
        projection, _ = self._parameters_as(z.dtype)
        assert projection is not None
        return self._fixed_terms(z, projection)[2]

    def learnable_part(self, z: torch.Tensor) -> torch.Tensor:
        """``L(z)`` (Eq. 7) in the reading chosen by ``spline_mode``, via the closed-form uniform spline."""
        _, coefficients = self._parameters_as(z.dtype)
        assert coefficients is not None
        return self._spline_terms(z, coefficients)[0]

    def autograd_forward(self, z: torch.Tensor) -> torch.Tensor:
        """``σ(z) = F(z) + L(z)`` in plain autograd ops."""
        out = self._intermediates(z, *self._parameters_as(z.dtype)).out
        assert out is not None
        return out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``σ(z)``, the same function as :meth:`autograd_forward`, whose graph holds some 30 small ops, as one
        autograd node with a hand-written backward. Under ``torch.func`` transforms (``vmap``, ``jacrev``, …)
        it takes :meth:`autograd_forward`. Under autocast it computes in the parameters' dtype (fp32), like the
        rest of the adapter math: its tensors are r wide, so low precision would save nothing."""
        if torch._C._are_functorch_transforms_active():
            return self.autograd_forward(z)
        if torch.is_autocast_enabled(z.device.type):
            with torch.autocast(z.device.type, enabled=False):
                return self.forward(z.to(self.knots.dtype))  # the knots follow the module's dtype
        return _AnlFunction.apply(z, *self._parameters_as(z.dtype), self)

    def _parameters_as(self, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``H`` and the spline coefficients in ``dtype`` (``None`` where that part is switched off)."""
        projection = None if self.self_projection is None else self.self_projection.to(dtype)
        coefficients = None if self.spline_coefficients is None else self.spline_coefficients.to(dtype)
        return projection, coefficients

    def _intermediates(self, z: torch.Tensor, projection: torch.Tensor | None, coefficients: torch.Tensor | None) -> _AnlIntermediates:
        """``σ(z)`` and the values its backward needs, in plain (differentiable) torch ops."""
        out = inner = hidden = outer = offset = row = rows = None
        if projection is not None:
            inner, hidden, outer = self._fixed_terms(z, projection)
            out = outer
        if coefficients is not None:
            spline, offset, row, rows = self._spline_terms(z, coefficients)
            out = spline if out is None else out + spline
        return _AnlIntermediates(out, inner, hidden, outer, offset, row, rows)

    def _fixed_terms(self, z: torch.Tensor, projection: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``act(z)``, ``H act(z)`` and ``F(z) = act(H act(z))``."""
        inner = self.activation(z)
        hidden = inner @ projection.T
        return inner, hidden, self.activation(hidden)

    def _spline_terms(self, z: torch.Tensor, coefficients: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``L(z)``, and for each curve point its offset, table row and that row's polynomial.

        Curve ``(j, i)`` is evaluated at ``z_i`` and summed over ``i`` (sum, per_edge); per_unit has curve ``j`` at ``z_j``.
        """
        table = self._curve_table(coefficients)
        offset, row = locate(self._points(z), table.shape[1], self.grid_start, self.grid_step, self.spline_curve_rows)
        rows = table.flatten(0, 1)[row]
        spline = horner(rows, offset)
        if self.spline_mode != "per_unit":
            spline = spline.unflatten(-1, (self.rank, self.rank)).sum(-1)
        return spline, offset, row, rows

    def _points(self, z: torch.Tensor) -> torch.Tensor:
        """Where the curves are evaluated: ``z`` (per_unit) or ``z_i`` for curve ``(j, i)``, ``(..., r*r)``."""
        if self.spline_mode == "per_unit":
            return z
        return z.unsqueeze(-2).expand(*z.shape[:-1], self.rank, self.rank).flatten(-2)

    def _curve_table(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Per-interval polynomials of every curve: ``(r, …)`` per_unit, ``(r*r, …)`` sum and per_edge."""
        if self.spline_mode == "sum":  # curve (j, i) = curve j for every input i
            coefficients = coefficients.unsqueeze(1).expand(self.rank, self.rank, -1)
        return polynomial_table(coefficients.reshape(-1, coefficients.shape[-1]), self.spline_polynomial_map)

    def _backward(
        self, grad: torch.Tensor, z: torch.Tensor, projection: torch.Tensor | None, coefficients: torch.Tensor | None,
        saved: _AnlIntermediates, needs_grad: tuple[bool, ...],
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Gradients of ``Σ grad · σ(z)`` with respect to ``z``, ``H`` and the spline coefficients."""
        grad_z = grad_projection = grad_coefficients = None
        if projection is not None:
            assert saved.inner is not None and saved.hidden is not None and saved.outer is not None
            grad_hidden = self._activation_backward(grad, saved.hidden, saved.outer)
            if needs_grad[1]:
                grad_projection = grad_hidden.reshape(-1, self.rank).T @ saved.inner.reshape(-1, self.rank)
            if needs_grad[0]:
                grad_z = self._activation_backward(grad_hidden @ projection, z, saved.inner)
        if coefficients is not None:
            assert saved.offset is not None and saved.row is not None and saved.rows is not None
            offset, rows, order = saved.offset, saved.rows, saved.rows.shape[-1] - 1
            grad_points = grad  # grad_j at curve (j, i)
            if self.spline_mode != "per_unit":
                grad_points = grad.unsqueeze(-1).expand(*grad.shape, self.rank).flatten(-2)
            if needs_grad[0] and order > 0:  # dφ/dz = (dP/df) / step
                grad_spline = grad_points * horner_derivative(rows, offset)
                if self.spline_mode != "per_unit":  # z_i feeds curves (j, i) for every j
                    grad_spline = grad_spline.unflatten(-1, (self.rank, self.rank)).sum(-2)
                if grad_z is None:
                    grad_z = grad_spline.mul_(1.0 / self.grid_step)
                else:
                    grad_z = torch.add(grad_z, grad_spline, alpha=1.0 / self.grid_step)
            if needs_grad[2]:  # ∂φ/∂P[row, p] = f^p at the points on that row
                scaled_powers = [grad_points]  # grad · f^p by repeated products (cheaper than a broadcast pow)
                for _ in range(order):
                    scaled_powers.append(scaled_powers[-1] * offset)
                contributions = torch.stack(scaled_powers, -1).reshape(-1, order + 1)
                curves, rows_per_curve = offset.shape[-1], self.spline_polynomial_map.shape[1]
                grad_table = contributions.new_zeros(curves * rows_per_curve, order + 1).index_add_(0, saved.row.reshape(-1), contributions)
                grad_table = grad_table.view(curves, -1)
                if self.spline_mode == "sum":
                    grad_table = grad_table.view(self.rank, self.rank, -1).sum(1)
                grad_coefficients = (grad_table @ self.spline_polynomial_map.flatten(1).T.to(grad_table)).view(coefficients.shape)
        if needs_grad[0] and grad_z is None:
            grad_z = torch.zeros_like(z)
        return grad_z, grad_projection, grad_coefficients

    def _activation_backward(self, grad: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """``grad · act'(before)``, where ``after = act(before)``."""
        if self.activation_name == "tanh":
            return torch.ops.aten.tanh_backward(grad, after)
        if self.activation_name == "sigmoid":
            return torch.ops.aten.sigmoid_backward(grad, after)
        return torch.ops.aten.leaky_relu_backward(grad, before, self.leaky_relu_slope, False)

    def extra_repr(self) -> str:
        return (
            f"rank={self.rank}, activation={self.activation_name}, fixed={self.self_projection is not None}, "
            f"learnable={self.spline_coefficients is not None}, spline_mode={self.spline_mode}, "
            f"knots={self.knots.numel()}, order={self.spline_order}"
        )


class _AnlIntermediates(NamedTuple):
    """What the ANL's forward computes and its backward reuses (``None`` where a part is switched off)."""

    out: torch.Tensor | None  # σ(z) (the backward does not need it)
    inner: torch.Tensor | None  # act(z)
    hidden: torch.Tensor | None  # H act(z)
    outer: torch.Tensor | None  # F(z) = act(H act(z))
    offset: torch.Tensor | None  # f ∈ [0, 1) of each spline point in its knot interval
    row: torch.Tensor | None  # its row of the flattened polynomial table (int64)
    rows: torch.Tensor | None  # that row's polynomial coefficients, (..., curves, order + 1)


class _AnlFunction(torch.autograd.Function):
    """``σ(z)`` as one autograd node: forward and backward in a handful of ops each (``book/cost.md``).

    For a double backward (``create_graph=True``) the backward recomputes the intermediates with plain,
    differentiable ops, so that autograd sees how they depend on the inputs.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: torch.Tensor, projection: torch.Tensor | None, coefficients: torch.Tensor | None, anl: AdaptiveNonlinearLayer
    ) -> torch.Tensor:
        parts = anl._intermediates(z, projection, coefficients)
        ctx.anl = anl
        ctx.save_for_backward(z, projection, coefficients, *parts[1:])
        assert parts.out is not None
        return parts.out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        z, projection, coefficients, *kept = ctx.saved_tensors
        anl: AdaptiveNonlinearLayer = ctx.anl
        if torch.is_grad_enabled():
            saved = anl._intermediates(z, projection, coefficients)
        else:
            saved = _AnlIntermediates(None, *kept)
        return (*anl._backward(grad, z, projection, coefficients, saved, ctx.needs_input_grad[:3]), None)
