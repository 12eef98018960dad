"""Fault suite: hand-edited, truncated, foreign and malicious files, and bad option values.

Each case checks the house rules: bad input raises a ``ValueError`` that names the option or file and
what is wrong; a failing operation leaves the model (and the files) exactly as they were; no file the
package reads runs code (a pickle bomb would write a marker file if it were ever unpickled).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import TensorDataset

import aurora
import aurora.io
import aurora.train
from aurora.config import AdapterConfig
from aurora.nonlinear import AdaptiveNonlinearLayer
from aurora.spline import MAX_POLYNOMIAL_MAP_BYTES, max_grid_size, polynomial_map_bytes
from aurora.train import CHECKPOINT_FILE, TrainConfig, auto_mixed_precision, fit, resolve_device
from conftest import TinyNet, randomize_adapters

PACKAGE = Path(aurora.__file__).parent
INF, NAN = math.inf, math.nan


# ---------------------------------------------------------------------------------------------
# a pickle bomb: unpickling it creates MARKER (it never may)
# ---------------------------------------------------------------------------------------------
class Bomb:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code from a file ran"))


def assert_never_ran(marker: Path) -> None:
    assert not marker.exists(), "a file the package read executed code"


# ---------------------------------------------------------------------------------------------
# 1. options: every bad value raises ValueError naming the option
# ---------------------------------------------------------------------------------------------
BAD_ADAPTER_OPTIONS = [
    ("alpha", INF), ("alpha", -INF), ("alpha", NAN), ("alpha", 0), ("alpha", -1.0), ("alpha", True), ("alpha", "4"),
    ("rank", True), ("rank", 0), ("rank", 2.0), ("rank", "2"), ("rank", None),
    ("grid_size", True), ("grid_size", 0), ("grid_size", 5.0), ("grid_size", 10**6), ("grid_size", max_grid_size(3) + 1),
    ("spline_order", True), ("spline_order", -1), ("spline_order", 3.0), ("spline_order", 10**4),
    ("grid_range", (-INF, 1.0)), ("grid_range", (NAN, 1.0)), ("grid_range", (0.0, INF)), ("grid_range", (-1.0, NAN)),
    ("grid_range", (-1.0, 0.0, 1.0)), ("grid_range", (1.0,)), ("grid_range", ()), ("grid_range", "ab"), ("grid_range", (1.0, -1.0)),
    ("grid_range", (1.0, 1.0)), ("grid_range", (True, 2.0)), ("grid_range", None), ("grid_range", 5), ("grid_range", ("-1", "1")),
    ("spline_init_scale", INF), ("spline_init_scale", NAN), ("spline_init_scale", -0.1), ("spline_init_scale", "0.1"),
    ("sinter_amplitude", INF), ("sinter_amplitude", NAN), ("sinter_amplitude", "5e-5"),
    ("sinter_frequency", INF), ("sinter_frequency", -INF), ("sinter_frequency", NAN),
    ("leaky_relu_slope", NAN), ("leaky_relu_slope", INF), ("leaky_relu_slope", -0.1),
    ("dropout", NAN), ("dropout", INF), ("dropout", -0.1), ("dropout", 1.0), ("dropout", True), ("dropout", None),
    ("modules_to_save", "classifier"), ("modules_to_save", ["classifier", ""]), ("modules_to_save", [3]), ("modules_to_save", None),
    ("target_modules", "("), ("target_modules", "[a-"), ("target_modules", "query)"), ("target_modules", []), ("target_modules", ""),
    ("target_modules", [""]), ("target_modules", [1]), ("target_modules", None), ("target_modules", 3),
    ("fixed_nonlinearity", "yes"), ("fixed_nonlinearity", 1), ("learnable_nonlinearity", None),
    ("method", "no-such-method"), ("method", None), ("activation", "relu"), ("spline_mode", 1), ("form", "hybrid"), ("mixer_init", "zeros"),
    ("self_projection_init", "orthogonal"),
]


@pytest.mark.parametrize("option,value", BAD_ADAPTER_OPTIONS, ids=[f"{o}={v!r}" for o, v in BAD_ADAPTER_OPTIONS])
def test_bad_adapter_option_raises_value_error_naming_it(option, value) -> None:
    with pytest.raises(ValueError, match=re.escape(option)):
        AdapterConfig(**{option: value})


def test_bare_string_modules_to_save_is_not_split_into_characters() -> None:
    with pytest.raises(ValueError, match="modules_to_save must be a list"):
        AdapterConfig(modules_to_save="classifier")


def test_a_bad_regex_is_a_value_error_not_re_error() -> None:
    with pytest.raises(ValueError, match="not a valid regular expression") as raised:
        AdapterConfig(target_modules="query(")
    assert not isinstance(raised.value, re.error)


@pytest.mark.parametrize("values", [
    ["method", "lora"],  # not a dict
    {"method": "lora", "ranks": 2},  # unknown option
    {"grid_range": 3},  # wrong type (was a raw TypeError)
    {"grid_range": [0, 1, 2]},  # silently truncated before
    {"alpha": None},
], ids=["list", "unknown", "grid_range-int", "grid_range-three", "alpha-None"])
def test_config_from_dict_refuses_bad_input(values) -> None:
    with pytest.raises(ValueError):
        AdapterConfig.from_dict(values)


def test_grid_limit_is_stated_and_exact() -> None:
    largest = max_grid_size(3)
    assert polynomial_map_bytes(largest, 3) <= MAX_POLYNOMIAL_MAP_BYTES < polynomial_map_bytes(largest + 1, 3)
    AdapterConfig(grid_size=largest)
    with pytest.raises(ValueError, match=rf"grid_size must be <= {largest} at spline_order=3"):
        AdapterConfig(grid_size=largest + 1)
    help_text = next(f for f in AdapterConfig.__dataclass_fields__.values() if f.name == "grid_size").metadata["help"]
    assert str(largest) in help_text and "MiB" in help_text
    with pytest.raises(ValueError, match="grid_size"):
        AdaptiveNonlinearLayer(2, grid_size=largest + 1)


@pytest.mark.parametrize("options", [
    dict(grid_range=(0.0, INF)), dict(grid_range=(NAN, 1.0)), dict(grid_range=(-1.0, 0.0, 1.0)), dict(leaky_relu_slope=NAN),
    dict(spline_init_scale=INF), dict(grid_size=0), dict(spline_order=-1), dict(spline_mode="tensor"),
], ids=["range-inf", "range-nan", "range-three", "slope-nan", "scale-inf", "grid-0", "order-negative", "mode"])
def test_the_anl_built_directly_refuses_bad_values(options) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        AdaptiveNonlinearLayer(2, **options)


def test_every_anl_of_a_model_shares_one_polynomial_map() -> None:
    config = AdapterConfig(method="aurora", rank=2, grid_size=64, target_modules=["query", "value"])
    model = aurora.add_adapters(TinyNet(), config)
    maps = [layer.anl.spline_polynomial_map for _, layer in aurora.adapter_layers(model)]
    assert len({m.data_ptr() for m in maps}) == 1
    x = torch.randn(3, 12)
    before = model(x)
    model.to(torch.float64)  # a move re-shares the map in its new dtype
    maps = [layer.anl.spline_polynomial_map for _, layer in aurora.adapter_layers(model)]
    assert len({m.data_ptr() for m in maps}) == 1 and maps[0].dtype == torch.float64
    torch.testing.assert_close(model(x.double()).float(), before, rtol=1e-5, atol=1e-6)


BAD_TRAIN_OPTIONS = [
    ("lr", INF), ("lr", NAN), ("lr", 0.0), ("lr", None), ("lr", True), ("head_lr", INF), ("head_lr", -1e-3),
    ("weight_decay", NAN), ("weight_decay", -0.1), ("head_weight_decay", INF),
    ("warmup_ratio", NAN), ("warmup_ratio", 1.0), ("warmup_ratio", -0.1),
    ("max_grad_norm", INF), ("max_grad_norm", NAN), ("max_grad_norm", 0.0),
    ("epochs", True), ("epochs", 0), ("epochs", 2.0), ("batch_size", True), ("batch_size", 0), ("seed", True), ("seed", -1), ("seed", 1.5),
    ("device", "gpu"), ("device", "cuda:"), ("device", "cuda:x"), ("device", "CPU"), ("device", ""), ("device", None), ("device", 0),
    ("device", "cuda:0 "), ("mixed_precision", "fp8"), ("metric", "auc"), ("resume", 1), ("progress", "no"),
]


@pytest.mark.parametrize("option,value", BAD_TRAIN_OPTIONS, ids=[f"{o}={v!r}" for o, v in BAD_TRAIN_OPTIONS])
def test_bad_train_option_raises_value_error_naming_it(option, value) -> None:
    with pytest.raises(ValueError, match=re.escape(option)):
        TrainConfig(**{option: value})


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_valid_devices_are_accepted(device) -> None:
    assert TrainConfig(device=device).device == device


# ---------------------------------------------------------------------------------------------
# 2. devices and mixed precision (issue 12): bf16 only with native support
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("capability,expected", [((6, 0), "fp16"), ((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((8, 9), "bf16"), ((9, 0), "bf16")],
                         ids=["P100", "V100", "T4", "A100", "L4", "H100"])
def test_auto_mixed_precision_needs_native_bf16(monkeypatch, capability, expected) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulated bf16 says True on V100/T4 too
    assert auto_mixed_precision("cuda") == expected
    dtype = aurora.train._autocast_dtype(TrainConfig(device="cuda"), torch.device("cuda"))
    assert dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[expected]
    assert auto_mixed_precision("cpu") == "no"


def test_auto_device_follows_cuda_availability(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and auto_mixed_precision("cuda") == "no"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"


def test_evaluate_takes_auto_and_refuses_unknown_devices(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = [(torch.randn(4, 8), torch.tensor([0, 1, 2, 0]))]
    model = toy_model()
    assert aurora.train.evaluate(model, data, device="auto")[0] > 0  # without CUDA: the CPU
    with pytest.raises(ValueError, match="device must be one of"):
        aurora.train.evaluate(model, data, device="gpu")


# ---------------------------------------------------------------------------------------------
# 3. the package source never runs code from files
# ---------------------------------------------------------------------------------------------
FORBIDDEN = {
    "weights_only=False": r"weights_only\s*=\s*False",
    "pickle": r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|marshal|shelve)\b|\b(c?pickle|dill|cloudpickle|marshal|shelve)\.\w+\(|pickle_module",
    "torch.load without weights_only=True": r"torch\.load\((?![^)]*weights_only\s*=\s*True)",
    "eval(": r"(?<![\w.])eval\s*\(",
    "exec(": r"(?<![\w.])exec\s*\(",
    "joblib.load": r"joblib\.load\(",
    "numpy allow_pickle=True": r"allow_pickle\s*=\s*True",
    "yaml.load (unsafe)": r"yaml\.(unsafe_)?load\(",
    "trust_remote_code=True": r"trust_remote_code\s*=\s*True",
}


@pytest.mark.parametrize("pattern", list(FORBIDDEN.values()), ids=list(FORBIDDEN))
def test_package_source_has_no_code_executing_loads(pattern) -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 10
    hits = [f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
            for path in sources for number, line in enumerate(path.read_text().splitlines(), 1) if re.search(pattern, line)]
    assert not hits, hits


def test_the_forbidden_patterns_do_match_what_they_forbid() -> None:
    """The grep test can fail: each pattern catches the call it is meant to catch (and not model.eval())."""
    samples = {
        "weights_only=False": "torch.load(p, weights_only=False)", "pickle": "import pickle",
        "torch.load without weights_only=True": "state = torch.load(path, map_location='cpu')",
        "eval(": "value = eval(text)", "pickle (use)": "state = pickle.loads(data)", "exec(": "exec(code)", "joblib.load": "joblib.load(f)",
        "numpy allow_pickle=True": "np.load(f, allow_pickle=True)", "yaml.load (unsafe)": "yaml.load(f)",
        "trust_remote_code=True": "from_pretrained(x, trust_remote_code=True)",
    }
    for name, pattern in FORBIDDEN.items():
        assert re.search(pattern, samples[name]), name
    assert re.search(FORBIDDEN["pickle"], samples["pickle (use)"]) and re.search(FORBIDDEN["pickle"], "    from pickle import loads")
    assert not re.search(FORBIDDEN["eval("], "model.eval()")
    assert not re.search(FORBIDDEN["torch.load without weights_only=True"], "torch.load(p, weights_only=True)")


# ---------------------------------------------------------------------------------------------
# 4. resuming training from damaged, foreign, malicious or mismatched checkpoints
# ---------------------------------------------------------------------------------------------
class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.classifier = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.body(x)))


def toy_model(method: str = "aurora") -> nn.Module:
    torch.manual_seed(1)
    config = AdapterConfig(method=method, rank=2, target_modules=["body"], modules_to_save=["classifier"])
    return aurora.add_adapters(Toy(), config)


def toy_data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(48, 8, generator=generator)
    return TensorDataset(x, (x[:, :3]).argmax(-1))


TOY_CONFIG = dict(epochs=3, batch_size=16, lr=1e-2, progress=False)


class Interrupt(Exception):
    pass


class StopAfterFirstEpoch:
    def on_epoch_end(self, epoch: int, model: nn.Module) -> None:
        if epoch == 1:
            raise Interrupt


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good_checkpoint")
    with pytest.raises(Interrupt):
        fit(toy_model(), toy_data(), toy_data(), TrainConfig(checkpoint_dir=folder, **TOY_CONFIG), callbacks=[StopAfterFirstEpoch()])
    return folder / CHECKPOINT_FILE


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), framework="pt") as file:
        metadata = json.loads(file.metadata()["aurora_checkpoint"])
        return {k: file.get_tensor(k) for k in file.keys()}, metadata


def write_checkpoint(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    save_file(tensors, str(path), metadata={"aurora_checkpoint": json.dumps(metadata)})


def edit(change: Callable[[dict[str, torch.Tensor], dict], None]) -> Callable[[Path, Path, Path], None]:
    def corrupt(good: Path, target: Path, marker: Path) -> None:
        tensors, metadata = read_checkpoint(good)
        change(tensors, metadata)
        write_checkpoint(target, tensors, metadata)
    return corrupt


def trainable_key(tensors: dict[str, torch.Tensor], contains: str) -> str:
    return next(k for k in tensors if k.startswith("payload.trainable.") and contains in k)


def _set(mapping: dict, key: str, value) -> None:
    mapping[key] = value


def _pickle_bomb(good: Path, target: Path, marker: Path) -> None:
    target.write_bytes(pickle.dumps(Bomb(marker)))


def _torch_save_bomb(good: Path, target: Path, marker: Path) -> None:
    torch.save({"epoch": 1, "payload": Bomb(marker)}, target)


def _legacy_pickle_checkpoint(good: Path, target: Path, marker: Path) -> None:
    target.unlink()
    torch.save({"epoch": 1, "config": Bomb(marker)}, target.with_name("checkpoint.pt"))


def _truncate(fraction: float) -> Callable[[Path, Path, Path], None]:
    def corrupt(good: Path, target: Path, marker: Path) -> None:
        data = good.read_bytes()
        target.write_bytes(data[: int(len(data) * fraction)])
    return corrupt


def _flip_header_byte(good: Path, target: Path, marker: Path) -> None:
    data = bytearray(good.read_bytes())
    data[20] ^= 0xFF
    target.write_bytes(bytes(data))


def _a_directory(good: Path, target: Path, marker: Path) -> None:
    target.unlink()
    target.mkdir()


def _foreign_safetensors(good: Path, target: Path, marker: Path) -> None:
    save_file({"weight": torch.zeros(3)}, str(target))


def _other_format(good: Path, target: Path, marker: Path) -> None:
    tensors, _ = read_checkpoint(good)
    save_file(tensors, str(target), metadata={"aurora_checkpoint": json.dumps({"format": "something else", "format_version": 1})})


def _metadata_not_json(good: Path, target: Path, marker: Path) -> None:
    tensors, _ = read_checkpoint(good)
    save_file(tensors, str(target), metadata={"aurora_checkpoint": "{not json"})


def _wrong_shape(tensors, metadata) -> None:
    key = trainable_key(tensors, "lora_A")
    tensors[key] = torch.zeros(3, 8)


def _nan_weight(tensors, metadata) -> None:
    key = trainable_key(tensors, "lora_B")
    tensors[key] = torch.full_like(tensors[key], NAN)


def _inf_head(tensors, metadata) -> None:
    key = trainable_key(tensors, "classifier.weight")
    tensors[key] = torch.full_like(tensors[key], INF)


def _double_weight(tensors, metadata) -> None:
    key = trainable_key(tensors, "lora_A")
    tensors[key] = tensors[key].double()


def _drop_trainable(tensors, metadata) -> None:
    key = trainable_key(tensors, "classifier.bias")
    del tensors[key]
    del metadata["payload"]["dict"]["trainable"]["dict"]["classifier.bias"]


def _extra_tensor(tensors, metadata) -> None:
    tensors["payload.smuggled"] = torch.zeros(2)


def _missing_tensor(tensors, metadata) -> None:
    del tensors[trainable_key(tensors, "lora_A")]


def _wrong_rng(tensors, metadata) -> None:
    tensors["payload.rng.torch"] = torch.zeros(7, dtype=torch.uint8)


def _wrong_optimizer_moment(tensors, metadata) -> None:
    key = next(k for k in tensors if k.startswith("payload.optimizer.") and k.endswith("exp_avg"))
    tensors[key] = torch.zeros(5)


def _dropped_param_group(tensors, metadata) -> None:
    metadata["payload"]["dict"]["optimizer"]["dict"]["param_groups"].pop()


def _epoch_beyond_history(tensors, metadata) -> None:
    metadata["payload"]["dict"]["epoch"] = 2


def _python_rng_damaged(tensors, metadata) -> None:
    metadata["payload"]["dict"]["rng"]["dict"]["python"][1] = [1, 2, 3]


def _unknown_marker(tensors, metadata) -> None:
    metadata["payload"]["dict"]["history"] = {"object": "os.system"}


def _history_with_unknown_field(tensors, metadata) -> None:
    metadata["payload"]["dict"]["history"][0]["dict"]["evil"] = 1


def _missing_entry(tensors, metadata) -> None:
    del metadata["payload"]["dict"]["scheduler"]


def _config_changed(tensors, metadata) -> None:
    metadata["payload"]["dict"]["config"]["dict"]["lr"] = 0.5


CHECKPOINT_FAULTS = {
    "empty file": lambda good, target, marker: target.write_bytes(b""),
    "random bytes": lambda good, target, marker: target.write_bytes(os.urandom(4096)),
    "truncated to half": _truncate(0.5),
    "only the length prefix": lambda good, target, marker: target.write_bytes(good.read_bytes()[:8]),
    "header claims 2**62 bytes": lambda good, target, marker: target.write_bytes((2**62).to_bytes(8, "little") + b"{}"),
    "header a JSON list": lambda good, target, marker: target.write_bytes((2).to_bytes(8, "little") + b"[]"),
    "truncated by one byte": _truncate(0.9999),
    "header byte flipped": _flip_header_byte,
    "pickle bomb": _pickle_bomb,
    "torch.save bomb": _torch_save_bomb,
    "legacy checkpoint.pt bomb": _legacy_pickle_checkpoint,
    "a directory": _a_directory,
    "foreign safetensors": _foreign_safetensors,
    "other format": _other_format,
    "metadata not json": _metadata_not_json,
    "format_version 99": edit(lambda t, m: _set(m, "format_version", 99)),
    "format_version missing": edit(lambda t, m: m.pop("format_version")),
    "config changed": edit(_config_changed),
    "weight of the wrong shape": edit(_wrong_shape),
    "NaN weight": edit(_nan_weight),
    "inf head": edit(_inf_head),
    "float64 weight": edit(_double_weight),
    "weight missing from both": edit(_drop_trainable),
    "tensor not in metadata": edit(_extra_tensor),
    "metadata names a missing tensor": edit(_missing_tensor),
    "torch RNG state damaged": edit(_wrong_rng),
    "optimizer moment of the wrong shape": edit(_wrong_optimizer_moment),
    "optimizer group missing": edit(_dropped_param_group),
    "epoch beyond history": edit(_epoch_beyond_history),
    "python RNG state damaged": edit(_python_rng_damaged),
    "unknown metadata entry": edit(_unknown_marker),
    "history record with an unknown field": edit(_history_with_unknown_field),
    "scheduler entry missing": edit(_missing_entry),
}


@pytest.mark.parametrize("fault", list(CHECKPOINT_FAULTS), ids=list(CHECKPOINT_FAULTS))
def test_resume_refuses_a_bad_checkpoint_and_changes_nothing(good_checkpoint: Path, tmp_path: Path, fault: str) -> None:
    folder, marker = tmp_path / "run", tmp_path / "MARKER"
    folder.mkdir()
    target = folder / CHECKPOINT_FILE
    target.write_bytes(good_checkpoint.read_bytes())
    CHECKPOINT_FAULTS[fault](good_checkpoint, target, marker)
    model = toy_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=re.escape(str(folder))):
        fit(model, toy_data(), toy_data(), TrainConfig(checkpoint_dir=folder, resume=True, **TOY_CONFIG))
    assert_never_ran(marker)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_refuses_a_checkpoint_of_another_model(good_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_FILE).write_bytes(good_checkpoint.read_bytes())
    with pytest.raises(ValueError, match="does not fit this model"):
        fit(toy_model("lora"), toy_data(), toy_data(), TrainConfig(checkpoint_dir=tmp_path, resume=True, **TOY_CONFIG))


def test_the_good_checkpoint_resumes_to_the_uninterrupted_result(good_checkpoint: Path, tmp_path: Path) -> None:
    """The control for the cases above: the unedited file resumes, bit-exact with a run that was never stopped."""
    (tmp_path / CHECKPOINT_FILE).write_bytes(good_checkpoint.read_bytes())
    resumed_model, reference_model = toy_model(), toy_model()
    resumed = fit(resumed_model, toy_data(), toy_data(), TrainConfig(checkpoint_dir=tmp_path, resume=True, **TOY_CONFIG))
    reference = fit(reference_model, toy_data(), toy_data(), TrainConfig(**TOY_CONFIG))
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in reference.history]
    for (name, p), (_, q) in zip(resumed_model.named_parameters(), reference_model.named_parameters()):
        assert torch.equal(p, q), name


def test_a_checkpoint_is_data_only(good_checkpoint: Path) -> None:
    tensors, metadata = read_checkpoint(good_checkpoint)
    assert metadata["format"] == aurora.train.CHECKPOINT_FORMAT and metadata["format_version"] == 1
    assert any(k.startswith("payload.optimizer.") for k in tensors) and "payload.rng.torch" in tensors
    assert good_checkpoint.read_bytes()[:2] != b"\x80\x04" and not good_checkpoint.read_bytes().startswith(b"PK")  # no pickle, no zip


# ---------------------------------------------------------------------------------------------
# 5. load_adapters: validate everything, then change the model
# ---------------------------------------------------------------------------------------------
ADAPTER_CONFIG = dict(method="aurora", rank=2, target_modules=["query", "value"], modules_to_save=["classifier"])


def adapted() -> nn.Module:
    torch.manual_seed(0)
    model = aurora.add_adapters(TinyNet(), AdapterConfig(**ADAPTER_CONFIG))
    randomize_adapters(model)
    return model


def fresh() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet()


def snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, bool], list[str]]:
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        [n for n, _ in aurora.adapter_layers(model)],
    )


def assert_unchanged(model: nn.Module, before) -> None:
    state, flags, layers = snapshot(model)
    assert state.keys() == before[0].keys() and all(torch.equal(state[k], before[0][k]) for k in state)
    assert flags == before[1]
    assert layers == before[2]


def rewrite_config(folder: Path, change: Callable[[dict], None], keep_checksum: bool = True) -> None:
    saved = json.loads((folder / "adapter_config.json").read_text())
    change(saved)
    (folder / "adapter_config.json").write_text(json.dumps(saved))


def rewrite_weights(folder: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Edit the tensors and re-sign them, as a careful hand edit would: the checksum does not catch these."""
    state = load_file(str(folder / "adapters.safetensors"))
    change(state)
    save_file(state, str(folder / "adapters.safetensors"))
    digest = hashlib.sha256((folder / "adapters.safetensors").read_bytes()).hexdigest()
    rewrite_config(folder, lambda saved: saved.__setitem__("weights_sha256", digest))


