"""Tests of aurora.train: learning for every method, only adapters + head change, resume, metrics, schedule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import aurora
from aurora.train import (
    CHECKPOINT_FILE,
    TrainConfig,
    compute_metric,
    evaluate,
    fit,
    linear_warmup_schedule,
    parameter_groups,
)


class ToyClassifier(nn.Module):
    """A frozen two-layer body (adapted) with a trainable ``classifier`` head."""

    def __init__(self, d_in: int = 16, hidden: int = 32, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Linear(d_in, hidden)
        self.mid = nn.Linear(hidden, hidden)
        self.classifier = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.mid(torch.tanh(self.body(x)))))


def toy_classification(n: int = 256, d_in: int = 16, classes: int = 3, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=generator)
    teacher = torch.randn(d_in, classes, generator=generator)
    return TensorDataset(x, (torch.tanh(x) @ teacher).argmax(-1))


def adapted_model(method: str, seed: int = 1, dropout: float = 0.0, classes: int = 3) -> ToyClassifier:
    torch.manual_seed(seed)
    model = ToyClassifier(classes=classes)
    config = aurora.AdapterConfig(
        method=method, rank=2, alpha=4.0, target_modules=["body", "mid"], modules_to_save=["classifier"], dropout=dropout
    )
    return aurora.add_adapters(model, config)


QUIET = dict(progress=False)


@pytest.mark.parametrize("method", aurora.METHODS)
def test_training_decreases_loss_for_every_method(method: str) -> None:
    data = toy_classification()
    model = adapted_model(method)
    loader = DataLoader(data, batch_size=256)
    loss_before, _ = evaluate(model, loader)
    result = fit(model, data, data, TrainConfig(epochs=6, batch_size=32, lr=1e-2, **QUIET))
    loss_after, accuracy_after = evaluate(model, loader)
    assert loss_after < 0.8 * loss_before
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert accuracy_after > 0.6  # chance is 1/3


def test_adapters_alone_learn_when_head_is_frozen() -> None:
    """Without a trainable head only the adapters can reduce the loss (checks they receive gradients)."""
    data = toy_classification()
    torch.manual_seed(1)
    model = aurora.add_adapters(ToyClassifier(), aurora.AdapterConfig(method="aurora", rank=2, target_modules=["body", "mid"]))
    loader = DataLoader(data, batch_size=256)
    loss_before, _ = evaluate(model, loader)
    fit(model, data, data, TrainConfig(epochs=6, batch_size=32, lr=2e-2, **QUIET))
    assert evaluate(model, loader)[0] < 0.9 * loss_before


@pytest.mark.parametrize("method", aurora.METHODS)
def test_only_adapters_and_head_change(method: str) -> None:
    data = toy_classification(n=64)
    model = adapted_model(method, dropout=0.1)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    fit(model, data, data, TrainConfig(epochs=2, batch_size=16, lr=1e-2, weight_decay=0.01, **QUIET))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    for name, parameter in model.named_parameters():
        if name in trainable:
            # lora_B starts at zero and every trainable tensor must have moved
            assert not torch.equal(parameter, before[name]), f"{name} did not change"
        else:
            assert torch.equal(parameter, before[name]), f"frozen {name} changed"
    assert {n for n in trainable if n.startswith("classifier.")} == {"classifier.weight", "classifier.bias"}
    assert all(".base_layer." not in n for n in trainable)


def test_parameter_groups_split_adapter_and_head() -> None:
    model = adapted_model("aurora")
    groups = parameter_groups(model, lr=1e-3, weight_decay=0.1, head_lr=5e-3, head_weight_decay=0.0)
    assert [g["name"] for g in groups] == ["adapter", "head"]
    assert sum(p.numel() for p in groups[0]["params"]) == aurora.trainable_parameters(model)
    assert sum(p.numel() for p in groups[1]["params"]) == aurora.parameter_report(model)["head"]
    assert (groups[0]["lr"], groups[0]["weight_decay"], groups[1]["lr"], groups[1]["weight_decay"]) == (1e-3, 0.1, 5e-3, 0.0)
    defaults = parameter_groups(model, lr=1e-3, weight_decay=0.1)
    assert (defaults[1]["lr"], defaults[1]["weight_decay"]) == (1e-3, 0.1)
    frozen = ToyClassifier().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        parameter_groups(frozen, lr=1e-3, weight_decay=0.0)


@pytest.mark.parametrize("kind", ["lora", "dora", "vera", "fourierft"])
def test_parameter_groups_split_a_peft_model_as_peft_does(kind: str) -> None:
    """PEFT's tuner parameters train at ``lr``, its ``modules_to_save`` copy of the head at ``head_lr``."""
    import peft

    options = dict(target_modules=["body", "mid"], modules_to_save=["classifier"])
    config = {"lora": lambda: peft.LoraConfig(r=2, **options), "dora": lambda: peft.LoraConfig(r=2, use_dora=True, **options),
              "vera": lambda: peft.VeraConfig(r=4, **options),
              "fourierft": lambda: peft.FourierFTConfig(n_frequency=8, **options)}[kind]()
    model = peft.get_peft_model(ToyClassifier(), config)
    groups = {g["name"]: g for g in parameter_groups(model, lr=1e-3, weight_decay=0.0, head_lr=5e-2)}
    names = {id(p): n for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = {n for n in trainable if ".modules_to_save." in n}  # PEFT's own naming of the trainable head copy
    assert head and trainable - head
    assert {names[id(p)] for p in groups["head"]["params"]} == head
    assert {names[id(p)] for p in groups["adapter"]["params"]} == trainable - head
    assert (groups["adapter"]["lr"], groups["head"]["lr"]) == (1e-3, 5e-2)


def test_head_learning_rate_is_used() -> None:
    """With a zero-effect head LR the head does not move while the adapters do."""
    data = toy_classification(n=64)
    model = adapted_model("lora")
    head_before = model.classifier.weight.detach().clone()
    fit(model, data, data, TrainConfig(epochs=1, batch_size=16, lr=1e-2, head_lr=1e-30, **QUIET))
    assert torch.allclose(model.classifier.weight, head_before, atol=1e-20, rtol=0)


def test_linear_warmup_schedule_matches_transformers() -> None:
    from transformers import get_linear_schedule_with_warmup

    total, ratio = 50, 0.06
    ours = linear_warmup_schedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), total, ratio)
    reference_optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_linear_schedule_with_warmup(reference_optimizer, int(np.ceil(ratio * total)), total)
    ours_lrs, reference_lrs = [], []
    for _ in range(total):
        ours_lrs.append(ours.get_last_lr()[0])
        reference_lrs.append(reference.get_last_lr()[0])
        ours.optimizer.step(), ours.step()
        reference_optimizer.step(), reference.step()
    np.testing.assert_allclose(ours_lrs, reference_lrs, rtol=0, atol=1e-12)
    assert ours_lrs[0] == 0.0 and max(ours_lrs) == 1.0


