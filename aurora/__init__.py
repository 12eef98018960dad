"""aurora: LoRA, MoSLoRA, AuroRA and LoRAN adapters for PyTorch, Hugging Face and timm models.

AuroRA (arXiv 2505.18738): ``h = W0 x + B σ(A x)`` with the Adaptive Nonlinear Layer
``σ(z) = act(H act(z)) + L(z)``; LoRAN (arXiv 2509.21870): ``ΔW = Sinter(B A)``; DoRA (Liu et al. 2024) as a
baseline. Methods come from one registry (:func:`register_method`, :data:`METHODS`); PEFT interop in
:mod:`aurora.peft_bridge` (``export_peft``, ``import_peft``) and :mod:`aurora.merge` (``merge_and_unload``,
``unload``, ``disable_adapters``).
"""

from .config import ACTIVATIONS, FORMS, METHODS, SPLINE_MODES, AdapterConfig
from .inject import (
    adapter_layers,
    add_adapters,
    linear_module_names,
    parameter_report,
    suggest_target_modules,
    trainable_parameters,
)
from .io import adapter_state_dict, load_adapters, save_adapters
from .layers import AdapterLayer, AuroraLayer, DoraLayer, LoraLayer, LoranLayer, MoSLoraLayer
from .merge import (
    MERGE_STRATEGIES,
    MergeReport,
    collect_calibration_inputs,
    disable_adapters,
    merge,
    merge_and_unload,
    merge_update,
    unload,
    unmerge,
)
from .peft_bridge import export_peft, import_peft
from .registry import layer_class, register_method
from .nonlinear import AdaptiveNonlinearLayer, get_activation, sinter
from .spline import bspline_basis, num_bases, uniform_knots

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "FORMS", "METHODS", "SPLINE_MODES", "MERGE_STRATEGIES",
    "AdapterConfig", "add_adapters", "adapter_layers", "linear_module_names", "parameter_report",
    "suggest_target_modules", "trainable_parameters",
    "save_adapters", "load_adapters", "adapter_state_dict",
    "AdapterLayer", "LoraLayer", "MoSLoraLayer", "AuroraLayer", "LoranLayer", "DoraLayer", "register_method", "layer_class",
    "merge", "unmerge", "merge_update", "MergeReport", "collect_calibration_inputs",
    "merge_and_unload", "unload", "disable_adapters", "export_peft", "import_peft",
    "AdaptiveNonlinearLayer", "get_activation", "sinter",
    "bspline_basis", "uniform_knots", "num_bases",
]
