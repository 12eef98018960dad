"""Vision experiments (Table 3, Fig. 2, Tables 4/5/7) on the shared harness.

Parameter counts are checked against closed forms for the tiny ViT (4 layers, width 64, q/v adapted),
the data against the Fashion-MNIST files, statistics against scipy, and end-to-end runs on a few
dozen images for one epoch (the smoke protocol).
"""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import ViTForImageClassification  # noqa: E402

import aurora  # noqa: E402
from aurora.data import load_image_classification  # noqa: E402
from aurora.experiments import ablations, trajectories  # noqa: E402
from aurora.experiments import vision_classification as vc  # noqa: E402
from aurora.experiments.harness import Protocol  # noqa: E402

WIDTH, LAYERS = 64, 4  # tiny_vit_config
ADAPTED = 2 * LAYERS  # q_proj and v_proj of every layer
SMOKE = vc.SMOKE_PROTOCOL


@pytest.fixture(scope="module")
def tiny_task():
    return vc.quick_task(n_train=96, n_validation=20, n_test=50)


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
    assert torch.equal(model.classifier.weight, vc.load_tiny_vit(num_labels=7, seed=3).classifier.weight)
    assert not torch.equal(model.classifier.weight, vc.load_tiny_vit(num_labels=7, seed=4).classifier.weight)
    assert aurora.suggest_target_modules(model) == ["q_proj", "v_proj"]  # the names ViT-B has in transformers 5


def test_tiny_vit_missing_checkpoint_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain_tiny_vit"):
        vc.load_tiny_vit(5, path=tmp_path)


def test_image_dataset_keeps_uint8_and_preprocesses_each_batch():
    images = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    data = vc.ImageDataset(images, torch.arange(10), vc.TINY_VIT_PREPROCESSING)
    assert data.images.dtype == torch.uint8  # 1 byte per pixel in memory
    batches = list(DataLoader(data, batch_size=4, shuffle=False))
    assert [b[0].shape for b in batches] == [(4, 3, 28, 28), (4, 3, 28, 28), (2, 3, 28, 28)]
    upscaled = torch.nn.functional.interpolate(images[:4].float() / 255, size=(28, 28), mode="bilinear", align_corners=False)
    torch.testing.assert_close(batches[0][0], ((upscaled - 0.2860) / 0.3530).expand(-1, 3, -1, -1))
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.arange(10))
    torch.testing.assert_close(data[5][0], batches[1][0][1])
    with pytest.raises(ValueError, match="uint8"):
        vc.ImageDataset(images.float(), torch.arange(10), vc.TINY_VIT_PREPROCESSING)


def test_quick_task_splits_unseen_classes_without_overlap():
    task = vc.quick_task(n_train=50, n_validation=25)
    assert (len(task.train), len(task.validation), len(task.test)) == (50, 25, 5000)  # every test image of classes 5-9
    assert task.test.label_names == ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert torch.bincount(task.test.labels).tolist() == [1000] * 5
    pool = task.train.dataset
    assert set(task.train.indices).isdisjoint(task.validation.indices)
    assert torch.bincount(pool.labels).tolist() == [15] * 5  # class-stratified pool of 75
    # the images are the Fashion-MNIST training images of classes 5-9, relabelled 0-4
    full = load_image_classification("fashion_mnist", dtype=torch.uint8)
    for image, label in zip(pool.images[:5], pool.labels[:5]):
        matches = (full.train_images == image).flatten(1).all(dim=1)
        assert int(full.train_labels[matches][0]) == int(label) + 5


@pytest.mark.parametrize(("label", "expected"), [
    ("Linear probing", 0),
    ("LoRA r=2", ADAPTED * 2 * 2 * WIDTH),
    ("LoRA r=16", ADAPTED * 2 * 16 * WIDTH),
    ("MoSLoRA r=2", ADAPTED * (2 * 2 * WIDTH + 4)),
    ("AuroRA r̃=2", ADAPTED * (2 * 2 * WIDTH + 4 + 2 * 8)),  # A, B, H (2x2), 2 x (grid 5 + order 3) spline coefficients
    ("PEFT LoRA r=8", ADAPTED * 2 * 8 * WIDTH),
    ("PEFT DoRA r=2", ADAPTED * (2 * 2 * WIDTH + WIDTH)),  # + one magnitude per output
    ("PEFT VeRA r=192", ADAPTED * (192 + WIDTH)),  # lambda_d (r) and lambda_b (d_out); the projections are frozen
    ("PEFT FourierFT n=256", ADAPTED * 256),
])
def test_methods_train_the_stated_budgets(label, expected):
    method = next(m for m in vc.QUICK_METHODS if m.label == label)
    from aurora.experiments.harness import trainable_parameters

    model = method.prepare(vc.load_tiny_vit(5), ["q_proj", "v_proj"], ["classifier"])
    counts = trainable_parameters(model, ["classifier"])
    assert counts["adapter"] == expected
    assert counts["head"] == WIDTH * 5 + 5


