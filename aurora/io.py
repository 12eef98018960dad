"""Saving and loading adapters: ``adapter_config.json`` + ``adapters.safetensors`` in one folder.

Loading validates everything (config, format version, the weights' checksum, key set, shapes, dtypes,
finiteness) before it changes the model, so a failed load leaves the model exactly as it was. Saving
writes each file to a temporary name and renames it into place, the config (which records the
weights' SHA-256) first: an interrupted save leaves either the old folder or one that refuses to load.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .config import AdapterConfig
from .inject import CONFIG_ATTRIBUTE, module_name_matches, adapter_layers, add_adapters
from .spline import uniform_knots

__all__ = ["save_adapters", "load_adapters", "adapter_state_dict"]

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapters.safetensors"
FORMAT_VERSION = 1
KNOWN_FORMAT_VERSIONS = (1,)


def _config_of(model: nn.Module) -> AdapterConfig:
    config = getattr(model, CONFIG_ATTRIBUTE, None)
    if config is None or not adapter_layers(model):
        raise ValueError("model has no adapters; call aurora.add_adapters(model, config) first")
    return config


def _adapter_entries(model: nn.Module) -> dict[str, torch.Tensor]:
    """The entries of ``model.state_dict()`` that belong to adapters or ``modules_to_save`` heads (not copied)."""
    config = _config_of(model)
    prefixes = [name + "." for name, _ in adapter_layers(model)]
    heads = [n + "." for n, _ in model.named_modules() if any(module_name_matches(n, h) for h in config.modules_to_save)]
    state = {}
    for key, value in model.state_dict().items():
        in_adapter = any(key.startswith(p) and not key.startswith(p + "base_layer.") for p in prefixes)
        if in_adapter or any(key.startswith(h) for h in heads):
            state[key] = value
    return state


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter parameters and buffers plus the ``modules_to_save`` heads, keyed as in ``model.state_dict()``."""
    return {key: value.detach().contiguous().cpu() for key, value in _adapter_entries(model).items()}


def _non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    return sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save_adapters(model: nn.Module, path: str | Path) -> Path:
    """Write the adapters (not the frozen base) of ``model`` to the folder ``path``; returns the folder."""
    if any(layer.merged for _, layer in adapter_layers(model)):
        raise ValueError("model is merged; call aurora.unmerge(model) before saving adapters")
    config = _config_of(model)
    state = adapter_state_dict(model)
    if bad := _non_finite(state):
        raise ValueError(f"adapter tensors {bad[:5]} hold inf or NaN; refusing to save adapters that cannot be loaded")
    weights = save_safetensors(state)
    header = {"format_version": FORMAT_VERSION, "weights_sha256": hashlib.sha256(weights).hexdigest(), "config": config.to_dict()}
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path must be a folder for the adapters; {folder} is a file")
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomically(folder / CONFIG_FILE, json.dumps(header, indent=2).encode())  # first: it vouches for the weights
    _write_atomically(folder / WEIGHTS_FILE, weights)
    return folder


def _read_folder(folder: Path) -> tuple[AdapterConfig, dict[str, torch.Tensor]]:
    """The config and tensors saved in ``folder``, checked on their own (not yet against a model)."""
    config_file, weights_file = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_file.is_file() or not weights_file.is_file():
        raise ValueError(f"path must be a folder written by aurora.save_adapters (with {CONFIG_FILE} and {WEIGHTS_FILE}); got {folder}")
    try:
        saved = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise ValueError(f"{config_file} must be a JSON object with 'format_version' and 'config'")
    if saved.get("format_version") not in KNOWN_FORMAT_VERSIONS:
        raise ValueError(
            f"{config_file} has format_version {saved.get('format_version')!r}; this version of aurora reads {list(KNOWN_FORMAT_VERSIONS)}"
        )
    try:
        config = AdapterConfig.from_dict(saved["config"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{config_file}: {error}") from None
    weights = weights_file.read_bytes()
    digest = saved.get("weights_sha256")
    if digest is not None and digest != hashlib.sha256(weights).hexdigest():
        raise ValueError(f"{weights_file} does not match the checksum in {config_file} (an interrupted or mixed save?)")
    try:
        state = load_safetensors(weights)
    except (SafetensorError, ValueError, OSError) as error:
        raise ValueError(f"{weights_file} is not a readable safetensors file: {error}") from None
    if bad := _non_finite(state):
        raise ValueError(f"{weights_file}: tensors {bad[:5]} hold inf or NaN; non-finite adapters are refused")
    return config, state


def _expected_state(model: nn.Module, config: AdapterConfig) -> dict[str, torch.Tensor]:
    """The adapter state ``model`` has, or would have after ``add_adapters(model, config)``: for a model without
    adapters, found on a weightless (meta-device) copy of it, so nothing about ``model`` or the RNGs changes."""
    if adapter_layers(model):
        return _adapter_entries(model)
    memo = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(meta, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
    skeleton = copy.deepcopy(model, memo)
    with torch.random.fork_rng(devices=[]):
        add_adapters(skeleton, config)
    return _adapter_entries(skeleton)


def load_adapters(model: nn.Module, path: str | Path) -> nn.Module:
    """Load adapters saved by :func:`save_adapters` into ``model`` (adding them first if it has none).

    Everything is checked first; on any ``ValueError`` the model is unchanged.
    """
    folder = Path(path)
    config, state = _read_folder(folder)
    if adapter_layers(model):
        if _config_of(model).to_dict() != config.to_dict():
            raise ValueError("model already has adapters with a different config; load into a fresh model")
        if any(layer.merged for _, layer in adapter_layers(model)):
            raise ValueError("model is merged; call aurora.unmerge(model) before loading adapters")
    expected = _expected_state(model, config)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"saved adapters do not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape or state[key].dtype != tensor.dtype:
            raise ValueError(
                f"{folder / WEIGHTS_FILE}: {key} is {tuple(state[key].shape)} {state[key].dtype}, "
                f"this model needs {tuple(tensor.shape)} {tensor.dtype}"
            )
        if key.endswith(".anl.knots"):
            knots = uniform_knots(config.grid_size, config.spline_order, config.grid_range, tensor.dtype)
            if not torch.allclose(state[key], knots):
                raise ValueError(f"{folder / WEIGHTS_FILE}: {key} differs from the knots of grid_range={config.grid_range}")
    # everything checked: now change the model
    if not adapter_layers(model):
        add_adapters(model, config)
    model.load_state_dict(state, strict=False)
    return model
