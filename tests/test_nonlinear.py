"""ANL (Eq. 5–8) and Sinter against independent numpy/scipy references; gradients by gradcheck."""

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

import aurora


def scipy_basis(z: np.ndarray, knots: np.ndarray, order: int) -> np.ndarray:
    n = len(knots) - order - 1
    columns = [BSpline.basis_element(knots[k : k + order + 2], extrapolate=False)(z) for k in range(n)]
    return np.nan_to_num(np.stack(columns, axis=-1))


def reference_anl(anl: aurora.AdaptiveNonlinearLayer, z: np.ndarray) -> np.ndarray:
    """σ(z) for a batch of r-vectors z (n, r), written out with loops over units (tanh activation)."""
    n, r = z.shape
    out = np.zeros((n, r))
    if anl.self_projection is not None:
        H = anl.self_projection.detach().double().numpy()
        out += np.tanh(np.tanh(z) @ H.T)
    if anl.spline_coefficients is not None:
        c = anl.spline_coefficients.detach().double().numpy()
        knots = anl.grid_start + anl.grid_step * np.arange(anl.knots.numel())  # the grid, in float64
        basis = np.stack([scipy_basis(z[:, i], knots, anl.spline_order) for i in range(r)], axis=1)  # (n, r, n_b)
        for j in range(r):
            if anl.spline_mode == "per_unit":
                out[:, j] += basis[:, j, :] @ c[j]
            elif anl.spline_mode == "sum":
                out[:, j] += basis.sum(axis=1) @ c[j]
            else:
                out[:, j] += sum(basis[:, i, :] @ c[j, i] for i in range(r))
    return out


@pytest.mark.parametrize("mode", ["per_unit", "sum", "per_edge"])
@pytest.mark.parametrize("fixed,learnable", [(True, True), (False, True), (True, False)])
def test_anl_matches_reference(mode, fixed, learnable):
    torch.manual_seed(0)
    anl = aurora.AdaptiveNonlinearLayer(3, fixed=fixed, learnable=learnable, spline_mode=mode, self_projection_init="kaiming", spline_init_scale=0.5).double()
    z = torch.randn(64, 3, dtype=torch.float64) * 1.5  # partly outside the grid [-1, 1]
    np.testing.assert_allclose(anl(z).detach().numpy(), reference_anl(anl, z.numpy()), atol=1e-12)


def test_coefficient_shapes_follow_the_mode():
    assert aurora.AdaptiveNonlinearLayer(2, spline_mode="per_unit").spline_coefficients.shape == (2, 8)
    assert aurora.AdaptiveNonlinearLayer(2, spline_mode="sum").spline_coefficients.shape == (2, 8)
    assert aurora.AdaptiveNonlinearLayer(2, spline_mode="per_edge", grid_size=7, spline_order=2).spline_coefficients.shape == (2, 2, 9)


@pytest.mark.parametrize("mode", ["per_unit", "sum", "per_edge"])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "leaky_relu"])
def test_anl_gradcheck(mode, activation):
    torch.manual_seed(1)
    anl = aurora.AdaptiveNonlinearLayer(2, activation=activation, spline_mode=mode, self_projection_init="kaiming").double()
    z = (torch.randn(5, 2, dtype=torch.float64) * 0.8).requires_grad_(True)
    assert torch.autograd.gradcheck(anl, (z,))


PARTS = [(True, True), (False, True), (True, False)]


@pytest.mark.parametrize("fixed,learnable", PARTS, ids=["F+L", "L", "F"])
@pytest.mark.parametrize("mode", ["per_unit", "sum", "per_edge"])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "leaky_relu"])
def test_hand_written_backward_matches_autograd(activation, mode, fixed, learnable):
    """``forward`` (one node, hand-written backward) against autograd through ``autograd_forward``, to second order."""
    torch.manual_seed(2)
    anl = aurora.AdaptiveNonlinearLayer(3, activation=activation, spline_mode=mode, fixed=fixed, learnable=learnable,
                                        self_projection_init="kaiming", spline_init_scale=0.5).double()
    z = (torch.randn(4, 5, 3, dtype=torch.float64) * 1.5).requires_grad_()  # inside and outside the grid
    inputs = [z, *anl.parameters()]
    ours, reference = anl(z), anl.autograd_forward(z)
    torch.testing.assert_close(ours, reference, atol=1e-13, rtol=0)
    weights = torch.randn_like(ours)
    first = torch.autograd.grad((ours * weights).sum(), inputs, create_graph=True)
    first_reference = torch.autograd.grad((reference * weights).sum(), inputs, create_graph=True)
    directions = [torch.randn_like(g) for g in first]
    second = torch.autograd.grad(sum((g * d).sum() for g, d in zip(first, directions)), inputs, allow_unused=True, materialize_grads=True)
    second_reference = torch.autograd.grad(
        sum((g * d).sum() for g, d in zip(first_reference, directions)), inputs, allow_unused=True, materialize_grads=True
    )
    for got, expected in zip([*first, *second], [*first_reference, *second_reference]):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", ["per_unit", "per_edge"])
