"""The cost benchmark (benchmarks/adapter_cost.py, a thin CLI over aurora.profiling and aurora.counting).

No timing assertions: performance is measured by the script, not by timed tests. What is tested:
the script runs end to end in its ``--tiny`` preset and writes well-formed tables; parameter counts
match closed forms (ours, full fine-tuning and PEFT's rows); merged inference runs the base model's
ops; the run leaves the shared weights as they were; the activation memory of an AuroRA layer does
not grow with the spline grid (while the Cox–de Boor basis, a comparison row, does). The probes
themselves are tested in ``tests/test_profiling.py``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import aurora
from aurora import profiling
from aurora.counting import BACKBONES

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "adapter_cost.py"


def load_script():
    """The benchmark script as a module (it is a CLI, not part of the package)."""
    spec = importlib.util.spec_from_file_location("adapter_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


adapter_cost = load_script()

# (d_in, d_out) of the adapted matrices of the --tiny backbones (adapter_cost.BACKBONES): width 64, one layer;
# tiny-llama has 4 heads of 16 and 2 key-value heads, so v_proj maps 64 -> 32.
TINY_TARGET_SHAPES = {"tiny-roberta": [(64, 64), (64, 64)], "tiny-llama": [(64, 64), (64, 32)]}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One ``--tiny`` run of the script, as a user would type it; returns its result folder."""
    results = tmp_path_factory.mktemp("results")
    command = [sys.executable, str(SCRIPT), "--tiny", "--threads", "1", "--results-dir", str(results)]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return results / "benchmark"


def expected_adapter_parameters(method: str, rank: int, shapes: list[tuple[int, int]], bias: bool, grid_size: int = 5, order: int = 3) -> int:
    """Closed forms per matrix: LoRA r(d_in + d_out); MoSLoRA + r²; AuroRA (per_unit) + r² (H) + r(grid + order) (spline);
    DoRA + d_out (magnitude); PEANuT 2 r d_out (its A maps the weight's d_out columns to r); full fine-tuning d_in d_out (+ d_out)."""
    if method == "base":
        return 0
    if method == "full_ft":
        return sum(d_in * d_out + (d_out if bias else 0) for d_in, d_out in shapes)
    if method == "peft_peanut":
        return sum(2 * rank * d_out for _, d_out in shapes)
    anl = rank**2 + rank * (grid_size + order)
    extra = {"lora": 0, "peft_lora": 0, "peft_hira": 0, "loran": 0, "loran_autograd": 0, "moslora": rank**2,
             "aurora": anl, "aurora_cox_de_boor": anl}
    return sum(rank * (d_in + d_out) + (d_out if method in ("peft_dora", "dora") else extra[method]) for d_in, d_out in shapes)


TINY_BIAS = {"tiny-roberta": True, "tiny-llama": False}  # BERT-style projections have biases, LLaMA's do not


def test_tiny_run_writes_well_formed_timings(tiny_run: Path) -> None:
    timings = pd.read_csv(tiny_run / "timings.csv")
    cases = [(s.backbone, rank, batch) for s in adapter_cost.TINY_SWEEPS for rank, batch in s.cases()]
    expected = {(m, r, b, variant, phase) for m, r, b in cases for variant in adapter_cost.DEFAULT_VARIANTS
                for phase in adapter_cost.VARIANTS[variant].phases}
    got = list(zip(timings["model"], timings["rank"], timings["batch"], timings["method"], timings["phase"]))
    assert len(got) == len(set(got)) and set(got) == expected
    assert (timings["q1_ms"] > 0).all()
    assert ((timings["q1_ms"] <= timings["median_ms"]) & (timings["median_ms"] <= timings["q3_ms"])).all()
    assert ((timings["ratio_to_lora_q1"] <= timings["ratio_to_lora"]) & (timings["ratio_to_lora"] <= timings["ratio_to_lora_q3"])).all()
    assert np.allclose(timings.loc[timings["method"] == "lora", "ratio_to_lora"], 1.0)
    assert np.allclose(timings.loc[timings["method"] == "base", "ratio_to_base"], 1.0)
    train = timings[timings["phase"] == "train"]
    assert np.allclose(train.loc[train["method"] == "full_ft", "ratio_to_full_ft"], 1.0) and train["ratio_to_full_ft"].notna().all()
    assert timings.loc[timings["phase"] != "train", "ratio_to_full_ft"].isna().all()  # full_ft runs the training phase only
    merged, unmerged = timings[timings["phase"] == "infer_merged"], timings[timings["phase"] == "infer_unmerged"]
    assert merged["same_ops_as_base"].astype(bool).all()  # merged: the base model's aten ops, op for op
    assert not unmerged.loc[unmerged["method"] != "base", "same_ops_as_base"].astype(bool).any()
    assert timings.loc[timings["phase"] == "train", "dispatched_ops"].isna().all()
    rounds = 2 * timings["phase"].map(adapter_cost.ROUNDS_FACTOR)
    assert (timings["repeats"] == rounds).all() and (timings["device"] == "cpu").all()
    seq_len = {s.backbone: s.seq_len for s in adapter_cost.TINY_SWEEPS}
    assert (timings["tokens"] == timings["batch"] * timings["model"].map(seq_len)).all()


