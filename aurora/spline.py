"""B-spline knots and basis (the learnable part L of the ANL, AuroRA Eq. 7).

Two evaluations of the same functions:

* :func:`bspline_basis` — the Cox–de Boor recursion for any knot vector, vectorised over all basis
  functions (the only Python loop runs over the spline order). The reference, and the basis plots.
* :func:`uniform_spline` — the closed form on a uniform grid, whose pieces the ANL's hot path uses. A point
  lies in one knot interval, where only ``order + 1`` bases are nonzero and each is a fixed
  polynomial of the offset ``f ∈ [0, 1)`` inside the interval (a piece of the cardinal B-spline). So
  ``Σ_k c_k B_k(z)`` is a polynomial per interval, whose coefficients are one matrix product of
  ``c`` with :func:`interval_polynomial_map` per call; each point gathers one row and evaluates it by
  Horner's rule, with memory independent of ``grid_size``. The ANL's plain-op form
  (:mod:`aurora.nonlinear`) calls :func:`polynomial_table`, :func:`locate` and :func:`horner`; its one-node
  fast path keeps the same table power-major (:func:`shared_power_major_map`: each power's coefficients a
  contiguous row), so that one ``index_select`` gathers them and one ``index_add_`` scatters their gradients.

Chapters: ``book/anl_explorer.md``, ``book/cost.md``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from numpy.polynomial import polynomial as npoly

__all__ = ["uniform_knots", "bspline_basis", "num_bases", "cardinal_bspline_pieces", "interval_polynomial_map", "shared_interval_polynomial_map", "shared_power_major_map", "polynomial_map_bytes", "max_grid_size", "require_polynomial_map_fits", "MAX_POLYNOMIAL_MAP_BYTES", "polynomial_table", "first_rows", "locate", "horner", "horner_derivative", "uniform_spline"]


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
    if len(grid_range) != 2 or not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"grid_range must be two finite numbers (low, high) with low < high, got {grid_range!r}")
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


def cardinal_bspline_pieces(order: int) -> torch.Tensor:
    """``M`` of shape ``(order + 1, order + 1)``, float64: ``N_order(f + m) = Σ_p f^p M[p, m]`` for ``f ∈ [0, 1)``.

    ``N_order`` is the cardinal B-spline on knots ``0, 1, …, order + 1``; on a uniform grid with step ``h`` and
    first knot ``t_0``, the basis ``B_k(z) = N_order((z - t_0) / h - k)``. Built with the Cox–de Boor recursion
    on polynomial coefficients: ``N_d(f + m) = (f + m)/d · N_{d-1}(f + m) + (d + 1 - f - m)/d · N_{d-1}(f + m - 1)``.
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


def interval_polynomial_map(n_bases: int, order: int) -> torch.Tensor:
    """The linear map from spline coefficients to per-interval polynomials, ``(n_bases, n_intervals + 2, order + 1)``, float64.

    On the uniform grid, interval ``i`` (``0 <= i < n_intervals = n_bases + order``) carries the polynomial
    ``Σ_p f^p P[i, p]`` of the offset ``f ∈ [0, 1)``, with ``P[i, p] = Σ_m c[i - m] M[p, m]`` (``M`` from
    :func:`cardinal_bspline_pieces`, ``c[j] = 0`` outside ``0 <= j < n_bases``). The table is
    ``coefficients @ map``; its rows are interval ``i`` at ``i + 1`` and a zero row at each end, where points left and
    right of the support land.
    """
    pieces = cardinal_bspline_pieces(order)
    identity = torch.eye(n_bases, dtype=torch.float64)
    windows = F.pad(identity, (order, order)).unfold(-1, order + 1, 1).flip(-1)  # (n_bases, n_intervals, order + 1): c[i - m]
    return F.pad(windows @ pieces.T, (0, 0, 1, 1))


# The dense map grows with grid_size²: 64 MiB allows grid_size <= 1442 for cubic splines (KAN's grids go to 1000).
MAX_POLYNOMIAL_MAP_BYTES = 64 * 2**20


def polynomial_map_bytes(grid_size: int, order: int) -> int:
    """Bytes of the float64 :func:`interval_polynomial_map` of a grid with ``grid_size`` intervals and degree ``order``."""
    n_bases = num_bases(grid_size, order)
    return 8 * n_bases * (n_bases + order + 2) * (order + 1)


def max_grid_size(order: int, limit: int = MAX_POLYNOMIAL_MAP_BYTES) -> int:
    """The largest ``grid_size`` whose map fits in ``limit`` bytes (0 if none does)."""
    low, high = 0, 1
    while polynomial_map_bytes(high, order) <= limit:
        low, high = high, 2 * high
    while high - low > 1:  # polynomial_map_bytes grows with grid_size: bisect
        middle = (low + high) // 2
        low, high = (middle, high) if polynomial_map_bytes(middle, order) <= limit else (low, middle)
    return low


def require_polynomial_map_fits(grid_size: int, order: int) -> None:
    """``ValueError`` naming ``grid_size`` and its limit if the map would exceed :data:`MAX_POLYNOMIAL_MAP_BYTES`."""
    needed = polynomial_map_bytes(grid_size, order)
    if needed > MAX_POLYNOMIAL_MAP_BYTES:
        raise ValueError(
            f"grid_size={grid_size} with spline_order={order} needs a {needed / 2**20:.0f} MiB interval-polynomial map; "
            f"the limit is {MAX_POLYNOMIAL_MAP_BYTES // 2**20} MiB: grid_size must be <= {max_grid_size(order)} at spline_order={order}"
        )


