"""Merge / unmerge: exact methods reproduce their outputs, AuroRA's gap is measured, unmerge restores bit for bit."""

import copy

import numpy as np
import pytest
import torch

import aurora
from conftest import TinyNet, randomize_adapters

EXACT = ["lora", "moslora", "loran", "aurora-static"]


def adapted(case: dict, seed: int = 0, scale: float = 0.3) -> TinyNet:
    torch.manual_seed(seed)
    model = TinyNet()
    aurora.add_adapters(model, aurora.AdapterConfig(target_modules=["query", "value"], **case))
    randomize_adapters(model, scale=scale, seed=seed)
    return model.eval()


def is_exact(case: dict) -> bool:
    return case["method"] != "aurora" or case.get("form") == "static"


def test_round_trip(case):
    model = adapted(case)
    originals = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randn(16, 12)
    dynamic = model(x)
    report = aurora.merge(model, calibration={n: torch.randn(64, 12) for n, _ in aurora.adapter_layers(model)})
    assert all(layer.merged for _, layer in aurora.adapter_layers(model))
    merged = model(x)
    if is_exact(case):
        torch.testing.assert_close(merged, dynamic, atol=1e-5, rtol=1e-5)
        assert report.max_relative_gap < 1e-5
    else:
        assert report.max_relative_gap > 1e-3  # the paper's static merge is an approximation
    aurora.unmerge(model)
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, originals[name]), name
    assert model.value.base_layer.bias is None
    torch.testing.assert_close(model(x), dynamic, atol=0, rtol=0)


def test_reported_gap_is_the_relative_output_difference():
    model = adapted(dict(method="aurora", rank=2))
    calibration = {n: torch.randn(200, 12) for n, _ in aurora.adapter_layers(model)}
    layer = model.query
    x = calibration["query"]
    A, B, s = layer.lora_A.detach(), layer.lora_B.detach(), layer.scaling
    dynamic = s * layer.anl(x @ A.T).detach() @ B.T
    static = x @ (s * B @ torch.stack([layer.anl(A[:, j]).detach() for j in range(12)], dim=1)).T
    expected = (torch.linalg.norm(dynamic - static) / torch.linalg.norm(dynamic)).item()
    report = aurora.merge(model, strategy="static", calibration=calibration)
    assert report.layers[0].name == "query" and report.layers[0].strategy == "static" and not report.layers[0].exact
    assert report.layers[0].relative_gap == pytest.approx(expected, rel=1e-4)
    assert "query" in str(report)


def test_linearized_merge_is_exact_to_first_order():
    model = adapted(dict(method="aurora", rank=2), scale=0.3)
    small = {n: 1e-3 * torch.randn(100, 12) for n, _ in aurora.adapter_layers(model)}
    static_gap = aurora.merge(copy.deepcopy(model), "static", small).max_relative_gap
    linear_gap = aurora.merge(model, "linearized", small).max_relative_gap
    assert linear_gap < 1e-2 < static_gap
    # the bias term s·B σ(0) was added to the bias-free value layer, and leaves again on unmerge
    assert model.value.base_layer.bias is not None
    aurora.unmerge(model)
    assert model.value.base_layer.bias is None


def test_linearized_uses_the_jacobian_at_zero():
    model = adapted(dict(method="aurora", rank=2, learnable_nonlinearity=False))
    layer = model.query
    delta_w, delta_b = aurora.merge_update(layer, "linearized")
    H = layer.anl.self_projection.detach()  # tanh(H tanh z): Jacobian at 0 is H, σ(0) = 0
    torch.testing.assert_close(delta_w, layer.scaling * layer.lora_B.detach() @ H @ layer.lora_A.detach())
    torch.testing.assert_close(delta_b, torch.zeros(12))


def test_least_squares_is_the_best_fit_of_its_form():
    model = adapted(dict(method="aurora", rank=2), scale=0.4)
    calibration = {n: torch.randn(500, 12) for n, _ in aurora.adapter_layers(model)}
    gaps = {s: aurora.merge(copy.deepcopy(model), s, calibration).max_relative_gap for s in aurora.MERGE_STRATEGIES}
    assert gaps["least_squares"] <= gaps["linearized"] + 1e-9
    assert gaps["least_squares"] <= gaps["static"] + 1e-9
    # independent reference: numpy least squares of σ(z) on [z, 1]
    layer = model.query
    z = (calibration["query"] @ layer.lora_A.detach().T).double().numpy()
    target = layer.anl(torch.from_numpy(z).float()).detach().double().numpy()
    solution, *_ = np.linalg.lstsq(np.hstack([z, np.ones((len(z), 1))]), target, rcond=None)
    delta_w, delta_b = aurora.merge_update(layer, "least_squares", calibration["query"])
    B, A, s = layer.lora_B.detach().double().numpy(), layer.lora_A.detach().double().numpy(), layer.scaling
    np.testing.assert_allclose(delta_w.numpy(), s * B @ solution[:-1].T @ A, atol=1e-4)
    np.testing.assert_allclose(delta_b.numpy(), s * B @ solution[-1], atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_unmerge_is_bit_exact_in_half_precision(dtype):
    torch.manual_seed(0)
    model = TinyNet().to(dtype)
    aurora.add_adapters(model, aurora.AdapterConfig(method="aurora", target_modules=["query", "value"]))
    randomize_adapters(model)
    original = model.query.base_layer.weight.detach().clone()
    aurora.merge(model, "linearized")
    assert model.query.base_layer.weight.dtype == dtype and not torch.equal(model.query.base_layer.weight, original)
    aurora.unmerge(model)
    assert torch.equal(model.query.base_layer.weight, original)


def test_merge_errors():
    with pytest.raises(ValueError, match="no adapters"):
        aurora.merge(TinyNet())
    model = adapted(dict(method="aurora"))
    with pytest.raises(ValueError, match="strategy must be one of 'static', 'linearized', 'least_squares'"):
        aurora.merge(model, strategy="svd")
    with pytest.raises(ValueError, match="least_squares.*calibration"):
        aurora.merge(model, strategy="least_squares")
    with pytest.raises(ValueError, match="nothing to unmerge"):
        aurora.unmerge(model)
    aurora.merge(model, reversible=False)
    with pytest.raises(ValueError, match="already merged"):
        aurora.merge(model)
    with pytest.raises(ValueError, match="reversible=False"):
        aurora.unmerge(model)


def test_collect_calibration_inputs():
    model = adapted(dict(method="aurora"))
    batches = [torch.randn(7, 12) for _ in range(5)]
    calibration = aurora.collect_calibration_inputs(model, batches, max_rows=20)
    assert set(calibration) == {"query", "value"}
    assert calibration["query"].shape == (20, 12)
    torch.testing.assert_close(calibration["query"][:7], batches[0])
    assert model.training is False


def test_calibration_skips_padding_positions():
    from test_inject import tiny_roberta

    model = tiny_roberta()
    aurora.add_adapters(model, aurora.AdapterConfig(method="aurora", target_modules=["query"]))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    batch = dict(input_ids=torch.randint(0, 100, (2, 5)), attention_mask=mask)
    calibration = aurora.collect_calibration_inputs(model, [batch])
    name = aurora.adapter_layers(model)[0][0]
    assert calibration[name].shape == (8, 32)  # 3 + 5 real tokens, padding left out
