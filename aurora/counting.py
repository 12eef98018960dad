"""Adapter parameter counts from model configs alone (built on the ``meta`` device: no weights, no download).

Reproduces the "Params" columns of the AuroRA paper (Tables 1–3) from the published configs of the
models. CLI: ``aurora-count`` (or ``python -m aurora.counting``). Chapter: ``book/cost.md``.

The same configs at chosen depth, with random weights, are the backbones of the cost benchmark
(:data:`BACKBONES`, :meth:`Backbone.build`): real widths, no download.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import nn

from .config import METHODS, SPLINE_MODES, AdapterConfig
from .inject import add_adapters, suggest_target_modules, trainable_parameters

__all__ = [
    "MODEL_CONFIGS", "PAPER_PARAMS", "BACKBONES", "Backbone", "build_on_meta", "count_adapter_parameters",
    "paper_parameter_table", "printed_count_matches", "main",
]


def _roberta(hidden: int, layers: int, heads: int, intermediate: int, vocab_size: int = 50265) -> Any:
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, max_position_embeddings=514, type_vocab_size=1,
    )


def _vit(hidden: int, layers: int, heads: int, intermediate: int, image_size: int = 224) -> Any:
    from transformers import ViTConfig

    return ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate,
                     image_size=image_size, patch_size=16)


def _llama(hidden: int, layers: int, heads: int, intermediate: int, key_value_heads: int, vocab_size: int = 128256) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=key_value_heads, max_position_embeddings=8192, rope_theta=500000.0,
    )


def _llama3_8b() -> Any:
    return _llama(4096, 32, 32, 14336, 8)


# The published configs of the paper's models (hub names as keys), built without network access.
MODEL_CONFIGS: dict[str, Callable[[], Any]] = {
    "roberta-base": lambda: _roberta(768, 12, 12, 3072),
    "roberta-large": lambda: _roberta(1024, 24, 16, 4096),
    "google/vit-base-patch16-224-in21k": lambda: _vit(768, 12, 12, 3072),
    "google/vit-large-patch16-224-in21k": lambda: _vit(1024, 24, 16, 4096),
    "meta-llama/Meta-Llama-3-8B": _llama3_8b,
}


@dataclass(frozen=True)
class PaperParams:
    model: str
    method: str
    rank: int
    targets: tuple[str, ...]  # empty: the model's query and value projections, found by suggest_target_modules
    paper: str  # as printed in the paper
    source: str


PAPER_PARAMS = [
    PaperParams("roberta-base", "aurora", 2, (), "0.075M", "Table 1"),
    PaperParams("roberta-base", "lora", 8, (), "0.3M", "Table 1"),
    PaperParams("roberta-large", "aurora", 2, (), "0.2M", "Table 1"),
    PaperParams("roberta-large", "lora", 8, (), "0.8M", "Table 1"),
    PaperParams("google/vit-base-patch16-224-in21k", "aurora", 2, (), "74K", "Table 3"),
    PaperParams("google/vit-base-patch16-224-in21k", "lora", 16, (), "581K", "Table 3 (from FourierFT)"),
    PaperParams("google/vit-large-patch16-224-in21k", "aurora", 2, (), "197K", "Table 3"),
    PaperParams("google/vit-large-patch16-224-in21k", "lora", 16, (), "1.57M", "Table 3 (from FourierFT)"),
    PaperParams("meta-llama/Meta-Llama-3-8B", "aurora", 2, ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj"), "3.5M", "Table 2"),
    PaperParams("meta-llama/Meta-Llama-3-8B", "lora", 32, ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj"), "56.6M", "Table 2"),
]


def build_on_meta(model_name: str) -> nn.Module:
    """The backbone of ``model_name`` (a key of :data:`MODEL_CONFIGS`) with shapes only, on the meta device."""
    if model_name not in MODEL_CONFIGS:
        raise ValueError(f"model_name must be one of {sorted(MODEL_CONFIGS)}; got {model_name!r}")
    from transformers import AutoModel

    with torch.device("meta"):
        return AutoModel.from_config(MODEL_CONFIGS[model_name]())


@dataclass(frozen=True)
class Backbone:
    """A backbone of real width for the cost benchmark: one of the paper's configs at a chosen depth, random weights.

    The embedding tables are cut to a small vocabulary (inputs are given as embeddings or pixels, so they only
    cost memory); everything an adapter touches has the real shape.
    """

    name: str
    family: str  # "roberta" | "vit" | "llama"
    hidden: int
    heads: int
    intermediate: int
    key_value_heads: int | None = None
    targets: tuple[str, ...] = ()  # empty: the query and value projections (suggest_target_modules)

    def config(self, layers: int) -> Any:
        if self.family == "roberta":
            return _roberta(self.hidden, layers, self.heads, self.intermediate, vocab_size=1024)
        if self.family == "vit":
            return _vit(self.hidden, layers, self.heads, self.intermediate, image_size=self.image_size)
        if self.family == "llama":
            return _llama(self.hidden, layers, self.heads, self.intermediate, self.key_value_heads or self.heads, vocab_size=256)
        raise ValueError(f"family must be one of 'roberta', 'vit', 'llama'; got {self.family!r}")

    def build(self, layers: int) -> nn.Module:
        """The encoder/decoder stack with ``layers`` layers, frozen, in train mode."""
        import transformers as tf

        config = self.config(layers)
        if self.family == "roberta":
            model: nn.Module = tf.RobertaModel(config, add_pooling_layer=False)
        elif self.family == "vit":
            model = tf.ViTModel(config, add_pooling_layer=False)
        else:
            model = tf.LlamaModel(config)
        model.requires_grad_(False)
        return model.train()

    @property
    def image_size(self) -> int:
        return 224 if self.hidden >= 256 else 32

    def inputs(
        self, batch: int, seq_len: int, device: str, requires_grad: bool, seed: int = 0, dtype: torch.dtype = torch.float32
    ) -> dict[str, torch.Tensor]:
        """Random model inputs; ``seq_len`` is ignored for ViT (the image size fixes it)."""
        generator = torch.Generator().manual_seed(seed)
        if self.family == "vit":
            x = torch.randn(batch, 3, self.image_size, self.image_size, generator=generator)
            key = "pixel_values"
        else:
            x = torch.randn(batch, seq_len, self.hidden, generator=generator)
            key = "inputs_embeds"
        return {key: x.to(device=device, dtype=dtype).requires_grad_(requires_grad)}

    def tokens_per_example(self, seq_len: int) -> int:
        return (self.image_size // 16) ** 2 + 1 if self.family == "vit" else seq_len

    def target_modules(self, model: nn.Module) -> list[str]:
        return list(self.targets) or suggest_target_modules(model)


LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj")  # Table 2
BACKBONES: dict[str, Backbone] = {
    "roberta-base": Backbone("roberta-base", "roberta", 768, 12, 3072),
    "vit-base": Backbone("vit-base", "vit", 768, 12, 3072),
    "llama-block": Backbone("llama-block", "llama", 4096, 32, 14336, key_value_heads=8, targets=LLAMA_TARGETS),
    # toy widths with the same code paths (tests and smoke runs)
    "tiny-roberta": Backbone("tiny-roberta", "roberta", 64, 4, 128),
    "tiny-llama": Backbone("tiny-llama", "llama", 64, 4, 128, key_value_heads=2, targets=("q_proj", "v_proj")),
}


def count_adapter_parameters(model_name: str, config: AdapterConfig) -> int:
    """Adapter parameters that ``config`` adds to ``model_name`` (no weights are allocated).

    ``target_modules=["query", "value"]`` means the query and value projections under whatever names the
    model uses (transformers 5 names ViT's ``q_proj``/``v_proj``, RoBERTa's ``query``/``value``).
    """
    model = build_on_meta(model_name)
    if config.target_modules == ["query", "value"]:
        config = replace(config, target_modules=suggest_target_modules(model))
    return trainable_parameters(add_adapters(model, config))


def paper_parameter_table(spline_modes: tuple[str, ...] = ("per_unit", "sum", "per_edge")) -> list[dict[str, Any]]:
    """Rows ``model, method, rank, targets, spline_mode, ours, paper, source`` for every entry of :data:`PAPER_PARAMS`."""
    rows = []
    for entry in PAPER_PARAMS:
        targets = list(entry.targets) or ["query", "value"]
        base = AdapterConfig(method=entry.method, rank=entry.rank, alpha=2.0 * entry.rank, target_modules=targets)
        modes = spline_modes if entry.method == "aurora" else ("-",)
        for mode in modes:
            config = base if mode == "-" else replace(base, spline_mode=mode)
            rows.append({
                "model": entry.model, "method": entry.method, "rank": entry.rank, "targets": ",".join(targets),
                "spline_mode": mode, "ours": count_adapter_parameters(entry.model, config),
                "paper": entry.paper, "source": entry.source,
            })
    return rows


def printed_count_matches(count: int, printed: str) -> dict[str, bool]:
    """Whether ``count`` gives the paper's ``printed`` value ("0.075M", "74K") when rounded / truncated to its digits."""
    units = {"K": 10**3, "M": 10**6}
    if not printed or printed[-1] not in units:
        raise ValueError(f"printed must end with K or M, e.g. '74K' or '0.075M'; got {printed!r}")
    digits = printed[:-1]
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    quantum = units[printed[-1]] / 10**decimals
    target = round(float(digits) * 10**decimals)
    return {"rounds_to_paper": round(count / quantum) == target, "truncates_to_paper": math.floor(count / quantum) == target}


