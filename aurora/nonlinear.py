"""Nonlinearities between the low-rank projectors.

* AuroRA's Adaptive Nonlinear Layer (ANL), Eq. 5–8:
  ``σ(z) = F(z) + L(z)`` with the fixed part ``F(z) = act(H act(z))`` (Eq. 6, H an r×r self-projection)
  and the learnable B-spline part ``L(z)`` (Eq. 7).
* LoRAN's ``Sinter(x) = a·sin(ωx)⊙x + x``.

Chapter: ``book/anl_explorer.md``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import ACTIVATIONS, SELF_PROJECTION_INITS, SPLINE_MODES, require_choice
from .spline import cardinal_bspline_pieces, num_bases, uniform_knots, uniform_spline

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
        require_choice("spline_mode", spline_mode, SPLINE_MODES)
        require_choice("self_projection_init", self_projection_init, SELF_PROJECTION_INITS)
        self.rank = rank
        self.activation_name = activation
        self.activation = get_activation(activation, leaky_relu_slope)
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
        self.register_buffer("spline_pieces", cardinal_bspline_pieces(spline_order), persistent=False)
        if learnable:
            n = num_bases(grid_size, spline_order)
            shape = (rank, rank, n) if spline_mode == "per_edge" else (rank, n)
            self.spline_coefficients = nn.Parameter(torch.randn(shape) * spline_init_scale)

    def fixed_part(self, z: torch.Tensor) -> torch.Tensor:
        """``F(z) = act(H act(z))`` (Eq. 6)."""
        assert self.self_projection is not None
        return self.activation(self.activation(z) @ self.self_projection.T.to(z.dtype))

    def learnable_part(self, z: torch.Tensor) -> torch.Tensor:
        """``L(z)`` (Eq. 7) in the reading chosen by ``spline_mode``, via the closed-form uniform spline."""
        assert self.spline_coefficients is not None
        coefficients = self.spline_coefficients.to(z.dtype)
        if self.spline_mode == "per_unit":  # L_j = φ_j(z_j)
            return uniform_spline(z, coefficients, self.grid_start, self.grid_step, self.spline_pieces)
        if self.spline_mode == "sum":  # L_j = Σ_i φ_j(z_i): one curve per output, shared by the inputs
            coefficients = coefficients.unsqueeze(1).expand(self.rank, self.rank, -1)
        # per_edge (and sum): L_j = Σ_i φ_ji(z_i), curve (j, i) evaluated at z_i
        points = z.unsqueeze(-2).expand(*z.shape[:-1], self.rank, self.rank).flatten(-2)  # (..., r*r): z_i at (j, i)
        curves = uniform_spline(points, coefficients.flatten(0, 1), self.grid_start, self.grid_step, self.spline_pieces)
        return curves.unflatten(-1, (self.rank, self.rank)).sum(-1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.fixed_part(z) if self.self_projection is not None else None
        if self.spline_coefficients is not None:
            spline = self.learnable_part(z)
            out = spline if out is None else out + spline
        assert out is not None
        return out

    def extra_repr(self) -> str:
        return (
            f"rank={self.rank}, activation={self.activation_name}, fixed={self.self_projection is not None}, "
            f"learnable={self.spline_coefficients is not None}, spline_mode={self.spline_mode}, "
            f"knots={self.knots.numel()}, order={self.spline_order}"
        )
