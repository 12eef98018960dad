"""One rank (or the single process) of the multi-process test in ``test_ddp.py``: trains a tiny adapted BERT
through :mod:`aurora.hf` and writes its per-step logs and final trainable weights to ``<out>/rank<R>.*``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForSequenceClassification

import aurora
from aurora.hf import make_trainer, training_arguments
from aurora.train import TrainConfig

GLOBAL_BATCH = 8


class TokenData(torch.utils.data.Dataset):
    """Random token sequences; the label is whether token 5 occurs."""

    def __init__(self, n: int = 48, length: int = 10, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(6, 100, (n, length), generator=generator)
        self.labels = torch.randint(0, 2, (n,), generator=generator)
        self.input_ids[self.labels == 1, 3] = 5

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i], "attention_mask": torch.ones_like(self.input_ids[i]), "labels": self.labels[i]}


def tiny_adapted_bert(method: str) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    model = BertForSequenceClassification(config)
    return aurora.add_adapters(model, aurora.AdapterConfig(method=method, rank=2, target_modules=["query", "value"], modules_to_save=["classifier"]))


def train(out: Path, method: str, accumulation: int, model_loss: bool = False) -> None:
    """One run; ``model_loss=True`` trains on the model's own (per-batch mean) loss instead of aurora's, as a control."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    per_device = GLOBAL_BATCH // (world * accumulation)
    # a large lr and a tight clip, so that a gradient on the wrong scale changes the weights, not just the logs
    config = TrainConfig(epochs=1, batch_size=per_device, lr=2e-2, max_grad_norm=0.05, warmup_ratio=0.0, progress=False)
    args = training_arguments(
        config, out / f"trainer{rank}", logging_strategy="steps", logging_steps=1, eval_strategy="no",
        gradient_accumulation_steps=accumulation, dataloader_num_workers=0,
    )
    model = tiny_adapted_bert(method)
    trainer = make_trainer(model, args, TokenData(), **({"compute_loss_func": None} if model_loss else {}))
    trainer.train()
    logs = [{"loss": e["loss"], "grad_norm": e["grad_norm"]} for e in trainer.state.log_history if "loss" in e and "grad_norm" in e]
    trainable = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    out.mkdir(parents=True, exist_ok=True)
    save_file(trainable, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({"world": world, "logs": logs}))


if __name__ == "__main__":  # python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py OUT METHOD
    folder, method = Path(sys.argv[1]), sys.argv[2]
    train(folder / "aurora_loss", method, accumulation=1)
    train(folder / "model_loss", method, accumulation=1, model_loss=True)