def test_anl_gradgradcheck(mode):
    torch.manual_seed(1)
    anl = aurora.AdaptiveNonlinearLayer(2, spline_mode=mode, self_projection_init="kaiming").double()
    z = (torch.randn(5, 2, dtype=torch.float64) * 0.8).requires_grad_(True)
    assert torch.autograd.gradgradcheck(anl, (z,))


def test_anl_works_under_torch_func():
    """Per-sample gradients with vmap(grad(...)) equal a loop of ordinary backward passes; jacrev equals the Jacobian."""
    torch.manual_seed(3)
    anl = aurora.AdaptiveNonlinearLayer(3, self_projection_init="kaiming").double()
    z = torch.randn(6, 3, dtype=torch.float64) * 1.5
    params = {name: p.detach() for name, p in anl.named_parameters()}

    def loss(params: dict, sample: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(anl, params, (sample,)).pow(2).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, z)
    for i in range(len(z)):
        anl.zero_grad()
        anl(z[i]).pow(2).sum().backward()
        for name, p in anl.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad, atol=1e-12, rtol=0)
    jacobian = torch.func.jacrev(anl)(z[0])
    torch.testing.assert_close(jacobian, torch.autograd.functional.jacobian(anl, z[0]), atol=1e-12, rtol=0)


def test_non_finite_inputs_fall_outside_the_spline_support():
    """±inf lies outside every knot interval: the spline term is 0 there (as in the Cox–de Boor basis), gradients finite."""
    anl = aurora.AdaptiveNonlinearLayer(3, fixed=False).double()
    z = torch.tensor([[float("inf"), -float("inf"), 0.3]], dtype=torch.float64, requires_grad=True)
    out = anl(z)
    assert out[0, 0] == 0 and out[0, 1] == 0 and out[0, 2] != 0
    out.sum().backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(anl.spline_coefficients.grad).all()


def test_far_outside_grid_only_the_fixed_part_remains():
    anl = aurora.AdaptiveNonlinearLayer(2, self_projection_init="kaiming").double()
    z = torch.tensor([[1e8, -3e7], [50.0, -20.0]], dtype=torch.float64, requires_grad=True)
    out = anl(z)
    H = anl.self_projection.detach()
    np.testing.assert_allclose(out.detach().numpy(), torch.tanh(torch.tanh(z.detach()) @ H.T).numpy(), atol=1e-12)
    out.sum().backward()
    assert torch.all(torch.isfinite(z.grad))
    assert torch.all(torch.isfinite(anl.spline_coefficients.grad)) and torch.all(anl.spline_coefficients.grad == 0)


def test_identity_self_projection_starts_near_identity():
    anl = aurora.AdaptiveNonlinearLayer(2, learnable=False)
    z = torch.tensor([[1e-3, -2e-3]])
    torch.testing.assert_close(anl(z), z, atol=1e-8, rtol=1e-4)


def test_activations():
    z = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(aurora.get_activation("tanh")(z), torch.tanh(z))
    torch.testing.assert_close(aurora.get_activation("sigmoid")(z), 1 / (1 + torch.exp(-z)))
    torch.testing.assert_close(aurora.get_activation("leaky_relu", 0.2)(z), torch.where(z > 0, z, 0.2 * z))
    with pytest.raises(ValueError, match="activation must be one of 'tanh', 'leaky_relu', 'sigmoid'; got 'relu'"):
        aurora.get_activation("relu")


def test_sinter_closed_form_and_derivative():
    a, w = 5e-5, 1e4
    x = torch.linspace(-1e-2, 1e-2, 1001, dtype=torch.float64, requires_grad=True)
    y = aurora.sinter(x, a, w)
    xn = x.detach().numpy()
    np.testing.assert_allclose(y.detach().numpy(), a * np.sin(w * xn) * xn + xn, rtol=1e-14, atol=0)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), a * np.sin(w * xn) + a * w * xn * np.cos(w * xn) + 1, rtol=1e-12)
    # the relative perturbation |Sinter(x) - x| / |x| = a |sin(ωx)| never exceeds a
    assert np.max(np.abs(y.detach().numpy() - xn) / np.maximum(np.abs(xn), 1e-300)) <= a