def test_quick_protocol_meets_the_evidence_minimums():
    protocol = vc.QUICK_PROTOCOL
    assert not protocol.smoke and len(protocol.lr_grid) >= 4 and len(protocol.tuning_seeds) >= 2
    assert len(protocol.final_seeds) >= 10
    assert len({m.label for m in vc.QUICK_METHODS}) == len(vc.QUICK_METHODS)
    assert vc.REFERENCE in {m.label for m in vc.QUICK_METHODS}


def test_replay_reproduces_the_harness_run_and_reuse_skips_training(tiny_task, tmp_path, monkeypatch):
    methods = [m for m in vc.QUICK_METHODS if m.label in ("LoRA r=2", vc.AURORA_LABEL)]
    finals = vc.run_quick(tmp_path / "a", methods=methods, protocol=SMOKE, task=tiny_task, progress=False)
    row = finals.iloc[1]
    model = vc.replay_final_run(tiny_task, methods[1], SMOKE, row)
    _, accuracy = aurora.train.evaluate(model, tiny_task.test, "accuracy")
    assert accuracy == pytest.approx(row["test_metric"], abs=1e-12)  # the same run, at the selected epoch
    with pytest.raises(ValueError, match="not the same run"):
        vc.replay_final_run(tiny_task, methods[1], SMOKE, {**row.to_dict(), "validation_metric": row["validation_metric"] + 0.5})
    # copied runs are skipped by the harness: no training happens in the target folder
    assert vc.reuse_runs(tmp_path / "a", tmp_path / "b", ["LoRA r=2"]) == 3  # 1 tuning + 2 final runs
    assert vc.reuse_runs(tmp_path / "a", tmp_path / "b", ["LoRA r=2"]) == 0  # already there
    import aurora.experiments.harness as harness

    monkeypatch.setattr(harness, "fit", lambda *args, **kwargs: pytest.fail("a copied run was trained again"))
    again = vc.run_quick(tmp_path / "b", methods=methods[:1], protocol=SMOKE, task=tiny_task, progress=False)
    pd.testing.assert_series_equal(again["test_metric"], finals[finals["label"] == "LoRA r=2"]["test_metric"].reset_index(drop=True))


