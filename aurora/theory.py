"""The AuroRA paper's theory, made computable: App. C structures, Prop. 2.1 bounds, Prop. 2.2 probes.

* **App. C (intuitive case).** ``A ∈ R^{1×2}``, ``B ∈ R^{2×1}`` and an elementwise activation give the
  static update ``ΔW = B σ(A)``. We index ``ΔW`` as every ``nn.Linear`` weight, ``(d_out, d_in)``, so
  ``ΔW[i, j] = b_i σ(a_j)``; the paper's Eq. 11 prints the transpose (its entry ``(i, j)`` is ``b_j a_i``).
  With LeakyReLU of slope ``α``, ``ΔW = B A D`` with ``D = diag(d_1, d_2)``, ``d_j = 1`` if ``a_j > 0`` else
  ``α``: the four sign patterns give four column scalings (Eq. 11), and every one is a rank-1 matrix.
* **Prop. 2.1 (approximation).** The Eckart–Young error of the best rank-r matrix, the best rank-r linear
  map on given inputs (reduced-rank regression), the output-subspace bound that no map with outputs in an
  r-dimensional subspace (``x ↦ B σ(A x)`` included) can beat, and fitting an adapter to a target update.
* **Prop. 2.2 (gradients).** Closed forms the proof in App. E relies on (``tanh'``, the B-spline basis
  derivative and its bound, LoRAN's ``Sinter'``) and a probe that measures gradient norms of one adapter.

Chapters: ``book/appendix_c.md``, ``book/approximation.md``, ``book/gradients.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import AdapterConfig, require_choice
from .layers import AdapterLayer
from .registry import layer_class
from .spline import bspline_basis

__all__ = [
    "APPENDIX_C_CASES",
    "appendix_c_case",
    "leaky_relu_column_factors",
    "appendix_c_delta_weight",
    "leaky_relu_preimage",
    "paper_layout",
    "matrix_rank",
    "best_rank_approximation",
    "eckart_young_error",
    "reduced_rank_regression",
    "output_subspace_bound",
    "relative_error",
    "adapter_map",
    "FitResult",
    "fit_adapter_map",
    "linear_warm_start",
    "fit_static_update",
    "tanh_derivative",
    "bspline_basis_derivative",
    "uniform_basis_derivative_bound",
    "sinter_derivative",
    "gradient_norms",
    "single_thread",
]

# ----------------------------------------------------------------------------------------------
# Appendix C: the intuitive case
# ----------------------------------------------------------------------------------------------

APPENDIX_C_CASES = ("a1>0, a2>0", "a1<=0, a2>0", "a1>0, a2<=0", "a1<=0, a2<=0")
"""The four sign patterns of ``A = [a1, a2]`` in the order of the paper's Eq. 11."""


def appendix_c_case(a: torch.Tensor) -> str:
    """Which of the four sign patterns of Eq. 11 ``a = (a1, a2)`` falls into (``<= 0`` counts as negative)."""
    if a.numel() != 2:
        raise ValueError(f"a must hold exactly two entries (A ∈ R^(1×2)), got shape {tuple(a.shape)}")
    a1, a2 = (float(v) for v in a.flatten())
    return APPENDIX_C_CASES[(a1 <= 0) + 2 * (a2 <= 0)]


def leaky_relu_column_factors(a: torch.Tensor, slope: float) -> torch.Tensor:
    """``d_j = 1`` where ``a_j > 0`` and ``slope`` where ``a_j <= 0``: LeakyReLU(a) = d ⊙ a (App. C)."""
    return torch.where(a > 0, torch.ones_like(a), torch.full_like(a, slope))


def appendix_c_delta_weight(a: torch.Tensor, b: torch.Tensor, slope: float) -> torch.Tensor:
    """Eq. 11 by hand, in the ``(d_out, d_in)`` layout: ``ΔW = b aᵀ diag(d(a))``, i.e. ``ΔW[i, j] = b_i d_j a_j``.

    ``a`` holds the row ``A ∈ R^{1×d_in}``, ``b`` the column ``B ∈ R^{d_out×1}`` (any ``d_in``, ``d_out``; the
    paper's case is 2 and 2). With ``slope = 1`` this is LoRA's ``B A`` (Eq. 12).
    """
    a, b = a.flatten(), b.flatten()
    return torch.outer(b, a * leaky_relu_column_factors(a, slope))