@functools.lru_cache(maxsize=16)
def shared_interval_polynomial_map(n_bases: int, order: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """One :func:`interval_polynomial_map` per ``(n_bases, order, dtype, device)``, shared by every layer that asks.

    The map depends on neither the grid range nor the layer (it acts on offsets inside a knot interval), so the
    ANLs of a model hold one copy instead of one each. Treat it as read-only.
    """
    require_polynomial_map_fits(n_bases - order, order)
    return interval_polynomial_map(n_bases, order).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=16)
def shared_power_major_map(n_bases: int, order: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`shared_interval_polynomial_map` laid out ``((order + 1) · (n_intervals + 2), n_bases)``, power-major.

    ``map @ coefficients.T`` for ``C`` curves is ``(order + 1) · (n_intervals + 2)`` rows of ``C`` entries: viewed as
    ``(order + 1, (n_intervals + 2) · C)``, power ``p``'s coefficient of interval row ``i`` of curve ``c`` sits at
    ``[p, i · C + c]``. Shared and read-only like the map it rearranges.
    """
    return shared_interval_polynomial_map(n_bases, order, dtype, device).permute(2, 1, 0).reshape(-1, n_bases).contiguous()


def polynomial_table(coefficients: torch.Tensor, polynomial_map: torch.Tensor) -> torch.Tensor:
    """Per-interval polynomials of the curves ``coefficients`` (``(C, n_bases)``): ``(C, n_intervals + 2, order + 1)``."""
    if polynomial_map.shape[0] != coefficients.shape[-1]:
        raise ValueError(f"polynomial_map is for {polynomial_map.shape[0]} bases, coefficients have {coefficients.shape[-1]}")
    table = coefficients @ polynomial_map.flatten(1).to(coefficients)
    return table.view(coefficients.shape[0], *polynomial_map.shape[1:])


def first_rows(curves: int, rows_per_curve: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Row of interval 0 of each curve in the flattened table: ``c * rows_per_curve + 1`` (int64)."""
    return torch.arange(1, curves * rows_per_curve, rows_per_curve, device=device)


def locate(
    z: torch.Tensor, rows_per_curve: int, first_knot: float, step: float, curve_rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``z`` of shape ``(..., C)``: the offset ``f ∈ [0, 1)`` in the knot interval and the row of the flattened table.

    Curve ``c``'s rows are ``c * rows_per_curve + 0 .. rows_per_curve - 1``; points outside the support (NaN and
    ±inf included) land on its first or last row, both zero. ``curve_rows``: :func:`first_rows`, if already at hand.
    """
    scaled = torch.nan_to_num((z - first_knot) / step, nan=-1.0).clamp(-1.0, rows_per_curve - 2.0)
    interval = scaled.floor()
    if curve_rows is None:
        curve_rows = first_rows(z.shape[-1], rows_per_curve, z.device)
    return scaled - interval, interval.long() + curve_rows


def horner(coefficients: torch.Tensor, f: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``P(f) = Σ_p coefficients[..., p] f^p`` by Horner's rule (the powers along ``dim``; a fresh tensor)."""
    *lower, value = coefficients.unbind(dim)
    if not lower:
        return value.clone()
    for coefficient in reversed(lower):
        value = torch.addcmul(coefficient, value, f)
    return value


def horner_derivative(coefficients: torch.Tensor, f: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``P'(f) = Σ_{p≥1} p · coefficients[..., p] f^(p-1)``, one ``addcmul`` per degree and no weight tensor.

    Horner on ``e_p = d_p / p``, where ``d_p = p c_p + f d_(p+1)``: ``e_p = c_p + (p+1)/p · f e_(p+1)``, and ``P' = e_1``.
    """
    _, *upper = coefficients.unbind(dim)
    if not upper:  # a constant: P' = 0
        return torch.zeros_like(f)
    value = upper[-1]
    for p in range(len(upper) - 1, 0, -1):
        value = torch.addcmul(upper[p - 1], value, f, value=(p + 1) / p)
    return value


def uniform_spline(
    z: torch.Tensor, coefficients: torch.Tensor, first_knot: float, step: float, polynomial_map: torch.Tensor
) -> torch.Tensor:
    """Spline curves ``φ_c(z) = Σ_k coefficients[c, k] B_k(z)`` on the uniform grid ``t_i = first_knot + i·step``.

    Args:
        z: ``(..., C)``, the point at which each of the ``C`` curves is evaluated.
        coefficients: ``(C, n_bases)``.
        polynomial_map: :func:`interval_polynomial_map` for ``n_bases`` and the spline order, any dtype/device.

    Returns:
        ``(..., C)``, equal to ``(bspline_basis(z, knots, order) * coefficients).sum(-1)``; zero outside
        ``[t_0, t_last)``. Plain autograd (double backward too); the per-point tensors it saves,
        ``(..., C)`` and ``(..., C, order + 1)``, do not grow with ``n_bases``.
    """
    table = polynomial_table(coefficients, polynomial_map).to(z.dtype)
    offset, row = locate(z, table.shape[1], first_knot, step)
    return horner(table.flatten(0, 1)[row], offset)
