"""B-spline basis against scipy's independent implementation, plus its defining properties."""

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

import aurora


def scipy_basis(x: np.ndarray, knots: np.ndarray, order: int) -> np.ndarray:
    """Each basis function from its own knot span (scipy's basis_element), zero outside its support."""
    n = len(knots) - order - 1
    columns = [BSpline.basis_element(knots[k : k + order + 2], extrapolate=False)(x) for k in range(n)]
    return np.nan_to_num(np.stack(columns, axis=-1))


@pytest.mark.parametrize("order", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("grid_size", [1, 4, 7])
def test_basis_matches_scipy(order, grid_size):
    knots = aurora.uniform_knots(grid_size, order, (-1.5, 2.0), dtype=torch.float64)
    x = torch.linspace(float(knots[0]) - 0.5, float(knots[-1]) + 0.5, 503, dtype=torch.float64)
    ours = aurora.bspline_basis(x, knots, order).numpy()
    inside = (x.numpy() >= knots[0].item()) & (x.numpy() < knots[-1].item())
    reference = scipy_basis(x.numpy(), knots.numpy(), order)
    assert ours.shape == (503, grid_size + order)
    np.testing.assert_allclose(ours[inside], reference[inside], atol=1e-12)
    assert np.all(ours[~inside] == 0.0)


def test_basis_nonuniform_knots_match_scipy():
    knots = torch.tensor([-2.0, -1.3, -1.0, -0.2, 0.0, 0.1, 0.9, 1.7, 3.0], dtype=torch.float64)
    x = torch.linspace(-1.99, 2.99, 301, dtype=torch.float64)
    np.testing.assert_allclose(aurora.bspline_basis(x, knots, 3).numpy(), scipy_basis(x.numpy(), knots.numpy(), 3), atol=1e-12)


def test_basis_derivative_matches_scipy():
    order, knots = 3, aurora.uniform_knots(5, 3, (-1.0, 1.0), dtype=torch.float64)
    x = torch.linspace(-0.99, 0.99, 101, dtype=torch.float64)
    n = len(knots) - order - 1
    coefficients = torch.randn(n, dtype=torch.float64)
    x.requires_grad_(True)
    (aurora.bspline_basis(x, knots, order) @ coefficients).sum().backward()
    reference = BSpline(knots.numpy(), coefficients.numpy(), order).derivative()(x.detach().numpy())
    np.testing.assert_allclose(x.grad.numpy(), reference, atol=1e-10)


@pytest.mark.parametrize("grid_size,order", [(1, 3), (5, 3), (20, 2), (3, 0)])
def test_partition_of_unity_inside_grid(grid_size, order):
    knots = aurora.uniform_knots(grid_size, order, (-1.0, 1.0), dtype=torch.float64)
    x = torch.linspace(-1.0, 0.999999, 1001, dtype=torch.float64)
    np.testing.assert_allclose(aurora.bspline_basis(x, knots, order).sum(-1).numpy(), 1.0, atol=1e-12)


def test_uniform_knots_layout():
    knots = aurora.uniform_knots(5, 3, (-1.0, 1.0), dtype=torch.float64)
    assert knots.numel() == 5 + 2 * 3 + 1
    np.testing.assert_allclose(np.diff(knots.numpy()), 0.4, atol=1e-12)
    assert knots[3].item() == pytest.approx(-1.0) and knots[-4].item() == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_dtype_is_preserved(dtype):
    knots = aurora.uniform_knots(5, 3)
    x = torch.linspace(-1, 1, 17).to(dtype)
    basis = aurora.bspline_basis(x, knots, 3)
    assert basis.dtype == dtype
    assert torch.allclose(basis.float().sum(-1)[:-1], torch.ones(16), atol=2e-2)


def test_far_outside_the_grid_is_zero_with_finite_gradient():
    knots = aurora.uniform_knots(5, 3)
    x = torch.tensor([-1e30, -1e6, -50.0, 50.0, 1e6, 1e30], requires_grad=True)
    basis = aurora.bspline_basis(x, knots, 3)
    assert torch.all(basis == 0)
    basis.sum().backward()
    assert torch.all(torch.isfinite(x.grad)) and torch.all(x.grad == 0)


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="grid_size"):
        aurora.uniform_knots(0, 3)
    with pytest.raises(ValueError, match="spline_order"):
        aurora.uniform_knots(5, -1)
    with pytest.raises(ValueError, match="grid_range"):
        aurora.uniform_knots(5, 3, (1.0, -1.0))
    with pytest.raises(ValueError, match="order"):
        aurora.bspline_basis(torch.zeros(3), torch.linspace(0, 1, 4), 3)


@pytest.mark.parametrize("degree", [0, 1, 3, 5])
def test_horner_and_its_derivative_match_numpy(degree):
    from aurora.spline import horner, horner_derivative

    rng = np.random.default_rng(degree)
    coefficients = rng.normal(size=(7, degree + 1))
    f = rng.uniform(size=7)
    value = horner(torch.from_numpy(coefficients), torch.from_numpy(f)).numpy()
    slope = horner_derivative(torch.from_numpy(coefficients), torch.from_numpy(f)).numpy()
    poly = np.polynomial.polynomial
    np.testing.assert_allclose(value, [poly.polyval(x, c) for x, c in zip(f, coefficients)], atol=1e-13)
    np.testing.assert_allclose(slope, [poly.polyval(x, poly.polyder(c)) for x, c in zip(f, coefficients)], atol=1e-13)


@pytest.mark.parametrize("degree", [0, 3])
def test_horner_along_the_first_dimension(degree):
    """``dim=0``: the powers along the first axis (the ANL's power-major gather) give the same polynomials."""
    from aurora.spline import horner, horner_derivative

    rng = np.random.default_rng(degree)
    coefficients = torch.from_numpy(rng.normal(size=(6, degree + 1)))
    f = torch.from_numpy(rng.uniform(size=6))
    torch.testing.assert_close(horner(coefficients.T.contiguous(), f, dim=0), horner(coefficients, f), atol=0, rtol=0)
    torch.testing.assert_close(horner_derivative(coefficients.T.contiguous(), f, dim=0), horner_derivative(coefficients, f), atol=0, rtol=0)


def test_power_major_map_rearranges_the_interval_table():
    """``shared_power_major_map @ cᵀ`` viewed ``(order + 1, rows · C)`` holds interval row i of curve c, power p at ``[p, i·C + c]``."""
    from aurora.spline import interval_polynomial_map, polynomial_table, shared_power_major_map

    order, n_bases, curves = 3, 9, 4
    coefficients = torch.randn(curves, n_bases, dtype=torch.float64)
    table = polynomial_table(coefficients, interval_polynomial_map(n_bases, order))  # (C, rows, order + 1)
    power_major = (shared_power_major_map(n_bases, order, torch.float64, torch.device("cpu")) @ coefficients.T).view(order + 1, -1)
    by_index = power_major.view(order + 1, table.shape[1], curves).permute(2, 1, 0)  # [p, i·C + c] -> [c, i, p]
    torch.testing.assert_close(by_index, table, atol=1e-14, rtol=0)
