"""save_adapters / load_adapters round trip into a fresh model."""

import json

import pytest
import torch
from safetensors.torch import load_file

import aurora
from conftest import TinyNet, randomize_adapters


def test_save_load_reproduces_outputs(case, tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    config = aurora.AdapterConfig(target_modules=["query", "value"], modules_to_save=["classifier"], **case)
    aurora.add_adapters(model, config)
    randomize_adapters(model)
    with torch.no_grad():
        model.classifier.weight.add_(1.0)  # a trained head must travel with the adapters
    x = torch.randn(9, 12)
    expected = model(x)
    folder = aurora.save_adapters(model, tmp_path / "adapters")

    fresh = TinyNet()
    fresh.load_state_dict(base_state)
    aurora.load_adapters(fresh, folder)
    torch.testing.assert_close(fresh(x), expected, atol=0, rtol=0)
    assert fresh.aurora_config == config


def test_saved_file_holds_adapters_and_head_only(tmp_path):
    model = aurora.add_adapters(TinyNet(), aurora.AdapterConfig(method="aurora", target_modules=["query"], modules_to_save=["classifier"]))
    folder = aurora.save_adapters(model, tmp_path)
    keys = set(load_file(str(folder / "adapters.safetensors")))
    assert keys == {"query.lora_A", "query.lora_B", "query.anl.self_projection", "query.anl.spline_coefficients",
                    "query.anl.knots", "classifier.weight", "classifier.bias"}
    saved = json.loads((folder / "adapter_config.json").read_text())
    assert saved["config"]["method"] == "aurora"


def test_load_errors(tmp_path):
    model = aurora.add_adapters(TinyNet(), aurora.AdapterConfig(method="lora", target_modules=["query"]))
    folder = aurora.save_adapters(model, tmp_path / "a")
    with pytest.raises(ValueError, match="written by aurora.save_adapters"):
        aurora.load_adapters(TinyNet(), tmp_path / "missing")
    other = aurora.add_adapters(TinyNet(), aurora.AdapterConfig(method="lora", target_modules=["value"]))
    with pytest.raises(ValueError, match="different config"):
        aurora.load_adapters(other, folder)
    aurora.merge(model)
    with pytest.raises(ValueError, match="unmerge"):
        aurora.save_adapters(model, tmp_path / "b")
    with pytest.raises(ValueError, match="no adapters"):
        aurora.save_adapters(TinyNet(), tmp_path / "c")
