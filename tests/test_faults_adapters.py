"""Faults in merging and injection (issue 11): nothing half-done, degenerate input refused, no ΔW added twice."""

import pytest
import torch
from torch import nn

import aurora
from conftest import CASES, TinyNet, randomize_adapters


def adapted(options: dict | None = None, seed: int = 0, **extra) -> TinyNet:
    torch.manual_seed(seed)
    model = TinyNet()
    aurora.add_adapters(model, aurora.AdapterConfig(target_modules=["query", "value"], **(options or dict(method="aurora")), **extra))
    randomize_adapters(model, seed=seed)
    return model.eval()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


# -- merge: all updates first, then fold ---------------------------------------------------------


def test_least_squares_with_calibration_for_some_layers_merges_nothing():
    model = adapted()
    before = snapshot(model)
    with pytest.raises(ValueError, match="calibration inputs for layer 'value'"):
        aurora.merge(model, strategy="least_squares", calibration={"query": torch.randn(50, 12)})
    assert not any(layer.merged for _, layer in aurora.adapter_layers(model)) and unchanged(model, before)


@pytest.mark.parametrize("rows, match", [
    (torch.zeros(0, 12), "at least rank \\+ 1 = 3 calibration rows.*got 0"),
    (torch.randn(2, 12), "at least rank \\+ 1 = 3 calibration rows.*got 2"),
    (torch.full((40, 12), float("nan")), "inf or NaN"),
    (torch.cat([torch.randn(39, 12), torch.full((1, 12), float("inf"))]), "inf or NaN"),
    (torch.randn(40, 11), "\\(n, 12\\)"),
    (torch.randn(40), "\\(n, 12\\)"),
    ([[0.0] * 12] * 40, "\\(n, 12\\)"),
])
def test_degenerate_least_squares_calibration_is_refused(rows, match):
    model = adapted()
    before = snapshot(model)
    calibration = {"query": torch.randn(50, 12), "value": rows}
    with pytest.raises(ValueError, match=match):
        aurora.merge(model, strategy="least_squares", calibration=calibration)
    assert unchanged(model, before)


def test_all_zero_attention_mask_gives_no_rows_and_a_clear_error():
    from test_inject import tiny_roberta

    model = tiny_roberta()
    aurora.add_adapters(model, aurora.AdapterConfig(method="aurora", target_modules=["query"]))
    batch = dict(input_ids=torch.randint(0, 100, (2, 5)), attention_mask=torch.zeros(2, 5, dtype=torch.long))
    calibration = aurora.collect_calibration_inputs(model, [batch])
    assert all(rows.shape[0] == 0 for rows in calibration.values())
    with pytest.raises(ValueError, match="got 0"):
        aurora.merge(model, strategy="least_squares", calibration=calibration)
    assert not any(layer.merged for _, layer in aurora.adapter_layers(model))


@pytest.mark.parametrize("calibration, match", [
    ({"nonexistent": torch.randn(5, 12)}, "not adapter layers"),
    ([torch.randn(5, 12)], "must map layer names"),
])
def test_bad_calibration_mappings_are_refused(calibration, match):
    model = adapted()
    with pytest.raises(ValueError, match=match):
        aurora.merge(model, calibration=calibration)


@pytest.mark.parametrize("option", ["safe_merge", "reversible"])
def test_merge_flags_must_be_bools(option):
    with pytest.raises(ValueError, match="True or False"):
        aurora.merge(adapted(), **{option: "yes"})


def test_unmerge_of_a_partly_irreversible_merge_changes_nothing():
    model = adapted(dict(method="lora"))
    aurora.merge(model)
    model.value._saved_weight = None  # as after merge(reversible=False) for that layer
    before = snapshot(model)
    with pytest.raises(ValueError, match="reversible=False"):
        aurora.unmerge(model)
    assert unchanged(model, before) and model.query.merged


# -- merged state dicts: ΔW never added twice --------------------------------------------------


@pytest.mark.parametrize("options", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_a_merged_state_dict_loads_as_merged(options):
    model = adapted(options)
    x = torch.randn(6, 12)
    aurora.merge(model)
    expected = model(x)
    state = model.state_dict()
    assert state["query.merged"].item() is True
    fresh = adapted(options, seed=1)
    fresh.load_state_dict(state)  # strict: the marker is consumed, no unexpected key
    assert all(layer.merged for _, layer in aurora.adapter_layers(fresh))
    torch.testing.assert_close(fresh(x), expected, atol=0, rtol=0)
    with pytest.raises(ValueError, match="reversible=False \\(or loaded merged\\)"):
        aurora.unmerge(fresh)


def test_an_unmerged_state_dict_into_a_merged_model_unmerges_it():
    source = adapted(dict(method="aurora"), seed=1)
    x = torch.randn(6, 12)
    expected = source(x)
    target = adapted(dict(method="aurora"))
    aurora.merge(target, strategy="linearized")  # creates a bias on the bias-free 'value'
    assert target.value.base_layer.bias is not None
    target.load_state_dict(source.state_dict())
    assert not any(layer.merged for _, layer in aurora.adapter_layers(target))
    assert target.value.base_layer.bias is None
    torch.testing.assert_close(target(x), expected, atol=0, rtol=0)


def test_a_merged_state_dict_with_a_created_bias_loads_into_a_fresh_model():
    model = adapted(dict(method="aurora"))
    x = torch.randn(6, 12)
    aurora.merge(model, strategy="linearized")
    expected = model(x)
    fresh = adapted(dict(method="aurora"), seed=2)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(x), expected, atol=0, rtol=0)