def _synthetic_runs(values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([dict(phase="final", task="t", label=label, seed=seed, test_metric=value, adapter_params=10 * k,
                              style="lora")
                         for k, (label, column) in enumerate(values.items()) for seed, value in enumerate(column)])


def test_claims_inputs_pair_aurora_with_each_lora_rank():
    rng = np.random.default_rng(0)
    values = {f"LoRA r={r}": list(0.8 + 0.01 * rng.standard_normal(10)) for r in vc.LORA_RANKS}
    values[vc.AURORA_LABEL] = list(np.array(values["LoRA r=16"]) + 0.02 + 0.001 * rng.standard_normal(10))
    inputs = vc.claims_inputs(_synthetic_runs(values))
    t3 = {row["setting"]: row for row in inputs["T3"]}
    row = t3[f"{vc.AURORA_LABEL} − LoRA r=16"]
    differences = np.array(values[vc.AURORA_LABEL]) - np.array(values["LoRA r=16"])
    low, high = stats.t.interval(0.95, 9, loc=differences.mean(), scale=stats.sem(differences))
    assert (row["value"], row["ci_low"], row["ci_high"]) == pytest.approx((differences.mean(), low, high))
    assert row["verdict"] == "better" and row["seeds"] == 10
    assert inputs["peft_lora_agreement"] is None and inputs["MOS"] is None and inputs["BL"] == []  # not in these runs
    assert inputs["EQ"]["setting"] == f"{vc.AURORA_LABEL} − LoRA r=2"


def test_ablation_methods_are_distinct_and_share_the_vision_settings():
    methods = ablations.ablation_methods()
    labels = [m.label for m in methods]
    assert len(labels) == len(set(labels)) and labels[0] == ablations.BASE
    vision = {m.label: m.method_id for m in vc.QUICK_METHODS}
    for method in methods:
        if method.label in ablations.SHARED_WITH_VISION:
            assert method.method_id == vision[method.label]  # so the copied runs are the same runs
    ids = [m.method_id for m in methods]
    assert len(ids) == len(set(ids))
    with pytest.raises(ValueError, match="groups"):
        ablations.ablation_methods(["nonsense"])


def test_rank_spread_matches_a_hand_computation():
    rng = np.random.default_rng(1)
    values = {label: list(0.7 + 0.05 * rng.random(10)) for label in ablations.ABLATION_GROUPS["rank"].values()}
    runs = _synthetic_runs(values)
    spread = ablations.rank_spread(runs)
    lora = np.array([values[f"LoRA r={r}"] for r in vc.LORA_RANKS])
    aurora_ = np.array([values[ablations.BASE if r == 2 else f"AuroRA r̃={r}"] for r in vc.LORA_RANKS])
    difference = (lora.max(0) - lora.min(0)) - (aurora_.max(0) - aurora_.min(0))
    low, high = stats.t.interval(0.95, 9, loc=difference.mean(), scale=stats.sem(difference))
    assert (spread["value"], spread["ci_low"], spread["ci_high"]) == pytest.approx((difference.mean(), low, high))
    assert ablations.rank_spread(runs[~runs["label"].eq("LoRA r=4")]) is None  # incomplete group: no number


def test_ablations_smoke_run_writes_merges_and_claims(tiny_task, tmp_path):
    inputs = ablations.run(tmp_path, ["components"], task=tiny_task, protocol=SMOKE, vision_results=None, progress=False)
    merges = pd.read_csv(tmp_path / "merges.csv")
    assert set(merges["merge"]) == {"none", "static", "linearized", "least_squares"} and len(merges) == 8
    assert (merges[merges["merge"] == "none"]["relative_gap_mean"] == 0).all()
    assert set(inputs["T4"]) == {"w/o L − w/o F", "w/o F − AuroRA", "w/o L − AuroRA"}
    assert inputs["T5"]["tanh − sigmoid"] is None and inputs["F5"] is None  # those groups were not run
    assert set(inputs["T7a"]) == {"static merge − AuroRA-D", "linearized merge − AuroRA-D", "least_squares merge − AuroRA-D"}
    assert json.loads((tmp_path / "claims_inputs.json").read_text())["T4"] == inputs["T4"]
    table = ablations.group_table(vc.final_runs(tmp_path), "components")
    assert list(table["setting"]) == ["AuroRA", "w/o F", "w/o L"] and table["verdict"].iloc[0] == "reference"


def test_merge_comparison_keeps_calibration_on_the_model_device(tiny_task, monkeypatch):
    model = aurora.add_adapters(vc.load_tiny_vit(5), aurora.AdapterConfig(method="aurora", rank=2, target_modules=["q_proj", "v_proj"],
                                                                          modules_to_save=["classifier"]))
    devices = []
    original = aurora.collect_calibration_inputs
    monkeypatch.setattr(aurora, "collect_calibration_inputs",
                        lambda m, batches: (devices.extend(b.device for b in batches), original(m, batches))[1])
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    rows = ablations.merge_comparison(model, tiny_task, seed=0)
    assert devices and all(d == next(model.parameters()).device for d in devices)
    assert [r["merge"] for r in rows] == ["none", "static", "linearized", "least_squares"]
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)  # left unmerged, exactly as it was


def test_trajectories_smoke_run_starts_together_and_pairs_path_lengths(tiny_task, tmp_path):
    inputs = trajectories.run(tmp_path, task=tiny_task, protocol=SMOKE, vision_results=None, progress=False)
    projections = pd.read_csv(tmp_path / "projections.csv")
    paths = pd.read_csv(tmp_path / "paths.csv")
    assert len(projections) == 2 * 3 * 2  # seeds x methods x epochs 0 and 1
    assert set(paths["method"]) == {"lora", "moslora", "aurora"}
    for _, start in projections[projections["epoch"] == 0].groupby("seed"):
        assert np.ptp(start["pc1"]) < 1e-6 and np.ptp(start["pc2"]) < 1e-6  # ΔW = 0 for every method before training
    # with two snapshots the path is one step, from ΔW = 0 to the final ΔW
    np.testing.assert_allclose(paths["path_length_full"], paths["final_delta_norm"], rtol=1e-6)
    pair = inputs["F2"]["AuroRA − LoRA r=2"]
    wide = paths.pivot(index="seed", columns="label", values="path_length_full")
    assert pair["value"] == pytest.approx(float((wide[vc.AURORA_LABEL] - wide["LoRA r=2"]).mean()))
    fig, (left, right) = plt.subplots(1, 2)
    trajectories.plot_trajectories(projections[projections["seed"] == 0], left, upto_epoch=1)
    trajectories.plot_path_lengths(paths, right)
    assert len(right.get_xticklabels()) == 3
    with pytest.raises(ValueError, match="one task and seed"):
        trajectories.plot_trajectories(projections, left)
    plt.close(fig)


