"""Adapter layers against direct formulas, gradcheck, dtypes and torch.compile."""

import numpy as np
import pytest
import torch
from torch import nn

import aurora
from conftest import CASES, TinyNet, randomize_adapters


def wrapped(options: dict, d_in: int = 7, d_out: int = 5, seed: int = 0):
    """A float64 nn.Linear wrapped by the adapter of ``options``, with random (nonzero) adapter weights."""
    torch.manual_seed(seed)
    holder = nn.Module()
    holder.layer = base = nn.Linear(d_in, d_out)
    aurora.add_adapters(holder, aurora.AdapterConfig(target_modules=["layer"], **options))
    holder.double()
    randomize_adapters(holder, seed=seed)
    return holder, holder.layer, base


def test_lora_is_w0x_plus_scaled_bax():
    _, layer, base = wrapped(dict(method="lora", rank=3, alpha=6.0))
    x = torch.randn(4, 7, dtype=torch.float64)
    W0, b0 = base.weight.detach(), base.bias.detach()
    A, B = layer.lora_A.detach(), layer.lora_B.detach()
    torch.testing.assert_close(layer(x), x @ W0.T + b0 + 2.0 * x @ A.T @ B.T)
    torch.testing.assert_close(layer.delta_weight(), 2.0 * B @ A)


def test_moslora_is_w0x_plus_scaled_bmax():
    _, layer, base = wrapped(dict(method="moslora", rank=3, alpha=3.0))
    x = torch.randn(4, 7, dtype=torch.float64)
    A, B, M = layer.lora_A.detach(), layer.lora_B.detach(), layer.lora_mixer.detach()
    torch.testing.assert_close(layer(x), base(x) + x @ (B @ M @ A).T)


def test_aurora_dynamic_forward_is_eq4():
    _, layer, base = wrapped(dict(method="aurora", rank=2, alpha=4.0, self_projection_init="kaiming"))
    x = torch.randn(6, 7, dtype=torch.float64)
    A, B = layer.lora_A.detach(), layer.lora_B.detach()
    H = layer.anl.self_projection.detach()
    z = x @ A.T
    fixed = torch.tanh(torch.tanh(z) @ H.T)
    learnable = layer.anl.learnable_part(z).detach()  # spline part is checked against scipy in test_nonlinear
    torch.testing.assert_close(layer(x), base(x) + 2.0 * (fixed + learnable) @ B.T)


def test_aurora_static_update_applies_sigma_to_each_column_of_a():
    _, layer, _ = wrapped(dict(method="aurora", rank=3, spline_mode="per_edge"))
    A, B = layer.lora_A.detach(), layer.lora_B.detach()
    columns = torch.stack([layer.anl(A[:, j]) for j in range(A.shape[1])], dim=1).detach()  # σ(A e_j), one by one
    torch.testing.assert_close(layer.delta_weight().detach(), layer.scaling * B @ columns)
    # the layout bug seen in public code (reshape of the r×d matrix to (-1, r)) gives something else:
    wrong = layer.anl(A.reshape(-1, 3)).reshape(3, -1).detach()
    assert not torch.allclose(wrong, columns)


def test_aurora_static_form_trains_b_sigma_a_x():
    _, layer, base = wrapped(dict(method="aurora", rank=2, form="static"))
    x = torch.randn(6, 7, dtype=torch.float64)
    torch.testing.assert_close(layer(x), base(x) + x @ layer.delta_weight().T)


def test_loran_is_sinter_of_scaled_ba():
    _, layer, base = wrapped(dict(method="loran", rank=2, alpha=4.0, sinter_amplitude=0.3, sinter_frequency=2.0, loran_scaling="inside"))
    x = torch.randn(6, 7, dtype=torch.float64)
    A, B = layer.lora_A.detach(), layer.lora_B.detach()
    update = 2.0 * B @ A
    delta = 0.3 * torch.sin(2.0 * update) * update + update
    torch.testing.assert_close(layer(x), base(x) + x @ delta.T)


