"""LoRAN: both placements of the scaling, every function, and the fused node against autograd."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import aurora
from aurora.loran import LoranLinear, LoranSpec, delta_weight, loran_linear

FUNCTIONS = ("sinter", "tanh", "sigmoid", "relu")
PLACEMENTS = ("outside", "inside")


def closed_form(name: str, z: torch.Tensor, a: float, w: float) -> torch.Tensor:
    """f written out independently of aurora.loran."""
    return {
        "sinter": a * torch.sin(w * z) * z + z,
        "tanh": (torch.exp(z) - torch.exp(-z)) / (torch.exp(z) + torch.exp(-z)),
        "sigmoid": 1 / (1 + torch.exp(-z)),
        "relu": torch.where(z > 0, z, torch.zeros_like(z)),
    }[name]


def layer_of(d_in: int = 7, d_out: int = 5, bias: bool = True, **options) -> tuple[nn.Module, aurora.LoranLayer]:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("query", nn.Linear(d_in, d_out, bias=bias))
    aurora.add_adapters(model, aurora.AdapterConfig(method="loran", target_modules=["query"], **options))
    model.double()
    layer = model.query
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn_like(layer.lora_B) * 0.5)  # B = 0 would make every ΔW look alike
    return model, layer


@pytest.mark.parametrize("function,placement", list(itertools.product(FUNCTIONS, PLACEMENTS)))
def test_layer_is_the_closed_form(function: str, placement: str) -> None:
    """outside: h = W0 x + b + s·f(BA) x (PEFT-LoRAN's mlora.py); inside: f(s·BA)."""
    a, w, rank, alpha = 0.3, 2.0, 2, 6.0
    _, layer = layer_of(rank=rank, alpha=alpha, loran_function=function, loran_scaling=placement,
                        sinter_amplitude=a, sinter_frequency=w)
    A, B = layer.lora_A.detach(), layer.lora_B.detach()
    s = alpha / rank
    delta = s * closed_form(function, B @ A, a, w) if placement == "outside" else closed_form(function, s * B @ A, a, w)
    x = torch.randn(4, 3, 7, dtype=torch.float64)
    base = layer.base_layer
    expected = x @ (base.weight.detach() + delta).T + base.bias.detach()
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.delta_weight().detach(), delta)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_placements_agree_when_alpha_equals_rank(function: str) -> None:
    outside = layer_of(rank=4, alpha=4.0, loran_function=function, loran_scaling="outside")[1]
    inside = layer_of(rank=4, alpha=4.0, loran_function=function, loran_scaling="inside")[1]
    torch.testing.assert_close(outside.delta_weight(), inside.delta_weight(), rtol=0, atol=0)
    differ = [layer_of(rank=4, alpha=16.0, loran_function=function, loran_scaling=p)[1].delta_weight() for p in PLACEMENTS]
    # ReLU is positively homogeneous (s·relu(z) = relu(s·z) for s > 0): there the placement never matters
    assert torch.allclose(*differ) == (function == "relu")


def test_default_is_the_authors_code() -> None:
    config = aurora.AdapterConfig(method="loran")
    assert (config.loran_scaling, config.loran_function) == ("outside", "sinter")


@pytest.mark.parametrize("option,value,allowed", [
    ("loran_scaling", "middle", "'outside', 'inside'"),
    ("loran_function", "swish", "'sinter', 'tanh', 'sigmoid', 'relu'"),
])
def test_bad_options_name_the_allowed_values(option: str, value: str, allowed: str) -> None:
    with pytest.raises(ValueError, match=f"{option} must be one of {allowed}; got '{value}'"):
        aurora.AdapterConfig(method="loran", **{option: value})


