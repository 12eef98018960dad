"""Proposition 2.2 measured: gradient norms of one adapter layer across input scales, and the proof's bounds.

App. E bounds ``∂L/∂H``, ``∂L/∂w_s`` and ``∂L/∂x`` using ``tanh' ∈ (0, 1]`` and bounded, compactly
supported B-splines. We measure, for LoRA, LoRAN and AuroRA (tanh, and LeakyReLU for contrast), the
norms of ``∂L/∂x``, ``∂L/∂A``, ``∂L/∂B``, ``∂L/∂H`` and ``∂L/∂(spline coefficients)`` for inputs
``x = s·u`` with ``||u|| = 1`` and ``s`` from 1e-2 to 1e4 (far outside the spline grid), for ``u`` a random
direction and for ``u`` in the null space of ``A`` (where ``A x = 0`` at every scale), under two losses:

* ``probe`` — ``L = ⟨g, Δh(x)⟩`` with a fixed unit vector ``g``: the adapter's own Jacobians;
* ``squared`` — App. E's ``L = ½||W0 x + Δh(x) − y||²``, whose residual grows with ``||x||``.

Then the closed forms the proof relies on, each checked against autograd: ``tanh'``, the B-spline
basis derivative and its bound ``p/h``, compact support, and LoRAN's ``Sinter'`` whose envelope grows.

``python -m aurora.experiments.gradients --quick|--full`` writes ``data/results/gradients/``
``{input_scale,bounds,sinter}.csv``. Chapter: ``book/gradients.md``.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

import aurora
from aurora.plots import book_figure, method_style
from aurora.results import write_results
from aurora.spline import bspline_basis, uniform_knots
from aurora.theory import (
    adapter_map,
    bspline_basis_derivative,
    gradient_norms,
    single_thread,
    sinter_derivative,
    tanh_derivative,
    uniform_basis_derivative_bound,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["QUANTITIES", "plot_input_scale", "growth_summary", "plot_sinter_derivative", "RESULTS_NAME", "Settings", "QUICK", "SMOKE", "FULL", "METHODS", "probe_layer", "unit_directions", "hidden_per_unit_input",
           "input_scale_sweep",
           "bound_checks", "sinter_checks", "run", "main"]

RESULTS_NAME = "gradients"


@dataclass(frozen=True)
class Settings:
    dim: int = 64
    rank: int = 2
    scales: tuple[float, ...] = tuple(10.0 ** (k / 4) for k in range(-8, 17))  # 1e-2 … 1e4
    directions: int = 8
    seed: int = 0


QUICK = Settings()
FULL = Settings(dim=384, scales=tuple(10.0 ** (k / 8) for k in range(-16, 33)), directions=64)
SMOKE = Settings(dim=16, scales=(1.0, 100.0), directions=2)
"""Toy sizes: the same code in seconds (the book's quick build runs it next to the committed results)."""

# label -> AdapterConfig options (rank and alpha are filled in from Settings)
METHODS: dict[str, dict] = {
    "lora": dict(method="lora"),
    "loran": dict(method="loran"),
    "aurora": dict(method="aurora"),
    "aurora_leaky_relu": dict(method="aurora", activation="leaky_relu"),
}


def probe_layer(method: str, dim: int, rank: int, seed: int = 0) -> aurora.AdapterLayer:
    """One adapter on a random frozen ``dim × dim`` layer with realistic nonzero parameters.

    ``A`` keeps its Kaiming init; ``B`` (zero at init) and ``W0`` get ``N(0, 1/d)`` entries; ``H`` is the
    identity plus ``N(0, 0.1²)``; spline coefficients keep their ``N(0, 0.1²)`` init.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    config = aurora.AdapterConfig(rank=rank, alpha=2.0 * rank, **METHODS[method])
    layer = adapter_map(dim, dim, config)
    with torch.no_grad():
        layer.base_layer.weight.copy_(torch.randn(dim, dim, generator=generator) / math.sqrt(dim))
        layer.lora_B.copy_(torch.randn(dim, rank, generator=generator) / math.sqrt(dim))
        projection = getattr(getattr(layer, "anl", None), "self_projection", None)
        if projection is not None:
            projection.add_(0.1 * torch.randn(projection.shape, generator=generator))
    return layer


def unit_directions(layer: aurora.AdapterLayer, family: str, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` unit vectors: random, or random within the null space of ``A`` (so ``A u = 0``)."""
    u = torch.randn(count, layer.in_features, generator=generator, dtype=torch.float64)
    if family == "null_space":
        a = layer.lora_A.detach().double()
        u = u - u @ a.T @ torch.linalg.solve(a @ a.T, a)  # remove the row space of A
    return (u / u.norm(dim=1, keepdim=True)).float()


def hidden_per_unit_input(settings: Settings) -> float:
    """Median over random unit directions ``u`` of ``max_j |(A u)_j|`` for the AuroRA probe layer.

    ``A x`` leaves the spline grid ``[-1, 1]`` around ``||x|| = 1 / value`` and the extended grid (where the
    spline and its gradient vanish) around ``||x|| = (1 + p h) / value``.
    """
    layer = probe_layer("aurora", settings.dim, settings.rank, settings.seed)
    u = unit_directions(layer, "random", 1000, torch.Generator().manual_seed(settings.seed + 1))
    return float((u @ layer.lora_A.detach().T).abs().max(dim=1).values.median())


def input_scale_sweep(settings: Settings, progress: bool = True) -> list[dict]:
    """Gradient norms (max and mean over directions) per method, direction family, loss, scale and quantity."""
    rows = []
    jobs = [(m, f, loss) for m in METHODS for f in ("random", "null_space") for loss in ("probe", "squared")]
    for method, family, loss in tqdm(jobs, desc="gradient probes", disable=not progress):
        layer = probe_layer(method, settings.dim, settings.rank, settings.seed)
        generator = torch.Generator().manual_seed(settings.seed + 1)
        directions = unit_directions(layer, family, settings.directions, generator)
        upstream = torch.randn(layer.out_features, generator=generator)
        upstream = upstream / upstream.norm()
        target = torch.randn(layer.out_features, generator=generator)
        for scale in settings.scales:
            per_direction = [
                gradient_norms(layer, scale * u[None], upstream[None], loss=loss, target=target[None]) for u in directions
            ]
            for quantity in per_direction[0]:
                values = [norms[quantity] for norms in per_direction]
                rows.append(dict(method=method, family=family, loss=loss, scale=scale, quantity=quantity,
                                 max_norm=max(values), mean_norm=sum(values) / len(values)))
    return rows


TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-12}  # closed form vs autograd: agreement up to rounding