def _setitem(mapping: dict, key, value) -> None:
    mapping[key] = value


def _set_config(option: str, value) -> Callable[[Path], None]:
    return lambda folder: rewrite_config(folder, lambda saved: _setitem(saved["config"], option, value))


def _tensor(key: str, make: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Path], None]:
    return lambda folder: rewrite_weights(folder, lambda state: _setitem(state, key, make(state[key])))


def _drop(key: str) -> Callable[[Path], None]:
    return lambda folder: rewrite_weights(folder, lambda state: state.pop(key))


def _weights_from_another_save(folder: Path) -> None:
    other = adapted()
    randomize_adapters(other, seed=5)
    (folder / "adapters.safetensors").write_bytes((aurora.save_adapters(other, folder.parent / "other") / "adapters.safetensors").read_bytes())


ADAPTER_FAULTS: dict[str, Callable[[Path], None]] = {
    "config not json": lambda f: (f / "adapter_config.json").write_text("{format_version: 1"),
    "config not utf-8": lambda f: (f / "adapter_config.json").write_bytes(b"\xff\xfe\x00"),
    "config a list": lambda f: (f / "adapter_config.json").write_text("[1, 2]"),
    "config entry missing": lambda f: rewrite_config(f, lambda saved: saved.pop("config")),
    "format_version 99": lambda f: rewrite_config(f, lambda saved: _setitem(saved, "format_version", 99)),
    "format_version missing": lambda f: rewrite_config(f, lambda saved: saved.pop("format_version")),
    "format_version '1'": lambda f: rewrite_config(f, lambda saved: _setitem(saved, "format_version", "1")),
    "unknown option": _set_config("ranks", 2),
    "alpha -1": _set_config("alpha", -1),
    "alpha infinite": _set_config("alpha", INF),
    "grid_range three values": _set_config("grid_range", [-1, 0, 1]),
    "modules_to_save a string": _set_config("modules_to_save", "classifier"),
    "target that matches nothing": _set_config("target_modules", ["missing"]),
    "head that matches nothing": _set_config("modules_to_save", ["head"]),
    "rank differs from tensors": _set_config("rank", 3),
    "grid_size differs from tensors": _set_config("grid_size", 6),
    "grid_range differs from knots": _set_config("grid_range", [-2.0, 2.0]),
    "weights corrupt bytes": lambda f: (f / "adapters.safetensors").write_bytes(os.urandom(256)),
    "weights truncated": lambda f: (f / "adapters.safetensors").write_bytes((f / "adapters.safetensors").read_bytes()[:100]),
    "weights from another save": _weights_from_another_save,
    "weights a pickle bomb": lambda f: (f / "adapters.safetensors").write_bytes(pickle.dumps(Bomb(f.parent / "MARKER"))),
    "weights file missing": lambda f: (f / "adapters.safetensors").unlink(),
    "config file missing": lambda f: (f / "adapter_config.json").unlink(),
    "key missing": _drop("value.lora_B"),
    "head key missing": _drop("classifier.bias"),
    "extra key": lambda f: rewrite_weights(f, lambda state: _setitem(state, "query.lora_C", torch.zeros(2))),
    "wrong shape, last key": _tensor("value.lora_B", lambda t: torch.zeros(t.shape[0], t.shape[1] + 1)),
    "wrong shape, head": _tensor("classifier.weight", lambda t: t[:-1]),
    "float64 tensor": _tensor("query.lora_A", lambda t: t.double()),
    "float16 tensor": _tensor("classifier.bias", lambda t: t.half()),
    "NaN in B": _tensor("value.lora_B", lambda t: torch.full_like(t, NAN)),
    "inf in spline": _tensor("query.anl.spline_coefficients", lambda t: t.clone().index_fill_(0, torch.tensor([0]), INF)),
    "inf in head": _tensor("classifier.weight", lambda t: torch.full_like(t, -INF)),
    "knots moved": _tensor("query.anl.knots", lambda t: t * 2),
}


