"""LoRAN's update and its fused linear layer (one autograd node).

LoRAN (arXiv 2509.21870) adapts a frozen ``W0`` by a nonlinear function of LoRA's product,

* ``loran_scaling="outside"`` (default): ``ΔW = s · f(B A)``, as the authors' code computes it
  (PEFT-LoRAN, ``mlora.py``, ``Sin`` from ``utils/other.py``);
* ``loran_scaling="inside"``: ``ΔW = f(s · B A)``, the reading of the seed summary;

with ``s = α / r`` and ``f`` = Sinter ``a·sin(ωx)⊙x + x`` (the paper's choice) or, for the paper's
comparison of functions, tanh, sigmoid or ReLU. The two placements agree when ``s = 1`` (``α = r``).

:class:`LoranLinear` computes ``h = (W0 + ΔW) x + b`` as one autograd node: it folds ``ΔW`` into the
weight and runs one GEMM, saves only ``x``, ``A`` and ``B`` (no weight-sized tensor), and in the backward
recomputes ``B A`` and the elementwise terms. Its floor is full fine-tuning of the same layer, which
pays the weight-sized gradient ``gᵀ x`` too (``book/cost.md``).
"""

from __future__ import annotations

import threading
import warnings
from typing import Callable, NamedTuple

import torch

from .config import LORAN_FUNCTIONS, LORAN_SCALINGS, require_choice

__all__ = [
    "LoranSpec", "loran_function", "loran_derivative", "delta_weight", "loran_linear", "LoranLinear", "workspace_bytes",
    "clear_workspace", "compiled_elementwise_available",
]


class LoranSpec(NamedTuple):
    """What fixes LoRAN's ``ΔW = outer · f(inner · B A)`` (``outer · inner = s`` in both placements)."""

    function: str
    scaling: float  # s = α / r
    placement: str  # "outside" | "inside"
    amplitude: float  # Sinter a
    frequency: float  # Sinter ω
    compiled: bool = True  # Sinter on CPU: its elementwise passes as torch.compile'd kernels (see _elementwise_kernels)

    @property
    def inner(self) -> float:
        return self.scaling if self.placement == "inside" else 1.0

    @property
    def outer(self) -> float:
        return 1.0 if self.placement == "inside" else self.scaling

    def validate(self) -> "LoranSpec":
        require_choice("loran_function", self.function, LORAN_FUNCTIONS)
        require_choice("loran_scaling", self.placement, LORAN_SCALINGS)
        return self


def loran_function(z: torch.Tensor, spec: LoranSpec) -> torch.Tensor:
    """``f(z)`` in plain (differentiable) torch ops."""
    if spec.function == "sinter":
        return spec.amplitude * torch.sin(spec.frequency * z) * z + z
    if spec.function == "tanh":
        return torch.tanh(z)
    if spec.function == "sigmoid":
        return torch.sigmoid(z)
    return torch.relu(z)


def loran_derivative(z: torch.Tensor, spec: LoranSpec) -> torch.Tensor:
    """``f'(z)``; Sinter: ``1 + a·sin(ωz) + a·ω·z·cos(ωz)``."""
    if spec.function == "sinter":
        angle = spec.frequency * z
        return 1 + spec.amplitude * torch.sin(angle) + spec.amplitude * angle * torch.cos(angle)
    if spec.function == "tanh":
        return 1 - torch.tanh(z) ** 2
    if spec.function == "sigmoid":
        value = torch.sigmoid(z)
        return value * (1 - value)
    return (z > 0).to(z.dtype)


def delta_weight(lora_A: torch.Tensor, lora_B: torch.Tensor, spec: LoranSpec) -> torch.Tensor:
    """``ΔW = outer · f(inner · B A)`` in plain autograd ops (the reference :class:`LoranLinear` is tested against)."""
    update = loran_function(spec.inner * (lora_B @ lora_A), spec)
    return update if spec.outer == 1.0 else spec.outer * update