def test_tiny_run_counts_parameters_and_memory(tiny_run: Path) -> None:
    timings = pd.read_csv(tiny_run / "timings.csv")
    for row in timings.itertuples():
        assert row.trainable_params == expected_adapter_parameters(row.method, row.rank, TINY_TARGET_SHAPES[row.model], TINY_BIAS[row.model]), row
    assert (timings["saved_activation_bytes"] > 0).all()
    train = timings[timings["phase"] == "train"].set_index(["model", "rank", "batch", "method"])["saved_activation_bytes"]
    grads = timings[timings["phase"] == "train"].set_index(["model", "rank", "batch", "method"])
    for model, rank, batch in {k[:3] for k in train.index}:
        case = (model, rank, batch)
        assert train[(*case, "lora")] == train[(*case, "peft_lora")]
        # the fused LoRAN node keeps no more than full fine-tuning (x per layer), and no weight-sized tensor
        assert train[(*case, "loran")] <= train[(*case, "full_ft")]
        # gradients: full fine-tuning leaves a weight-sized .grad per layer, LoRAN only LoRA's; LoRAN's scratch
        # matrices are three tiles (here each tiny weight is one tile) of the largest adapted weight, shared by its layers
        assert grads.loc[(*case, "loran"), "gradient_bytes"] == grads.loc[(*case, "lora"), "gradient_bytes"]
        largest = max(d_in * d_out for d_in, d_out in TINY_TARGET_SHAPES[model])
        assert grads.loc[(*case, "loran"), "workspace_bytes"] == 3 * largest * 4
        assert (grads.loc[(*case, "full_ft"), "gradient_bytes"]
                == 4 * expected_adapter_parameters("full_ft", rank, TINY_TARGET_SHAPES[model], TINY_BIAS[model]))


def test_tiny_run_writes_profile_memory_table_figure_and_provenance(tiny_run: Path) -> None:
    profile = pd.read_csv(tiny_run / "profile.csv")
    assert set(profile["method"]) == set(adapter_cost.PROFILE_VARIANTS)
    layers = pd.read_csv(tiny_run / "layer_timings.csv")
    assert sorted(zip(layers["variant"], layers["rank"])) == sorted((v, r) for v in adapter_cost.LAYER_VARIANTS for r in (2, 16))
    assert np.allclose(layers.loc[layers["variant"] == "lora", "ratio_to_lora"], 1.0) and (layers["q1_us"] > 0).all()
    assert (profile["op"].str.startswith("aten::") | (profile["op"] == profiling.COMPILED_OP)).all() and (profile["calls_per_step"] > 0).all()
    assert profiling.COMPILED_OP in set(profile.loc[profile["method"] == "loran", "op"])  # Sinter's compiled passes
    assert profiling.COMPILED_OP not in set(profile.loc[profile["method"] == "loran_eager", "op"])
    assert (profile["top_level_calls_per_step"] <= profile["calls_per_step"]).all()
    assert not profile.loc[profile["op"] == "aten::view", "launches_work"].any() and profile.loc[profile["op"] == "aten::mm", "launches_work"].all()
    assert {"aten::mm", "aten::tanh"} <= set(profile.loc[profile["method"] == "aurora", "op"])
    sweep = pd.read_csv(tiny_run / "loran_tokens.csv")
    assert sorted(zip(sweep["variant"], sweep["tokens"])) == sorted((v, t) for v in ("full_ft", "lora", "loran") for t in (4, 16))
    assert np.allclose(sweep.loc[sweep["variant"] == "full_ft", "ratio_to_full_ft"], 1.0) and (sweep["median_ms"] > 0).all()
    grid = pd.read_csv(tiny_run / "memory_vs_grid.csv")
    assert sorted(set(grid["grid_size"])) == [5, 50]
    assert (grid["basis_bytes"] == grid["tokens"] * grid["rank"] * (grid["grid_size"] + 3) * 4).all()
    figure = tiny_run / adapter_cost.FIGURE_NAME
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    provenance = json.loads((tiny_run / "provenance.json").read_text())
    assert provenance["config"]["preset"] == "tiny" and provenance["device"] == "cpu"
    assert provenance["config"]["methods"] == list(adapter_cost.DEFAULT_VARIANTS)
    assert set(provenance["config"]["labels"]) == set(adapter_cost.DEFAULT_VARIANTS)