@pytest.fixture(scope="module")
def saved_adapters(tmp_path_factory) -> Path:
    return aurora.save_adapters(adapted(), tmp_path_factory.mktemp("good_adapters") / "adapters")


def bad_copy(saved_adapters: Path, tmp_path: Path, fault: str) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    for file in saved_adapters.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    ADAPTER_FAULTS[fault](folder)
    return folder


@pytest.mark.parametrize("fault", list(ADAPTER_FAULTS), ids=list(ADAPTER_FAULTS))
def test_failed_load_into_a_fresh_model_changes_nothing_and_a_retry_works(saved_adapters: Path, tmp_path: Path, fault: str) -> None:
    folder = bad_copy(saved_adapters, tmp_path, fault)
    model = fresh()
    before = snapshot(model)
    with pytest.raises(ValueError):
        aurora.load_adapters(model, folder)
    assert_never_ran(tmp_path / "MARKER")
    assert_unchanged(model, before)
    assert not hasattr(model, "aurora_config")
    aurora.load_adapters(model, saved_adapters)  # a retry with the good folder works
    x = torch.randn(5, 12)
    torch.testing.assert_close(model(x), adapted()(x), rtol=0, atol=0)


@pytest.mark.parametrize("fault", [f for f in ADAPTER_FAULTS if "differs" not in f and "matches nothing" not in f])
def test_failed_load_into_an_adapted_model_changes_no_tensor(saved_adapters: Path, tmp_path: Path, fault: str) -> None:
    folder = bad_copy(saved_adapters, tmp_path, fault)
    model = aurora.add_adapters(fresh(), AdapterConfig(**ADAPTER_CONFIG))
    before = snapshot(model)
    with pytest.raises(ValueError):
        aurora.load_adapters(model, folder)
    assert_unchanged(model, before)