@pytest.mark.parametrize("option", ["sinter_amplitude", "sinter_frequency"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_sinter_parameters_are_rejected(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        aurora.AdapterConfig(method="loran", **{option: value})


SPECS = [LoranSpec(f, s, p, a, w) for f, p in itertools.product(FUNCTIONS, PLACEMENTS) for s, a, w in [(2.5, 0.3, 3.0)]]
SPECS += [LoranSpec("sinter", 0.25, "outside", 5e-5, 1e4), LoranSpec("sinter", 2.0, "inside", 0.3, 0.0)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.function}-{s.placement}-w{s.frequency:g}")
def test_fused_node_passes_gradcheck(spec: LoranSpec) -> None:
    torch.manual_seed(1)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    A = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    B = (torch.randn(3, 2, dtype=torch.float64) * 0.5).requires_grad_()
    if spec.frequency > 100:  # the paper's ω = 1e4: keep ωBA a few radians so finite differences resolve it
        A, B = (A.detach() * 1e-2).requires_grad_(), (B.detach() * 1e-2).requires_grad_()
    assert torch.autograd.gradcheck(lambda *t: LoranLinear.apply(*t, spec), (x, weight, bias, A, B))
    if spec.function != "relu":  # relu'' is a distribution: finite differences of the kink are meaningless
        assert torch.autograd.gradgradcheck(lambda *t: LoranLinear.apply(*t, spec), (x, weight, bias, A, B))


@pytest.mark.parametrize("spec", SPECS[:8], ids=lambda s: f"{s.function}-{s.placement}")
def test_fused_node_matches_autograd_of_the_plain_form(spec: LoranSpec) -> None:
    torch.manual_seed(2)
    x = torch.randn(16, 12)
    weight, bias = torch.randn(10, 12), torch.randn(10)
    A = torch.randn(3, 12, requires_grad=True)
    B = torch.randn(10, 3, requires_grad=True)
    fused = loran_linear(x.view(4, 4, 12), weight, bias, A, B, spec).view(16, 10)
    plain = torch.nn.functional.linear(x, weight + delta_weight(A, B, spec), bias)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(plain)
    got, expected = torch.autograd.grad(fused, [A, B], g), torch.autograd.grad(plain, [A, B], g)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def saved_storages(layer: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """Shapes of the tensors autograd keeps for the backward of ``layer(x)`` (parameters and input excluded)."""
    held = {t.untyped_storage().data_ptr() for t in [*layer.parameters(), x]}
    shapes = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.untyped_storage().data_ptr() not in held:
            shapes[tensor.untyped_storage().data_ptr()] = tuple(tensor.shape)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    return list(shapes.values())


def test_fused_layer_saves_no_weight_sized_tensor() -> None:
    model, layer = layer_of(d_in=40, d_out=30)
    layer.float()
    x = torch.randn(6, 40)
    assert saved_storages(layer, x) == []  # only x, W0, b, A, B: held anyway
    plain = aurora.AdapterConfig(method="loran", target_modules=["query"], dropout=0.1)
    holder = nn.Sequential()
    holder.add_module("query", nn.Linear(40, 30))
    aurora.add_adapters(holder, plain)
    assert (30, 40) in saved_storages(holder.query, x)  # the dropout path through autograd keeps ΔW-sized tensors


def test_gradients_match_the_unfused_layer_in_a_model() -> None:
    """The fused layer trains like ΔW left to autograd (the layer's path with dropout, here with p → 0)."""
    _, layer = layer_of(loran_scaling="outside", rank=4, alpha=1.0)
    x = torch.randn(3, 7, dtype=torch.float64)
    fused = layer(x)
    plain = layer.base_layer(x) + x @ layer.delta_weight().T
    torch.testing.assert_close(fused, plain)
    g = torch.randn_like(fused)
    params = [layer.lora_A, layer.lora_B]
    for a, b in zip(torch.autograd.grad(fused, params, g), torch.autograd.grad(plain, params, g)):
        torch.testing.assert_close(a, b)


def test_half_precision_base_keeps_fp32_adapter_math() -> None:
    holder = nn.Sequential()
    holder.add_module("query", nn.Linear(8, 6).to(torch.bfloat16))
    aurora.add_adapters(holder, aurora.AdapterConfig(method="loran", target_modules=["query"], rank=2))
    layer = holder.query
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16 and layer.lora_A.dtype == torch.float32
    reference = x.float() @ (layer.base_layer.weight.float() + layer.delta_weight()).T + layer.base_layer.bias.float()
    torch.testing.assert_close(out.float(), reference, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert layer.lora_A.grad is not None and layer.lora_A.grad.dtype == torch.float32


def test_merge_is_exact_and_torch_func_sees_through() -> None:
    model, layer = layer_of()
    x = torch.randn(3, 7, dtype=torch.float64)
    before = layer(x).detach()
    aurora.merge(model, strategy="static")
    torch.testing.assert_close(model.query(x), before)
    aurora.unmerge(model)
    jacobian = torch.func.jacrev(lambda A: torch.func.functional_call(layer, {"lora_A": A}, (x,)))(layer.lora_A.detach())
    assert jacobian.shape == (3, 5, *layer.lora_A.shape)


def test_workspace_is_three_of_the_largest_matrix_and_shared() -> None:
    """The scratch matrices are reused by every LoRAN layer of a thread; nothing in them outlives a call."""
    from aurora import loran

    loran.clear_workspace()
    model = nn.Sequential()
    model.add_module("small", nn.Linear(8, 4))
    model.add_module("large", nn.Linear(4, 40))
    aurora.add_adapters(model, aurora.AdapterConfig(method="loran", target_modules=["small", "large"]))
    for layer in (model.small, model.large):
        with torch.no_grad():
            layer.lora_B.normal_()
    x = torch.randn(5, 8)
    first = model(x)
    first.sum().backward()
    assert loran.workspace_bytes() == 3 * 40 * 4 * 4  # three float32 matrices of the largest (40 × 4) weight
    again = model(x)
    torch.testing.assert_close(again, first)  # reuse changes nothing
    with torch.inference_mode():
        torch.testing.assert_close(model(x), first.detach())
    loran.clear_workspace()
    assert loran.workspace_bytes() == 0


@pytest.mark.parametrize("wanted", [("x",), ("A", "B"), ("x", "A"), ("weight", "B"), ("x", "weight", "bias", "A", "B")])
@pytest.mark.parametrize("spec", SPECS[:8:2] + SPECS[-1:], ids=lambda s: f"{s.function}-{s.placement}-w{s.frequency:g}")
def test_fused_node_computes_only_the_wanted_gradients(spec: LoranSpec, wanted: tuple[str, ...]) -> None:
    """Whatever subset of inputs needs a gradient (the backward folds the weight only for ``x``), those match autograd
    of the plain form."""
    assert_node_matches_plain_form(spec, wanted, tokens=6, shape=(4, 5), rank=3, seed=3)


def assert_node_matches_plain_form(spec: LoranSpec, wanted: tuple[str, ...], tokens: int, shape: tuple[int, int], rank: int, seed: int) -> None:
    """:class:`LoranLinear`'s output and the ``wanted`` gradients against autograd of the plain form, in float64."""
    torch.manual_seed(seed)
    d_out, d_in = shape
    tensors = {"x": torch.randn(tokens, d_in, dtype=torch.float64), "weight": torch.randn(d_out, d_in, dtype=torch.float64),
               "bias": torch.randn(d_out, dtype=torch.float64), "A": torch.randn(rank, d_in, dtype=torch.float64),
               "B": torch.randn(d_out, rank, dtype=torch.float64) * 0.5}
    for name in wanted:
        tensors[name].requires_grad_(True)
    x, weight, bias, A, B = tensors.values()
    g = torch.randn(tokens, d_out, dtype=torch.float64)
    fused = LoranLinear.apply(x, weight, bias, A, B, spec)
    plain = torch.nn.functional.linear(x, weight + delta_weight(A, B, spec), bias)
    torch.testing.assert_close(fused, plain, atol=1e-12, rtol=1e-12)
    inputs = [tensors[name] for name in wanted]
    for got, expected in zip(torch.autograd.grad(fused, inputs, g), torch.autograd.grad(plain, inputs, g)):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("needs_x", [False, True])
def test_compiled_elementwise_passes_match_the_eager_ones(dtype: torch.dtype, needs_x: bool) -> None:
    """Sinter's compiled fold and gradient pass (the default on CPU) against the eager ops and autograd of the plain form."""
    from aurora import loran

    spec = LoranSpec("sinter", 2.5, "outside", 0.3, 3.0)
    assert spec.compiled and loran.compiled_elementwise_available()
    torch.manual_seed(4)
    x = torch.randn(9, 6, dtype=dtype, requires_grad=needs_x)
    weight, bias = torch.randn(5, 6, dtype=dtype), torch.randn(5, dtype=dtype)
    A = torch.randn(2, 6, dtype=dtype, requires_grad=True)
    B = (torch.randn(5, 2, dtype=dtype) * 0.5).requires_grad_()
    inputs = [A, B] + ([x] if needs_x else [])
    g = torch.randn(9, 5, dtype=dtype)
    plain = torch.nn.functional.linear(x, weight + delta_weight(A, B, spec), bias)
    expected = torch.autograd.grad(plain, inputs, g)
    tolerance = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    for variant in (spec, spec._replace(compiled=False)):
        out = LoranLinear.apply(x, weight, bias, A, B, variant)
        torch.testing.assert_close(out, plain, **tolerance)
        for got, want in zip(torch.autograd.grad(out, inputs, g), expected):
            torch.testing.assert_close(got, want, **tolerance)


def test_a_failed_compilation_falls_back_to_eager_ops_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from aurora import loran

    monkeypatch.setattr(loran, "_KERNELS", {})
    monkeypatch.setattr(loran, "_KERNELS_FAILED", [])

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", no_compiler)
    spec = LoranSpec("sinter", 2.5, "outside", 0.3, 3.0)
    x, weight, bias = torch.randn(4, 6), torch.randn(5, 6), torch.randn(5)
    A, B = torch.randn(2, 6, requires_grad=True), torch.randn(5, 2, requires_grad=True)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        out = LoranLinear.apply(x, weight, bias, A, B, spec)
    assert not loran.compiled_elementwise_available()
    torch.testing.assert_close(out, torch.nn.functional.linear(x, weight + delta_weight(A, B, spec), bias), rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out.sum(), [A, B])  # the backward takes the eager path too, without a second warning
    plain = torch.nn.functional.linear(x, weight + delta_weight(A, B, spec), bias)
    for got, want in zip(grads, torch.autograd.grad(plain.sum(), [A, B])):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rank", [1, 3, 8, 12])  # padded to an inline width (1, 3), written out (8), BLAS per tile (12)
@pytest.mark.parametrize("wanted", [("x", "A", "B"), ("A",), ("x",), ("weight", "bias", "B")])
def test_tiled_sinter_path_matches_autograd_over_ragged_tiles(monkeypatch: pytest.MonkeyPatch, rank: int, wanted: tuple[str, ...]) -> None:
    """The compiled Sinter path works on row tiles; with tiles of 2 and 3 rows over 10 every wanted gradient still
    matches autograd of the plain form."""
    from aurora import loran

    monkeypatch.setattr(loran, "TILE_ELEMENTS", 3 * 7)
    loran.clear_workspace()
    assert loran._tiles((10, 7)) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert_node_matches_plain_form(LoranSpec("sinter", 1.5, "inside", 0.7, 2.0), wanted, tokens=5, shape=(10, 7), rank=rank, seed=rank)
    assert loran.workspace_bytes() == 3 * (3 * 7) * 8  # three float64 scratch tiles of 3 rows, never the 10-row weight