def leaky_relu_preimage(values: torch.Tensor, slope: float) -> torch.Tensor:
    """The ``a`` with ``LeakyReLU(a) = values`` (LeakyReLU with ``0 < slope`` is a bijection of R).

    So ``B · LeakyReLU(A)`` reaches every rank-1 matrix ``b vᵀ`` (take ``a = preimage(v)``): the same set LoRA reaches.
    """
    if not slope > 0:
        raise ValueError(f"slope must be > 0 for LeakyReLU to be invertible, got {slope!r}")
    return torch.where(values > 0, values, values / slope)


def paper_layout(delta_weight: torch.Tensor) -> torch.Tensor:
    """The matrix as Eq. 11 prints it (entry ``(i, j) = b_j σ(a_i)``): the transpose of ``(d_out, d_in)``."""
    return delta_weight.T


def matrix_rank(matrix: torch.Tensor, relative_tolerance: float = 1e-6) -> int:
    """Numerical rank: singular values above ``relative_tolerance`` times the largest one."""
    singular_values = torch.linalg.svdvals(matrix.double())
    if singular_values.numel() == 0 or singular_values[0] == 0:
        return 0
    return int((singular_values > relative_tolerance * singular_values[0]).sum())


# ----------------------------------------------------------------------------------------------
# Proposition 2.1: the linear rank-r limit and the bounds around it
# ----------------------------------------------------------------------------------------------


def best_rank_approximation(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """Truncated SVD ``U_r Σ_r V_rᵀ``: the best rank-``rank`` matrix in Frobenius and spectral norm (Def. D.1)."""
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank!r}")
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


def eckart_young_error(matrix: torch.Tensor, rank: int, norm: str = "fro", relative: bool = False) -> float:
    """``ε_r(M) = min_{rank ≤ r} ||M − UV||`` in closed form (Eckart–Young–Mirsky; Prop. 2.1, Def. D.1).

    ``norm="fro"``: ``sqrt(Σ_{i>r} s_i²)``; ``norm="spectral"``: ``s_{r+1}``. ``relative`` divides by ``||M||``
    in the same norm. For inputs ``x ~ N(0, I)``, ``E||Mx − Cx||² = ||M − C||_F²``, so the squared relative
    Frobenius error is also the best relative mean-squared error of a rank-r linear map on such inputs.
    """
    require_choice("norm", norm, ("fro", "spectral"))
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank!r}")
    s = torch.linalg.svdvals(matrix.double())
    tail = s[rank:]
    if norm == "fro":
        error, total = float(tail.square().sum().sqrt()), float(s.square().sum().sqrt())
    else:
        error, total = (float(tail[0]) if tail.numel() else 0.0), float(s[0])
    return error / total if relative else error


def reduced_rank_regression(inputs: torch.Tensor, targets: torch.Tensor, rank: int, ridge: float = 0.0) -> torch.Tensor:
    """The best rank-``rank`` linear map ``C`` (``(d_out, d_in)``) minimising ``Σ_n ||y_n − C x_n||²``.

    Closed form: least squares ``Ŵ`` of ``targets`` on ``inputs``, then ``C = P_r Ŵ`` with ``P_r`` the
    projector on the top-``rank`` left singular vectors of the fitted outputs ``Ŵ X``. For a linear target
    ``y = M x`` this is ``P_r M`` and its error is the tail of the spectrum of ``M X`` (Eckart–Young on the
    data); for ``x ~ N(0, I)`` it tends to the truncated SVD of ``M``. ``inputs``: ``(n, d_in)``; ``targets``: ``(n, d_out)``.
    """
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank!r}")
    x, y = inputs.double(), targets.double()
    if ridge > 0:
        gram = x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype)
        weight = torch.linalg.solve(gram, x.T @ y).T
    else:
        weight = torch.linalg.lstsq(x, y).solution.T  # (d_out, d_in)
    fitted = x @ weight.T
    u = torch.linalg.svd(fitted.T, full_matrices=False)[0][:, :rank]  # (d_out, rank)
    return (u @ (u.T @ weight)).to(inputs.dtype)


