"""The cost benchmark (benchmarks/adapter_cost.py).

No timing assertions: performance is measured by the script, not by timed tests. What is tested:
the script runs end to end in its ``--tiny`` preset and writes well-formed tables; parameter counts
match closed forms; the memory probe counts what autograd really saves; the activation memory of
an AuroRA layer does not grow with the spline grid (while the Cox–de Boor basis, the benchmark's
comparison row, does); the comparison rows compute the same function and gradients as the core.
"""

from __future__ import annotations

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

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import adapter_cost  # noqa: E402

# (d_in, d_out) of the adapted matrices of the --tiny backbones (adapter_cost.BACKBONES): width 64, one layer;
# tiny-llama has 4 heads of 16 and 2 key-value heads, so v_proj maps 64 -> 32.
TINY_TARGET_SHAPES = {"tiny-roberta": [(64, 64), (64, 64)], "tiny-llama": [(64, 64), (64, 32)]}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One ``--tiny`` run of the script, as a user would type it; returns its result folder."""
    results = tmp_path_factory.mktemp("results")
    command = [sys.executable, str(REPO / "benchmarks" / "adapter_cost.py"), "--tiny", "--threads", "1", "--results-dir", str(results)]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return results / "benchmark"


def expected_adapter_parameters(method: str, rank: int, shapes: list[tuple[int, int]], grid_size: int = 5, order: int = 3) -> int:
    """Closed forms per matrix: LoRA r(d_in + d_out); MoSLoRA + r²; AuroRA (per_unit) + r² (H) + r(grid + order) (spline)."""
    if method == "base":
        return 0
    extra = {"lora": 0, "peft_lora": 0, "loran": 0, "moslora": rank**2,
             "aurora": rank**2 + rank * (grid_size + order), "aurora_cox_de_boor": rank**2 + rank * (grid_size + order)}[method]
    return sum(rank * (d_in + d_out) + extra for d_in, d_out in shapes)


def test_tiny_run_writes_well_formed_timings(tiny_run: Path) -> None:
    timings = pd.read_csv(tiny_run / "timings.csv")
    cases = [(s.backbone, rank, batch) for s in adapter_cost.TINY_SWEEPS for rank, batch in s.cases()]
    expected = {(m, r, b, method, phase) for m, r, b in cases for method in adapter_cost.METHODS for phase in adapter_cost.PHASES}
    got = list(zip(timings["model"], timings["rank"], timings["batch"], timings["method"], timings["phase"]))
    assert len(got) == len(set(got)) and set(got) == expected
    assert (timings["q1_ms"] > 0).all()
    assert ((timings["q1_ms"] <= timings["median_ms"]) & (timings["median_ms"] <= timings["q3_ms"])).all()
    assert ((timings["ratio_to_lora_q1"] <= timings["ratio_to_lora"]) & (timings["ratio_to_lora"] <= timings["ratio_to_lora_q3"])).all()
    assert np.allclose(timings.loc[timings["method"] == "lora", "ratio_to_lora"], 1.0)
    assert np.allclose(timings.loc[timings["method"] == "base", "ratio_to_base"], 1.0)
    merged, unmerged = timings[timings["phase"] == "infer_merged"], timings[timings["phase"] == "infer_unmerged"]
    assert merged["same_ops_as_base"].astype(bool).all()  # merged: the base model's aten ops, op for op
    assert not unmerged.loc[unmerged["method"] != "base", "same_ops_as_base"].astype(bool).any()
    assert timings.loc[timings["phase"] == "train", "dispatched_ops"].isna().all()
    rounds = np.where(timings["phase"] == "train", 2, 2 * adapter_cost.INFERENCE_ROUNDS_FACTOR)
    assert (timings["repeats"] == rounds).all() and (timings["device"] == "cpu").all()
    seq_len = {s.backbone: s.seq_len for s in adapter_cost.TINY_SWEEPS}
    assert (timings["tokens"] == timings["batch"] * timings["model"].map(seq_len)).all()


def test_tiny_run_counts_parameters_and_memory(tiny_run: Path) -> None:
    timings = pd.read_csv(tiny_run / "timings.csv")
    for row in timings.itertuples():
        assert row.trainable_params == expected_adapter_parameters(row.method, row.rank, TINY_TARGET_SHAPES[row.model]), row
    assert (timings["saved_activation_bytes"] > 0).all()
    train = timings[timings["phase"] == "train"].set_index(["model", "rank", "batch", "method"])["saved_activation_bytes"]
    # LoRA keeps x (shared by query and value) and A x for each target: more than nothing, far less than LoRAN's d×d ΔW
    for model, rank, batch in {k[:3] for k in train.index}:
        assert train[(model, rank, batch, "lora")] == train[(model, rank, batch, "peft_lora")]
        assert train[(model, rank, batch, "loran")] > train[(model, rank, batch, "lora")]


def test_tiny_run_writes_profile_memory_table_figure_and_provenance(tiny_run: Path) -> None:
    profile = pd.read_csv(tiny_run / "profile.csv")
    assert set(profile["method"]) == set(adapter_cost.ANL_VARIANTS)
    layers = pd.read_csv(tiny_run / "layer_timings.csv")
    assert sorted(zip(layers["variant"], layers["rank"])) == sorted((v, r) for v in adapter_cost.LAYER_VARIANTS for r in (2, 16))
    assert np.allclose(layers.loc[layers["variant"] == "lora", "ratio_to_lora"], 1.0) and (layers["q1_us"] > 0).all()
    assert profile["op"].str.startswith("aten::").all() and (profile["calls_per_step"] > 0).all()
    assert (profile["top_level_calls_per_step"] <= profile["calls_per_step"]).all()
    assert not profile.loc[profile["op"] == "aten::view", "launches_work"].any() and profile.loc[profile["op"] == "aten::mm", "launches_work"].all()
    assert {"aten::mm", "aten::tanh"} <= set(profile.loc[profile["method"] == "aurora", "op"])
    grid = pd.read_csv(tiny_run / "memory_vs_grid.csv")
    assert sorted(set(grid["grid_size"])) == [5, 50]
    assert (grid["basis_bytes"] == grid["tokens"] * grid["rank"] * (grid["grid_size"] + 3) * 4).all()
    figure = tiny_run / adapter_cost.FIGURE_NAME
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    provenance = json.loads((tiny_run / "provenance.json").read_text())
    assert provenance["config"]["preset"] == "tiny" and provenance["device"] == "cpu"
    assert provenance["config"]["methods"] == list(adapter_cost.METHODS)


def test_run_case_restores_the_shared_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Variants share the frozen weights and are merged in place for inference: the run must leave them as they were.

    Adapters start with B = 0 (ΔW = 0), so here every adapter parameter is made nonzero to make merges visible.
    """
    build_variant = adapter_cost.build_variant

    def build_nonzero_variant(*args, **kwargs) -> nn.Module:
        model = build_variant(*args, **kwargs)
        with torch.no_grad():
            for parameter in adapter_cost.adapter_parameters(model):
                parameter.copy_(torch.randn_like(parameter) * 0.1)
        return model

    monkeypatch.setattr(adapter_cost, "build_variant", build_nonzero_variant)
    sweep = adapter_cost.Sweep("tiny-roberta", layers=1, seq_len=4, ranks=(2,), batch=1)
    torch.manual_seed(0)
    base = adapter_cost.BACKBONES["tiny-roberta"].build(1)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    settings = adapter_cost.Settings(sweeps=[sweep], repeats=1, min_sample_s=0.0)
    rows = adapter_cost.run_case(sweep, 2, 1, base, settings)
    assert len(rows) == len(adapter_cost.METHODS) * len(adapter_cost.PHASES)
    after = base.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.allclose(before[k], after[k], rtol=0, atol=1e-6) for k in before)  # PEFT unmerges by subtraction


