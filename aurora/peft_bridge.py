"""Hugging Face PEFT interop: write any rank-r merge as a PEFT LoRA adapter folder, read PEFT LoRA/DoRA adapters.

AuroRA's merged update ``s · B σ(A)`` (and the linearized and least-squares merges) is itself rank r, so it *is*
a LoRA adapter: :func:`export_peft` writes each layer's :meth:`~aurora.layers.AdapterLayer.peft_tensors` —
``(B', A')`` with ``B' A' = ΔW`` and ``lora_alpha = r`` (scaling 1), ``lora_bias=True`` when the strategy has a
``Δb``; DoRA as PEFT DoRA (``use_dora=True``). ``peft.PeftModel.from_pretrained(base, path)`` then computes
``aurora.merge(model, strategy)``'s outputs. LoRAN's ``Sinter(s · B A)`` is not low-rank and is refused
(use :func:`aurora.merge_and_unload`). Files are safetensors and JSON only; PEFT itself is not needed to write or read them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .config import AdapterConfig, require_choice
from .io import _write_atomically
from .inject import CONFIG_ATTRIBUTE, adapter_layers, add_adapters, linear_module_names, module_name_matches
from .layers import MERGE_STRATEGIES, is_conv1d
from .merge import checked_calibration

__all__ = ["export_peft", "import_peft", "PEFT_CONFIG_FILE", "PEFT_WEIGHTS_FILE"]

PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."  # PEFT's key prefix for a PeftModel around the base model
LORA_KEYS = ("lora_A.weight", "lora_B.weight", "lora_B.bias", "lora_magnitude_vector")


@torch.no_grad()
def export_peft(
    model: nn.Module, path: str | Path, strategy: str = "static", calibration: Mapping[str, torch.Tensor] | None = None
) -> Path:
    """Write ``model``'s adapters as a PEFT LoRA adapter folder (``adapter_config.json``, ``adapter_model.safetensors``).

    ``PeftModel.from_pretrained(base, path)`` reproduces ``aurora.merge(model, strategy, calibration)``; ``calibration``
    is needed for ``"least_squares"``. ``modules_to_save`` heads are written as PEFT writes them. Everything is
    computed and checked before a file is written. Returns the folder.
    """
    require_choice("strategy", strategy, MERGE_STRATEGIES)
    layers = adapter_layers(model)
    config: AdapterConfig | None = getattr(model, CONFIG_ATTRIBUTE, None)
    if not layers or config is None:
        raise ValueError("model has no adapters; call aurora.add_adapters(model, config) first")
    if any(layer.merged for _, layer in layers):
        raise ValueError("model is merged; call aurora.unmerge(model) before export_peft (it exports the unmerged adapters' merge)")
    calibration = checked_calibration(layers, calibration)
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in layers:
        inputs = calibration.get(name)
        if strategy == "least_squares" and inputs is None and not layer.exact_merge:
            raise ValueError(f"strategy='least_squares' needs calibration inputs for layer {name!r}")
        try:
            layer_tensors = layer.peft_tensors(strategy, inputs)
        except ValueError as error:
            raise ValueError(f"layer {name!r}: {error}") from None
        for key, tensor in layer_tensors.items():
            tensors[f"{PREFIX}{name}.{key}"] = tensor.detach().float().contiguous().cpu()
    lora_bias = any(key.endswith(".lora_B.bias") for key in tensors)
    if lora_bias:  # PEFT gives every layer a bias then; the exact layers' is zero
        for name, layer in layers:
            tensors.setdefault(f"{PREFIX}{name}.lora_B.bias", torch.zeros(layer.out_features))
    use_dora = any(key.endswith(".lora_magnitude_vector") for key in tensors)
    head_names = [n for n, _ in model.named_modules() if any(module_name_matches(n, h) for h in config.modules_to_save)]
    for head in head_names:
        for key, tensor in model.get_submodule(head).state_dict().items():
            tensors[f"{PREFIX}{head}.{key}"] = tensor.detach().contiguous().cpu()
    if bad := sorted(k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()):
        raise ValueError(f"exported tensors {bad[:5]} hold inf or NaN; nothing was written")
    rank = config.rank
    peft_config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": getattr(getattr(model, "config", None), "_name_or_path", None) or None,
        "r": rank,
        "lora_alpha": rank,  # scaling 1: the factors carry s = α / r
        "lora_dropout": 0.0,
        "target_modules": [name for name, _ in layers],
        "modules_to_save": list(config.modules_to_save) or None,
        "fan_in_fan_out": any(layer.fan_in_fan_out for _, layer in layers),
        "bias": "none",
        "lora_bias": lora_bias,
        "use_dora": use_dora,
        "use_rslora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "rank_pattern": {},
        "alpha_pattern": {},
        "aurora": {"method": config.method, "strategy": strategy},
    }
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path must be a folder for the PEFT adapter; {folder} is a file")
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomically(folder / PEFT_WEIGHTS_FILE, save_safetensors(tensors))
    _write_atomically(folder / PEFT_CONFIG_FILE, json.dumps(peft_config, indent=2).encode())
    return folder


def _read_peft_folder(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    config_file, weights_file = folder / PEFT_CONFIG_FILE, folder / PEFT_WEIGHTS_FILE
    if not config_file.is_file() or not weights_file.is_file():
        raise ValueError(
            f"path must be a PEFT adapter folder with {PEFT_CONFIG_FILE} and {PEFT_WEIGHTS_FILE} "
            f"(pickled adapter_model.bin files are never read); got {folder}"
        )
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} must hold a JSON object")
    try:
        state = load_safetensors(weights_file.read_bytes())
    except (SafetensorError, ValueError, OSError) as error:
        raise ValueError(f"{weights_file} is not a readable safetensors file: {error}") from None
    return config, state


def _peft_scaling_alpha(config: dict[str, Any], config_file: Path) -> tuple[int, float]:
    """``(r, α)`` such that aurora's ``α / r`` equals PEFT's scaling (``lora_alpha / r``, or ``/ √r`` with rsLoRA)."""
    rank, alpha = config.get("r"), config.get("lora_alpha")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{config_file}: r must be an integer >= 1, got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"{config_file}: lora_alpha must be a finite number > 0, got {alpha!r}")
    return rank, float(alpha) * (math.sqrt(rank) if config.get("use_rslora") else 1.0)


def import_peft(model: nn.Module, path: str | Path) -> nn.Module:
    """Add a PEFT LoRA (or DoRA, ``use_dora=True``) adapter saved by ``save_pretrained`` to a model without adapters.

    The model then computes what ``PeftModel.from_pretrained(model, path)`` computes, with aurora's ``lora`` or
    ``dora`` layers (and the saved ``modules_to_save`` heads). Everything is checked first; on ``ValueError`` the
    model is unchanged. Options aurora has no equivalent for (``lora_bias``, ``rank_pattern``, ``alpha_pattern``,
    other PEFT types) are refused.
    """
    folder = Path(path)
    config_file = folder / PEFT_CONFIG_FILE
    peft_config, state = _read_peft_folder(folder)
    if adapter_layers(model):
        raise ValueError("model already has adapters; import a PEFT adapter into a fresh base model")
    if peft_config.get("peft_type") != "LORA":
        raise ValueError(f"{config_file}: peft_type must be 'LORA' (LoRA or DoRA adapters), got {peft_config.get('peft_type')!r}")
    for option in ("lora_bias", "rank_pattern", "alpha_pattern"):
        if peft_config.get(option):
            raise ValueError(f"{config_file}: {option}={peft_config[option]!r} has no aurora equivalent; only plain LoRA/DoRA adapters import")
    rank, alpha = _peft_scaling_alpha(peft_config, config_file)
    use_dora = bool(peft_config.get("use_dora"))
    dropout = peft_config.get("lora_dropout", 0.0) or 0.0
    if not state:
        raise ValueError(f"{folder / PEFT_WEIGHTS_FILE} holds no tensors")
    if outside := sorted(k for k in state if not k.startswith(PREFIX)):
        raise ValueError(f"{folder / PEFT_WEIGHTS_FILE}: keys {outside[:3]} lack PEFT's {PREFIX!r} prefix")
    if bad := sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()):
        raise ValueError(f"{folder / PEFT_WEIGHTS_FILE}: tensors {bad[:5]} hold inf or NaN; non-finite adapters are refused")
    layers: dict[str, dict[str, torch.Tensor]] = {}
    heads: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = key[len(PREFIX):]
        suffix = next((s for s in LORA_KEYS if name.endswith("." + s)), None)
        if suffix is None:
            heads[name] = tensor
        else:
            layers.setdefault(name[: -len(suffix) - 1], {})[suffix] = tensor
    if not layers:
        raise ValueError(f"{folder / PEFT_WEIGHTS_FILE} has no lora_A/lora_B tensors")
    adaptable = set(linear_module_names(model))
    expected = {"lora_A.weight", "lora_B.weight"} | ({"lora_magnitude_vector"} if use_dora else set())
    for name, tensors in layers.items():
        if name not in adaptable:
            raise ValueError(f"{folder / PEFT_WEIGHTS_FILE}: {name!r} is not an nn.Linear or Conv1D of {type(model).__name__}")
        if set(tensors) != expected:
            raise ValueError(f"{folder / PEFT_WEIGHTS_FILE}: {name!r} has {sorted(tensors)}, a {'DoRA' if use_dora else 'LoRA'} layer needs {sorted(expected)}")
        weight = model.get_submodule(name).weight
        out_features, in_features = (weight.shape[1], weight.shape[0]) if is_conv1d(model.get_submodule(name)) else weight.shape
        shapes = {"lora_A.weight": (rank, in_features), "lora_B.weight": (out_features, rank), "lora_magnitude_vector": (out_features,)}
        for suffix, tensor in tensors.items():
            if tuple(tensor.shape) != shapes[suffix] or not tensor.is_floating_point():
                raise ValueError(f"{folder / PEFT_WEIGHTS_FILE}: {name}.{suffix} is {tuple(tensor.shape)} {tensor.dtype}, this model needs {shapes[suffix]} floats")
    model_state = model.state_dict()
    for key, tensor in heads.items():
        if key not in model_state or model_state[key].shape != tensor.shape:
            raise ValueError(f"{folder / PEFT_WEIGHTS_FILE}: {key!r} is neither a LoRA tensor nor a tensor of the model with shape {tuple(tensor.shape)}")
    head_modules = sorted({key.rpartition(".")[0] for key in heads})
    try:
        config = AdapterConfig(
            method="dora" if use_dora else "lora", rank=rank, alpha=alpha, dropout=float(dropout),
            target_modules=sorted(layers), modules_to_save=head_modules,
        )
    except ValueError as error:
        raise ValueError(f"{config_file}: {error}") from None
    with torch.random.fork_rng(devices=[]):
        add_adapters(model, config)  # checks targets and heads before it changes anything
    with torch.no_grad():
        for name, tensors in layers.items():
            layer = model.get_submodule(name)
            layer.lora_A.copy_(tensors["lora_A.weight"])
            layer.lora_B.copy_(tensors["lora_B.weight"])
            if use_dora:
                layer.lora_magnitude.copy_(tensors["lora_magnitude_vector"])
        for key, tensor in heads.items():
            model_state[key].copy_(tensor)
    return model