def output_subspace_bound(targets: torch.Tensor, rank: int) -> float:
    """Relative error below which *no* map with outputs in an r-dimensional subspace can go on these targets.

    ``B σ(A x)`` lies in the column space of ``B`` whatever σ is, so for any such map
    ``Σ||y − ŷ||² ≥ Σ||(I − P_B) y||² ≥ Σ_{i>r} s_i(Y)²``. Returns ``Σ_{i>r} s_i(Y)² / ||Y||_F²`` for the
    ``(n, d_out)`` target rows ``Y``. For a linear target ``y = Mx`` a rank-r linear map attains it.
    """
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank!r}")
    s = torch.linalg.svdvals(targets.double())
    return float(s[rank:].square().sum() / s.square().sum())


def relative_error(targets: torch.Tensor, predictions: torch.Tensor) -> float:
    """``Σ_n ||y_n − ŷ_n||² / Σ_n ||y_n||²``: the relative mean-squared error of a fitted map."""
    return float((targets.double() - predictions.double()).square().sum() / targets.double().square().sum())


def adapter_map(in_features: int, out_features: int, config: AdapterConfig) -> AdapterLayer:
    """An adapter of ``config.method`` around a zero, frozen ``nn.Linear``: its output is the update ``Δh`` alone.

    For AuroRA that is ``x ↦ s · B σ(A x)`` (Eq. 4) or ``s · B σ(A) x`` (``form="static"``); for LoRA ``s · B A x``.
    """
    base = nn.Linear(in_features, out_features, bias=False)
    nn.init.zeros_(base.weight)
    base.weight.requires_grad_(False)
    return layer_class(config.method)(base, config)


@dataclass
class FitResult:
    """A fitted map's relative errors (``relative_error``) on its training and test inputs."""

    train_error: float
    test_error: float
    steps: int
    loss_history: list[float] = field(default_factory=list)


def _adapter_parameters(layer: AdapterLayer) -> list[nn.Parameter]:
    return [p for n, p in layer.named_parameters() if not n.startswith("base_layer.") and p.requires_grad]


def _solve_up_projection(features: torch.Tensor, targets: torch.Tensor, ridge: float) -> torch.Tensor:
    """``B = argmin ||Y − Φ Bᵀ||² + ridge ||B||²`` for features ``Φ`` ``(n, r)``: ``(d_out, r)``, differentiable in ``Φ``."""
    gram = features.T @ features
    gram = gram + ridge * gram.diagonal().mean().clamp_min(1e-12) * torch.eye(gram.shape[0], dtype=gram.dtype)
    return torch.linalg.solve(gram, features.T @ targets).T


