"""Every method through PEFT's tuner checklist (after PEFT's ``tests/testing_common.py``, ``PeftCommonTester``).

One matrix: every ``conftest.CASES`` entry (all five methods and the AuroRA variants) on a model whose targets are
``nn.Linear`` and on one whose targets are transformers' ``Conv1D`` (GPT-2's layer type). References are the
base model itself (a copy taken before injection), closed forms, and PEFT where PEFT has the method.
"""

import copy

import pytest
import torch

import aurora
from conftest import CASES, TinyConv1DNet, TinyNet, randomize_adapters

BASES = {"linear": TinyNet, "conv1d": TinyConv1DNet}
MATRIX = [pytest.param(base, options, id=f"{case}-{base}") for case, options in CASES for base in BASES]


def build(base: str, options: dict, seed: int = 0, **extra):
    """``(base model copy, adapted model)`` with random nonzero adapters, both in eval mode."""
    torch.manual_seed(seed)
    model = BASES[base]()
    original = copy.deepcopy(model).eval()
    aurora.add_adapters(model, aurora.AdapterConfig(target_modules=["query", "value"], **options, **extra))
    randomize_adapters(model, seed=seed)
    return original, model.eval()


def inputs(seed: int = 1) -> torch.Tensor:
    return torch.randn(9, 12, generator=torch.Generator().manual_seed(seed))


def merged_reference(original, model, x):
    """What a merge must compute, by hand: ``(W0 + ΔW) x + b + Δb`` per layer, from each layer's merge_update."""
    reference = copy.deepcopy(original)
    with torch.no_grad():
        for name, layer in aurora.adapter_layers(model):
            delta_w, delta_b = layer.merge_update("static")
            base = reference.get_submodule(name)
            if layer.fan_in_fan_out:
                base.weight += delta_w.T
            else:
                base.weight += delta_w
            if delta_b is not None:
                base.bias += delta_b
    return reference(x)


@pytest.mark.parametrize("base, options", MATRIX)
def test_merged_unmerged_and_unloaded_outputs(base, options):
    original, model = build(base, options)
    x = inputs()
    unmerged = model(x)
    assert not torch.allclose(unmerged, original(x), atol=1e-4)  # the adapters do something
    merged_model = copy.deepcopy(model)
    aurora.merge(merged_model)
    merged = merged_model(x)
    torch.testing.assert_close(merged, merged_reference(original, model, x), atol=1e-5, rtol=1e-5)
    if aurora.adapter_layers(model)[0][1].exact_merge:
        torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    unloaded = aurora.merge_and_unload(copy.deepcopy(model))
    assert not aurora.adapter_layers(unloaded) and type(unloaded.query) is type(original.query)
    torch.testing.assert_close(unloaded(x), merged, atol=0, rtol=0)
    aurora.unmerge(merged_model)
    for (name, p), q in zip(merged_model.named_parameters(), model.parameters()):
        assert torch.equal(p, q), name
    torch.testing.assert_close(aurora.unload(copy.deepcopy(model))(x), original(x), atol=0, rtol=0)


@pytest.mark.parametrize("base, options", MATRIX)
def test_merging_twice_raises_and_changes_nothing(base, options):
    _, model = build(base, options)
    aurora.merge(model)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="already merged"):
        aurora.merge(model)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("safe_merge", [False, True])
@pytest.mark.parametrize("base, options", MATRIX)
def test_nan_update_is_refused_before_any_weight_changes(base, options, safe_merge):
    _, model = build(base, options)
    with torch.no_grad():
        model.value.lora_B[0, 0] = float("nan")  # the last adapter layer: a fold-as-you-go merge would have changed query
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="'value'.*inf or NaN; nothing was merged"):
        aurora.merge(model, safe_merge=safe_merge)
    assert not any(layer.merged for _, layer in aurora.adapter_layers(model))
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) or name == "value.lora_B", name