@pytest.mark.parametrize("options", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_gradcheck_every_layer(options):
    _, layer, _ = wrapped(options, d_in=4, d_out=3)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters() if not n.startswith("base_layer.")]
    if options["method"] == "dora":  # DoRA's ‖W0 + sBA‖ is a constant in the backward pass (DoRA §4.3): exact in x and m only
        names = ["lora_magnitude"]
    values = [layer.get_parameter(n).detach().clone().requires_grad_(True) for n in names]

    def forward(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(forward, (x, *values))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("options", [c[1] for c in CASES[:4]] + [CASES[-1][1]], ids=[c[0] for c in CASES[:4]] + [CASES[-1][0]])
def test_half_precision_base_weights(dtype, options):
    """A model loaded in fp16/bf16 gets fp32 adapters; outputs follow the base dtype and match fp32 math."""
    torch.manual_seed(0)
    reference = TinyNet()
    model = TinyNet().to(dtype)
    model.load_state_dict(reference.state_dict())
    config = aurora.AdapterConfig(target_modules=["query", "value"], **options)
    for m in (model, reference):
        aurora.add_adapters(m, config)
        randomize_adapters(m)
    assert all(l.lora_A.dtype == torch.float32 and l.base_layer.weight.dtype == dtype for _, l in aurora.adapter_layers(model))
    x = torch.randn(8, 12)
    out = model(x.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), reference(x), atol=0.05, rtol=0.05)


@pytest.mark.parametrize("options", [CASES[0][1], CASES[2][1], CASES[-1][1]], ids=["lora", "aurora", "loran"])
def test_torch_compile_matches_eager(options):
    torch.manual_seed(0)
    model = TinyNet()
    aurora.add_adapters(model, aurora.AdapterConfig(target_modules=["query", "value"], **options))
    randomize_adapters(model)
    x = torch.randn(5, 12)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))
    compiled(x).sum().backward()
    assert all(l.lora_A.grad is not None for _, l in aurora.adapter_layers(model))


def test_zero_b_means_no_change_at_init():
    torch.manual_seed(0)
    for method in aurora.METHODS:
        model = TinyNet()
        x = torch.randn(4, 12)
        before = model(x)
        aurora.add_adapters(model, aurora.AdapterConfig(method=method, target_modules=["query", "value"]))
        torch.testing.assert_close(model(x), before)


def test_a_new_method_is_one_class_and_one_registration():
    from aurora import registry

    class ScaledLoraLayer(aurora.LoraLayer):
        """LoRA with a doubled update: everything else (merge, export, counting) comes from the hooks."""

        def delta_weight(self):
            return 2 * super().delta_weight()

        def hidden(self, x):
            return 2 * super().hidden(x)

        def down_projection(self):
            return 2 * self.lora_A

    aurora.register_method("scaled_lora", ScaledLoraLayer)
    try:
        assert "scaled_lora" in aurora.METHODS and ScaledLoraLayer.method == "scaled_lora"
        torch.manual_seed(0)
        model = TinyNet()
        aurora.add_adapters(model, aurora.AdapterConfig(method="scaled_lora", target_modules=["query"]))
        randomize_adapters(model)
        x = torch.randn(4, 12)
        before = model(x)
        layer = model.query
        torch.testing.assert_close(before, TinyNet.forward(model, x))
        up, down, bias = layer.low_rank_factors()
        torch.testing.assert_close(up @ down, layer.delta_weight())
        aurora.merge(model)
        torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="already registered"):
            aurora.register_method("scaled_lora", aurora.LoraLayer)
        with pytest.raises(ValueError, match="subclass of aurora.AdapterLayer"):
            aurora.register_method("other", nn.Linear)
    finally:
        registry._LAYER_CLASSES.pop("scaled_lora")
    assert "scaled_lora" not in aurora.METHODS


