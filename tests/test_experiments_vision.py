"""Vision experiments (Table 3, Fig. 2, Tables 4/5/7): the tiny ViT, tasks, settings, runs, results.

Parameter counts are checked against closed forms for the tiny ViT (4 layers, width 64, q/v adapted),
data against the loaders' own splits, and end-to-end runs on a few images for one epoch.
"""

from __future__ import annotations

import dataclasses
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from transformers import ViTForImageClassification

import aurora
from aurora.data import HubUnavailableError, hub_reachable, load_image_classification
from aurora.experiments import ablations, trajectories
from aurora.experiments import vision_classification as vc

WIDTH, LAYERS = 64, 4  # tiny_vit_config
ADAPTED = 2 * LAYERS  # q_proj and v_proj of every layer


def tiny(config: vc.VisionConfig, **changes) -> vc.VisionConfig:
    """A seconds-long version of a quick config: 100 digits for training, 50 for testing, 1 epoch."""
    return dataclasses.replace(config, n_train=100, n_test=50, epochs=1, **changes)


def test_tiny_vit_loads_committed_backbone_with_fresh_seeded_head():
    reference = ViTForImageClassification.from_pretrained(vc.PRETRAINED_DIR).state_dict()
    state_before = torch.get_rng_state()
    model = vc.load_tiny_vit(num_labels=7, seed=3)
    assert torch.equal(torch.get_rng_state(), state_before)  # the global RNG is left alone
    backbone = {name: tensor for name, tensor in model.state_dict().items() if not name.startswith("classifier.")}
    assert len(backbone) == len(reference) - 2
    for name, tensor in backbone.items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0)
    assert model(torch.zeros(2, 3, 28, 28)).logits.shape == (2, 7)
    assert torch.equal(model.classifier.bias, torch.zeros(7))
    assert model.classifier.weight.shape == (7, WIDTH)
    same = vc.load_tiny_vit(num_labels=7, seed=3)
    other = vc.load_tiny_vit(num_labels=7, seed=4)
    assert torch.equal(model.classifier.weight, same.classifier.weight)
    assert not torch.equal(model.classifier.weight, other.classifier.weight)
    assert aurora.suggest_target_modules(model) == ["q_proj", "v_proj"]  # the names ViT-B has in transformers 5


def test_tiny_vit_missing_checkpoint_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain_tiny_vit"):
        vc.load_tiny_vit(5, path=tmp_path)


def test_fashion_5_9_holds_only_unseen_classes_relabelled():
    task = vc.load_task("fashion_5_9", n_train=50, n_test=25, seed=0)
    assert task.label_names == ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert torch.bincount(task.train_labels).tolist() == [10] * 5  # class-stratified
    assert torch.bincount(task.test_labels).tolist() == [5] * 5
    full = load_image_classification("fashion_mnist")
    for image, label in zip(task.train_images[:10], task.train_labels[:10]):
        matches = (full.train_images == image).flatten(1).all(dim=1)
        assert int(full.train_labels[matches][0]) == int(label) + 5


def test_image_loader_preprocesses_each_batch():
    images = torch.rand(10, 1, 8, 8)
    labels = torch.arange(10)
    batches = list(vc.image_loader(images, labels, vc.TINY_VIT_PREPROCESSING, batch_size=4, shuffle=False))
    assert [b[0].shape for b in batches] == [(4, 3, 28, 28), (4, 3, 28, 28), (2, 3, 28, 28)]
    upscaled = torch.nn.functional.interpolate(images[:4], size=(28, 28), mode="bilinear", align_corners=False)
    expected = ((upscaled - 0.2860) / 0.3530).expand(-1, 3, -1, -1)
    torch.testing.assert_close(batches[0][0], expected)
    assert torch.equal(torch.cat([b[1] for b in batches]), labels)


@pytest.mark.parametrize(
    ("setting", "expected_params"),
    [
        (vc.Setting("probe", "linear_probe"), 0),
        (vc.adapter_setting("LoRA r=2", "lora", 2), ADAPTED * 2 * (WIDTH + WIDTH)),
        (vc.adapter_setting("LoRA r=16", "lora", 16), ADAPTED * 16 * (WIDTH + WIDTH)),
        (vc.adapter_setting("MoSLoRA r=2", "moslora", 2), ADAPTED * (2 * (WIDTH + WIDTH) + 2 * 2)),
        # AuroRA per_unit: A, B, H (r×r) and r × (grid_size + order) spline coefficients
        (vc.adapter_setting("AuroRA r=2", "aurora", 2), ADAPTED * (2 * (WIDTH + WIDTH) + 2 * 2 + 2 * (5 + 3))),
    ],
)
def test_prepare_model_trains_exactly_the_setting(setting, expected_params):
    model = vc.load_tiny_vit(num_labels=10)
    vc.prepare_model(model, setting)
    head = WIDTH * 10 + 10
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == expected_params + head
    assert all(p.requires_grad for p in model.classifier.parameters())


def test_prepare_model_full_trains_everything():
    model = vc.prepare_model(vc.load_tiny_vit(num_labels=10), vc.Setting("full", "full"))
    assert all(p.requires_grad for p in model.parameters())


