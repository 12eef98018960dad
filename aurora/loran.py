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
from typing import NamedTuple

import torch

from .config import LORAN_FUNCTIONS, LORAN_SCALINGS, require_choice

__all__ = [
    "LoranSpec", "loran_function", "loran_derivative", "delta_weight", "loran_linear", "LoranLinear", "workspace_bytes",
    "clear_workspace",
]


class LoranSpec(NamedTuple):
    """What fixes LoRAN's ``ΔW = outer · f(inner · B A)`` (``outer · inner = s`` in both placements)."""

    function: str
    scaling: float  # s = α / r
    placement: str  # "outside" | "inside"
    amplitude: float  # Sinter a
    frequency: float  # Sinter ω

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
        folded, _, _ = _folded_weight(weight, lora_A, lora_B, spec, with_weight=True, with_derivative=False)
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
        folded, derivative, scratch = _folded_weight(weight, lora_A, lora_B, spec, with_weight=needs[0], with_derivative=factors)
        grad_x = torch.mm(grad, folded) if needs[0] else None
        grad_bias = grad.sum(0).to(bias.dtype) if needs[2] else None
        grad_weight = grad_A = grad_B = None
        if needs[1] or factors:
            full = torch.mm(grad.T, x, out=scratch)  # gᵀ x, the gradient of the folded weight (reuses its slot)
            if needs[1]:
                grad_weight = full.to(weight.dtype, copy=True)
            if factors:
                grad_update = _times_derivative(full, derivative, spec)  # ∂/∂(B A) = s · gᵀx ⊙ f'(inner · B A)
                scaling = spec.outer * spec.inner
                grad_A = torch.mm(lora_B.T, grad_update).mul_(scaling) if needs[3] else None
                grad_B = torch.mm(grad_update, lora_A.T).mul_(scaling) if needs[4] else None
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