@pytest.mark.parametrize("options", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_method_facts(options):
    """The hooks agree with the layer's own update: factors multiply to ΔW, groups are the adapter's parameters."""
    _, layer, _ = wrapped(options)
    assert layer.method == options["method"]
    assert layer.exact_merge == (options["method"] != "aurora" or options.get("form") == "static")
    delta_w, delta_b = layer.merge_update("static")
    torch.testing.assert_close(delta_w, layer.delta_weight())
    adapter = {id(p) for n, p in layer.named_parameters() if not n.startswith("base_layer.")}
    assert {id(p) for p in layer.parameter_groups().values()} == adapter
    if options["method"] in ("loran", "dora"):
        with pytest.raises(ValueError, match="merge_and_unload"):
            layer.low_rank_factors()
    else:
        up, down, bias = layer.low_rank_factors("static")
        assert bias is None and down.shape == (layer.rank, layer.in_features)
        torch.testing.assert_close(up @ down, delta_w)


def first_nodes(tensor: torch.Tensor) -> str:
    """Names of the autograd node that made ``tensor`` and of the nodes feeding it."""
    node = tensor.grad_fn
    return " ".join([type(node).__name__, *(type(n).__name__ for n, _ in node.next_functions if n is not None)])


AURORA_NODE_CASES = [
    dict(activation=a, spline_mode=m, fixed_nonlinearity=f, learnable_nonlinearity=l)
    for a, m, (f, l) in [("tanh", "per_unit", (True, True)), ("tanh", "sum", (True, True)), ("sigmoid", "per_edge", (True, True)),
                         ("leaky_relu", "per_unit", (True, True)), ("tanh", "per_unit", (False, True)), ("tanh", "per_edge", (True, False))]
]


@pytest.mark.parametrize("options", AURORA_NODE_CASES, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_aurora_one_node_update_matches_autograd_of_eq4(options):
    """The dynamic layer's one-node update against autograd through ``W0 x + b + s · B σ(A x)`` written with the ANL's
    plain-op form: values, gradients of every input and parameter, and second derivatives."""
    _, layer, base = wrapped(dict(method="aurora", rank=3, alpha=4.5, self_projection_init="kaiming", spline_init_scale=0.5, **options))
    x = (torch.randn(2, 5, 7, dtype=torch.float64) * 2).requires_grad_()  # A x partly outside the grid
    params = [p for n, p in layer.named_parameters() if not n.startswith("base_layer.")]

    def reference(x):
        return base(x) + layer.scaling * layer.anl.autograd_forward(x @ layer.lora_A.T) @ layer.lora_B.T

    ours, expected = layer(x), reference(x)
    assert "AnlUpdate" in first_nodes(ours)
    torch.testing.assert_close(ours, expected, atol=1e-13, rtol=0)
    weights = torch.randn_like(ours)
    inputs = [x, *params]
    first = torch.autograd.grad((ours * weights).sum(), inputs, create_graph=True)
    first_expected = torch.autograd.grad((expected * weights).sum(), inputs, create_graph=True)
    directions = [torch.randn_like(g) for g in first]
    second, second_expected = (
        torch.autograd.grad(sum((g * d).sum() for g, d in zip(grads, directions)), inputs, allow_unused=True, materialize_grads=True)
        for grads in (first, first_expected)
    )
    for got, want in zip([*first, *second], [*first_expected, *second_expected]):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("frozen", [(), ("lora_A",), ("lora_B", "anl.self_projection"), ("anl.spline_coefficients", "lora_A")])
def test_aurora_one_node_update_with_frozen_parts(frozen):
    """Only what requires a gradient gets one, and those equal autograd's (the node skips the products it does not need)."""
    _, layer, base = wrapped(dict(method="aurora", rank=2, alpha=4.0, self_projection_init="kaiming", spline_init_scale=0.5))
    for name in frozen:
        layer.get_parameter(name).requires_grad_(False)
    x = torch.randn(6, 7, dtype=torch.float64) * 2
    trained = [p for n, p in layer.named_parameters() if p.requires_grad]
    expected = base(x) + layer.scaling * layer.anl.autograd_forward(x @ layer.lora_A.T) @ layer.lora_B.T
    weights = torch.randn_like(expected)
    ours = torch.autograd.grad((layer(x) * weights).sum(), trained)
    for got, want in zip(ours, torch.autograd.grad((expected * weights).sum(), trained)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_aurora_generic_path_when_the_update_is_not_fused():
    """``fused_update=False`` (the benchmark's reference rows) computes the same layer through the ANL module."""
    _, layer, _ = wrapped(dict(method="aurora", rank=2, alpha=4.0, self_projection_init="kaiming"))
    x = torch.randn(4, 7, dtype=torch.float64)
    fused = layer(x)
    layer.fused_update = False
    unfused = layer(x)
    assert "AnlUpdate" in first_nodes(fused) and "AnlUpdate" not in first_nodes(unfused)
    torch.testing.assert_close(fused, unfused, atol=1e-14, rtol=0)