def fit_adapter_map(
    layer: AdapterLayer,
    train_inputs: torch.Tensor,
    train_targets: torch.Tensor,
    test_inputs: torch.Tensor,
    test_targets: torch.Tensor,
    steps: int = 500,
    learning_rate: float = 1e-2,
    ridge: float = 1e-6,
    seed: int = 0,
    progress: bool = False,
) -> FitResult:
    """Fit ``layer`` (from :func:`adapter_map`) so that ``layer(x) ≈ y`` on the training rows (Prop. 2.1, measured).

    Variable projection: for fixed ``A`` and σ the best up-projection ``B`` is a least-squares problem, so
    each step solves it in closed form on the (full) training set and Adam moves only ``A`` and the ANL's
    parameters (``H``, spline coefficients) through that solution. This finds the best ``B σ(A x)`` far more
    reliably than training ``B`` by gradient descent. The learning rate follows a cosine decay to 1 %.
    Errors are :func:`relative_error` on the training and the test rows.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    torch.manual_seed(seed)
    parameters = [p for p in _adapter_parameters(layer) if p is not layer.lora_B]
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=learning_rate * 1e-2)
    layer.lora_B.requires_grad_(False)
    power = train_targets.square().sum()
    history = []
    for step in tqdm(range(steps), disable=not progress, desc="fit", leave=False):
        features = _features(layer, train_inputs)
        up = _solve_up_projection(features, train_targets, ridge)
        loss = (features @ up.T - train_targets).square().sum() / power
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % max(1, steps // 50) == 0 or step == steps - 1:
            history.append(loss.item())
    with torch.no_grad():
        features = _features(layer, train_inputs)
        layer.lora_B.copy_(_solve_up_projection(features, train_targets, ridge))
        train_error = relative_error(train_targets, layer(train_inputs))
        test_error = relative_error(test_targets, layer(test_inputs))
    layer.lora_B.requires_grad_(True)
    return FitResult(train_error, test_error, steps, history)


@torch.no_grad()
def linear_warm_start(layer: AdapterLayer, inputs: torch.Tensor, targets: torch.Tensor, hidden_rms: float = 0.5) -> None:
    """Start ``A`` on the row space of the best rank-r linear map (:func:`reduced_rank_regression`).

    Its rows become an orthonormal basis of that row space, scaled so that ``z = A x`` has RMS ``hidden_rms``
    on ``inputs`` (inside the spline grid). LoRA then starts at its optimum; AuroRA starts where its map is
    close to that optimum (σ is nearly affine for small z) and gradient descent can look for anything better.
    """
    weight = reduced_rank_regression(inputs, targets, layer.rank)
    basis = torch.linalg.svd(weight.double(), full_matrices=False)[2][: layer.rank].to(layer.lora_A.dtype)  # (r, d_in)
    rms = (inputs @ basis.T).square().mean().sqrt().clamp_min(1e-12)
    layer.lora_A.copy_(basis * (hidden_rms / rms))


def _static_features(layer: AdapterLayer) -> torch.Tensor:
    """The ``(r, d_in)`` factor right of ``B`` in the merged update: ``s · σ(A)`` (AuroRA), ``s · A`` (LoRA), ``s · M A``."""
    down = layer.down_projection()
    if down is None:
        raise ValueError(f"only updates that factor as B · (r × d_in) (lora, moslora, aurora) can be fitted; got {layer.method}")
    return layer.scaling * down


def _features(layer: AdapterLayer, inputs: torch.Tensor) -> torch.Tensor:
    """``s · σ(A x)`` (or ``s · A x`` for LoRA): the layer's r-dimensional hidden output, ``(n, r)``."""
    hidden = layer.hidden(inputs)
    if hidden is None:
        raise ValueError(f"fit_adapter_map fits lora, moslora and aurora layers; got {type(layer).__name__}")
    return layer.scaling * hidden


def fit_static_update(
    layer: AdapterLayer,
    target: torch.Tensor,
    steps: int = 500,
    learning_rate: float = 1e-2,
    ridge: float = 1e-6,
    seed: int = 0,
    warm_start: bool = True,
) -> float:
    """Fit the layer's merged update ``ΔW`` (for AuroRA the static ``s · B σ(A)``, Eq. 3) to the matrix ``target``.

    Variable projection as in :func:`fit_adapter_map`: ``B`` is solved in closed form, Adam moves ``A`` and σ.
    ``warm_start`` starts ``A`` on the top-r right singular vectors of ``target`` with entries of RMS 0.5.
    Returns the relative squared Frobenius error ``||M − ΔW||_F² / ||M||_F²``. ``ΔW`` has rank ≤ r for every
    σ (``σ(A)`` has r rows), so this can never beat ``eckart_young_error(M, r, relative=True)²``.
    """
    torch.manual_seed(seed)
    if warm_start:
        with torch.no_grad():
            basis = torch.linalg.svd(target.double(), full_matrices=False)[2][: layer.rank].to(layer.lora_A.dtype)
            layer.lora_A.copy_(basis * (0.5 / basis.square().mean().sqrt()))
    parameters = [p for p in _adapter_parameters(layer) if p is not layer.lora_B]
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=learning_rate * 1e-2)
    power = target.square().sum()
    for _ in range(steps):
        features = _static_features(layer).T
        up = _solve_up_projection(features, target.T, ridge)  # (d_out, r)
        loss = (features @ up.T - target.T).square().sum() / power
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        layer.lora_B.copy_(_solve_up_projection(_static_features(layer).T, target.T, ridge))
        return float((layer.delta_weight().double() - target.double()).square().sum() / target.double().square().sum())


