"""``AdapterConfig``: every option of the four methods, its default, its source, and its validation."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .spline import MAX_POLYNOMIAL_MAP_BYTES, max_grid_size, require_polynomial_map_fits

__all__ = ["AdapterConfig", "METHODS", "ACTIVATIONS", "SPLINE_MODES", "FORMS", "require_choice"]

from .registry import METHODS  # noqa: E402  (the names registered by aurora.layers: one registry)
ACTIVATIONS = ("tanh", "leaky_relu", "sigmoid")
SPLINE_MODES = ("per_unit", "sum", "per_edge")
FORMS = ("dynamic", "static")
SELF_PROJECTION_INITS = ("identity", "kaiming")
MIXER_INITS = ("kaiming", "orthogonal", "identity")
LORAN_SCALINGS = ("outside", "inside")
LORAN_FUNCTIONS = ("sinter", "tanh", "sigmoid", "relu")


def require_choice(option: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise ``ValueError`` naming ``option`` and the allowed values unless ``value`` is one of them."""
    if value not in allowed:
        raise ValueError(f"{option} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _require_integer(option: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value!r}")


def _require_finite(option: str, value: Any, condition: str, holds: Callable[[float], bool]) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not holds(value):
        raise ValueError(f"{option} must be {condition} (a finite number), got {value!r}")


