"""Nonlinearities between the low-rank projectors.

* AuroRA's Adaptive Nonlinear Layer (ANL), Eq. 5–8:
  ``σ(z) = F(z) + L(z)`` with the fixed part ``F(z) = act(H act(z))`` (Eq. 6, H an r×r self-projection)
  and the learnable B-spline part ``L(z)`` (Eq. 7).
* LoRAN's ``Sinter(x) = a·sin(ωx)⊙x + x``.

The ANL's ``forward`` is one autograd node with a hand-written backward (fewer, larger steps than
autograd would record for the same function, :meth:`AdaptiveNonlinearLayer.autograd_forward`), and
:func:`anl_update` is AuroRA's whole dynamic update ``h + s · B σ(A x)`` (Eq. 4) as one node; the tests
hold them to the plain-op forms' values and first and second derivatives.

Chapter: ``book/anl_explorer.md``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import ACTIVATIONS, SELF_PROJECTION_INITS, SPLINE_MODES, require_choice
from .spline import (
    horner, horner_derivative, locate, num_bases, polynomial_table, shared_interval_polynomial_map, shared_power_major_map,
    uniform_knots,
)

__all__ = ["get_activation", "sinter", "AdaptiveNonlinearLayer", "anl_update"]

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
        self.spline_shift = 1.0 - self.grid_start / self.grid_step  # z / step + shift = 1 + (z - knots[0]) / step
        self.register_buffer("spline_shift_tensor", torch.full((1,), self.spline_shift), persistent=False)
        n = num_bases(grid_size, spline_order)
        # one map shared by every ANL with this grid size and order (re-shared after .to(), see _apply)
        self.register_buffer(
            "spline_polynomial_map", shared_interval_polynomial_map(n, spline_order, torch.float64, torch.device("cpu")), persistent=False
        )
        if learnable:
            shape = (rank, rank, n) if spline_mode == "per_edge" else (rank, n)
            self.spline_coefficients = nn.Parameter(torch.randn(shape) * spline_init_scale)
            # the fast path's table (see _spline_forward): the power-major map, and each point's curve column
            table_map = shared_power_major_map(n, spline_order, torch.get_default_dtype(), torch.device("cpu"))  # the parameters' dtype
            self.register_buffer("spline_table_map", table_map, persistent=False)
            columns = torch.arange(rank * rank).view(rank, rank)  # point (j, i): curve (j, i), z_i
            columns = {"per_unit": torch.arange(rank), "sum": columns // rank, "per_edge": columns}[spline_mode]
            self.register_buffer("spline_point_columns", columns, persistent=False)
            self.spline_columns = rank * rank if spline_mode == "per_edge" else rank  # distinct curves in the table

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "AdaptiveNonlinearLayer":
        """``Module._apply`` (``.to()``, ``.cuda()``, ``.double()``, …), then point the maps at the shared copies for their
        new dtype and device, so that moving a model does not leave one copy per layer."""
        super()._apply(fn, recurse)
        moved = self.spline_polynomial_map
        self._buffers["spline_polynomial_map"] = shared_interval_polynomial_map(moved.shape[0], self.spline_order, moved.dtype, moved.device)
        shift = self.spline_shift_tensor  # recomputed in float64, not cast from the old dtype
        self._buffers["spline_shift_tensor"] = torch.full((1,), self.spline_shift, dtype=shift.dtype, device=shift.device)
        if "spline_table_map" in self._buffers:
            table_map = self.spline_table_map  # in the parameters' dtype (the interval map stays float64 unless cast)
            self._buffers["spline_table_map"] = shared_power_major_map(moved.shape[0], self.spline_order, table_map.dtype, table_map.device)
        return self

    def fixed_part(self, z: torch.Tensor) -> torch.Tensor:
        """``F(z) = act(H act(z))`` (Eq. 6)."""
        projection, _ = self._parameters_as(z.dtype)
        assert projection is not None
        return self._fixed_terms(z, projection)

    def learnable_part(self, z: torch.Tensor) -> torch.Tensor:
        """``L(z)`` (Eq. 7) in the reading chosen by ``spline_mode``, via the closed-form uniform spline."""
        _, coefficients = self._parameters_as(z.dtype)
        assert coefficients is not None
        return self._spline_terms(z, coefficients)

    def autograd_forward(self, z: torch.Tensor) -> torch.Tensor:
        """``σ(z) = F(z) + L(z)`` in plain autograd ops."""
        return self._plain_forward(z, *self._parameters_as(z.dtype))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``σ(z)``, the same function as :meth:`autograd_forward`, whose graph holds some 30 small ops, as one
        autograd node with a hand-written backward (:meth:`fast_forward`, :meth:`fast_backward`). Under
        ``torch.func`` transforms (``vmap``, ``jacrev``, …) it takes :meth:`autograd_forward`. Under autocast it
        computes in the parameters' dtype (fp32), like the rest of the adapter math: its tensors are r wide, so low
        precision would save nothing."""
        if torch._C._are_functorch_transforms_active():
            return self.autograd_forward(z)
        if torch.is_autocast_enabled(z.device.type):
            with torch.autocast(z.device.type, enabled=False):
                return self.forward(z.to(self.knots.dtype))  # the knots follow the module's dtype
        return _AnlFunction.apply(z, *self._parameters_as(z.dtype), self)

    def _parameters_as(self, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``H`` and the spline coefficients in ``dtype`` (``None`` where that part is switched off)."""
        projection, coefficients = self.self_projection, self.spline_coefficients
        if projection is not None and projection.dtype != dtype:
            projection = projection.to(dtype)
        if coefficients is not None and coefficients.dtype != dtype:
            coefficients = coefficients.to(dtype)
        return projection, coefficients

    def fast_forward(
        self, z: torch.Tensor, projection: torch.Tensor | None, coefficients: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """``σ(z)`` for a contiguous ``z`` of shape ``(m, r)``, with no autograd graph, and what :meth:`fast_backward` needs.

        The fixed part is two activations and one GEMM; the spline gathers each point's interval polynomial from the
        power-major table (:func:`aurora.spline.shared_power_major_map`) with one ``index_select`` and evaluates it
        by Horner's rule. The kept list is ``[act(z), H act(z) or F(z), offsets, gathered polynomials, rows]``.
        """
        out = inner = activated = offset = gathered = row = None
        if projection is not None:
            inner = self.activation(z)
            hidden = torch.mm(inner, projection.T)
            outer = self.activation(hidden)
            activated = hidden if self.activation_name == "leaky_relu" else outer  # what its backward reads
            out = outer
        if coefficients is not None:
            spline, offset, gathered, row = self._spline_forward(z, coefficients)
            out = spline if out is None else spline.add_(out)
        assert out is not None
        return out, [inner, activated, offset, gathered, row]

    def _spline_forward(self, z: torch.Tensor, coefficients: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``L(z)`` (a fresh tensor) and the offsets, gathered polynomials ``(order + 1, points)`` and table columns.

        ``s = 1 + (z - t_0) / step``, NaN sent to 0 and clamped to ``[0, rows - 1]``, has integer part = the table row
        (0 and ``rows - 1`` are the zero rows outside the support) and fractional part = the offset ``f`` in the interval.
        Point ``(j, i)`` of sum and per_edge (curve ``(j, i)`` at ``z_i``) reads row ``i`` of ``s``.
        """
        table_map, shift = self.spline_table_map, self.spline_shift_tensor
        if table_map.dtype != z.dtype:
            table_map, shift = table_map.to(z.dtype), torch.full((1,), self.spline_shift, dtype=z.dtype, device=z.device)
        powers, columns = self.spline_order + 1, self.spline_columns
        table = torch.mm(table_map, coefficients.reshape(columns, -1).T).view(powers, -1)  # [p, row · columns + curve]
        rows = table.shape[1] // columns
        scaled = torch.add(shift, z, alpha=1.0 / self.grid_step).nan_to_num_(nan=0.0).clamp_(0.0, rows - 1.0)
        offset, interval = torch.frac(scaled), scaled.long()
        if self.spline_mode == "per_unit":
            row = torch.add(self.spline_point_columns, interval, alpha=columns)
            gathered = table.index_select(1, row.view(-1))
            return horner(gathered, offset.view(-1), dim=0).view_as(z), offset, gathered, row
        row = torch.add(self.spline_point_columns, interval.unsqueeze(-2), alpha=columns)  # (m, r, r)
        gathered = table.index_select(1, row.view(-1)).view(powers, *row.shape)
        return horner(gathered, offset.unsqueeze(-2), dim=0).sum(-1), offset, gathered, row

    def fast_backward(
        self, grad: torch.Tensor, z: torch.Tensor, projection: torch.Tensor | None, coefficients: torch.Tensor | None,
        kept: list[torch.Tensor | None], needs_grad: tuple[bool, bool, bool],
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Gradients of ``Σ grad · σ(z)`` with respect to ``z``, ``H`` and the coefficients (``(m, r)`` tensors, ``kept`` from
        :meth:`fast_forward`); ``None`` where ``needs_grad`` says no."""
        inner, activated, offset, gathered, row = kept
        grad_z = grad_projection = grad_coefficients = None
        if projection is not None:
            assert inner is not None and activated is not None
            grad_hidden = self._activation_backward(grad, activated)
            if needs_grad[1]:
                grad_projection = torch.mm(grad_hidden.T, inner)
            if needs_grad[0]:
                grad_z = self._activation_backward(torch.mm(grad_hidden, projection), z if self.activation_name == "leaky_relu" else inner)
        if coefficients is not None:
            assert offset is not None and gathered is not None and row is not None
            order, per_unit = self.spline_order, self.spline_mode == "per_unit"
            if needs_grad[0] and order > 0:  # dσ/dz = P'(f) / step
                if per_unit:
                    slope = horner_derivative(gathered, offset.view(-1), dim=0).view_as(grad)
                    grad_z = torch.mul(grad, slope).mul_(1.0 / self.grid_step) if grad_z is None else torch.addcmul(grad_z, grad, slope, value=1.0 / self.grid_step)
                else:  # z_i feeds curves (j, i) for every j: Σ_j grad_j P'_ji
                    slope = horner_derivative(gathered, offset.unsqueeze(-2), dim=0)
                    if grad_z is None:
                        grad_z = torch.bmm(grad.unsqueeze(-2), slope).squeeze(-2).mul_(1.0 / self.grid_step)
                    else:
                        grad_z = torch.baddbmm(grad_z.unsqueeze(-2), grad.unsqueeze(-2), slope, alpha=1.0 / self.grid_step).squeeze(-2)
            if needs_grad[2]:  # ∂σ_j/∂table[p, row] = f^p at the points on that row
                if per_unit:  # grad · f^p by repeated products (cheaper than a broadcast pow)
                    scaled_powers = [grad]
                    for _ in range(order):
                        scaled_powers.append(scaled_powers[-1] * offset)
                    contributions = torch.stack(scaled_powers)
                else:
                    powers = [torch.ones_like(offset)]
                    for _ in range(order):
                        powers.append(powers[-1] * offset)
                    contributions = torch.mul(grad.unsqueeze(-1), torch.stack(powers).unsqueeze(-2))  # (p, m, j, i)
                table_map = self.spline_table_map
                grad_table = grad.new_zeros(order + 1, table_map.shape[0] // (order + 1) * self.spline_columns)
                grad_table.index_add_(1, row.view(-1), contributions.reshape(order + 1, -1))
                table_map = table_map if table_map.dtype == grad.dtype else table_map.to(grad.dtype)
                grad_coefficients = torch.mm(grad_table.view(table_map.shape[0], -1).T, table_map).view(coefficients.shape)
        if needs_grad[0] and grad_z is None:
            grad_z = torch.zeros_like(z)
        return grad_z, grad_projection, grad_coefficients

    def plain_vjp(
        self, grad: torch.Tensor, z: torch.Tensor, projection: torch.Tensor | None, coefficients: torch.Tensor | None,
        needs_grad: tuple[bool, ...],
    ) -> tuple[torch.Tensor | None, ...]:
        """:meth:`fast_backward`'s gradients through :meth:`_plain_forward`'s plain ops, differentiable (double backward)."""
        out = self._plain_forward(z, projection, coefficients)
        inputs = (z, projection, coefficients)
        wanted = [t for t, need in zip(inputs, needs_grad) if need]
        grads = iter(torch.autograd.grad(out, wanted, grad, create_graph=True, allow_unused=True, materialize_grads=True))
        return tuple(next(grads) if need else None for need in needs_grad)

    def _plain_forward(self, z: torch.Tensor, projection: torch.Tensor | None, coefficients: torch.Tensor | None) -> torch.Tensor:
        """``σ(z)`` in plain (differentiable) torch ops: the reference that :meth:`fast_forward` is tested against."""
        out = None if projection is None else self._fixed_terms(z, projection)
        if coefficients is not None:
            spline = self._spline_terms(z, coefficients)
            out = spline if out is None else out + spline
        assert out is not None
        return out

    def _fixed_terms(self, z: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
        """``F(z) = act(H act(z))``."""
        return self.activation(self.activation(z) @ projection.T)

    def _spline_terms(self, z: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """``L(z)``: each curve point's offset and row of the polynomial table, that row's polynomial by Horner's rule.

        Curve ``(j, i)`` is evaluated at ``z_i`` and summed over ``i`` (sum, per_edge); per_unit has curve ``j`` at ``z_j``.
        """
        table = self._curve_table(coefficients)
        offset, row = locate(self._points(z), table.shape[1], self.grid_start, self.grid_step)
        spline = horner(table.flatten(0, 1)[row], offset)
        if self.spline_mode != "per_unit":
            spline = spline.unflatten(-1, (self.rank, self.rank)).sum(-1)
        return spline

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

    def _activation_backward(self, grad: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """``grad · act'(before)`` from ``kept`` = ``act(before)`` (tanh, sigmoid) or ``before`` (leaky ReLU)."""
        if self.activation_name == "tanh":
            return torch.ops.aten.tanh_backward(grad, kept)
        if self.activation_name == "sigmoid":
            return torch.ops.aten.sigmoid_backward(grad, kept)
        return torch.ops.aten.leaky_relu_backward(grad, kept, self.leaky_relu_slope, False)

    def extra_repr(self) -> str:
        return (
            f"rank={self.rank}, activation={self.activation_name}, fixed={self.self_projection is not None}, "
            f"learnable={self.spline_coefficients is not None}, spline_mode={self.spline_mode}, "
            f"knots={self.knots.numel()}, order={self.spline_order}"
        )


class _AnlFunction(torch.autograd.Function):
    """``σ(z)`` as one autograd node: forward and backward in a handful of ops each (``book/cost.md``).

    For a double backward (``create_graph=True``) the backward differentiates the plain-op form instead, so that
    autograd sees how the gradients depend on the inputs.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: torch.Tensor, projection: torch.Tensor | None, coefficients: torch.Tensor | None, anl: AdaptiveNonlinearLayer
    ) -> torch.Tensor:
        out, kept = anl.fast_forward(z.reshape(-1, anl.rank).contiguous(), projection, coefficients)
        ctx.anl = anl
        ctx.save_for_backward(z, projection, coefficients, *kept)
        return out.view(z.shape)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        z, projection, coefficients, *kept = ctx.saved_tensors
        anl: AdaptiveNonlinearLayer = ctx.anl
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            return (*anl.plain_vjp(grad, z, projection, coefficients, needs), None)
        flat = z.reshape(-1, anl.rank).contiguous()
        grad_z, grad_projection, grad_coefficients = anl.fast_backward(
            grad.reshape(flat.shape).contiguous(), flat, projection, coefficients, kept, needs
        )
        return None if grad_z is None else grad_z.view(z.shape), grad_projection, grad_coefficients, None


def anl_update(
    result: torch.Tensor, x: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float, anl: AdaptiveNonlinearLayer
) -> torch.Tensor:
    """``result + s · σ(x Aᵀ) Bᵀ`` (AuroRA's dynamic update, Eq. 4, added to the frozen output) as one autograd node.

    ``result`` is ``(n, d_out)``, ``x`` ``(n, d_in)``, all in the ANL's dtype. Forward: one GEMM down, the ANL's
    :meth:`~AdaptiveNonlinearLayer.fast_forward`, one ``addmm`` up; backward: three GEMMs (four with ``x``'s
    gradient) and the ANL's :meth:`~AdaptiveNonlinearLayer.fast_backward`, the scaling folded into the GEMMs and
    the products with an r-wide operand oriented r rows first, which BLAS runs fastest at small r. Outside ``torch.func``
    transforms and autocast only (:class:`aurora.layers.AuroraLayer` checks).
    """
    return _AnlUpdateFunction.apply(result, x, lora_A, lora_B, *anl._parameters_as(lora_A.dtype), scaling, anl)


class _AnlUpdateFunction(torch.autograd.Function):
    """:func:`anl_update`; a double backward differentiates the plain-op form (:meth:`AdaptiveNonlinearLayer.autograd_forward`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, result: torch.Tensor, x: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor,
        projection: torch.Tensor | None, coefficients: torch.Tensor | None, scaling: float, anl: AdaptiveNonlinearLayer,
    ) -> torch.Tensor:
        z = torch.mm(lora_A, x.T).T.contiguous()  # (A xᵀ)ᵀ: the skinny products with r rows first (see backward)
        sigma, kept = anl.fast_forward(z, projection, coefficients)
        ctx.anl, ctx.scaling = anl, scaling
        ctx.save_for_backward(x, lora_A, lora_B, projection, coefficients, z, sigma, *kept)
        return torch.addmm(result, sigma, lora_B.T, alpha=scaling)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, lora_A, lora_B, projection, coefficients, z, sigma, *kept = ctx.saved_tensors
        anl: AdaptiveNonlinearLayer = ctx.anl
        scaling: float = ctx.scaling
        needs = ctx.needs_input_grad
        grad_result = grad if needs[0] else None
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain-op form
            inputs = (x, lora_A, lora_B, projection, coefficients)
            wanted = [t for t, need in zip(inputs, needs[1:6]) if need]
            update = scaling * (anl._plain_forward(x @ lora_A.T, projection, coefficients) @ lora_B.T)
            grads = iter(torch.autograd.grad(update, wanted, grad, create_graph=True, allow_unused=True, materialize_grads=True))
            return grad_result, *(next(grads) if need else None for need in needs[1:6]), None, None
        # The products with an r-wide operand are formed as (r, ·) matrices and transposed back: at small r BLAS runs
        # (σᵀ g)ᵀ several times faster than gᵀ σ; beta=0: the first argument of addmm only gives the shape.
        grad_x = grad_A = grad_B = grad_projection = grad_coefficients = None
        if needs[3]:  # s · gᵀ σ
            grad_B = torch.addmm(lora_B.T, sigma.T, grad, beta=0, alpha=scaling).T
        if needs[1] or needs[2] or needs[4] or needs[5]:  # s · g B
            grad_sigma = torch.addmm(sigma.T, lora_B.T, grad.T, beta=0, alpha=scaling).T.contiguous()
            grad_z, grad_projection, grad_coefficients = anl.fast_backward(
                grad_sigma, z, projection, coefficients, kept, (needs[1] or needs[2], needs[4], needs[5])
            )
            if needs[2]:
                grad_A = torch.mm(grad_z.T, x)
            if needs[1]:
                grad_x = torch.mm(grad_z, lora_A)
        return grad_result, grad_x, grad_A, grad_B, grad_projection, grad_coefficients, None, None