# ----------------------------------------------------------------------------------------------
# Proposition 2.2: the closed forms App. E relies on, and a gradient probe
# ----------------------------------------------------------------------------------------------


def tanh_derivative(z: torch.Tensor) -> torch.Tensor:
    """``tanh'(z) = 1 − tanh²(z) ∈ (0, 1]`` (App. E, Lemma E.1); it rounds to exactly 0 for large ``|z|``."""
    return 1 - torch.tanh(z).square()


def bspline_basis_derivative(x: torch.Tensor, knots: torch.Tensor, order: int) -> torch.Tensor:
    """``d/dx B_{k,p}(x) = p/(t_{k+p} − t_k) B_{k,p−1}(x) − p/(t_{k+p+1} − t_{k+1}) B_{k+1,p−1}(x)`` for all k.

    The textbook derivative formula (de Boor), independent of autograd. Returns ``(..., n_knots − order − 1)``.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1 for a derivative formula, got {order!r}")
    t = knots.to(device=x.device, dtype=x.dtype)
    lower = bspline_basis(x, t, order - 1)  # (..., n_knots - order)
    left = _order_over_span(t[order:-1] - t[: -(order + 1)], order)
    right = _order_over_span(t[order + 1 :] - t[1:-order], order)
    return left * lower[..., :-1] - right * lower[..., 1:]


def _order_over_span(span: torch.Tensor, order: int) -> torch.Tensor:
    """``order / span`` with 0 where a repeated knot makes the span 0 (that term of the formula vanishes)."""
    return torch.where(span == 0, torch.zeros_like(span), order / torch.where(span == 0, torch.ones_like(span), span))


def uniform_basis_derivative_bound(order: int, grid_range: tuple[float, float], grid_size: int) -> float:
    """``max_k sup_x |B_k'(x)| ≤ p / h`` on a uniform grid of step ``h``: both lower-degree bases lie in [0, 1]."""
    low, high = grid_range
    return order / ((high - low) / grid_size)


def sinter_derivative(w: torch.Tensor, amplitude: float, frequency: float) -> torch.Tensor:
    """``d/dw Sinter(w) = a sin(ωw) + aωw cos(ωw) + 1`` (LoRAN); its envelope ``1 + a + aω|w|`` grows with ``|w|``."""
    return amplitude * torch.sin(frequency * w) + amplitude * frequency * w * torch.cos(frequency * w) + 1


def gradient_norms(
    layer: AdapterLayer, inputs: torch.Tensor, upstream: torch.Tensor, loss: str = "probe", target: torch.Tensor | None = None
) -> dict[str, float]:
    """Frobenius norms of ``∂L/∂x`` and ``∂L/∂θ`` for each adapter parameter group of ``layer`` (Prop. 2.2).

    ``loss="probe"``: ``L = Σ_n ⟨g_n, Δh(x_n)⟩`` with fixed upstream gradients ``g = upstream`` — the adapter's own
    Jacobians, free of the loss's residual. ``loss="squared"``: App. E's ``L = ½ Σ_n ||h(x_n) − y_n||²`` with the
    full layer output ``h = W0 x + Δh`` and ``y = target``. ``inputs``: ``(n, d_in)``. Keys: ``x``, ``A``, ``B``
    and, where the layer has them, ``H``, ``spline``, ``mixer``, ``magnitude`` (the layer's ``parameter_groups()``).
    """
    require_choice("loss", loss, ("probe", "squared"))
    x = inputs.detach().clone().requires_grad_(True)
    parameters = layer.parameter_groups()
    if loss == "probe":
        value = (layer.adapter_output(x) * upstream).sum()
    else:
        if target is None:
            raise ValueError("loss='squared' needs target (the y of App. E)")
        value = 0.5 * (layer(x) - target).square().sum()
    grads = torch.autograd.grad(value, [x, *parameters.values()], allow_unused=True)
    names = ["x", *parameters]
    return {name: (0.0 if g is None else float(torch.linalg.norm(g))) for name, g in zip(names, grads)}


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block: the fits and probes here are many tiny tensor operations,
    which a second thread only slows down on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