def test_run_setting_row_and_reproducibility():
    task = vc.load_task("digits", n_train=100, n_test=50)
    config = vc.train_config_for(tiny(vc.QUICK), "digits", seed=0, device="cpu")
    setting = vc.adapter_setting("LoRA r=2", "lora", 2)
    factory = vc.model_factory(vc.QUICK)
    first = vc.run_setting(task, setting, factory, vc.TINY_VIT_PREPROCESSING, config)
    second = vc.run_setting(task, setting, factory, vc.TINY_VIT_PREPROCESSING, config)
    assert first.row["params"] == ADAPTED * 2 * 2 * WIDTH
    assert first.row["head_params"] == WIDTH * 10 + 10
    assert first.row["best_accuracy"] == second.row["best_accuracy"]  # a seed fixes head, adapters and batch order
    assert first.fit.history[0].train_loss == second.fit.history[0].train_loss
    # the reported accuracy is the fraction of the 50 test images classified correctly
    assert first.row["best_accuracy"] * 50 == pytest.approx(round(first.row["best_accuracy"] * 50))
    with pytest.raises(ValueError, match="method"):
        vc.run_setting(task, vc.Setting("bad", "dora"), factory, vc.TINY_VIT_PREPROCESSING, config)


def test_summarize_matches_numpy():
    rows = [
        {"task": "t", "setting": "a", "method": "lora", "rank": 2, "params": 5, "head_params": 1,
         "best_accuracy": acc, "final_accuracy": acc - 0.1, "train_seconds": 2.0}
        for acc in (0.5, 0.7, 0.9)
    ]
    (summary,) = vc.summarize(rows)
    assert summary["best_accuracy_mean"] == pytest.approx(0.7)
    assert summary["best_accuracy_std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
    assert summary["final_accuracy_mean"] == pytest.approx(0.6)
    (single,) = vc.summarize(rows[:1])
    assert math.isnan(single["best_accuracy_std"])


def test_vision_run_writes_tables(tmp_path):
    settings = (vc.Setting("Linear probing", "linear_probe"), vc.adapter_setting("AuroRA r=2", "aurora", 2))
    tables = vc.run(tiny(vc.QUICK, settings=settings, seeds=(0, 1)), results_dir=tmp_path)
    assert len(tables["runs"]) == 4 and len(tables["summary"]) == 2 and len(tables["history"]) == 4
    folder = tmp_path / "vision_classification"
    assert {p.name for p in folder.iterdir()} == {"runs.csv", "history.csv", "summary.csv", "provenance.json"}


def test_paper_table3_averages_match_their_rows():
    for model, rows in vc.PAPER_TABLE3.items():
        for method, row in rows.items():
            values = [row[name] for name in vc._TABLE3_DATASETS]
            assert np.mean(values) == pytest.approx(row["avg"], abs=0.051), (model, method)


def test_quick_main_rejects_unknown_task():
    with pytest.raises(ValueError, match="--tasks"):
        vc.main(["--quick", "--tasks", "imagenet"])


def test_full_mode_offline_fails_with_hub_error(monkeypatch):
    if hub_reachable(timeout_s=2.0):
        pytest.skip("the hub is reachable here; the offline error cannot be provoked")
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    with pytest.raises(HubUnavailableError, match="Hugging Face Hub"):
        vc.load_task("dtd", n_train=10, n_test=10)


def test_trajectories_start_together_and_project_consistently(tmp_path):
    tables = trajectories.run(tiny(trajectories.QUICK), results_dir=tmp_path)
    projections = tables["projections"]
    assert len(projections) == 3 * 2  # three settings, epochs 0 and 1
    start = {(row["pc1"], row["pc2"]) for row in projections if row["epoch"] == 0}
    assert len({(round(a, 9), round(b, 9)) for a, b in start}) == 1  # ΔW = 0 for every method before training
    ratios = [row["explained_variance_ratio"] for row in tables["explained_variance"]]
    assert 0 < sum(ratios) <= 1 + 1e-9 and ratios[0] >= ratios[1]
    for row in tables["summary"]:
        # with two snapshots the path is one step, from ΔW = 0 to the final ΔW
        assert row["path_length_full"] == pytest.approx(row["final_delta_norm"], rel=1e-6)


def test_ablation_settings_are_deduplicated():
    keys = {ablations.setting_key(s) for group in ablations.ABLATION_GROUPS.values() for s in group}
    # base AuroRA + w/o F, w/o L + leaky_relu, sigmoid + 4 LoRA, 4 MoSLoRA, 3 more AuroRA ranks
    # + grids 1, 3, 10, 20 + sum, per_edge + AuroRA-S
    assert len(keys) == 1 + 2 + 2 + 11 + 4 + 2 + 1
    base = ablations.setting_key(ablations.ABLATION_GROUPS["components"][0])
    assert base == ablations.setting_key(vc.adapter_setting("AuroRA r=2", "aurora", 2, grid_size=5, spline_mode="per_unit"))
    with pytest.raises(ValueError, match="groups"):
        ablations.run(ablations.QUICK, groups=["nonsense"])


def test_ablation_inference_comparison(tmp_path):
    tables = ablations.run(tiny(ablations.QUICK), groups=["form"], results_dir=tmp_path)
    assert [row["label"] for row in tables["runs"]] == ["AuroRA (dynamic training)", "AuroRA-S (static training)"]
    rows = {row["merge"]: row for row in tables["inference"]}
    assert set(rows) == {"none", "static", "linearized", "least_squares", "exact"}
    runs = {row["label"]: row for row in tables["runs"]}
    # evaluating the unmerged dynamic model reproduces the training run's final accuracy,
    # and AuroRA-S's merge is exact, so merging does not change its accuracy
    assert rows["none"]["accuracy"] == pytest.approx(runs["AuroRA (dynamic training)"]["final_accuracy"])
    assert rows["exact"]["accuracy"] == pytest.approx(runs["AuroRA-S (static training)"]["final_accuracy"])
    assert all(row["relative_gap_mean"] >= 0 for row in rows.values())
    assert rows["static"]["relative_gap_mean"] > 0  # σ(A)x ≠ σ(Ax): the paper's merge is not exact


def test_parse_count_reads_the_papers_notation():
    assert vc.parse_count("74K") == 74_000
    assert vc.parse_count("1.57M") == pytest.approx(1_570_000)
    assert vc.parse_count("-") == 0
    with pytest.raises(ValueError, match="text"):
        vc.parse_count("74")


def test_paper_vs_ours_pairs_rows():
    summary = pd.DataFrame([
        {"task": "digits", "setting": "AuroRA r=2", "params": 2208, "best_accuracy_mean": 0.8},
        {"task": "digits", "setting": "LoRA r=16", "params": 16384, "best_accuracy_mean": 0.9},
    ])
    table = vc.paper_vs_ours(summary, "digits").set_index("paper method")
    assert table.loc["AuroRA", "our acc. digits (%)"] == 80.0
    assert table.loc["AuroRA", "paper acc. dtd (%)"] == 79.6
    assert table.loc["LoRA*", "our params (tiny ViT)"] == 16384
    assert pd.isna(table.loc["FourierFT*", "our params (tiny ViT)"])


def test_plots_draw_every_setting():
    summary = pd.DataFrame([
        {"task": "digits", "setting": f"LoRA r={r}", "method": "lora", "rank": r, "params": 1024 * r,
         "best_accuracy_mean": 0.8 + r / 100, "best_accuracy_std": 0.01} for r in (2, 4)
    ] + [{"task": "digits", "setting": "AuroRA r=2", "method": "aurora", "rank": 2, "params": 2208,
          "best_accuracy_mean": 0.85, "best_accuracy_std": float("nan")},
         {"task": "digits", "setting": "Linear probing", "method": "linear_probe", "rank": None, "params": 0,
          "best_accuracy_mean": 0.6, "best_accuracy_std": 0.0}])
    ax = vc.plot_parameters_vs_accuracy(summary, "digits")
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["Linear probing", "LoRA (r = 2, 4)", "AuroRA r=2"]
    with pytest.raises(ValueError, match="task"):
        vc.plot_parameters_vs_accuracy(summary, "cifar")
    paper_ax = vc.plot_paper_parameters_vs_accuracy("dtd")
    assert len(paper_ax.get_legend_handles_labels()[1]) == 5
    plt.close("all")


def test_group_table_and_rank_plot():
    runs = pd.DataFrame([
        {"group": "rank", "label": f"{name} r={r}", "method": method, "rank": r, "params": r, "seed": seed,
         "best_accuracy": 0.5 + r / 100 + seed / 1000, "final_accuracy": 0.5, "train_seconds": 1.0}
        for name, method in (("LoRA", "lora"), ("MoSLoRA", "moslora"), ("AuroRA", "aurora"))
        for r in (2, 4) for seed in (0, 1)
    ])
    table = ablations.group_table(runs, "rank")
    assert table.loc["LoRA r=4", "best_accuracy"] == pytest.approx(0.5 + 0.04 + 0.0005)
    assert table.loc["LoRA r=4", "seeds"] == 2
    ax = ablations.plot_rank_sensitivity(runs)
    assert [line.get_label() for line in ax.get_lines()] == ["LoRA", "MoSLoRA", "AuroRA"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [52.05, 54.05])
    with pytest.raises(ValueError, match="group"):
        ablations.group_table(runs, "components")
    plt.close("all")


def test_plot_trajectories_needs_one_task_and_seed():
    rows = pd.DataFrame([
        {"task": "digits", "seed": seed, "setting": "LoRA r=2", "epoch": epoch, "pc1": float(epoch), "pc2": 0.0}
        for seed in (0, 1) for epoch in (0, 1, 2)
    ])
    with pytest.raises(ValueError, match="one task and seed"):
        trajectories.plot_trajectories(rows)
    ax = trajectories.plot_trajectories(rows[rows["seed"] == 0], upto_epoch=1)
    shown = [line for line in ax.get_lines() if line.get_label() == "LoRA r=2"][0]
    assert list(shown.get_xdata()) == [0.0, 1.0]
    plt.close("all")