def test_a_shape_mismatch_after_valid_keys_overwrites_nothing(saved_adapters: Path, tmp_path: Path) -> None:
    """Before: load_state_dict copied the keys before the bad one, then raised."""
    folder = bad_copy(saved_adapters, tmp_path, "wrong shape, last key")
    keys = sorted(load_file(str(folder / "adapters.safetensors")))
    assert keys.index("value.lora_B") > 0  # valid keys come first
    model = aurora.add_adapters(fresh(), AdapterConfig(**ADAPTER_CONFIG))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"value\.lora_B"):
        aurora.load_adapters(model, folder)
    assert_unchanged(model, before)


def test_validation_does_not_touch_the_model_or_the_global_rng() -> None:
    """The would-be adapters are built on a weightless copy, under a forked RNG."""
    model = fresh()
    state = torch.get_rng_state()
    expected = aurora.io._expected_state(model, AdapterConfig(**ADAPTER_CONFIG))
    assert torch.equal(state, torch.get_rng_state())
    assert all(t.is_meta for t in expected.values()) and "query.lora_A" in expected
    assert not aurora.adapter_layers(model)


# ---------------------------------------------------------------------------------------------
# 6. save_adapters: an interrupted save never leaves a folder that loads wrongly
# ---------------------------------------------------------------------------------------------
class DiskFull(OSError):
    pass


