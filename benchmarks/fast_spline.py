"""Prototype: the B-spline term L(z) of AuroRA's ANL (Eq. 7) in closed form on a uniform grid.

A proposal for ``aurora/spline.py`` and ``aurora/nonlinear.py`` (owned by the lead), measured in
``book/cost.md``. ``aurora.bspline_basis`` runs Cox–de Boor through autograd: every one of its
``spline_order`` rounds builds and *saves for backward* several ``(..., r, n_bases)`` tensors, so
activation memory grows about eight times faster with ``grid_size`` than the basis itself, and the
ANL adds ~100 kernel-launching ops to each adapted layer's training step (LoRA's own: ~12).

On a uniform grid (the only grid the ANL uses: ``aurora.uniform_knots``) a point ``z`` lies in one
knot interval ``j = floor((z - t_0) / h)`` with offset ``f = (z - t_0) / h - j`` in [0, 1), and only
the ``order + 1`` bases ``B_{j-m}``, ``m = 0..order``, are nonzero there. They are fixed
polynomials of ``f`` (pieces of the cardinal B-spline ``N_order``):

    B_{j-m}(z) = N_order(f + m) = Σ_p f^p · M[p, m],     d/dz B_{j-m}(z) = Σ_p f^p · M'[p, m] / h,

with ``M`` computed once from the Cox–de Boor recursion on polynomial coefficients. So

* :func:`local_uniform_basis` gives the nonzero values and their indices: cost and memory
  independent of ``grid_size``;
* :func:`uniform_bspline_basis` scatters them into the usual ``(..., n_bases)`` basis, a drop-in
  replacement for ``bspline_basis(x, uniform_knots(...), order)`` (memory: the basis tensor);
* :class:`PerUnitSpline` (``spline_mode="per_unit"``, the default) is an autograd Function that
  saves only ``z`` and the coefficients and recomputes the local basis in backward: the ANL then
  adds ~40 kernel-launching ops per layer step instead of ~100, and no ``(..., n_bases)`` tensor
  exists at all. It supports ``torch.func`` (``jacrev``, ``vmap``) but not double backward; an
  autograd-only variant of the same speed gathers per-interval polynomial coefficients
  ``P[u, j] = Σ_m c[u, j - m] M[:, m]`` with ``F.embedding`` and evaluates ``Σ_p f^p P[u, j, p]``.

:func:`adopt_closed_form_spline` switches the ANLs of a model with AuroRA adapters to this path
(the benchmark's ``aurora_closed_form`` row). Parameters, buffers and state dicts are unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.polynomial import polynomial as npoly
from torch import nn

import aurora
from aurora.nonlinear import AdaptiveNonlinearLayer

__all__ = [
    "cardinal_bspline_pieces",
    "local_uniform_basis",
    "uniform_bspline_basis",
    "PerUnitSpline",
    "ClosedFormAdaptiveNonlinearLayer",
    "adopt_closed_form_spline",
]


def cardinal_bspline_pieces(order: int) -> torch.Tensor:
    """``M`` of shape ``(order + 1, order + 1)`` (float64): ``N_order(f + m) = Σ_p f^p M[p, m]`` for ``f`` in [0, 1).

    Cox–de Boor on uniform knots, on polynomial coefficients:
    ``N_d(f + m) = (f + m)/d · N_{d-1}(f + m) + (d + 1 - f - m)/d · N_{d-1}(f + m - 1)``, ``N_0 = 1`` on [0, 1).
    """
    if order < 0:
        raise ValueError(f"order must be an integer >= 0, got {order!r}")
    pieces = [np.array([1.0])]
    for degree in range(1, order + 1):
        grown = []
        for m in range(degree + 1):
            poly = np.zeros(1)
            if m < degree:
                poly = npoly.polyadd(poly, npoly.polymul([m / degree, 1.0 / degree], pieces[m]))
            if m > 0:
                poly = npoly.polyadd(poly, npoly.polymul([(degree + 1 - m) / degree, -1.0 / degree], pieces[m - 1]))
            grown.append(poly)
        pieces = grown
    matrix = np.zeros((order + 1, order + 1))
    for m, poly in enumerate(pieces):
        matrix[: len(poly), m] = poly
    return torch.from_numpy(matrix)


def _grid(knots: torch.Tensor, order: int) -> tuple[float, float, int]:
    """``(t_0, h, n_bases)`` of a uniform knot vector from ``aurora.uniform_knots``."""
    steps = knots[1:] - knots[:-1]
    step = float(steps.mean())
    if not torch.allclose(steps, torch.full_like(steps, step), rtol=1e-4, atol=0.0):
        raise ValueError("knots must be uniform (from aurora.uniform_knots) for the closed-form basis")
    return float(knots[0]), step, knots.numel() - order - 1


def local_uniform_basis(
    z: torch.Tensor, first_knot: float, step: float, n_bases: int, order: int, pieces: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``order + 1`` nonzero bases at ``z`` (any shape ``(...)``).

    Returns ``(index, values)``, both ``(..., order + 1)``: ``index`` (int64) is the position of
    ``B_{j-m}`` in a coefficient row padded with ``order + 1`` zeros on both sides (so bases outside
    ``0..n_bases-1`` and points outside ``[t_0, t_last)`` read zeros); ``values`` are the basis values.
    """
    scaled = (z - first_knot) / step
    interval = torch.floor(scaled)
    powers = (scaled - interval).unsqueeze(-1).pow(torch.arange(order + 1, device=z.device, dtype=z.dtype))
    index = interval.clamp(-1, n_bases + order).long().unsqueeze(-1) + (order + 1) - torch.arange(order + 1, device=z.device)
    return index, powers @ pieces.to(z.dtype)