def test_chapter_figures_draw_every_method():
    rng = np.random.default_rng(2)
    values = {m.label: list(0.8 + 0.01 * rng.standard_normal(10)) for m in vc.QUICK_METHODS}
    runs = _synthetic_runs(values)
    runs["style"] = runs["label"].map({m.label: m.style for m in vc.QUICK_METHODS})
    runs["adapter_params"] = runs["label"].map({m.label: 100 * (k + 1) for k, m in enumerate(vc.QUICK_METHODS)})
    summary = vc.comparison(runs)
    fig, (left, right) = plt.subplots(1, 2)
    vc.plot_parameters_vs_accuracy(summary, left)
    vc.plot_paper_parameters_vs_accuracy(right, "dtd")
    assert len(left.get_legend().get_texts()) == len(vc.QUICK_METHODS) - len(vc.LORA_RANKS) + 1
    assert len(right.get_legend().get_texts()) == len(vc.PAPER_TABLE3["vit-base"])
    table = vc.paper_vs_ours(summary)
    assert table.loc[table["paper method"] == "AuroRA", "our method"].item() == vc.AURORA_LABEL
    with pytest.raises(ValueError, match="dataset"):
        vc.plot_paper_parameters_vs_accuracy(right, "imagenet")
    plt.close(fig)


def test_paper_tables_are_consistent():
    for model, rows in vc.PAPER_TABLE3.items():
        for method, row in rows.items():
            values = [row[name] for name in vc._TABLE3_DATASETS]
            assert np.mean(values) == pytest.approx(row["avg"], abs=0.051), (model, method)
    assert vc.parse_count("74K") == 74e3 and vc.parse_count("1.57M") == 1.57e6 and vc.parse_count("-") == 0
    for name, split in vc.PAPER_TABLE10.items():
        assert split["val"] < split["train"], name


def test_quick_main_rejects_unknown_task():
    with pytest.raises(ValueError, match="--tasks"):
        vc.main(["--tasks", "imagenet"])
    with pytest.raises(ValueError, match="--tasks"):
        vc.main(["--full", "--tasks", "imagenet"])


def test_image_loader_takes_uint8_or_float_images():
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    as_uint8 = next(iter(vc.image_loader(images, torch.arange(6), vc.TINY_VIT_PREPROCESSING, 6, shuffle=False)))
    as_float = next(iter(vc.image_loader(images.float() / 255, torch.arange(6), vc.TINY_VIT_PREPROCESSING, 6, shuffle=False)))
    torch.testing.assert_close(as_uint8[0], as_float[0])
    assert as_uint8[0].shape == (6, 3, 28, 28)


def test_reuse_runs_copies_only_the_given_protocol(tiny_task, tmp_path):
    methods = [m for m in vc.QUICK_METHODS if m.label == "LoRA r=2"]
    vc.run_quick(tmp_path / "a", methods=methods, protocol=SMOKE, task=tiny_task, progress=False)
    other = Protocol(lr_grid=SMOKE.lr_grid, tuning_seeds=SMOKE.tuning_seeds, final_seeds=SMOKE.final_seeds, epochs=2,
                     batch_size=SMOKE.batch_size, smoke=True)
    assert vc.reuse_runs(tmp_path / "a", tmp_path / "b", ["LoRA r=2"], other) == 0
    assert vc.reuse_runs(tmp_path / "a", tmp_path / "b", ["LoRA r=2"], SMOKE) == 3


def test_missing_results_name_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="aurora.experiments.vision_classification`"):
        vc.final_runs(tmp_path)
    with pytest.raises(FileNotFoundError, match="aurora.experiments.ablations --full`"):
        vc.final_runs(tmp_path / "full", "python -m aurora.experiments.ablations")
