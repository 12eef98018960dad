"""Tests of aurora.hf: Hugging Face Trainer with adapter/head parameter groups on a tiny random BERT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import matthews_corrcoef
from transformers import BertConfig, BertForSequenceClassification, EvalPrediction

import aurora
from aurora.hf import AdapterTrainer, make_trainer, metric_function, training_arguments
from aurora.train import TrainConfig


class TokenData(torch.utils.data.Dataset):
    """Random token sequences; the label is whether token 5 occurs (learnable from attention)."""

    def __init__(self, n: int = 64, length: int = 12, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(6, 100, (n, length), generator=generator)
        self.labels = torch.randint(0, 2, (n,), generator=generator)
        self.input_ids[self.labels == 1, 3] = 5

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i], "attention_mask": torch.ones_like(self.input_ids[i]), "labels": self.labels[i]}


def tiny_bert(method: str) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, num_labels=2,
    )
    model = BertForSequenceClassification(config)
    targets = aurora.suggest_target_modules(model)
    assert targets == ["query", "value"]
    return aurora.add_adapters(model, aurora.AdapterConfig(method=method, rank=2, target_modules=targets, modules_to_save=["classifier"]))


@pytest.mark.parametrize("method", ["lora", "aurora"])
def test_trainer_steps_change_only_adapters_and_head(tmp_path, method: str) -> None:
    model = tiny_bert(method)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = TrainConfig(epochs=1, batch_size=8, lr=5e-3, head_lr=1e-3, weight_decay=0.01, head_weight_decay=0.0, progress=False)
    args = training_arguments(config, tmp_path, max_steps=4, logging_steps=1, logging_strategy="steps")
    trainer = make_trainer(model, args, TokenData(), TokenData(n=16, seed=1), head_lr=config.head_lr, head_weight_decay=0.0)
    assert isinstance(trainer, AdapterTrainer)
    output = trainer.train()
    assert output.global_step == 4

    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert (groups["adapter"]["initial_lr"], groups["head"]["initial_lr"]) == (5e-3, 1e-3)
    assert (groups["adapter"]["weight_decay"], groups["head"]["weight_decay"]) == (0.01, 0.0)
    assert sum(p.numel() for p in groups["adapter"]["params"]) == aurora.trainable_parameters(model)

    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n or ".anl." in n or n.startswith("classifier.")) for n in trainable)
    for name, parameter in model.named_parameters():
        if name in trainable:
            assert not torch.equal(parameter.detach().cpu(), before[name]), f"{name} did not change"
        else:
            assert torch.equal(parameter.detach().cpu(), before[name]), f"frozen {name} changed"
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0


def test_training_arguments_follow_the_train_config(tmp_path) -> None:
    config = TrainConfig(epochs=3, batch_size=16, lr=8e-4, weight_decay=0.1, warmup_ratio=0.06, max_grad_norm=1.0, seed=7, metric="matthews")
    args = training_arguments(config, tmp_path)
    assert (args.num_train_epochs, args.per_device_train_batch_size, args.learning_rate, args.weight_decay) == (3, 16, 8e-4, 0.1)
    assert (args.seed, args.max_grad_norm, args.metric_for_best_model, args.use_cpu) == (7, 1.0, "matthews", True)
    assert args.get_warmup_steps(1000) == 60  # 0.06 of the steps
    assert not (args.bf16 or args.fp16)


def test_metric_function_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(50, 2)), rng.integers(0, 2, size=50)
    value = metric_function("matthews")(EvalPrediction(predictions=logits, label_ids=labels))["matthews"]
    assert value == pytest.approx(matthews_corrcoef(labels, logits.argmax(-1)), abs=1e-12)
    with pytest.raises(ValueError, match="metric"):
        metric_function("bleu")


def test_loss_function_is_the_mean_over_the_global_batch() -> None:
    """Divided by num_items_in_batch (the global labelled count), labels -100 ignored; MSE for 'pearson'."""
    from aurora.hf import loss_function

    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 3, generator=generator), torch.tensor([0, 2, 1, -100, 1, 0])
    classification = loss_function("accuracy")
    mean = torch.nn.functional.cross_entropy(logits, labels)  # PyTorch's mean over labels != -100
    torch.testing.assert_close(classification({"logits": logits}, labels), mean)
    torch.testing.assert_close(classification((logits,), labels, num_items_in_batch=torch.tensor(10)), mean * 5 / 10)
    outputs, targets = torch.randn(4, 1, generator=generator), torch.randn(4, generator=generator)
    torch.testing.assert_close(loss_function("pearson")({"logits": outputs}, targets), torch.nn.functional.mse_loss(outputs.squeeze(-1), targets))


def test_trainer_logs_the_models_own_loss_on_one_process(tmp_path) -> None:
    """On one process and without accumulation, aurora's loss and the model's own give the same first logged loss."""
    losses = []
    for compute_loss_func in ({}, {"compute_loss_func": None}):
        model = tiny_bert("lora")
        args = training_arguments(TrainConfig(epochs=1, batch_size=8, progress=False), tmp_path, max_steps=1, logging_steps=1,
                                  logging_strategy="steps", eval_strategy="no")
        trainer = make_trainer(model, args, TokenData(), **compute_loss_func)
        trainer.train()
        losses.append(next(e["loss"] for e in trainer.state.log_history if "loss" in e))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