def test_adapter_weights_alone_into_a_merged_model_are_refused():
    model = adapted(dict(method="lora"))
    aurora.merge(model)
    adapters_only = {k: v for k, v in adapted(dict(method="lora"), seed=3).state_dict().items() if "lora_" in k}
    with pytest.raises(ValueError, match="merged layer and its base weights load together"):
        model.load_state_dict(adapters_only, strict=False)


# -- add_adapters: the config is copied, bad targets and heads refused --------------------------


def test_mutating_the_config_after_add_adapters_changes_nothing(tmp_path):
    config = aurora.AdapterConfig(method="lora", rank=2, alpha=4.0, target_modules=["query", "value"])
    torch.manual_seed(0)
    model = TinyNet()
    aurora.add_adapters(model, config)
    randomize_adapters(model)
    x = torch.randn(5, 12)
    expected = model(x)
    config.alpha, config.rank, config.target_modules = 64.0, 8, ["classifier"]
    assert model.query.scaling == 2.0
    aurora.save_adapters(model, tmp_path)
    torch.manual_seed(0)
    reloaded = aurora.load_adapters(TinyNet(), tmp_path)
    assert reloaded.query.config.alpha == 4.0 and reloaded.query.config.rank == 2
    torch.testing.assert_close(reloaded(x), expected, atol=0, rtol=0)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        return self.proj(self.attention(x, x, x)[0])


@pytest.mark.parametrize("targets", [["out_proj"], ["attention.out_proj"], ".*out_proj"])
def test_multihead_attention_out_proj_is_refused_up_front(targets):
    model = Attention()
    before = snapshot(model)
    with pytest.raises(ValueError, match="out_proj of nn.MultiheadAttention.*never calls it"):
        aurora.add_adapters(model, aurora.AdapterConfig(method="lora", target_modules=targets))
    assert unchanged(model, before) and all(p.requires_grad for p in model.parameters())
    aurora.add_adapters(model, aurora.AdapterConfig(method="lora", target_modules=["proj"]))  # the rest still works
    assert model(torch.randn(2, 3, 8)).shape == (2, 3, 8)


@pytest.mark.parametrize("heads, match", [
    (["query"], "overlaps the adapted layers \\['query'\\]"),
    ([""], "non-empty"),
])
def test_heads_that_overlap_targets_are_refused(heads, match):
    torch.manual_seed(0)
    model = TinyNet()
    before = snapshot(model)
    with pytest.raises(ValueError, match=match):
        aurora.add_adapters(model, aurora.AdapterConfig(method="lora", target_modules=["query", "value"], modules_to_save=heads))
    assert unchanged(model, before) and not aurora.adapter_layers(model)


def test_a_head_containing_adapted_layers_is_refused():
    outer = nn.Module()
    outer.block = TinyNet()
    with pytest.raises(ValueError, match="'block'.*overlaps the adapted layers \\['block.query'"):
        aurora.add_adapters(outer, aurora.AdapterConfig(method="lora", target_modules=["query"], modules_to_save=["block"]))
    assert not aurora.adapter_layers(outer) and all(p.requires_grad for p in outer.parameters())


def test_a_head_that_matches_nothing_leaves_the_model_unfrozen():
    model = TinyNet()
    with pytest.raises(ValueError, match="matched no module"):
        aurora.add_adapters(model, aurora.AdapterConfig(method="lora", target_modules=["query"], modules_to_save=["head"]))
    assert all(p.requires_grad for p in model.parameters()) and not aurora.adapter_layers(model)


# -- unload / disable / export refusals ------------------------------------------------------


def test_unload_and_disable_after_an_irreversible_merge_are_refused_without_change():
    model = adapted(dict(method="lora"))
    aurora.merge(model, reversible=False)
    before = snapshot(model)
    with pytest.raises(ValueError, match="reversible=False"):
        aurora.unload(model)
    with pytest.raises(ValueError, match="reversible=False"):
        with aurora.disable_adapters(model):
            pass
    assert unchanged(model, before) and len(aurora.adapter_layers(model)) == 2


@pytest.mark.parametrize("call", ["merge_and_unload", "unload", "disable_adapters", "export_peft"])
def test_functions_need_adapters(call, tmp_path):
    with pytest.raises(ValueError, match="no adapters"):
        if call == "disable_adapters":
            with aurora.disable_adapters(TinyNet()):
                pass
        elif call == "export_peft":
            aurora.export_peft(TinyNet(), tmp_path)
        else:
            getattr(aurora, call)(TinyNet())


def test_export_of_a_merged_model_is_refused(tmp_path):
    model = adapted(dict(method="lora"))
    aurora.merge(model)
    with pytest.raises(ValueError, match="unmerge"):
        aurora.export_peft(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_collect_calibration_inputs_moves_batches_to_the_model_device():
    seen = []

    class Probe(nn.Module):  # its parameter lives on another device than the CPU batches
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.empty(1, device="meta"))

        def forward(self, x, extra=None):
            seen.extend([x.device, None if extra is None else extra[0].device])

    batches = [torch.randn(3, 12), (torch.randn(3, 12), [torch.ones(2)]), {"x": torch.randn(3, 12), "extra": (torch.ones(2),)}]
    assert aurora.collect_calibration_inputs(Probe(), batches) == {}
    meta = torch.device("meta")
    assert seen == [meta, None, meta, meta, meta, meta]
