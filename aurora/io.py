"""Saving and loading adapters: ``adapter_config.json`` + ``adapters.safetensors`` in one folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import AdapterConfig
from .inject import CONFIG_ATTRIBUTE, module_name_matches, adapter_layers, add_adapters

__all__ = ["save_adapters", "load_adapters", "adapter_state_dict"]

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapters.safetensors"
FORMAT_VERSION = 1


def _config_of(model: nn.Module) -> AdapterConfig:
    config = getattr(model, CONFIG_ATTRIBUTE, None)
    if config is None or not adapter_layers(model):
        raise ValueError("model has no adapters; call aurora.add_adapters(model, config) first")
    return config


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter parameters and buffers plus the ``modules_to_save`` heads, keyed as in ``model.state_dict()``."""
    config = _config_of(model)
    prefixes = [name + "." for name, _ in adapter_layers(model)]
    heads = [n + "." for n, _ in model.named_modules() if any(module_name_matches(n, h) for h in config.modules_to_save)]
    state = {}
    for key, value in model.state_dict().items():
        in_adapter = any(key.startswith(p) and not key.startswith(p + "base_layer.") for p in prefixes)
        if in_adapter or any(key.startswith(h) for h in heads):
            state[key] = value.detach().contiguous().cpu()
    return state


def save_adapters(model: nn.Module, path: str | Path) -> Path:
    """Write the adapters (not the frozen base) of ``model`` to the folder ``path``; returns the folder."""
    if any(layer.merged for _, layer in adapter_layers(model)):
        raise ValueError("model is merged; call aurora.unmerge(model) before saving adapters")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    config = _config_of(model)
    (folder / CONFIG_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, "config": config.to_dict()}, indent=2))
    save_file(adapter_state_dict(model), str(folder / WEIGHTS_FILE))
    return folder


def load_adapters(model: nn.Module, path: str | Path) -> nn.Module:
    """Load adapters saved by :func:`save_adapters` into ``model`` (adding them first if it has none)."""
    folder = Path(path)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ValueError(f"path must be a folder written by aurora.save_adapters (with {CONFIG_FILE} and {WEIGHTS_FILE}); got {folder}")
    saved = json.loads((folder / CONFIG_FILE).read_text())
    config = AdapterConfig.from_dict(saved["config"])
    if not adapter_layers(model):
        add_adapters(model, config)
    elif _config_of(model).to_dict() != config.to_dict():
        raise ValueError("model already has adapters with a different config; load into a fresh model")
    if any(layer.merged for _, layer in adapter_layers(model)):
        raise ValueError("model is merged; call aurora.unmerge(model) before loading adapters")
    state = load_file(str(folder / WEIGHTS_FILE))
    expected = adapter_state_dict(model)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"saved adapters do not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=False)
    return model