def test_run_case_restores_the_shared_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Variants share the frozen weights and are merged in place for inference: the run must leave them as they were.

    Adapters start with B = 0 (ΔW = 0), so here every adapter parameter is made nonzero to make merges visible.
    """
    build_variant = adapter_cost.build_variant

    def build_nonzero_variant(*args, **kwargs) -> nn.Module:
        model = build_variant(*args, **kwargs)
        with torch.no_grad():
            for parameter in adapter_cost.trainable_tensors(model):
                parameter.copy_(torch.randn_like(parameter) * 0.1)
        return model

    monkeypatch.setattr(adapter_cost, "build_variant", build_nonzero_variant)
    sweep = adapter_cost.Sweep("tiny-roberta", layers=1, seq_len=4, ranks=(2,), batch=1)
    torch.manual_seed(0)
    base = BACKBONES["tiny-roberta"].build(1)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    settings = adapter_cost.Settings(sweeps=[sweep], repeats=1, min_sample_s=0.0)
    rows = adapter_cost.run_case(sweep, 2, 1, base, settings)
    assert len(rows) == sum(len(adapter_cost.VARIANTS[v].phases) for v in adapter_cost.DEFAULT_VARIANTS)
    after = base.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.allclose(before[k], after[k], rtol=0, atol=1e-6) for k in before)  # PEFT unmerges by subtraction


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="ranks and batch sizes"):
        adapter_cost.parse_args(["--tiny", "--ranks", "0"])
    with pytest.raises(ValueError, match="threads"):
        adapter_cost.parse_args(["--tiny", "--threads", "0"])
    with pytest.raises(ValueError, match="models"):
        adapter_cost.parse_args(["--tiny", "--models", "roberta-base"])


def adapter_saved_bytes(variant: str, grid_size: int, tokens: int = 256, width: int = 48, rank: int = 2) -> int:
    layer = adapter_cost.single_layer(variant, width, rank, grid_size=grid_size)
    x = torch.randn(tokens, width)
    return profiling.saved_activation_bytes(lambda: layer(x), [*layer.parameters(), *layer.buffers(), x])


def grid_growth_within_basis_budget(variant: str, tokens: int = 256, rank: int = 2, order: int = 3) -> tuple[int, int]:
    """Growth of the saved bytes from grid size 5 to 50, and 1 % of what the fp32 ``(tokens, r, grid + order)`` basis grows by.

    The budget leaves room for coefficient-sized tensors (a few KiB), not for anything per token and per basis.
    """
    growth = adapter_saved_bytes(variant, 50, tokens=tokens, rank=rank) - adapter_saved_bytes(variant, 5, tokens=tokens, rank=rank)
    basis_growth = tokens * rank * ((50 + order) - (5 + order)) * 4
    return growth, basis_growth // 100


def test_aurora_activation_memory_does_not_grow_with_the_grid() -> None:
    """The core ANL (closed-form uniform spline) saves nothing per token that grows with the grid."""
    growth, budget = grid_growth_within_basis_budget("aurora")
    assert growth <= budget


def test_cox_de_boor_basis_exceeds_the_memory_budget() -> None:
    """Control for the test above: the Cox–de Boor recursion through autograd saves several (tokens, r, n) tensors."""
    growth, budget = grid_growth_within_basis_budget("aurora_cox_de_boor")
    assert growth > 100 * budget  # more than the whole basis tensor's growth


def test_cox_de_boor_variant_uses_the_reference_basis(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's ``aurora_cox_de_boor`` model calls ``aurora.bspline_basis`` once per adapted layer; ``aurora`` never."""
    calls = []
    basis = aurora.bspline_basis

    def counted_basis(*args: object) -> torch.Tensor:
        calls.append(args)
        return basis(*args)

    monkeypatch.setattr(profiling, "bspline_basis", counted_basis)
    base = BACKBONES["tiny-roberta"].build(1)
    inputs = BACKBONES["tiny-roberta"].inputs(1, 4, "cpu", requires_grad=False)
    for variant, expected_calls in (("aurora", 0), ("aurora_cox_de_boor", 2)):  # query and value
        calls.clear()
        adapter_cost.build_variant(base, variant, 2, ["query", "value"])(**inputs)
        assert len(calls) == expected_calls, variant


def test_single_layer_rejects_unknown_variants() -> None:
    with pytest.raises(ValueError, match="variant must be one of"):
        adapter_cost.single_layer("lora+fused", 8, 2)
    with pytest.raises(ValueError, match="variant must be one of"):
        adapter_cost.single_layer("peft_lora", 8, 2)
    with pytest.raises(ValueError, match="variant must be one of"):
        adapter_cost.build_variant(nn.Sequential(), "peft_fourierft", 2, ["query"])
