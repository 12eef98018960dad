"""Putting adapters into a model: target matching, freezing, and parameter counts."""

from __future__ import annotations

import re
from typing import Iterable

from torch import nn

from .config import AdapterConfig
from .layers import LAYER_CLASSES, AdapterLayer

__all__ = [
    "add_adapters",
    "adapter_layers",
    "trainable_parameters",
    "parameter_report",
    "suggest_target_modules",
    "linear_module_names",
    "module_name_matches",
]

CONFIG_ATTRIBUTE = "aurora_config"


def linear_module_names(model: nn.Module) -> list[str]:
    """Qualified names of every ``nn.Linear`` in ``model`` (adapter-wrapped ones included)."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear) and not name.endswith(".base_layer")]


def module_name_matches(name: str, target: str) -> bool:
    """True if the qualified module ``name`` is ``target`` or ends with ``.target`` (PEFT's rule)."""
    return name == target or name.endswith("." + target)


def _targets(model: nn.Module, target_modules: list[str] | str) -> list[str]:
    names = linear_module_names(model)
    if isinstance(target_modules, str):
        matched = [n for n in names if re.fullmatch(target_modules, n)]
        missing = [] if matched else [target_modules]
    else:
        matched = [n for n in names if any(module_name_matches(n, t) for t in target_modules)]
        missing = [t for t in target_modules if not any(module_name_matches(n, t) for n in names)]
    if missing:
        endings = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise ValueError(
            f"target_modules {missing} matched no nn.Linear layer of {type(model).__name__}; "
            f"its nn.Linear names end with: {endings}"
        )
    return matched


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def add_adapters(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Freeze ``model`` and wrap every matching ``nn.Linear`` in the adapter layer of ``config.method``.

    Works in place (and returns the model, as PEFT does). ``config.modules_to_save`` stay trainable.
    Raises ``ValueError`` if the model already has adapters or a target/head name matches nothing.
    """
    if any(True for _ in adapter_layers(model)):
        raise ValueError("model already has adapters; load a fresh model to add another set")
    targets = _targets(model, config.target_modules)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    layer_class = LAYER_CLASSES[config.method]
    for name in targets:
        _set_submodule(model, name, layer_class(model.get_submodule(name), config))
    for head in config.modules_to_save:
        heads = [m for n, m in model.named_modules() if module_name_matches(n, head)]
        if not heads:
            raise ValueError(f"modules_to_save entry {head!r} matched no module of {type(model).__name__}")
        for module in heads:
            module.requires_grad_(True)
    setattr(model, CONFIG_ATTRIBUTE, config)
    return model


def adapter_layers(model: nn.Module) -> list[tuple[str, AdapterLayer]]:
    """``(qualified name, layer)`` for every adapter layer in ``model``, in module order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, AdapterLayer)]


def _adapter_parameters(layer: AdapterLayer) -> Iterable[nn.Parameter]:
    return (p for n, p in layer.named_parameters() if not n.startswith("base_layer."))


def trainable_parameters(model: nn.Module) -> int:
    """Number of adapter parameters (A, B, mixer, H, spline coefficients); heads are not included."""
    return sum(p.numel() for _, layer in adapter_layers(model) for p in _adapter_parameters(layer))


def parameter_report(model: nn.Module) -> dict[str, int]:
    """Parameter counts: ``adapter``, ``head`` (modules_to_save), ``trainable``, ``frozen`` and ``total``."""
    adapter_ids = {id(p) for _, layer in adapter_layers(model) for p in _adapter_parameters(layer)}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapter = sum(p.numel() for p in model.parameters() if id(p) in adapter_ids)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in adapter_ids)
    return {"adapter": adapter, "head": head, "trainable": trainable, "frozen": total - trainable, "total": total}


def suggest_target_modules(model: nn.Module) -> list[str]:
    """The attention query/value projections of ``model``, found by inspecting its ``nn.Linear`` names.

    BERT/RoBERTa/ViT in ``transformers`` use ``query``/``value``, LLaMA-style models ``q_proj``/``v_proj``,
    timm's ViT one fused ``qkv`` projection (then q, k and v are all adapted).
    """
    endings = {n.rsplit(".", 1)[-1] for n in linear_module_names(model)}
    for pair in (["query", "value"], ["q_proj", "v_proj"], ["q", "v"], ["qkv"]):
        if set(pair) <= endings:
            return pair
    raise ValueError(f"found no query/value projections in {type(model).__name__}; nn.Linear names end with {sorted(endings)}")