def uniform_bspline_basis(x: torch.Tensor, knots: torch.Tensor, order: int) -> torch.Tensor:
    """Same result as ``aurora.bspline_basis(x, knots, order)`` for uniform ``knots``: ``(..., n_bases)``.

    At a knot itself (measure zero) a degree-0 basis may land in the neighbouring interval by rounding.
    Differentiable in ``x`` (through the local polynomial pieces).
    """
    first_knot, step, n_bases = _grid(knots, order)
    index, values = local_uniform_basis(x, first_knot, step, n_bases, order, cardinal_bspline_pieces(order))
    padded = torch.zeros(*x.shape, n_bases + 2 * order + 2, dtype=x.dtype, device=x.device)
    return padded.scatter(-1, index, values)[..., order + 1 : order + 1 + n_bases]


class PerUnitSpline(torch.autograd.Function):
    """``L_u(z) = Σ_k c[u, k] B_k(z_u)`` for ``z`` ``(..., r)`` and ``c`` ``(r, n_bases)`` on a uniform grid.

    Saves only ``z`` and ``c`` for backward and recomputes the local basis there. ``constants`` come from
    :func:`spline_constants` (they depend on the grid and the rank only).
    """

    generate_vmap_rule = True

    @staticmethod
    def _local(z: torch.Tensor, constants: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(index into the padded, flattened coefficients, powers f^0..f^order)``, both ``(..., r, order + 1)``."""
        scaled = (z - constants["first_knot"]) * constants["inverse_step"]
        interval = scaled.floor()
        powers = (scaled - interval).unsqueeze(-1).pow(constants["exponents"])
        index = interval.clamp_(-1, constants["last_interval"]).long().unsqueeze(-1) + constants["offsets"]
        return index, powers

    @staticmethod
    def forward(z: torch.Tensor, coefficients: torch.Tensor, constants: dict[str, Any]) -> torch.Tensor:
        index, powers = PerUnitSpline._local(z, constants)
        table = nn.functional.pad(coefficients, constants["padding"]).reshape(-1)
        return (table[index] * (powers @ constants["pieces"])).sum(-1)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        z, coefficients, constants = inputs
        ctx.save_for_backward(z, coefficients)
        ctx.constants = constants

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, coefficients = ctx.saved_tensors
        constants = ctx.constants
        index, powers = PerUnitSpline._local(z, constants)
        values, slopes = (powers @ constants["pieces_and_slopes"]).chunk(2, dim=-1)  # B and dB/dz
        grad_z = grad_coefficients = None
        if ctx.needs_input_grad[0]:
            table = nn.functional.pad(coefficients, constants["padding"]).reshape(-1)
            grad_z = (table[index] * slopes).sum(-1) * grad_output
        if ctx.needs_input_grad[1]:
            rank, width = coefficients.shape[0], coefficients.shape[1] + sum(constants["padding"])
            flat = torch.zeros(rank * width, dtype=coefficients.dtype, device=coefficients.device)
            flat.index_add_(0, index.reshape(-1), (grad_output.unsqueeze(-1) * values).reshape(-1))
            grad_coefficients = flat.view(rank, width)[:, constants["padding"][0] : width - constants["padding"][1]]
        return grad_z, grad_coefficients, None


def spline_constants(knots: torch.Tensor, order: int, rank: int, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Everything :class:`PerUnitSpline` needs besides ``z`` and the coefficients, computed once per layer."""
    first_knot, step, n_bases = _grid(knots.double(), order)
    pieces = cardinal_bspline_pieces(order)
    slopes = torch.zeros_like(pieces)  # d/dz Σ_p f^p M[p, m] = Σ_p f^p (p + 1) M[p + 1, m] / h
    slopes[:-1] = pieces[1:] * torch.arange(1, order + 1, dtype=pieces.dtype).unsqueeze(-1) / step
    width = n_bases + 2 * order + 2
    offsets = (order + 1) - torch.arange(order + 1) + width * torch.arange(rank).unsqueeze(-1)  # (rank, order + 1)
    device = knots.device
    return {
        "first_knot": first_knot, "inverse_step": 1.0 / step, "last_interval": n_bases + order,
        "padding": (order + 1, order + 1),
        "exponents": torch.arange(order + 1, dtype=dtype, device=device),
        "offsets": offsets.to(device),
        "pieces": pieces.to(dtype=dtype, device=device),
        "pieces_and_slopes": torch.cat([pieces, slopes], dim=1).to(dtype=dtype, device=device),
    }


class ClosedFormAdaptiveNonlinearLayer(AdaptiveNonlinearLayer):
    """``aurora.AdaptiveNonlinearLayer`` whose ``L(z)`` uses the closed-form uniform basis (same parameters)."""

    def learnable_part(self, z: torch.Tensor) -> torch.Tensor:
        assert self.spline_coefficients is not None
        coefficients = self.spline_coefficients.to(z.dtype)
        if self.spline_mode == "per_unit":
            constants = self._spline_constants
            if constants["pieces"].device != z.device or constants["pieces"].dtype != z.dtype:
                constants = self._spline_constants = spline_constants(self.knots, self.spline_order, self.rank, z.dtype)
            return PerUnitSpline.apply(z, coefficients, constants)
        basis = uniform_bspline_basis(z, self.knots, self.spline_order)  # (..., r, n)
        if self.spline_mode == "sum":
            return basis.sum(-2) @ coefficients.T
        return basis.flatten(-2) @ coefficients.flatten(1).T


def adopt_closed_form_spline(model: nn.Module) -> int:
    """Switch every ANL in ``model`` to :class:`ClosedFormAdaptiveNonlinearLayer` in place; returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is AdaptiveNonlinearLayer:
            module.__class__ = ClosedFormAdaptiveNonlinearLayer
            module._spline_constants = spline_constants(module.knots, module.spline_order, module.rank)
            count += 1
    return count