def test_dispatched_ops_records_every_aten_op_in_order() -> None:
    x = torch.randn(3, 4)
    ops = adapter_cost.dispatched_ops(lambda: torch.tanh(x @ x.T).sum())
    assert ops == ["aten.permute.default", "aten.mm.default", "aten.tanh.default", "aten.sum.default"]  # x.T is a permute


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="ranks and batch sizes"):
        adapter_cost.parse_args(["--tiny", "--ranks", "0"])
    with pytest.raises(ValueError, match="threads"):
        adapter_cost.parse_args(["--tiny", "--threads", "0"])
    with pytest.raises(ValueError, match="models"):
        adapter_cost.parse_args(["--tiny", "--models", "roberta-base"])


# -- the memory probe ------------------------------------------------------------------------------
def test_saved_activation_bytes_counts_what_autograd_saves() -> None:
    """tanh saves its output (n·d·4 bytes); the matmul saves x and W, which are excluded as held anyway."""
    x = torch.randn(10, 6)
    weight = torch.randn(6, 7, requires_grad=True)
    assert adapter_cost.saved_activation_bytes(lambda: torch.tanh(x @ weight), exclude=[x, weight]) == 10 * 7 * 4
    # without exclusions the input x counts too (the matmul keeps it for W's gradient; W itself is not needed)
    assert adapter_cost.saved_activation_bytes(lambda: torch.tanh(x @ weight)) == (10 * 7 + 10 * 6) * 4
    # sin keeps its input: two views of one storage count once
    y = torch.randn(10, 6, requires_grad=True)
    assert adapter_cost.saved_activation_bytes(lambda: y[:5].sin() + y[5:].sin()) == 10 * 6 * 4