def test_anl_rejects_bad_options():
    with pytest.raises(ValueError, match="rank"):
        aurora.AdaptiveNonlinearLayer(0)
    with pytest.raises(ValueError, match="spline_mode must be one of"):
        aurora.AdaptiveNonlinearLayer(2, spline_mode="tensor")
    with pytest.raises(ValueError, match="cannot both be False"):
        aurora.AdaptiveNonlinearLayer(2, fixed=False, learnable=False)
    with pytest.raises(ValueError, match="grid_size"):
        aurora.AdaptiveNonlinearLayer(2, grid_size=0)


def test_uniform_spline_matches_cox_de_boor():
    from aurora.spline import interval_polynomial_map, uniform_spline

    torch.manual_seed(0)
    for order, grid_size in [(0, 4), (1, 1), (3, 5), (3, 20), (5, 7)]:
        knots = aurora.uniform_knots(grid_size, order, (-1.3, 0.7), dtype=torch.float64)
        coefficients = torch.randn(3, grid_size + order, dtype=torch.float64)
        z = torch.rand(2000, 3, dtype=torch.float64) * 8 - 4  # inside and outside the support
        reference = (aurora.bspline_basis(z, knots, order) * coefficients).sum(-1)
        ours = uniform_spline(z, coefficients, float(knots[0]), 2.0 / grid_size, interval_polynomial_map(grid_size + order, order))
        torch.testing.assert_close(ours, reference, atol=1e-12, rtol=0)


def test_cardinal_pieces_closed_form_cubic():
    from aurora.spline import cardinal_bspline_pieces

    f = np.linspace(0, 1, 11, endpoint=False)
    values = np.vander(f, 4, increasing=True) @ cardinal_bspline_pieces(3).numpy()
    expected = np.stack([f**3 / 6, (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6, (3 * f**3 - 6 * f**2 + 4) / 6, (1 - f) ** 3 / 6], axis=1)
    np.testing.assert_allclose(values, expected, atol=1e-15)


def test_anl_grid_matches_its_knots():
    anl = aurora.AdaptiveNonlinearLayer(2, grid_size=7, spline_order=2, grid_range=(-2.0, 3.0))
    expected = anl.grid_start + anl.grid_step * torch.arange(anl.knots.numel(), dtype=torch.float64)
    torch.testing.assert_close(anl.knots.double(), expected, atol=1e-6, rtol=0)


def saved_for_backward_bytes(mode: str, grid_size: int, tokens: int = 4096, rank: int = 2) -> int:
    anl = aurora.AdaptiveNonlinearLayer(rank, fixed=False, grid_size=grid_size, spline_mode=mode)
    z = torch.randn(tokens, rank, requires_grad=True)
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if tensor is not z and not isinstance(tensor, torch.nn.Parameter):
            total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        anl(z).sum().backward()
    return total


@pytest.mark.parametrize("mode", ["per_unit", "sum", "per_edge"])
def test_activation_memory_does_not_grow_with_grid_size(mode):
    """Issue: memory must not grow with grid size beyond the basis tensor; here it does not grow at all (per token)."""
    tokens, rank = 4096, 2
    growth = saved_for_backward_bytes(mode, 50, tokens, rank) - saved_for_backward_bytes(mode, 5, tokens, rank)
    basis_tensor_growth = tokens * rank * 45 * 4  # what a (tokens, r, n_bases) fp32 basis would add
    assert growth < 0.01 * basis_tensor_growth


def test_anl_computes_in_fp32_under_autocast():
    """Under bf16 autocast the ANL's (small) math stays in the module's fp32, gradients included."""
    torch.manual_seed(4)
    anl = aurora.AdaptiveNonlinearLayer(4, self_projection_init="kaiming", spline_init_scale=0.5)
    z = (torch.randn(6, 4) * 1.5).to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = anl(z)
    assert out.dtype == torch.float32
    (out * torch.arange(4.0)).sum().backward()
    grads = [p.grad.clone() for p in anl.parameters()]
    anl.zero_grad()
    reference = anl(z.detach().float())
    (reference * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(out, reference, atol=0, rtol=0)
    for got, expected in zip(grads, [p.grad for p in anl.parameters()]):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)