def test_history_records_every_epoch_and_best() -> None:
    data = toy_classification(n=64)
    result = fit(adapted_model("aurora"), data, data, TrainConfig(epochs=4, batch_size=16, lr=1e-2, **QUIET))
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    assert result.best_metric == max(r.metric for r in result.history)
    assert result.history[result.best_epoch - 1].metric == result.best_metric
    assert result.history[-1].lr == pytest.approx(0.0, abs=1e-12)  # linear decay ends at zero
    assert result.wall_time_s >= sum(r.seconds for r in result.history)


class StopAfter:
    """Simulates an interruption (e.g. a killed job) after the given epoch."""

    class Interrupted(Exception):
        pass

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, model: nn.Module) -> None:
        if epoch == self.epoch:
            raise StopAfter.Interrupted


class EpochLog:
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_epoch_end(self, epoch: int, model: nn.Module) -> None:
        self.epochs.append(epoch)


@pytest.mark.parametrize("own_loader", [False, True])
def test_resume_reproduces_uninterrupted_run(tmp_path, own_loader: bool) -> None:
    """Dropout and shuffling use the RNG, so this also checks the RNG states are restored."""
    data = toy_classification(n=96)

    def loaders():
        if own_loader:  # a DataLoader shuffled by the global RNG
            return DataLoader(data, batch_size=16, shuffle=True), DataLoader(data, batch_size=32)
        return data, data

    config = TrainConfig(epochs=4, batch_size=16, lr=1e-2, **QUIET)
    reference_model = adapted_model("aurora", dropout=0.2)
    reference = fit(reference_model, *loaders(), config)

    resumable = dataclasses.replace(config, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(StopAfter.Interrupted):
        fit(adapted_model("aurora", dropout=0.2), *loaders(), resumable, callbacks=[StopAfter(2)])
    assert (tmp_path / CHECKPOINT_FILE).is_file()
    log = EpochLog()
    model = adapted_model("aurora", dropout=0.2)
    resumed = fit(model, *loaders(), resumable, callbacks=[log])

    assert log.epochs == [3, 4]
    strip = lambda history: [(r.epoch, r.train_loss, r.eval_loss, r.metric, r.lr) for r in history]  # noqa: E731
    assert strip(resumed.history) == strip(reference.history)
    for (name, p), (_, q) in zip(model.named_parameters(), reference_model.named_parameters()):
        assert torch.equal(p, q), name


def test_resume_refuses_a_changed_config(tmp_path) -> None:
    data = toy_classification(n=32)
    fit(adapted_model("lora"), data, data, TrainConfig(epochs=1, batch_size=16, checkpoint_dir=tmp_path, **QUIET))
    with pytest.raises(ValueError, match="lr"):
        fit(adapted_model("lora"), data, data, TrainConfig(epochs=1, batch_size=16, lr=1e-4, checkpoint_dir=tmp_path, resume=True, **QUIET))


def test_callbacks_see_epoch_zero_before_training() -> None:
    data = toy_classification(n=32)
    seen: list[tuple[int, float]] = []

    class Recorder:
        def on_epoch_end(self, epoch: int, model: nn.Module) -> None:
            layer = aurora.adapter_layers(model)[0][1]
            seen.append((epoch, float(layer.lora_B.detach().abs().sum())))

    fit(adapted_model("lora"), data, data, TrainConfig(epochs=2, batch_size=16, lr=1e-2, **QUIET), callbacks=[Recorder()])
    assert [e for e, _ in seen] == [0, 1, 2]
    assert seen[0][1] == 0.0 and seen[1][1] > 0.0  # B starts at zero, then moves


def test_dict_batches_and_regression_use_mse() -> None:
    """HF-style dict batches; metric 'pearson' trains a one-output regressor with MSE."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 16, generator=generator)
    target = torch.tanh(x[:, :4]).sum(-1)

    class DictData(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"inputs": x[i], "labels": target[i]}

    class Regressor(ToyClassifier):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return super().forward(inputs)

    torch.manual_seed(1)
    model = aurora.add_adapters(
        Regressor(classes=1), aurora.AdapterConfig(method="lora", rank=2, target_modules=["body"], modules_to_save=["classifier"])
    )
    result = fit(model, DictData(), DictData(), TrainConfig(epochs=8, batch_size=16, lr=1e-2, metric="pearson", **QUIET))
    predictions = model(x).squeeze(-1).detach().numpy()
    mse = float(np.mean((predictions - target.numpy()) ** 2))
    assert result.history[-1].eval_loss == pytest.approx(mse, rel=1e-4)
    assert result.history[-1].metric == pytest.approx(pearsonr(predictions, target.numpy())[0], abs=1e-5)
    assert result.best_metric > 0.8


def test_bad_batches_and_options_raise() -> None:
    model = adapted_model("lora")
    with pytest.raises(ValueError, match="labels"):
        evaluate(model, [{"inputs": torch.randn(2, 16)}])
    with pytest.raises(ValueError, match="metric"):
        TrainConfig(metric="auc")
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="bf16", device="cpu")
    with pytest.raises(ValueError, match="checkpoint_dir"):
        TrainConfig(resume=True)
    with pytest.raises(ValueError, match="warmup_ratio"):
        TrainConfig(warmup_ratio=1.5)
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="tpu")


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn_and_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=200)
    predictions = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 3, size=200))
    assert compute_metric("accuracy", predictions, labels) == pytest.approx(accuracy_score(labels, predictions), abs=1e-12)
    assert compute_metric("matthews", predictions, labels) == pytest.approx(matthews_corrcoef(labels, predictions), abs=1e-12)
    binary_labels, binary_predictions = labels % 2, predictions % 2
    assert compute_metric("matthews", binary_predictions, binary_labels) == pytest.approx(
        matthews_corrcoef(binary_labels, binary_predictions), abs=1e-12
    )
    assert compute_metric("f1", binary_predictions, binary_labels) == pytest.approx(f1_score(binary_labels, binary_predictions), abs=1e-12)
    targets = rng.normal(size=100)
    outputs = 0.5 * targets + rng.normal(size=100)
    assert compute_metric("pearson", outputs, targets) == pytest.approx(pearsonr(outputs, targets)[0], abs=1e-12)


def test_degenerate_metrics_are_zero_like_sklearn() -> None:
    constant = np.zeros(10, dtype=int)
    labels = np.array([0, 1] * 5)
    assert compute_metric("matthews", constant, labels) == matthews_corrcoef(labels, constant) == 0.0
    assert compute_metric("f1", constant, labels) == 0.0
    assert compute_metric("pearson", np.ones(10), labels.astype(float)) == 0.0


def test_loran_with_paper_sinter_behaves_like_lora() -> None:
    """LoRAN's Sinter with a = 5e-5, ω = 1e4 perturbs ΔW by at most a·|ΔW|, so training tracks LoRA."""
    data = toy_classification(n=64)
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-2, **QUIET)
    lora = fit(adapted_model("lora"), data, data, config)
    loran = fit(adapted_model("loran"), data, data, config)
    np.testing.assert_allclose([r.train_loss for r in loran.history], [r.train_loss for r in lora.history], rtol=1e-3)


def test_evaluate_accepts_a_dataset_and_matches_a_direct_computation() -> None:
    data = toy_classification(n=50)
    model = adapted_model("moslora")
    loss, accuracy = evaluate(model, data, batch_size=7)
    with torch.no_grad():
        logits = model(data.tensors[0])
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, data.tensors[1]).item(), rel=1e-5)
    assert accuracy == accuracy_score(data.tensors[1].numpy(), logits.argmax(-1).numpy())