@pytest.mark.parametrize("base, options", MATRIX)
def test_safe_merge_refuses_weights_that_overflow_half_precision(base, options):
    _, model = build(base, options)
    for _, layer in aurora.adapter_layers(model):
        layer.base_layer.to(torch.float16)  # an fp16 base; the adapters stay fp32
    with torch.no_grad():
        (model.value.lora_magnitude if options["method"] == "dora" else model.value.lora_B).mul_(1e6)  # DoRA normalizes B A
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="overflow torch.float16"):
        aurora.merge(model, safe_merge=True)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("merged", [False, True])
@pytest.mark.parametrize("base, options", MATRIX)
def test_disable_adapters_gives_base_outputs_and_restores(base, options, merged):
    original, model = build(base, options)
    x = inputs()
    if merged:
        aurora.merge(model)
    adapted = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with aurora.disable_adapters(model):
        torch.testing.assert_close(model(x), original(x), atol=0, rtol=0)
    torch.testing.assert_close(model(x), adapted, atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="body failed"):
        with aurora.disable_adapters(model):
            raise RuntimeError("body failed")
    assert [layer.merged for _, layer in aurora.adapter_layers(model)] == [merged, merged]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    torch.testing.assert_close(model(x), adapted, atol=0, rtol=0)


@pytest.mark.parametrize("base, options", MATRIX)
def test_a_training_step_changes_only_adapters_and_head(base, options):
    _, model = build(base, options, modules_to_save=["classifier"])
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(inputs()), torch.tensor([0, 1, 2] * 3))
    loss.backward()
    optimizer.step()
    for name, p in model.named_parameters():
        trainable = ".base_layer." not in name
        assert p.requires_grad == trainable, name
        if name.endswith(("lora_A", "lora_B", "classifier.weight")):
            assert not torch.equal(p, before[name]), f"{name} did not train"
        if not trainable:
            assert torch.equal(p, before[name]), f"frozen {name} changed"


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("base, options", MATRIX)
def test_half_precision_forward(base, options, dtype, autocast):
    original, model = build(base, options)
    x = inputs()
    reference = model(x)
    if autocast:
        with torch.autocast("cpu", dtype=dtype):
            out = model(x)
    else:
        half = copy.deepcopy(model).to(dtype)
        out = half(x.to(dtype))
        assert out.dtype == dtype
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, atol=0.08, rtol=0.08)


@pytest.mark.parametrize("base, options", MATRIX)
def test_save_and_load_round_trip(base, options, tmp_path):
    original, model = build(base, options, modules_to_save=["classifier"])
    with torch.no_grad():
        model.classifier.weight.mul_(-1)
    x = inputs()
    aurora.save_adapters(model, tmp_path)
    fresh = aurora.load_adapters(copy.deepcopy(original), tmp_path)
    torch.testing.assert_close(fresh(x), model(x), atol=0, rtol=0)


@pytest.mark.parametrize("base, options", MATRIX)
def test_export_and_import_peft_round_trip(base, options, tmp_path):
    original, model = build(base, options, modules_to_save=["classifier"])
    x = inputs()
    if options["method"] == "loran":
        with pytest.raises(ValueError, match="merge_and_unload"):
            aurora.export_peft(model, tmp_path)
        assert not any(tmp_path.iterdir())  # nothing written
        return
    aurora.export_peft(model, tmp_path)
    merged = copy.deepcopy(model)
    aurora.merge(merged)
    imported = aurora.import_peft(copy.deepcopy(original), tmp_path)
    assert {layer.method for _, layer in aurora.adapter_layers(imported)} <= {"lora", "dora"}
    torch.testing.assert_close(imported(x), merged(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("base, options", MATRIX)
def test_wrapper_exposes_in_and_out_features(base, options):
    _, model = build(base, options)
    layer = model.query
    assert (layer.in_features, layer.out_features) == (12, 12)
    assert layer.base_weight().shape == (layer.out_features, layer.in_features)
    assert layer.lora_A.shape == (layer.rank, 12) and layer.lora_B.shape == (12, layer.rank)
    assert layer.fan_in_fan_out == (base == "conv1d")
