"""Putting adapters into a model: target matching, freezing, and parameter counts.

Targets are ``nn.Linear`` layers and transformers' ``Conv1D`` (GPT-2). A target whose parent reads its
``.weight`` without calling it (``nn.MultiheadAttention.out_proj``) is refused: an adapter there would
never run.
"""

from __future__ import annotations

import copy
import re
from typing import Iterable

from torch import nn

from .config import AdapterConfig
from .layers import AdapterLayer, is_conv1d
from .registry import layer_class

__all__ = [
    "add_adapters",
    "adapter_layers",
    "trainable_parameters",
    "parameter_report",
    "suggest_target_modules",
    "linear_module_names",
    "module_name_matches",
    "set_submodule",
]

CONFIG_ATTRIBUTE = "aurora_config"


def linear_module_names(model: nn.Module) -> list[str]:
    """Qualified names of every ``nn.Linear`` and ``Conv1D`` in ``model`` (adapter-wrapped ones included)."""
    return [
        name for name, module in model.named_modules()
        if (isinstance(module, nn.Linear) or is_conv1d(module)) and not name.endswith(".base_layer")
    ]


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
            f"target_modules {missing} matched no nn.Linear or Conv1D layer of {type(model).__name__}; "
            f"its nn.Linear/Conv1D names end with: {endings}"
        )
    return matched


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the qualified ``name`` of ``model``."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _require_called_targets(model: nn.Module, targets: list[str]) -> None:
    """Refuse targets that their parent uses by reading ``.weight`` instead of calling them."""
    for name in targets:
        parent_name = name.rpartition(".")[0]
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(parent, nn.MultiheadAttention) or isinstance(model.get_submodule(name), nn.modules.linear.NonDynamicallyQuantizableLinear):
            raise ValueError(
                f"target {name!r} is the out_proj of nn.MultiheadAttention, which reads its .weight inside "
                "F.multi_head_attention_forward and never calls it, so an adapter there would not run; "
                "leave it out of target_modules (adapt the surrounding nn.Linear layers instead)"
            )


def _heads(model: nn.Module, modules_to_save: list[str], targets: list[str]) -> list[nn.Module]:
    """The ``modules_to_save`` modules; refused if one is a target or holds one (its base weights would train)."""
    heads = []
    for head in modules_to_save:
        matched = [(n, m) for n, m in model.named_modules() if module_name_matches(n, head)]
        if not matched:
            raise ValueError(f"modules_to_save entry {head!r} matched no module of {type(model).__name__}")
        for name, module in matched:
            clash = [t for t in targets if t == name or t.startswith(name + ".") or name.startswith(t + ".")]
            if clash:
                raise ValueError(
                    f"modules_to_save entry {head!r} ({name!r}) overlaps the adapted layers {clash[:3]}; training it in full "
                    "would unfreeze their base weights. Remove it from modules_to_save or from target_modules"
                )
            heads.append(module)
    return heads


def add_adapters(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Freeze ``model`` and wrap every matching ``nn.Linear``/``Conv1D`` in the adapter layer of ``config.method``.

    Works in place (and returns the model, as PEFT does). ``config.modules_to_save`` stay trainable. The model
    keeps its own copy of ``config`` (later changes to the caller's object change nothing). Everything is checked
    before the model changes: ``ValueError`` if the model already has adapters, a target/head name matches
    nothing, a target is never called by its parent, or a head overlaps a target.
    """
    if any(True for _ in adapter_layers(model)):
        raise ValueError("model already has adapters; load a fresh model to add another set")
    config = copy.deepcopy(config)
    targets = _targets(model, config.target_modules)
    _require_called_targets(model, targets)
    heads = _heads(model, config.modules_to_save, targets)
    wrapper = layer_class(config.method)
    layers = [(name, wrapper(model.get_submodule(name), config)) for name in targets]
    # everything checked: now change the model
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for name, layer in layers:
        set_submodule(model, name, layer)
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
    """The attention query/value projections of ``model``, found by inspecting its ``nn.Linear``/``Conv1D`` names.

    BERT/RoBERTa/ViT in ``transformers`` use ``query``/``value``, LLaMA-style models ``q_proj``/``v_proj``,
    timm's ViT one fused ``qkv`` projection and GPT-2 one fused ``c_attn`` (``Conv1D``; then q, k and v are all adapted).
    """
    endings = {n.rsplit(".", 1)[-1] for n in linear_module_names(model)}
    for pair in (["query", "value"], ["q_proj", "v_proj"], ["q", "v"], ["qkv"], ["c_attn"]):
        if set(pair) <= endings:
            return pair
    raise ValueError(f"found no query/value projections in {type(model).__name__}; nn.Linear/Conv1D names end with {sorted(endings)}")