def bound_checks(grid_sizes: tuple[int, ...] = (3, 5, 10, 20), orders: tuple[int, ...] = (1, 2, 3)) -> list[dict]:
    """The closed forms of App. E against autograd and their claimed bounds; one row per check.

    ``holds`` says whether the check passed (``None`` for rows that only report a value).
    """
    rows = []
    z = torch.linspace(-60, 60, 240001, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        zz = z.to(dtype).requires_grad_(True)
        autograd = torch.autograd.grad(torch.tanh(zz).sum(), zz)[0]
        closed = tanh_derivative(zz.detach())
        zero_at = zz.detach()[(closed == 0) & (zz.detach() > 0)]
        rows += [
            dict(check="tanh' max", setting=str(dtype), value=float(closed.max()), bound=1.0, holds=bool(closed.max() <= 1)),
            dict(check="tanh' min on [-60, 60]", setting=str(dtype), value=float(closed.min()), bound=0.0, holds=bool(closed.min() > 0)),
            dict(check="tanh' first z > 0 where it rounds to 0", setting=str(dtype),
                 value=float(zero_at.min()) if zero_at.numel() else float("nan"), bound=None, holds=None),
            dict(check="tanh' closed form vs autograd (max abs diff)", setting=str(dtype),
                 value=float((autograd - closed).abs().max()), bound=TOLERANCE[dtype], holds=bool((autograd - closed).abs().max() <= TOLERANCE[dtype])),
        ]
    for grid_size in grid_sizes:
        for order in orders:
            knots = uniform_knots(grid_size, order, (-1.0, 1.0), dtype=torch.float64)
            x = torch.linspace(float(knots[0]) - 1, float(knots[-1]) + 1, 20001, dtype=torch.float64)
            inside = (x > knots[0]) & (x < knots[-1])
            xx = x.clone().requires_grad_(True)
            basis = bspline_basis(xx, knots, order)
            jac = torch.stack([torch.autograd.grad(basis[:, k].sum(), xx, retain_graph=True)[0] for k in range(basis.shape[1])], -1)
            basis = basis.detach()
            closed = bspline_basis_derivative(x, knots, order)
            setting = f"grid_size={grid_size}, order={order}"
            bound = uniform_basis_derivative_bound(order, (-1.0, 1.0), grid_size)
            rows += [
                dict(check="basis in [0, 1]", setting=setting, value=float(basis.max()), bound=1.0,
                     holds=bool(basis.max() <= 1 + 1e-12 and basis.min() >= -1e-12)),
                dict(check="max |B_k'| (autograd) vs p/h", setting=setting, value=float(jac.abs().max()), bound=bound,
                     holds=bool(jac.abs().max() <= bound + 1e-9)),
                dict(check="B_k' closed form vs autograd (max abs diff)", setting=setting,
                     value=float((jac - closed).abs()[inside].max()), bound=TOLERANCE[torch.float64],
                     holds=bool((jac - closed).abs()[inside].max() <= TOLERANCE[torch.float64])),
                dict(check="basis and derivative outside the extended grid", setting=setting,
                     value=float(max(basis[~inside].abs().max(), jac[~inside].abs().max())), bound=0.0,
                     holds=bool(basis[~inside].abs().max() == 0 and jac[~inside].abs().max() == 0)),
            ]
    anl = aurora.AdaptiveNonlinearLayer(2, fixed=False, learnable=True)
    t = anl.knots
    far = torch.cat([torch.linspace(-1e4, float(t[0]) - 1e-3, 1000), torch.linspace(float(t[-1]) + 1e-3, 1e4, 1000)])
    zz = far[:, None].repeat(1, 2).requires_grad_(True)
    spline = anl(zz)
    grad = torch.autograd.grad(spline.sum(), zz)[0]
    spline = spline.detach()
    rows.append(dict(check="ANL spline part L(z) and dL/dz beyond the extended grid", setting="grid_size=5, order=3, range (-1, 1)",
                     value=float(max(spline.abs().max(), grad.abs().max())), bound=0.0,
                     holds=bool(spline.abs().max() == 0 and grad.abs().max() == 0)))
    return rows


def sinter_checks(amplitude: float = 5e-5, frequency: float = 1e4) -> list[dict]:
    """LoRAN's ``Sinter'(w)`` vs autograd and its envelope ``1 + a + aω|w|`` over weight magnitudes ``|w|``."""
    rows = []
    for magnitude in [10.0 ** k for k in range(-5, 4)]:
        w = torch.linspace(magnitude * 0.9, magnitude * 1.1, 4001, dtype=torch.float64).requires_grad_(True)
        autograd = torch.autograd.grad(aurora.sinter(w, amplitude, frequency).sum(), w)[0]
        closed = sinter_derivative(w.detach(), amplitude, frequency)
        rows.append(dict(weight_magnitude=magnitude, max_derivative=float(closed.abs().max()),
                         envelope=1 + amplitude + amplitude * frequency * magnitude * 1.1,
                         max_abs_diff_vs_autograd=float((autograd - closed).abs().max())))
    return rows


def run(settings: Settings = QUICK, progress: bool = True, write: bool = True, results_dir: Path | None = None) -> dict[str, list[dict]]:
    """All tables of the experiment; writes them to ``data/results/gradients/`` (or ``results_dir``) when ``write``."""
    start = time.perf_counter()
    with single_thread():
        tables = dict(input_scale=input_scale_sweep(settings, progress), bounds=bound_checks(), sinter=sinter_checks())
    if write:
        write_results(RESULTS_NAME, tables, asdict(settings), wall_time_s=time.perf_counter() - start, results_dir=results_dir)
    return tables


# ---------------------------------------------------------------------------------------------
# reading the results: the chapter's figures and summary (book/gradients.md)
# ---------------------------------------------------------------------------------------------

QUANTITIES = ("x", "A", "B", "H", "spline")
"""The gradient norms of ``input_scale.csv``: ∂L/∂x and ∂L/∂ of each adapter parameter."""


def _rows(scales: "pd.DataFrame", method: str, family: str, loss: str, quantity: str) -> "pd.DataFrame":
    return scales[(scales.method == method) & (scales.family == family) & (scales.loss == loss) & (scales.quantity == quantity)]


def plot_input_scale(scales: "pd.DataFrame", family: str, loss: str, grid_band: tuple[float, float]) -> Figure:
    """Max gradient norm over directions against ||x||, one panel per quantity, one line per method.

    ``grid_band`` (from :func:`hidden_per_unit_input`) shades where AuroRA's A x leaves the spline grid and
    then its support. LoRA and LoRAN often overlap, so LoRAN is dashed.
    """
    fig, axes = book_figure("tall", 2, 3, sharex=True)
    flat = axes.flatten()
    for ax, quantity in zip(flat, QUANTITIES):
        for method in METHODS:
            rows = _rows(scales, method, family, loss, quantity)
            if len(rows):
                style = dict(method_style("aurora" if method.startswith("aurora") else method), markersize=2.5)
                if method == "aurora_leaky_relu":
                    style.update(color="#8c564b", linestyle=":", marker="^")
                ax.loglog(rows.scale, rows.max_norm.clip(lower=1e-12), label=method, **style)
        ax.axvspan(*grid_band, color="0.9")
        ax.set_title(f"||∂L/∂{quantity}||", fontsize=9)
        ax.set_ylim(1e-12, 1e9)
    for ax in flat[3:]:
        ax.set_xlabel("||x||")
    handles, labels = flat[0].get_legend_handles_labels()
    flat[-1].axis("off")
    flat[-1].legend(handles, labels, loc="center", title=f"{family} directions, {loss} loss")
    return fig


def growth_summary(scales: "pd.DataFrame") -> "pd.DataFrame":
    """Per method, direction family and loss: max norm at the largest scale over max norm at ||x|| = 1.

    1e4 over four decades means linear growth, 0 that the gradient vanished.
    """
    import pandas as pd

    def growth(rows: "pd.DataFrame") -> float:
        at = lambda target: rows.loc[(rows.scale - target).abs().idxmin(), "max_norm"]  # noqa: E731
        return float(at(rows.scale.max()) / at(1.0))

    records = []
    for method in METHODS:
        for family in ("random", "null_space"):
            for loss in ("probe", "squared"):
                record = dict(method=method, family=family, loss=loss)
                for quantity in QUANTITIES:
                    rows = _rows(scales, method, family, loss, quantity)
                    if len(rows):
                        record[quantity] = growth(rows)
                records.append(record)
    return pd.DataFrame(records)


def plot_sinter_derivative(amplitude: float = 5e-5, frequency: float = 1e4, w_max: float = 3.0) -> Figure:
    """Sinter'(w) = a sin(ωw) + aωw cos(ωw) + 1 with its envelope 1 ± (a + aω|w|) over entries |w| ≤ w_max."""
    w = torch.linspace(-w_max, w_max, 20001, dtype=torch.float64)
    fig, ax = book_figure("single")
    ax.plot(w, sinter_derivative(w, amplitude, frequency), linewidth=0.3, label="Sinter'(w)", color=method_style("loran")["color"])
    ax.plot(w, 1 + amplitude + amplitude * frequency * w.abs(), "k--", linewidth=1, label="envelope 1 ± (a + aω|w|)")
    ax.plot(w, 1 - amplitude - amplitude * frequency * w.abs(), "k--", linewidth=1)
    ax.set_xlabel("entry w of s·B·A")
    ax.legend()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="64-dimensional layer, 8 directions per scale (default)")
    mode.add_argument("--full", action="store_true", help="384-dimensional layer, 64 directions, finer scales")
    args = parser.parse_args(argv)
    run(FULL if args.full else QUICK)


if __name__ == "__main__":
    main()
