"""B-spline knots and basis (the learnable part L of the ANL, AuroRA Eq. 7).

The basis is evaluated with the Cox–de Boor recursion, vectorised over all basis functions at
once: the only Python loop runs over the spline order (3 iterations for cubic splines), never
over bases or rank units. Chapter: ``book/anl_explorer.md``.
"""

from __future__ import annotations

import torch

__all__ = ["uniform_knots", "bspline_basis", "num_bases"]


def num_bases(grid_size: int, spline_order: int) -> int:
    """Number of B-spline basis functions on an extended uniform grid: ``grid_size + spline_order``."""
    return grid_size + spline_order


def uniform_knots(
    grid_size: int,
    spline_order: int,
    grid_range: tuple[float, float] = (-1.0, 1.0),
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform knot vector over ``grid_range``, extended by ``spline_order`` knots on each side.

    ``grid_size`` intervals of width ``h = (hi - lo) / grid_size`` cover the range; the extra knots make
    the ``grid_size + spline_order`` bases a partition of unity on all of ``[lo, hi)``.

    Returns a 1-D tensor of ``grid_size + 2 * spline_order + 1`` increasing knots.
    """
    if grid_size < 1:
        raise ValueError(f"grid_size must be an integer >= 1, got {grid_size!r}")
    if spline_order < 0:
        raise ValueError(f"spline_order must be an integer >= 0, got {spline_order!r}")
    lo, hi = float(grid_range[0]), float(grid_range[1])
    if not hi > lo:
        raise ValueError(f"grid_range must be (low, high) with low < high, got {grid_range!r}")
    step = (hi - lo) / grid_size
    index = torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float64)
    return (lo + index * step).to(dtype)


def bspline_basis(x: torch.Tensor, knots: torch.Tensor, order: int) -> torch.Tensor:
    """All B-spline basis functions of degree ``order`` on ``knots``, evaluated at ``x``.

    Cox–de Boor: ``B_{i,0}(x) = 1[t_i <= x < t_{i+1}]`` and
    ``B_{i,k}(x) = (x - t_i)/(t_{i+k} - t_i) B_{i,k-1}(x) + (t_{i+k+1} - x)/(t_{i+k+1} - t_{i+1}) B_{i+1,k-1}(x)``.

    Args:
        x: any shape ``(...)``, any floating dtype.
        knots: 1-D, non-decreasing, ``n_knots`` entries.
        order: spline degree ``k >= 0`` (3 = cubic).

    Returns:
        ``(..., n_knots - order - 1)`` in the dtype of ``x``. Outside ``[t_0, t_last)`` every basis is 0
        (compact support), so values and gradients stay finite for any finite input (Prop. 2.2).
    """
    if knots.dim() != 1:
        raise ValueError(f"knots must be a 1-D tensor, got shape {tuple(knots.shape)}")
    if order < 0 or knots.numel() < order + 2:
        raise ValueError(
            f"order must satisfy 0 <= order <= len(knots) - 2; got order={order}, len(knots)={knots.numel()}"
        )
    t = knots.to(device=x.device, dtype=x.dtype)
    # Move points outside the support onto t_last, where every basis is 0 (half-open intervals): the value
    # is unchanged, and the recursion never multiplies huge |x| terms that would overflow into NaN gradients.
    x = torch.where((x >= t[0]) & (x < t[-1]), x, t[-1]).unsqueeze(-1)
    bases = ((x >= t[:-1]) & (x < t[1:])).to(x.dtype)
    for k in range(1, order + 1):
        left_den = t[k:-1] - t[: -(k + 1)]
        right_den = t[k + 1 :] - t[1:-k]
        left = (x - t[: -(k + 1)]) / torch.where(left_den == 0, torch.ones_like(left_den), left_den)
        right = (t[k + 1 :] - x) / torch.where(right_den == 0, torch.ones_like(right_den), right_den)
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return bases
