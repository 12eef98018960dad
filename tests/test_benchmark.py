"""The cost benchmark (benchmarks/adapter_cost.py) and the closed-form spline prototype (benchmarks/fast_spline.py).

No timing assertions: performance is measured by the script, not by timed tests. What is tested:
the script runs end to end in its ``--tiny`` preset and writes well-formed tables; parameter counts
match closed forms; the memory probe counts what autograd really saves; activation memory of the
ANL does not grow with the spline grid beyond the basis tensor; the closed-form spline equals
scipy's B-splines and has correct gradients.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.interpolate import BSpline
from torch import nn

import aurora

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import adapter_cost, fast_spline, fused_output  # noqa: E402

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
             "aurora": rank**2 + rank * (grid_size + order), "aurora_closed_form": rank**2 + rank * (grid_size + order)}[method]
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
    assert (timings["repeats"] == 2).all() and (timings["device"] == "cpu").all()
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
    assert set(profile["method"]) == {"lora", "aurora", "aurora_closed_form", "aurora_closed_form+fused"}
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


def adapter_saved_bytes(grid_size: int, closed_form: bool, tokens: int = 256, width: int = 48, rank: int = 2) -> int:
    layer = adapter_cost.single_layer("aurora_closed_form" if closed_form else "aurora", width, rank, grid_size=grid_size)
    x = torch.randn(tokens, width)
    return adapter_cost.saved_activation_bytes(lambda: layer(x), [*layer.parameters(), *layer.buffers(), x])


@pytest.mark.parametrize(
    "closed_form",
    [
        True,
        pytest.param(
            False,
            marks=pytest.mark.xfail(
                strict=True,
                reason="aurora.bspline_basis runs Cox-de Boor through autograd and saves ~8 (..., r, n_bases) tensors; "
                "fixed by the closed-form uniform basis proposed in benchmarks/fast_spline.py (then drop this mark)",
            ),
        ),
    ],
    ids=["closed_form_prototype", "aurora_core"],
)
def test_activation_memory_grows_with_grid_at_most_by_the_basis_tensor(closed_form: bool) -> None:
    tokens, rank, order = 256, 2, 3
    growth = adapter_saved_bytes(50, closed_form, tokens=tokens, rank=rank) - adapter_saved_bytes(5, closed_form, tokens=tokens, rank=rank)
    basis_growth = tokens * rank * ((50 + order) - (5 + order)) * 4  # fp32 (tokens, r, grid_size + order) basis
    assert growth <= basis_growth


# -- the closed-form spline prototype ------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("grid_size", [1, 5, 17])
def test_closed_form_basis_matches_scipy(order: int, grid_size: int) -> None:
    knots = aurora.uniform_knots(grid_size, order, (-1.5, 2.0), dtype=torch.float64)
    x = torch.linspace(float(knots[0]) - 1, float(knots[-1]) + 1, 2001, dtype=torch.float64)
    reference = np.stack([
        np.nan_to_num(BSpline.basis_element(knots[i : i + order + 2].numpy(), extrapolate=False)(x.numpy()))
        for i in range(grid_size + order)
    ], axis=-1)  # B_i on its support [t_i, t_{i+order+1}), 0 elsewhere
    got = fast_spline.uniform_bspline_basis(x, knots, order)
    assert got.shape == (x.numel(), grid_size + order)
    assert torch.allclose(got, torch.from_numpy(reference), atol=1e-12)


def test_cardinal_pieces_of_the_cubic_are_the_textbook_ones() -> None:
    """N_3 pieces: f³/6, (-3f³+3f²+3f+1)/6, (3f³-6f²+4)/6, (1-f)³/6 (columns m = 0..3, rows powers of f)."""
    expected = torch.tensor([[0, 1, 4, 1], [0, 3, 0, -3], [0, 3, -6, 3], [1, -3, 3, -1]], dtype=torch.float64) / 6
    assert torch.allclose(fast_spline.cardinal_bspline_pieces(3), expected, atol=1e-15)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_per_unit_spline_values_and_gradients(order: int) -> None:
    torch.manual_seed(0)
    knots = aurora.uniform_knots(5, order, dtype=torch.float64)
    z = (torch.randn(9, 3, dtype=torch.float64) * 1.5).requires_grad_()
    coefficients = torch.randn(3, 5 + order, dtype=torch.float64, requires_grad=True)
    constants = fast_spline.spline_constants(knots, order, rank=3, dtype=torch.float64)

    def closed_form(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return fast_spline.PerUnitSpline.apply(z, c, constants)

    assert torch.autograd.gradcheck(closed_form, (z, coefficients))
    reference = (aurora.bspline_basis(z, knots, order) * coefficients).sum(-1)
    assert torch.allclose(closed_form(z, coefficients), reference, atol=1e-12)


def test_differentiable_basis_has_finite_gradients_at_knots() -> None:
    knots = aurora.uniform_knots(5, 3)
    x = knots.clone().requires_grad_()  # f = 0 exactly: f**0 must not produce 0 * inf
    fast_spline.uniform_bspline_basis(x, knots, 3).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("mode", ["per_unit", "sum", "per_edge"])
def test_adopted_layers_keep_outputs_gradients_and_state(mode: str) -> None:
    torch.manual_seed(0)
    reference = aurora.AdaptiveNonlinearLayer(3, spline_mode=mode, grid_size=7)
    adopted = aurora.AdaptiveNonlinearLayer(3, spline_mode=mode, grid_size=7)
    adopted.load_state_dict(reference.state_dict())
    assert fast_spline.adopt_closed_form_spline(adopted) == 1
    z = torch.randn(4, 5, 3, requires_grad=True)
    out_ref, out_new = reference(z), adopted(z)
    assert torch.allclose(out_ref, out_new, atol=1e-5)
    weights = torch.randn_like(out_ref)
    grads_ref = torch.autograd.grad((out_ref * weights).sum(), [z, *reference.parameters()])
    grads_new = torch.autograd.grad((out_new * weights).sum(), [z, *adopted.parameters()])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads_ref, grads_new))
    assert adopted.state_dict().keys() == reference.state_dict().keys()
    # torch.func (used by aurora.merge's "linearized" strategy) still works
    zero = torch.zeros(3)
    assert torch.allclose(torch.func.jacrev(adopted)(zero), torch.func.jacrev(reference)(zero), atol=1e-5)


# -- the fused-output prototype -----------------------------------------------------------------
@pytest.mark.parametrize("method", ["lora", "moslora", "aurora", "loran"])
def test_fused_output_keeps_outputs_and_gradients(method: str) -> None:
    """Against the unfused layer: same output and gradients, in training and after a merge."""
    torch.manual_seed(0)
    reference = nn.Sequential()
    reference.add_module("query", nn.Linear(12, 10))
    aurora.add_adapters(reference, aurora.AdapterConfig(method=method, rank=3, target_modules=["query"]))
    with torch.no_grad():
        for parameter in aurora.adapter_layers(reference)[0][1].parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.2)
    fused = copy.deepcopy(reference)
    assert fused_output.adopt_fused_output(fused) == (0 if method == "loran" else 1)
    x = torch.randn(2, 5, 12)
    out_ref, out_fused = reference(x), fused(x)
    assert torch.allclose(out_ref, out_fused, atol=1e-6)
    grads_ref = torch.autograd.grad(out_ref.square().sum(), [p for p in reference.parameters() if p.requires_grad])
    grads_fused = torch.autograd.grad(out_fused.square().sum(), [p for p in fused.parameters() if p.requires_grad])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads_ref, grads_fused))
    aurora.merge(reference), aurora.merge(fused)
    assert torch.allclose(reference(x), fused(x), atol=1e-6)


def test_single_layer_rejects_unknown_variants() -> None:
    with pytest.raises(ValueError, match="variant must be one of"):
        adapter_cost.single_layer("lora+compiled", 8, 2)