def _workspace(shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """Three scratch matrices of ``shape``: on CPU from a per-thread pool that every LoRAN layer shares.

    A fresh weight-sized tensor on CPU costs a page fault per 4 KiB page (its first write takes longer than
    the arithmetic); the pool grows to the largest adapted matrix seen and is reused by every call, which
    runs one at a time per thread and keeps nothing in it (:func:`workspace_bytes`, :func:`clear_workspace`).
    """
    if device.type != "cpu":  # the CUDA caching allocator already reuses blocks
        return [torch.empty(shape, dtype=dtype, device=device) for _ in range(3)]
    numel = shape[0] * shape[1]
    pool = _POOL.__dict__.setdefault("buffers", {})
    buffers = pool.get(dtype)
    if buffers is None or buffers[0].numel() < numel:
        pool.pop(dtype, None)
        with torch.inference_mode(False):  # usable inside and outside inference mode
            buffers = pool[dtype] = [torch.empty(numel, dtype=dtype) for _ in range(3)]
    return [buffer[:numel].view(shape) for buffer in buffers]


_POOL = threading.local()


def workspace_bytes() -> int:
    """Bytes held by this thread's LoRAN workspace (three matrices the size of the largest adapted one)."""
    return sum(b.numel() * b.element_size() for buffers in getattr(_POOL, "buffers", {}).values() for b in buffers)


def clear_workspace() -> None:
    """Release this thread's LoRAN workspace (it is re-created on the next call)."""
    getattr(_POOL, "buffers", {}).clear()


def _sinter_fold(v: torch.Tensor, base: torch.Tensor, out: torch.Tensor, constants: torch.Tensor) -> None:
    """``out = W0 + c_0 · v + c_1 · v ⊙ sin v`` (Sinter's folded weight on ``v = ω · inner · B A``; ``constants`` = ``c``)."""
    out.copy_(base + constants[0] * v + constants[1] * v * torch.sin(v))


def _sinter_scale_gradient(v: torch.Tensor, full: torch.Tensor, constants: torch.Tensor) -> None:
    """``full ← full ⊙ f'`` with Sinter's ``f' = 1 + a·(sin v + v·cos v)`` (``constants = [a]``)."""
    full.mul_(1 + constants[0] * (torch.sin(v) + v * torch.cos(v)))


_KERNELS: dict[str, Callable[..., None]] = {}
_KERNELS_FAILED: list[str] = []


def compiled_elementwise_available() -> bool:
    """Whether Sinter's two elementwise passes run compiled here (False after a failed compilation, e.g. no C++ compiler)."""
    return not _KERNELS_FAILED


def _run_kernel(name: str, eager: Callable[[], None], *args: object) -> None:
    """Run ``_sinter_fold`` / ``_sinter_scale_gradient`` compiled by inductor (dynamic shapes, one pass over the matrix,
    written into the workspace), or ``eager`` (several passes) if compilation is unavailable. The constants travel as
    a tensor and the tensors detached, so new values of ``a``, ``ω`` and ``s`` or of ``requires_grad`` do not recompile.

    On a CPU the compiled pass evaluates the sine (and cosine) and the products in one loop over the weight-sized
    matrix, where eager ops make three to four passes (``book/cost.md``); compiling costs seconds once per process.
    """
    if not _KERNELS_FAILED:
        try:
            if name not in _KERNELS:
                _KERNELS[name] = torch.compile(globals()[name], dynamic=True, fullgraph=True)
            _KERNELS[name](*args)
            return
        except Exception as error:  # a missing C++ toolchain, an unsupported platform: fall back, once, loudly
            _KERNELS_FAILED.append(f"{type(error).__name__}: {error}")
            warnings.warn(f"aurora.loran: compiling Sinter's elementwise passes failed ({_KERNELS_FAILED[0][:200]}); using eager ops")
    eager()


def _compiles(spec: LoranSpec, weight: torch.Tensor) -> bool:
    """Sinter with ``ω ≠ 0`` on a CPU with ``spec.compiled``: the case whose elementwise passes dominate (sine, cosine)."""
    return spec.compiled and spec.function == "sinter" and spec.frequency != 0 and weight.device.type == "cpu" and not _KERNELS_FAILED


def _folded_weight(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, spec: LoranSpec, with_weight: bool, with_derivative: bool):
    """``W0 + ΔW`` (workspace slot 1; ``None`` unless ``with_weight``), what ``f'`` needs (slot 2; ``None`` unless
    ``with_derivative``), and slot 1 itself, free for reuse once the weight is consumed.

    Sinter works on ``v = ω · inner · B A`` (one GEMM with a pre-scaled ``B``): ``W0 + ΔW =
    W0 + (outer/ω)·v + (outer·a/ω)·v·sin v`` and ``f' = 1 + a·(sin v + v·cos v)``; slot 2 holds
    ``sin v + v·cos v``. For tanh, sigmoid and ReLU slot 2 holds ``f'`` itself. The backward asks for the
    weight only when ``x`` needs a gradient, which saves two weight-sized passes otherwise.
    """
    base = weight if weight.dtype == lora_A.dtype else weight.to(lora_A.dtype)
    z, folded, derivative = _workspace((lora_B.shape[0], lora_A.shape[1]), lora_A.dtype, lora_A.device)
    a, omega, outer = spec.amplitude, spec.frequency, spec.outer
    if spec.function == "sinter" and omega != 0:
        v = torch.mm(lora_B * (omega * spec.inner), lora_A, out=z)
        torch.sin(v, out=folded)
        if with_derivative:
            torch.cos(v, out=derivative)
            torch.addcmul(folded, v, derivative, out=derivative)  # sin v + v·cos v
        if with_weight:
            torch.addcmul(base, v, folded, value=outer * a / omega, out=folded).add_(v, alpha=outer / omega)
    else:
        torch.mm(lora_B * spec.inner, lora_A, out=z)
        if spec.function == "sinter":  # ω = 0: Sinter is the identity, f' = 1
            with_derivative = False
            if with_weight:
                torch.add(base, z, alpha=outer, out=folded)
        else:
            if spec.function == "relu":
                torch.clamp(z, min=0, out=folded)
                if with_derivative:
                    torch.sign(z, out=derivative).clamp_(min=0)  # 1 where z > 0, else 0
            else:
                (torch.tanh if spec.function == "tanh" else torch.sigmoid)(z, out=folded)
                if with_derivative:  # tanh' = 1 - f², sigmoid' = f - f²
                    torch.mul(folded, folded, out=derivative).neg_().add_(1.0 if spec.function == "tanh" else folded)
            if with_weight:
                torch.add(base, folded, alpha=outer, out=folded)
    return (folded if with_weight else None), (derivative if with_derivative else None), folded


def _compiled_terms(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, spec: LoranSpec, with_weight: bool, with_derivative: bool):
    """:func:`_folded_weight` for Sinter (``ω ≠ 0``) with the compiled fold: ``v`` in slot 0 stands in for the derivative
    (:func:`_compiled_times_derivative` evaluates ``f'`` from it in the same pass as the product with ``gᵀ x``)."""
    base = weight if weight.dtype == lora_A.dtype else weight.to(lora_A.dtype)
    z, folded, _ = _workspace((lora_B.shape[0], lora_A.shape[1]), lora_A.dtype, lora_A.device)
    v = torch.mm(lora_B * (spec.frequency * spec.inner), lora_A, out=z)
    if with_weight:
        linear, nonlinear = spec.outer / spec.frequency, spec.outer * spec.amplitude / spec.frequency
        constants = torch.tensor([linear, nonlinear], dtype=v.dtype)
        _run_kernel("_sinter_fold", lambda: _folded_weight(weight, lora_A, lora_B, spec, True, False), v, base.detach(), folded, constants)
    return (folded if with_weight else None), (v if with_derivative else None), folded


def _compiled_times_derivative(full: torch.Tensor, v: torch.Tensor, spec: LoranSpec) -> torch.Tensor:
    """``full ⊙ f'(v)`` in place, ``f'`` evaluated from ``v`` (:func:`_compiled_terms`) in the compiled pass."""
    def eager() -> None:
        derivative = torch.cos(v).mul_(v).add_(torch.sin(v))  # sin v + v·cos v
        full.addcmul_(full, derivative, value=spec.amplitude)

    _run_kernel("_sinter_scale_gradient", eager, v, full, torch.tensor([spec.amplitude], dtype=v.dtype))
    return full


def _times_derivative(full: torch.Tensor, derivative: torch.Tensor | None, spec: LoranSpec) -> torch.Tensor:
    """``full ⊙ f'`` in place, from what :func:`_folded_weight` left in its slot 2."""
    if derivative is None:
        return full
    if spec.function == "sinter":
        return full.addcmul_(full, derivative, value=spec.amplitude)
    return full.mul_(derivative)


class LoranLinear(torch.autograd.Function):
    """``(W0 + ΔW) x + b`` as one node; ``x`` is ``(n, d_in)`` in the factors' dtype (fp32 in the package).

    Folds ``W0 + ΔW`` into one weight and runs one GEMM; saves ``x``, ``A`` and ``B`` only. The backward
    recomputes ``B A`` and the elementwise terms (the folded weight only when ``x`` needs a gradient, for
    ``g (W0 + ΔW)``) and forms ``gᵀx`` once for the factors' gradients ``s·Bᵀ(gᵀx ⊙ f')`` and ``s·(gᵀx ⊙ f') Aᵀ``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, spec: LoranSpec):  # type: ignore[override]
        fold = _compiled_terms if _compiles(spec, weight) else _folded_weight
        folded, _, _ = fold(weight, lora_A, lora_B, spec, with_weight=True, with_derivative=False)
        out = torch.mm(x, folded.T) if bias is None else torch.addmm(bias.to(folded.dtype), x, folded.T)
        ctx.spec = spec
        ctx.save_for_backward(x, weight, bias, lora_A, lora_B)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight, bias, lora_A, lora_B = ctx.saved_tensors
        spec: LoranSpec = ctx.spec
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain-op form
            return (*_reference_vjp(grad, x, weight, bias, lora_A, lora_B, spec, needs[:5]), None)
        factors = needs[3] or needs[4]
        compiled = _compiles(spec, weight)
        fold = _compiled_terms if compiled else _folded_weight
        folded, derivative, scratch = fold(weight, lora_A, lora_B, spec, with_weight=needs[0], with_derivative=factors)
        grad_x = torch.mm(grad, folded) if needs[0] else None
        grad_bias = grad.sum(0).to(bias.dtype) if needs[2] else None
        grad_weight = grad_A = grad_B = None
        if needs[1] or factors:
            full = torch.mm(grad.T, x, out=scratch)  # gᵀ x, the gradient of the folded weight (reuses its slot)
            if needs[1]:
                grad_weight = full.to(weight.dtype, copy=True)
            if factors:  # ∂/∂(B A) = s · gᵀx ⊙ f'(inner · B A)
                grad_update = _compiled_times_derivative(full, derivative, spec) if compiled else _times_derivative(full, derivative, spec)
                scaling = spec.outer * spec.inner
                grad_A = torch.mm(lora_B.T, grad_update).mul_(scaling) if needs[3] else None
                grad_B = torch.mm(lora_A, grad_update.T).T.mul_(scaling) if needs[4] else None  # r rows first: faster BLAS
        return grad_x, grad_weight, grad_bias, grad_A, grad_B, None


def _plain_linear(x, weight, bias, lora_A, lora_B, spec: LoranSpec) -> torch.Tensor:
    """``(W0 + ΔW) x + b`` in plain autograd ops, in the factors' dtype."""
    dtype = lora_A.dtype
    return torch.nn.functional.linear(x, weight.to(dtype) + delta_weight(lora_A, lora_B, spec), None if bias is None else bias.to(dtype))


def _reference_vjp(grad, x, weight, bias, lora_A, lora_B, spec: LoranSpec, needs: tuple[bool, ...]):
    """Vector-Jacobian product of :func:`loran_linear`'s plain-op form, differentiable (for double backward)."""
    inputs = [x, weight, bias, lora_A, lora_B]
    wanted = [t for t, need in zip(inputs, needs) if need]
    out = _plain_linear(x, weight, bias, lora_A, lora_B, spec)
    grads = iter(torch.autograd.grad(out, wanted, grad, create_graph=True, allow_unused=True))
    return tuple(next(grads) if need else None for need in needs)


def loran_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lora_A: torch.Tensor, lora_B: torch.Tensor, spec: LoranSpec
) -> torch.Tensor:
    """``(W0 + ΔW) x + b`` for ``x`` of shape ``(..., d_in)``: one fused node, or plain ops under ``torch.func``."""
    flat = x.reshape(-1, x.shape[-1]).to(lora_A.dtype)
    if torch._C._are_functorch_transforms_active():  # vmap / jacrev see through plain ops only
        out = _plain_linear(flat, weight, bias, lora_A, lora_B, spec)
    else:
        out = LoranLinear.apply(flat, weight, bias, lora_A, lora_B, spec)
    return out.view(*x.shape[:-1], out.shape[-1])