def _names(option: str, value: Any, allow_empty: bool) -> list[str]:
    """A list of non-empty module names; a bare string is refused (it is not split into characters)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{option} must be a list of module names, got {value!r}")
    if (not value and not allow_empty) or not all(isinstance(name, str) and name for name in value):
        raise ValueError(f"{option} must be a {'' if allow_empty else 'non-empty '}list of non-empty module names, got {value!r}")
    return list(value)


def _target_modules(value: Any) -> list[str] | str:
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"target_modules is not a valid regular expression ({error}): {value!r}") from None
        if not value:
            raise ValueError("target_modules must be a non-empty list of names or a regex string, got ''")
        return value
    try:
        return _names("target_modules", value, allow_empty=False)
    except ValueError:
        raise ValueError(f"target_modules must be a non-empty list of names or a regex string, got {value!r}") from None


def _grid_range(value: Any) -> tuple[float, float]:
    numbers = isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not numbers or len(value) != 2 or not all(math.isfinite(v) for v in value) or not value[0] < value[1]:
        raise ValueError(f"grid_range must be two finite numbers (low, high) with low < high, got {value!r}")
    return (float(value[0]), float(value[1]))


@dataclass
class AdapterConfig:
    """Options of LoRA, MoSLoRA, AuroRA and LoRAN adapters (one config, the method picks the layer).

    Defaults follow the AuroRA paper (App. G: r̃ = 2, α = 4, tanh) and LoRAN (a = 5e-5, ω = 1e4);
    where the paper is silent the choice is marked "ours" and explained.
    """

    method: str = field(default="aurora", metadata={"help": "adapter method, one of aurora.METHODS (lora, moslora, aurora, loran, dora and any aurora.register_method adds)"})
    rank: int = field(default=2, metadata={"help": "r (r̃ for AuroRA): width of the low-rank bottleneck; paper App. G: 2"})
    alpha: float = field(default=4.0, metadata={"help": "scaling α; updates are multiplied by α / rank. App. G: 4"})
    target_modules: list[str] | str = field(
        default_factory=lambda: ["query", "value"],
        metadata={
            "help": "nn.Linear modules to adapt: a list of names matched against the end of each module's "
            "qualified name (as PEFT), or one string used as a full-match regular expression"
        },
    )
    modules_to_save: list[str] = field(
        default_factory=list,
        metadata={"help": "modules trained in full besides the adapters, e.g. the classifier head (§3.2)"},
    )
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter input (LoRA practice)"})
    # AuroRA: the Adaptive Nonlinear Layer (Eq. 5–8)
    fixed_nonlinearity: bool = field(default=True, metadata={"help": "keep F(z) = act(H act(z)); False = 'w/o F' (Table 4)"})
    learnable_nonlinearity: bool = field(default=True, metadata={"help": "keep the B-spline L(z); False = 'w/o L' (Table 4)"})
    activation: str = field(
        default="tanh",
        metadata={"help": f"fixed activation in F = act(H act(z)), one of {ACTIVATIONS} (Table 5); applied twice, "
                  "so leaky_relu scales negative inputs by slope² when H = I"},
    )
    leaky_relu_slope: float = field(default=0.01, metadata={"help": "negative slope when activation='leaky_relu'"})
    grid_size: int = field(
        default=5,
        metadata={"help": "B-spline grid intervals (ours: KAN's default 5); at most "
                  f"{max_grid_size(3)} for cubic splines: the dense interval-polynomial map, shared by all layers, "
                  f"grows with grid_size² and is capped at {MAX_POLYNOMIAL_MAP_BYTES // 2**20} MiB"},
    )
    spline_order: int = field(default=3, metadata={"help": "B-spline degree (ours: cubic, KAN's default)"})
    grid_range: tuple[float, float] = field(default=(-1.0, 1.0), metadata={"help": "knot grid range (ours: [-1, 1])"})
    spline_mode: str = field(
        default="per_unit",
        metadata={"help": f"reading of Eq. 7, one of {SPLINE_MODES}; see AdaptiveNonlinearLayer"},
    )
    spline_init_scale: float = field(default=0.1, metadata={"help": "std of initial spline coefficients (ours)"})
    self_projection_init: str = field(
        default="identity", metadata={"help": f"init of H, one of {SELF_PROJECTION_INITS} (ours: identity)"}
    )
    form: str = field(
        default="dynamic",
        metadata={"help": f"training form, one of {FORMS}: B σ(Ax) (AuroRA) or B σ(A) x (AuroRA-S, App. B)"},
    )
    # MoSLoRA
    mixer_init: str = field(default="kaiming", metadata={"help": f"init of MoSLoRA's r×r mixer, one of {MIXER_INITS}"})
    # LoRAN
    sinter_amplitude: float = field(default=5e-5, metadata={"help": "LoRAN Sinter amplitude a (LoRAN paper: 5e-5)"})
    sinter_frequency: float = field(default=1e4, metadata={"help": "LoRAN Sinter frequency ω (LoRAN paper: 1e4)"})
    loran_scaling: str = field(
        default="outside",
        metadata={"help": f"where LoRAN's s = α / r goes, one of {LORAN_SCALINGS}: 'outside' ΔW = s·f(B A) (the authors' "
                  "code, PEFT-LoRAN mlora.py) or 'inside' ΔW = f(s·B A) (the seed summary's reading); equal when α = r"},
    )
    loran_function: str = field(
        default="sinter",
        metadata={"help": f"LoRAN's f in ΔW = s·f(B A), one of {LORAN_FUNCTIONS} (the LoRAN paper compares them)"},
    )

    def __post_init__(self) -> None:
        require_choice("method", self.method, METHODS)
        _require_integer("rank", self.rank, 1)
        _require_finite("alpha", self.alpha, "> 0", lambda v: v > 0)
        _require_finite("dropout", self.dropout, "in [0, 1)", lambda v: 0.0 <= v < 1.0)
        self.target_modules = _target_modules(self.target_modules)
        self.modules_to_save = _names("modules_to_save", self.modules_to_save, allow_empty=True)
        for option in ("fixed_nonlinearity", "learnable_nonlinearity"):
            if not isinstance(getattr(self, option), bool):
                raise ValueError(f"{option} must be True or False, got {getattr(self, option)!r}")
        _require_finite("leaky_relu_slope", self.leaky_relu_slope, ">= 0", lambda v: v >= 0)
        _require_integer("grid_size", self.grid_size, 1)
        _require_integer("spline_order", self.spline_order, 0)
        require_polynomial_map_fits(self.grid_size, self.spline_order)
        self.grid_range = _grid_range(self.grid_range)
        _require_finite("spline_init_scale", self.spline_init_scale, ">= 0", lambda v: v >= 0)
        require_choice("activation", self.activation, ACTIVATIONS)
        require_choice("spline_mode", self.spline_mode, SPLINE_MODES)
        require_choice("self_projection_init", self.self_projection_init, SELF_PROJECTION_INITS)
        require_choice("form", self.form, FORMS)
        require_choice("mixer_init", self.mixer_init, MIXER_INITS)
        require_choice("loran_scaling", self.loran_scaling, LORAN_SCALINGS)
        require_choice("loran_function", self.loran_function, LORAN_FUNCTIONS)
        for option in ("sinter_amplitude", "sinter_frequency"):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{option} must be a finite number, got {value!r}")
        if not (self.fixed_nonlinearity or self.learnable_nonlinearity):
            raise ValueError("fixed_nonlinearity and learnable_nonlinearity cannot both be False (that is plain LoRA)")

    @property
    def scaling(self) -> float:
        """α / r, the factor on every update (LoRA convention, App. G)."""
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AdapterConfig":
        if not isinstance(values, dict):
            raise ValueError(f"an AdapterConfig is read from a dict of options, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown AdapterConfig options {unknown}; allowed: {sorted(known)}")
        return cls(**values)