SAVE_FAILURES = ["config temp write", "config rename", "weights temp write", "weights rename"]


@pytest.mark.parametrize("existing", [False, True], ids=["new folder", "overwrite"])
@pytest.mark.parametrize("failure", SAVE_FAILURES)
def test_an_interrupted_save_leaves_the_old_adapters_or_a_refusal(monkeypatch, tmp_path: Path, failure: str, existing: bool) -> None:
    folder = tmp_path / "adapters"
    old = adapted()
    if existing:
        aurora.save_adapters(old, folder)
    new = adapted()
    randomize_adapters(new, seed=7)
    file_name, step = failure.split(" ", 1)
    target = {"config": "adapter_config.json", "weights": "adapters.safetensors"}[file_name]
    real_write, real_replace = Path.write_bytes, os.replace

    def write_bytes(self: Path, data: bytes) -> int:
        if step == "temp write" and target in self.name:
            real_write(self, data[: len(data) // 2])
            raise DiskFull("no space left")
        return real_write(self, data)

    def replace(source, destination) -> None:
        if step == "rename" and Path(destination).name == target:
            raise DiskFull("interrupted")
        real_replace(source, destination)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    monkeypatch.setattr(aurora.io.os, "replace", replace)
    with pytest.raises(DiskFull):
        aurora.save_adapters(new, folder)
    monkeypatch.undo()

    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]  # no temporary files left behind
    x = torch.randn(4, 12)
    model = fresh()
    if existing and file_name == "config":  # nothing replaced yet: the old adapters, intact
        aurora.load_adapters(model, folder)
        torch.testing.assert_close(model(x), old(x), rtol=0, atol=0)
    else:  # a new config whose checksum the old (or absent) weights do not match, or no config at all
        with pytest.raises(ValueError):
            aurora.load_adapters(model, folder)
        assert not hasattr(model, "aurora_config")


def test_saving_onto_a_file_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    target = tmp_path / "adapters"
    target.write_text("notes")
    with pytest.raises(ValueError, match="is a file"):
        aurora.save_adapters(adapted(), target)
    assert target.read_text() == "notes"


def test_a_checkpoint_dir_that_is_a_file_is_refused_before_training(tmp_path: Path) -> None:
    target = tmp_path / "run"
    target.write_text("notes")
    model = toy_model()
    before = snapshot(model)
    with pytest.raises(ValueError, match="checkpoint_dir must be a folder"):
        fit(model, toy_data(), toy_data(), TrainConfig(checkpoint_dir=target, **TOY_CONFIG))
    assert_unchanged(model, before)
    assert target.read_text() == "notes"


def test_non_finite_adapters_are_not_saved(tmp_path: Path) -> None:
    model = adapted()
    with torch.no_grad():
        aurora.adapter_layers(model)[0][1].lora_B.fill_(NAN)
    with pytest.raises(ValueError, match="inf or NaN"):
        aurora.save_adapters(model, tmp_path / "adapters")
    assert not (tmp_path / "adapters").exists()


def test_saved_config_records_a_checksum_and_old_folders_still_load(saved_adapters: Path, tmp_path: Path) -> None:
    saved = json.loads((saved_adapters / "adapter_config.json").read_text())
    assert saved["weights_sha256"] == hashlib.sha256((saved_adapters / "adapters.safetensors").read_bytes()).hexdigest()
    folder = bad_copy(saved_adapters, tmp_path, "format_version '1'")  # any copy
    rewrite_config(folder, lambda s: (s.pop("weights_sha256"), s.__setitem__("format_version", 1)))  # as format 1 was first written
    model = aurora.load_adapters(fresh(), folder)
    x = torch.randn(3, 12)
    torch.testing.assert_close(model(x), adapted()(x), rtol=0, atol=0)


def test_loading_into_a_merged_model_is_refused_and_changes_nothing(saved_adapters: Path) -> None:
    model = aurora.add_adapters(fresh(), AdapterConfig(**ADAPTER_CONFIG))
    aurora.merge(model, strategy="static")
    before = snapshot(model)
    with pytest.raises(ValueError, match="unmerge"):
        aurora.load_adapters(model, saved_adapters)
    assert_unchanged(model, before)
    assert all(layer.merged for _, layer in aurora.adapter_layers(model))
