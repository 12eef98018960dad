"""aurora.profiling: the timing, memory and op probes, the reference forms, and reading a benchmark table."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

import aurora
from aurora import profiling


def test_interleaved_timings_runs_every_step_once_per_round_per_inner_call() -> None:
    calls = {"a": 0, "b": 0}
    steps = {name: (lambda name=name: calls.__setitem__(name, calls[name] + 1)) for name in calls}
    samples, inner = profiling.interleaved_timings(steps, repeats=4, warmup=2, min_sample_s=0.0)
    assert inner == 1 and all(len(v) == 4 for v in samples.values())
    assert calls == {"a": 6, "b": 6}  # 2 warm-up calls + 4 rounds
    with pytest.raises(ValueError, match="clock must be"):
        profiling.interleaved_timings(steps, repeats=1, clock="cpu", device="cuda")
    with pytest.raises(ValueError, match="repeats"):
        profiling.interleaved_timings(steps, repeats=0)


def test_ratio_quartiles_are_per_round() -> None:
    assert profiling.ratio_quartiles([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == (2.0, 2.0, 2.0)


def test_saved_activation_bytes_counts_what_autograd_saves() -> None:
    """tanh saves its output (n·d·4 bytes); the matmul saves x and W, which are excluded as held anyway."""
    x = torch.randn(10, 6)
    weight = torch.randn(6, 7, requires_grad=True)
    assert profiling.saved_activation_bytes(lambda: torch.tanh(x @ weight), exclude=[x, weight]) == 10 * 7 * 4
    # without exclusions the input x counts too (the matmul keeps it for W's gradient; W itself is not needed)
    assert profiling.saved_activation_bytes(lambda: torch.tanh(x @ weight)) == (10 * 7 + 10 * 6) * 4
    # sin keeps its input: two views of one storage count once
    y = torch.randn(10, 6, requires_grad=True)
    assert profiling.saved_activation_bytes(lambda: y[:5].sin() + y[5:].sin()) == 10 * 6 * 4


def test_gradient_bytes_counts_the_grads_left() -> None:
    layer = nn.Linear(5, 3)
    assert profiling.gradient_bytes(layer.parameters()) == 0
    layer(torch.randn(2, 5)).sum().backward()
    assert profiling.gradient_bytes(layer.parameters()) == (5 * 3 + 3) * 4
    assert profiling.peak_cuda_step_bytes(lambda: None, "cpu") is None


def test_dispatched_ops_records_the_aten_ops_in_order() -> None:
    x = torch.randn(3, 4)
    top = profiling.dispatched_ops(lambda: torch.tanh(x @ x.T).sum(), top_level_only=True)
    assert top == ["aten::numpy_T", "aten::matmul", "aten::tanh", "aten::sum"]
    every = profiling.dispatched_ops(lambda: torch.tanh(x @ x.T).sum())
    assert "aten::mm" in every and every.index("aten::mm") < every.index("aten::tanh") and len(every) > len(top)


def test_op_profile_counts_calls_per_step() -> None:
    x = torch.randn(8, 8)
    rows = {r["op"]: r for r in profiling.op_profile(lambda: torch.tanh(x @ x).sum(), steps=5)}
    assert rows["aten::tanh"]["calls_per_step"] == 1 and rows["aten::tanh"]["launches_work"]
    assert rows["aten::mm"]["top_level_calls_per_step"] == 0 and rows["aten::matmul"]["top_level_calls_per_step"] == 1


def test_op_profile_times_compiled_graphs_as_one_op() -> None:
    """A torch.compile'd graph's kernels are no aten ops: its calls appear as COMPILED_OP, with their time."""
    x = torch.randn(64, 64)
    compiled = torch.compile(lambda t: torch.sin(t) * t + t, dynamic=True)
    rows = {r["op"]: r for r in profiling.op_profile(lambda: compiled(x), steps=3)}
    assert rows[profiling.COMPILED_OP]["calls_per_step"] == 1 and rows[profiling.COMPILED_OP]["launches_work"]
    assert rows[profiling.COMPILED_OP]["self_cpu_us_per_step"] > 0 and "aten::sin" not in rows


@pytest.mark.parametrize("variant", ["aurora_cox_de_boor", "aurora_autograd"])
@pytest.mark.parametrize("mode", ["per_unit", "sum", "per_edge"])
def test_reference_anl_forms_compute_the_same_anl(mode: str, variant: str) -> None:
    """Same outputs and gradients as the core (its hand-written backward against autograd), same state."""
    torch.manual_seed(0)
    core = aurora.AdaptiveNonlinearLayer(3, spline_mode=mode, grid_size=7, grid_range=(-1.5, 2.0))
    reference = aurora.AdaptiveNonlinearLayer(3, spline_mode=mode, grid_size=7, grid_range=(-1.5, 2.0))
    reference.load_state_dict(core.state_dict())
    assert profiling.use_reference_forward(reference, variant) == 1
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


@pytest.mark.parametrize("variant", ["loran_autograd", "loran_eager"])
def test_reference_loran_forms_are_the_same_function_as_the_fused_node(variant: str) -> None:
    torch.manual_seed(0)
    fused = nn.Sequential()
    fused.add_module("query", nn.Linear(6, 5))
    aurora.add_adapters(fused, aurora.AdapterConfig(method="loran", rank=2, alpha=8.0, target_modules=["query"], sinter_frequency=3.0,
                                                    sinter_amplitude=0.2))
    fused.double()
    with torch.no_grad():
        fused.query.lora_B.normal_()
    reference = nn.Sequential()
    reference.add_module("query", nn.Linear(6, 5))
    aurora.add_adapters(reference, aurora.AdapterConfig(method="loran", rank=2, alpha=8.0, target_modules=["query"], sinter_frequency=3.0,
                                                        sinter_amplitude=0.2))
    reference.double().load_state_dict(fused.state_dict())
    assert profiling.use_reference_forward(reference, variant) == 1
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(fused(x), reference(x))
    g = torch.randn(4, 5, dtype=torch.float64)
    params = lambda m: [m.query.lora_A, m.query.lora_B]  # noqa: E731
    for a, b in zip(torch.autograd.grad(fused(x), params(fused), g), torch.autograd.grad(reference(x), params(reference), g)):
        torch.testing.assert_close(a, b)


def test_use_reference_forward_rejects_unknown_variants() -> None:
    with pytest.raises(ValueError, match="variant must be one of 'aurora_cox_de_boor', 'aurora_autograd', 'loran_autograd'"):
        profiling.use_reference_forward(nn.Sequential(), "aurora")


def test_target_checks_read_the_peft_ratio_both_ways() -> None:
    """PEFT's ratio_to_lora is PEFT / ours: our LoRA 3 % faster passes "not slower" and fails "within ±2 %"."""
    timings = pd.DataFrame({"method": ["peft_lora"], "phase": ["train"], "rank": [2], "device": ["cpu"], "ratio_to_lora": [1 / 0.97]})
    checks = {row["target"]: row for row in profiling.target_checks(timings)}
    not_slower = checks["our LoRA training step / PEFT's LoRA, not slower"]
    either_way = checks["our LoRA training step / PEFT's LoRA, either way"]
    assert not_slower["median over cases"] == pytest.approx(0.97) and not_slower["every case meets it"]
    assert either_way["worst case"] == pytest.approx(0.97) and not either_way["every case meets it"]


