"""``AdapterConfig``: every option of the four methods, its default, its source, and its validation."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = ["AdapterConfig", "METHODS", "ACTIVATIONS", "SPLINE_MODES", "FORMS", "require_choice"]

METHODS = ("lora", "moslora", "aurora", "loran")
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


@dataclass
class AdapterConfig:
    """Options of LoRA, MoSLoRA, AuroRA and LoRAN adapters (one config, the method picks the layer).

    Defaults follow the AuroRA paper (App. G: r̃ = 2, α = 4, tanh) and LoRAN (a = 5e-5, ω = 1e4);
    where the paper is silent the choice is marked "ours" and explained.
    """

    method: str = field(default="aurora", metadata={"help": f"adapter method, one of {METHODS}"})
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
    grid_size: int = field(default=5, metadata={"help": "B-spline grid intervals (ours: KAN's default 5)"})
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
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(f"rank must be an integer >= 1, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.target_modules, (list, tuple)):
            self.target_modules = list(self.target_modules)
            if not self.target_modules or not all(isinstance(t, str) and t for t in self.target_modules):
                raise ValueError(f"target_modules must be a non-empty list of names or a regex string, got {self.target_modules!r}")
        elif not (isinstance(self.target_modules, str) and self.target_modules):
            raise ValueError(f"target_modules must be a non-empty list of names or a regex string, got {self.target_modules!r}")
        self.modules_to_save = list(self.modules_to_save)
        if not isinstance(self.grid_size, int) or self.grid_size < 1:
            raise ValueError(f"grid_size must be an integer >= 1, got {self.grid_size!r}")
        if not isinstance(self.spline_order, int) or self.spline_order < 0:
            raise ValueError(f"spline_order must be an integer >= 0, got {self.spline_order!r}")
        self.grid_range = (float(self.grid_range[0]), float(self.grid_range[1]))
        if not self.grid_range[1] > self.grid_range[0]:
            raise ValueError(f"grid_range must be (low, high) with low < high, got {self.grid_range!r}")
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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown AdapterConfig options {unknown}; allowed: {sorted(known)}")
        values = dict(values)
        if "grid_range" in values:
            values["grid_range"] = tuple(values["grid_range"])
        return cls(**values)
