"""The evaluation protocol (aurora.experiments.harness): selection on validation, test once, pairing, statistics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from aurora.experiments import harness
from aurora.experiments.harness import Method, Protocol, Task, paired_comparison, run_protocol


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(6, 6)
        self.classifier = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.query(x)))


class CountingDataset(Dataset):
    """Counts how often the whole split is read (one full pass = len(self) item reads)."""

    def __init__(self, inner: Dataset) -> None:
        self.inner, self.reads = inner, 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        self.reads += 1
        return self.inner[index]

    @property
    def passes(self) -> float:
        return self.reads / len(self)


def _split(n: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(12345)  # the "pretrained" backbone is the same for every seed
    model = Tiny()
    torch.manual_seed(seed)
    model.classifier.reset_parameters()
    return model


def tiny_task() -> Task:
    train, validation = harness.carve_validation(_split(96, 0), 32, seed=0)
    return Task("tiny", "accuracy", train, validation, CountingDataset(_split(40, 1)), make_model, ["query"])


METHODS = [
    Method("LoRA r=2", "lora", adapter=dict(method="lora", rank=2, alpha=4.0)),
    Method("AuroRA r=2", "aurora", adapter=dict(method="aurora", rank=2, alpha=4.0)),
    Method("Head only", "head", plain="head"),
]
SMOKE = Protocol(lr_grid=(1e-2, 1e-1), tuning_seeds=(100, 101), final_seeds=(0, 1, 2), epochs=3, batch_size=16, smoke=True)


def test_test_split_read_once_per_final_run_and_never_in_tuning(tmp_path):
    task = tiny_task()
    finals = run_protocol(task, METHODS, SMOKE, tmp_path, progress=False)
    assert len(finals) == len(METHODS) * len(SMOKE.final_seeds)
    assert task.test.passes == len(finals)  # one pass over test per final run, none in the tuning phase
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert runs.loc[runs.phase == "tuning", "test_metric"].isna().all()
    assert (runs["selected_on"] == "validation").all()
    assert "best_test_epoch_metric_paper_style" not in runs


def test_selected_epoch_is_the_best_validation_epoch_and_its_weights_are_scored(tmp_path, monkeypatch):
    task = tiny_task()
    scored = []
    original = harness.evaluate

    def spy(model, data, metric, device, batch_size):
        scored.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return original(model, data, metric, device, batch_size=batch_size)

    snapshots = []
    original_states = harness.EpochStates.on_epoch_end

    def record(self, epoch, model):
        original_states(self, epoch, model)
        if epoch >= 1:
            snapshots.append((epoch, self.states[epoch]))

    monkeypatch.setattr(harness, "evaluate", spy)
    monkeypatch.setattr(harness.EpochStates, "on_epoch_end", record)
    protocol = Protocol(lr_grid=(3e-1,), tuning_seeds=(100,), final_seeds=(0,), epochs=4, batch_size=8, smoke=True)
    run_protocol(task, METHODS[:1], protocol, tmp_path, progress=False)
    epochs = pd.read_csv(tmp_path / "epochs.csv")
    final = epochs[epochs.phase == "final"]
    best = int(final.loc[final["validation_metric"].idxmax(), "epoch"])  # idxmax: first of equal bests
    runs = pd.read_csv(tmp_path / "runs.csv")
    row = runs[runs.phase == "final"].iloc[0]
    assert row["selected_epoch"] == best
    assert row["validation_metric"] == pytest.approx(final["validation_metric"].max())
    chosen = dict(snapshots[-protocol.epochs:])[best]
    assert len(scored) == 1
    for name, value in chosen.items():
        torch.testing.assert_close(scored[0][name], value)


def test_learning_rate_chosen_by_mean_validation_with_ties_to_the_smaller_rate():
    rows = [
        dict(label="A", lr=0.1, head_lr=None, validation_metric=0.8), dict(label="A", lr=0.1, head_lr=None, validation_metric=0.6),
        dict(label="A", lr=0.01, head_lr=None, validation_metric=0.7), dict(label="A", lr=0.01, head_lr=None, validation_metric=0.7),
        dict(label="B", lr=0.1, head_lr=None, validation_metric=0.9), dict(label="B", lr=0.01, head_lr=None, validation_metric=0.5),
    ]
    chosen = {(r["label"], r["lr"]) for r in harness.select_learning_rates(rows) if r["chosen"]}
    assert chosen == {("A", 0.01), ("B", 0.1)}


def test_resume_skips_finished_runs_and_reproduces_them(tmp_path, monkeypatch):
    task = tiny_task()
    first = run_protocol(task, METHODS, SMOKE, tmp_path, progress=False)
    calls = []
    original = harness._run_one
    monkeypatch.setattr(harness, "_run_one", lambda *a, **k: calls.append(a) or original(*a, **k))
    again = run_protocol(task, METHODS, SMOKE, tmp_path, progress=False)
    assert calls == []
    pd.testing.assert_series_equal(first["test_metric"], again["test_metric"])
    # one more final seed: only its runs are new
    more = Protocol(**{**SMOKE.__dict__, "final_seeds": (0, 1, 2, 3)})
    run_protocol(task, METHODS, more, tmp_path, progress=False)
    assert sorted({a[6] for a in calls}) == [3] and len(calls) == len(METHODS)


def test_interrupted_run_keeps_every_finished_row(tmp_path, monkeypatch):
    task = tiny_task()
    original = harness._run_one
    count = {"n": 0}

    def failing(*args, **kwargs):
        count["n"] += 1
        if count["n"] == 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(harness, "_run_one", failing)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(task, METHODS, SMOKE, tmp_path, progress=False)
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == 4
    assert set(pd.read_csv(tmp_path / "epochs.csv").groupby(["label", "lr", "seed"]).size()) == {SMOKE.epochs}
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written temporary left behind
    monkeypatch.setattr(harness, "_run_one", original)
    run_protocol(task, METHODS, SMOKE, tmp_path, progress=False)
    assert len(pd.read_csv(tmp_path / "runs.csv")) == len(METHODS) * (2 * 2 + 3)


def test_atomic_write_replaces_a_table_without_a_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "runs.csv"
    harness.write_csv_atomically(path, [dict(a=1, b=2.5)])
    monkeypatch.setattr(harness.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError):
        harness.write_csv_atomically(path, [dict(a=7, b=8.0)])
    assert pd.read_csv(path).to_dict("records") == [dict(a=1, b=2.5)]


def test_seed_pairs_data_order_and_head_initialisation(tmp_path):
    task = tiny_task()
    first = harness._run_one(task, METHODS[2], SMOKE, "final", 0.1, None, 3, "cpu")
    second = harness._run_one(task, METHODS[2], SMOKE, "final", 0.1, None, 3, "cpu")
    other = harness._run_one(task, METHODS[2], SMOKE, "final", 0.1, None, 4, "cpu")
    assert [r["train_loss"] for r in first[1]] == [r["train_loss"] for r in second[1]]
    assert [r["train_loss"] for r in first[1]] != [r["train_loss"] for r in other[1]]


def test_parameter_counts_agree_between_aurora_and_peft_lora():
    peft = pytest.importorskip("peft")
    ours = METHODS[0].prepare(make_model(0), ["query"], ["classifier"])
    theirs = Method("PEFT LoRA r=2", "peft_lora", peft_description="LoraConfig(r=2)",
                    peft_config=lambda t, h: peft.LoraConfig(r=2, lora_alpha=4, target_modules=t, modules_to_save=h))
    wrapped = theirs.prepare(make_model(0), ["query"], ["classifier"])
    counts = harness.trainable_parameters(ours, ["classifier"])
    assert counts == harness.trainable_parameters(wrapped, ["classifier"])
    assert counts == {"adapter": 2 * 6 + 6 * 2, "head": 6 * 2 + 2, "trainable": 24 + 14}  # A, B; weight, bias


def test_paired_comparison_matches_scipy():
    rng = np.random.default_rng(0)
    seeds = np.arange(10)
    reference = 0.8 + 0.02 * rng.standard_normal(10)
    better = reference + 0.03 + 0.005 * rng.standard_normal(10)
    same = reference + 0.01 * rng.standard_normal(10)
    runs = pd.DataFrame(
        [dict(label=label, seed=int(s), test_metric=float(v)) for label, values in (("ref", reference), ("better", better), ("same", same))
         for s, v in zip(seeds, values)]
    )
    table = paired_comparison(runs, "ref").set_index("label")
    for label, values in (("ref", reference), ("better", better)):
        ci = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
        assert table.loc[label, "ci_low"] == pytest.approx(ci.low)
        assert table.loc[label, "ci_high"] == pytest.approx(ci.high)
    ci = stats.ttest_rel(better, reference).confidence_interval(0.95)
    assert table.loc["better", "difference_ci_low"] == pytest.approx(ci.low)
    assert table.loc["better", "difference_ci_high"] == pytest.approx(ci.high)
    assert table.loc["better", "verdict"] == "better"
    assert table.loc["ref", "verdict"] == "reference"
    ci_same = stats.ttest_rel(same, reference).confidence_interval(0.95)
    expected = "better" if ci_same.low > 0 else "worse" if ci_same.high < 0 else "no detectable difference"
    assert table.loc["same", "verdict"] == expected
    # minimum detectable difference: the paired t-test's 80 % power point (noncentral t) is close to the formula
    mdd = table.loc["same", "minimum_detectable_difference"]
    sd = np.std(same - reference, ddof=1)
    critical = stats.t.ppf(0.975, 9)
    power = 1 - stats.nct.cdf(critical, 9, mdd / (sd / math.sqrt(10))) + stats.nct.cdf(-critical, 9, mdd / (sd / math.sqrt(10)))
    assert 0.78 < power < 0.85


def test_paired_comparison_uses_only_shared_seeds_and_reports_worse():
    runs = pd.DataFrame([dict(label="ref", seed=s, test_metric=0.9) for s in range(5)]
                        + [dict(label="low", seed=s, test_metric=0.8 + 0.001 * s) for s in range(1, 6)])
    row = paired_comparison(runs, "ref").set_index("label").loc["low"]
    assert row["paired_seeds"] == 4 and row["verdict"] == "worse"


def test_verdict_needs_the_interval_not_the_sign_of_the_mean():
    assert harness.verdict(-0.001, 0.01) == "no detectable difference"
    assert harness.verdict(0.001, 0.01) == "better"
    assert harness.verdict(-0.02, -0.001) == "worse"
    assert harness.verdict(math.nan, math.nan) == "no detectable difference"


def test_bad_designs_raise_value_errors():
    with pytest.raises(ValueError, match="lr_grid"):
        Protocol(lr_grid=(1e-2, 1e-1))
    with pytest.raises(ValueError, match="final_seeds"):
        Protocol(lr_grid=(1e-3, 1e-2, 1e-1, 1.0), final_seeds=(0, 1))
    with pytest.raises(ValueError, match="disjoint"):
        Protocol(lr_grid=(1e-3,), tuning_seeds=(0,), final_seeds=(0,), smoke=True)
    with pytest.raises(ValueError, match="exactly one"):
        Method("x", "lora")
    with pytest.raises(ValueError, match="method"):
        Method("x", "lora", adapter=dict(method="nope"))
    with pytest.raises(ValueError, match="plain"):
        Method("x", "head", plain="linear")
    with pytest.raises(ValueError, match="several tasks"):
        paired_comparison(pd.DataFrame(dict(task=["a", "b"], label=["r", "r"], seed=[0, 0], test_metric=[1.0, 1.0])), "r")


def test_device_auto_resolves_to_what_is_there():
    assert harness.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert harness.resolve_device("cpu") == "cpu"


def test_late_validation_gain_measures_the_rise_in_the_last_quarter():
    # 8 epochs: the last quarter is epochs 7-8; the best before them is 0.70
    assert harness.late_validation_gain([0.5, 0.6, 0.65, 0.7, 0.68, 0.69, 0.72, 0.75]) == pytest.approx(0.05)
    assert harness.late_validation_gain([0.5, 0.8, 0.7, 0.7, 0.7, 0.7, 0.75, 0.79]) == 0.0  # flattened: no gain
    assert harness.late_validation_gain([0.4, 0.6]) == pytest.approx(0.2)
    assert math.isnan(harness.late_validation_gain([0.4]))


def test_budget_binds_flags_gains_above_one_validation_example():
    summary = pd.DataFrame(dict(label=["flat", "rising", "edge"], mean_late_validation_gain=[0.0, 0.02, 0.004]))
    assert harness.budget_binds(summary, validation_size=250) == ["rising"]  # 1/250 = 0.004 is not above itself
    assert harness.budget_binds(summary, validation_size=100) == ["rising"]
    assert harness.budget_binds(summary, validation_size=1000) == ["rising", "edge"]
    with pytest.raises(ValueError, match="mean_late_validation_gain"):
        harness.budget_binds(summary.drop(columns="mean_late_validation_gain"), 100)


def test_selection_grid_marks_the_chosen_rate(tmp_path):
    rows = [dict(task="t", label=label, lr=lr, head_lr=None, tuning_seeds=2, mean_validation_metric=value, chosen=chosen)
            for label, lr, value, chosen in (("a", 0.01, 0.5, False), ("a", 0.1, 0.625, True),
                                             ("b", 0.01, 0.75, True), ("b", 0.1, 0.25, False))]
    pd.DataFrame(rows).to_csv(tmp_path / "selection.csv", index=False)
    grid = harness.selection_grid(tmp_path, ["b", "a", "not run"])
    assert list(grid.index) == ["b", "a"] and list(grid.columns) == ["rate 0.01", "rate 0.1"]
    assert grid.loc["a", "rate 0.1"] == "62.5*" and grid.loc["b", "rate 0.01"] == "75.0*" and grid.loc["b", "rate 0.1"] == "25.0"


def test_read_final_runs_keeps_the_current_design_only(tmp_path):
    """A grown grid leaves the old choice's final runs in runs.csv; only the chosen rate's runs are the design's."""
    import json

    rows = [dict(phase="final", task="t", label="a", method_id="m", protocol_id=protocol, lr=lr, head_lr=None, seed=seed,
                 test_metric=0.5) for lr, protocol in ((0.1, "p1"), (0.3, "p1"), (0.3, "p0")) for seed in range(3)]
    rows += [dict(phase="tuning", task="t", label="a", method_id="m", protocol_id="p1", lr=0.3, head_lr=None, seed=1000,
                  test_metric=None)]
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    pd.DataFrame([dict(task="t", label="a", lr=0.1, head_lr=None, tuning_seeds=2, mean_validation_metric=0.4, chosen=False),
                  dict(task="t", label="a", lr=0.3, head_lr=None, tuning_seeds=2, mean_validation_metric=0.6, chosen=True)]
                 ).to_csv(tmp_path / "selection.csv", index=False)
    (tmp_path / "provenance.json").write_text(json.dumps({"config": {"protocol_id": "p1"}}))
    finals = harness.read_final_runs(tmp_path)
    assert len(finals) == 3 and set(finals["lr"]) == {0.3} and set(finals["protocol_id"]) == {"p1"}
    paired_comparison(finals, "a")  # one row per (label, seed): no ValueError
    (tmp_path / "selection.csv").unlink()
    (tmp_path / "provenance.json").unlink()
    assert len(harness.read_final_runs(tmp_path)) == 9  # without the design's files: every final run
    with pytest.raises(FileNotFoundError):
        harness.read_final_runs(tmp_path / "absent")