def test_target_checks_use_rank_ranges_and_the_full_fine_tuning_ratio() -> None:
    timings = pd.DataFrame({
        "method": ["aurora", "aurora", "aurora", "loran"], "phase": ["train"] * 4, "rank": [2, 16, 64, 2], "device": ["cpu"] * 4,
        "ratio_to_lora": [1.02, 1.04, 1.07, 9.0], "ratio_to_full_ft": [None, None, None, 1.5],
    })
    checks = {row["target"]: row for row in profiling.target_checks(timings)}
    median = checks["AuroRA training step / our LoRA (r ≤ 16), CPU, median"]
    assert median["cases"] == 2 and median["median over cases"] == pytest.approx(1.03) and median["median meets it"]
    assert checks["AuroRA training step / our LoRA (r = 64), CPU"]["cases"] == 1
    assert checks["AuroRA training step / our LoRA (r = 64), CPU"]["every case meets it"]
    loran = checks["LoRAN training step / full fine-tuning of the same layers"]
    assert loran["worst case"] == pytest.approx(1.5) and not loran["every case meets it"]


def test_ratio_table_keeps_the_table_order_of_methods() -> None:
    timings = pd.DataFrame({
        "model": ["m"] * 2, "batch": [1] * 2, "rank": [2] * 2, "method": ["lora", "aurora"], "phase": ["train"] * 2,
        "ratio_to_lora": [1.0, 1.05], "ratio_to_lora_q1": [1.0, 1.0], "ratio_to_lora_q3": [1.0, 1.1],
    })
    table = profiling.ratio_table(timings, "train", "ratio_to_lora")
    assert list(table.columns) == ["lora", "aurora"] and table.iloc[0]["aurora"] == "1.050 ±0.050"