def main(argv: list[str] | None = None) -> None:
    """Print the paper's parameter table, or the count for one model/method/rank."""
    parser = argparse.ArgumentParser(description="Adapter parameter counts from model configs (no weights).")
    parser.add_argument("--model", choices=sorted(MODEL_CONFIGS), help="count one model instead of the paper table")
    parser.add_argument("--method", default="aurora", choices=list(METHODS))
    parser.add_argument("--rank", type=int, default=2)
    parser.add_argument("--targets", default="query,value", help="comma-separated target module names")
    parser.add_argument("--spline-mode", default="per_unit", choices=list(SPLINE_MODES))
    args = parser.parse_args(argv)
    if args.model:
        config = AdapterConfig(method=args.method, rank=args.rank, target_modules=args.targets.split(","), spline_mode=args.spline_mode)
        print(f"{args.model} {args.method} r={args.rank} on {args.targets}: {count_adapter_parameters(args.model, config):,}")
        return
    print(f"| {'model':<36} | {'method':<6} | {'r':>2} | {'spline_mode':<11} | {'ours':>12} | {'paper':>6} | source |")
    print(f"|{'-' * 38}|{'-' * 8}|{'-' * 4}|{'-' * 13}|{'-' * 14}|{'-' * 8}|--------|")
    for row in paper_parameter_table():
        print(f"| {row['model']:<36} | {row['method']:<6} | {row['rank']:>2} | {row['spline_mode']:<11} | {row['ours']:>12,} | {row['paper']:>6} | {row['source']} |")


if __name__ == "__main__":
    main()