def adapter_saved_bytes(variant: str, grid_size: int, tokens: int = 256, width: int = 48, rank: int = 2) -> int:
    layer = adapter_cost.single_layer(variant, width, rank, grid_size=grid_size)
    x = torch.randn(tokens, width)
    return adapter_cost.saved_activation_bytes(lambda: layer(x), [*layer.parameters(), *layer.buffers(), x])


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


# -- the comparison rows ------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["aurora_cox_de_boor", "aurora_autograd"])
@pytest.mark.parametrize("mode", ["per_unit", "sum", "per_edge"])
def test_reference_rows_compute_the_same_anl(mode: str, variant: str) -> None:
    """Same outputs and gradients as the core (its hand-written backward against autograd), same state."""
    torch.manual_seed(0)
    core = aurora.AdaptiveNonlinearLayer(3, spline_mode=mode, grid_size=7, grid_range=(-1.5, 2.0))
    reference = aurora.AdaptiveNonlinearLayer(3, spline_mode=mode, grid_size=7, grid_range=(-1.5, 2.0))
    reference.load_state_dict(core.state_dict())
    assert adapter_cost.use_anl_forward(reference, variant) == 1
    z = (torch.randn(4, 5, 3, dtype=torch.float64) * 1.5).requires_grad_()  # inside and outside the grid
    core.double(), reference.double()
    out_core, out_reference = core(z), reference(z)
    torch.testing.assert_close(out_core, out_reference, atol=1e-12, rtol=0)
    weights = torch.randn_like(out_core)
    grads_core = torch.autograd.grad((out_core * weights).sum(), [z, *core.parameters()])
    grads_reference = torch.autograd.grad((out_reference * weights).sum(), [z, *reference.parameters()])
    for got, expected in zip(grads_core, grads_reference):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
    assert reference.state_dict().keys() == core.state_dict().keys()


def test_cox_de_boor_variant_uses_the_reference_basis(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's ``aurora_cox_de_boor`` model calls ``aurora.bspline_basis`` once per adapted layer; ``aurora`` never."""
    calls = []
    basis = aurora.bspline_basis

    def counted_basis(*args: object) -> torch.Tensor:
        calls.append(args)
        return basis(*args)

    monkeypatch.setattr(aurora, "bspline_basis", counted_basis)
    base = adapter_cost.BACKBONES["tiny-roberta"].build(1)
    inputs = adapter_cost.BACKBONES["tiny-roberta"].inputs(1, 4, "cpu", requires_grad=False)
    for variant, expected_calls in (("aurora", 0), ("aurora_cox_de_boor", 2)):  # query and value
        calls.clear()
        adapter_cost.build_variant(base, variant, 2, ["query", "value"])(**inputs)
        assert len(calls) == expected_calls, variant


def test_single_layer_rejects_unknown_variants() -> None:
    with pytest.raises(ValueError, match="variant must be one of"):
        adapter_cost.single_layer("lora+fused", 8, 2)
    with pytest.raises(ValueError, match="variant must be one of"):
        adapter_cost.single_layer("peft_lora", 8, 2)
    with pytest.raises(ValueError, match="variant must be one of 'aurora_cox_de_boor', 'aurora_autograd'"):
        adapter_cost.use_anl_forward(nn.Sequential(), "aurora")


def test_target_checks_read_the_peft_ratio_both_ways() -> None:
    """PEFT's ratio_to_lora is PEFT / ours: our LoRA 3 % faster passes "not slower" and fails "within ±2 %"."""
    timings = pd.DataFrame({"method": ["peft_lora"], "phase": ["train"], "rank": [2], "device": ["cpu"], "ratio_to_lora": [1 / 0.97]})
    checks = {row["target"]: row for row in adapter_cost.target_checks(timings)}
    not_slower = checks["our LoRA training step / PEFT's LoRA, not slower"]
    either_way = checks["our LoRA training step / PEFT's LoRA, either way"]
    assert not_slower["median over cases"] == pytest.approx(0.97) and not_slower["every case meets it"]
    assert either_way["worst case"] == pytest.approx(0.97) and not either_way["every case meets it"]
