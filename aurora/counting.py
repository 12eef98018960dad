"""Adapter parameter counts from model configs alone (built on the ``meta`` device: no weights, no download).

Reproduces the "Params" columns of the AuroRA paper (Tables 1–3) from the published configs of the
models. CLI: ``aurora-count`` (or ``python -m aurora.counting``). Chapter: ``book/cost.md``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import nn

from .config import AdapterConfig
from .inject import add_adapters, suggest_target_modules, trainable_parameters

__all__ = ["MODEL_CONFIGS", "PAPER_PARAMS", "build_on_meta", "count_adapter_parameters", "paper_parameter_table", "main"]


def _roberta(hidden: int, layers: int, heads: int, intermediate: int) -> Any:
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=50265, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, max_position_embeddings=514, type_vocab_size=1,
    )


def _vit(hidden: int, layers: int, heads: int, intermediate: int) -> Any:
    from transformers import ViTConfig

    return ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate)


def _llama3_8b() -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
    )


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


def main(argv: list[str] | None = None) -> None:
    """Print the paper's parameter table, or the count for one model/method/rank."""
    parser = argparse.ArgumentParser(description="Adapter parameter counts from model configs (no weights).")
    parser.add_argument("--model", choices=sorted(MODEL_CONFIGS), help="count one model instead of the paper table")
    parser.add_argument("--method", default="aurora", choices=["lora", "moslora", "aurora", "loran"])
    parser.add_argument("--rank", type=int, default=2)
    parser.add_argument("--targets", default="query,value", help="comma-separated target module names")
    parser.add_argument("--spline-mode", default="per_unit", choices=["per_unit", "sum", "per_edge"])
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
