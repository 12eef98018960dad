"""LoRAN's update and its fused linear layer (one autograd node).

LoRAN (arXiv 2509.21870) adapts a frozen ``W0`` by a nonlinear function of LoRA's product,

* ``loran_scaling="outside"`` (default): ``ΔW = s · f(B A)``, as the authors' code computes it
  (PEFT-LoRAN, ``mlora.py``, ``Sin`` from ``utils/other.py``);
* ``loran_scaling="inside"``: ``ΔW = f(s · B A)``, the reading of the seed summary;

with ``s = α / r`` and ``f`` = Sinter ``a·sin(ωx)⊙x + x`` (the paper's choice) or, for the paper's
comparison of functions, tanh, sigmoid or ReLU. The two placements agree when ``s = 1`` (``α = r``).

:class:`LoranLinear` computes ``h = (W0 + ΔW) x + b`` as one autograd node: it folds ``ΔW`` into the
weight and runs one GEMM, saves only ``x``, ``A`` and ``B`` (no weight-sized tensor), and in the backward
recomputes ``B A`` and the elementwise terms. Sinter on a CPU works through the weight in row tiles that stay in
cache, with ``B A``, the sine and the products of a tile in one compiled loop. Its floor is full fine-tuning of the
same layer, which pays the weight-sized gradient ``gᵀ x`` too (``book/cost.md``).
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
    """Bytes held by this thread's LoRAN workspace: three matrices the size of the largest adapted weight, or on the
    tiled Sinter path (:func:`_tiles`) of its largest tile."""
    return sum(b.numel() * b.element_size() for buffers in getattr(_POOL, "buffers", {}).values() for b in buffers)


def clear_workspace() -> None:
    """Release this thread's LoRAN workspace (it is re-created on the next call)."""
    getattr(_POOL, "buffers", {}).clear()


def _tile_update(factor_b: torch.Tensor, factor_a: torch.Tensor | None) -> torch.Tensor:
    """``v`` of one tile: ``Σ_k b[:, k] ⊗ a[k]`` written out for the kernel to fuse (small ranks), or ``b`` itself when
    ``a`` is ``None`` (a ``v`` the caller already formed by BLAS)."""
    if factor_a is None:
        return factor_b
    update = factor_b[:, :1] * factor_a[:1]
    for k in range(1, factor_b.shape[1]):
        update = update + factor_b[:, k : k + 1] * factor_a[k : k + 1]
    return update


def _sinter_fold(factor_b, factor_a, base, out, constants) -> None:
    """``out = W0 + c_0 · v + c_1 · v ⊙ sin v`` on one tile (Sinter's folded weight; ``constants = c``)."""
    v = _tile_update(factor_b, factor_a)
    out.copy_(base + constants[0] * v + constants[1] * v * torch.sin(v))


def _sinter_fold_and_scale(factor_b, factor_a, base, full, out, constants) -> None:
    """On one tile, ``full ← full ⊙ f'`` with ``f' = 1 + a·(sin v + v·cos v)`` and, unless ``out`` is ``None``, the
    folded weight as :func:`_sinter_fold` (``constants = [c_0, c_1, a]``): one sine for both."""
    v = _tile_update(factor_b, factor_a)
    sine = torch.sin(v)
    if out is not None:
        out.copy_(base + constants[0] * v + constants[1] * v * sine)
    full.mul_(1 + constants[2] * (sine + v * torch.cos(v)))


_KERNELS: dict[str, Callable[..., None]] = {}
_KERNELS_FAILED: list[str] = []


def compiled_elementwise_available() -> bool:
    """Whether Sinter's tile kernels run compiled here (False after a failed compilation, e.g. no C++ compiler)."""
    return not _KERNELS_FAILED


def _run_kernel(kernel: Callable[..., None], *args: object) -> None:
    """Run :func:`_sinter_fold` / :func:`_sinter_fold_and_scale` compiled by inductor (dynamic shapes, one loop over the tile),
    or as eager ops (several passes over the tile) if compilation is unavailable. The constants travel as a tensor
    and the tensors detached, so new values of ``a``, ``ω`` and ``s`` or of ``requires_grad`` do not recompile; the
    written-out rank (:data:`INLINE_RANKS`) compiles once per width.

    On a CPU the compiled kernel evaluates ``B A``, the sine (and cosine) and the products in one loop, where eager
    ops make a BLAS call and three to four passes (``book/cost.md``); compiling costs seconds once per process.
    """
    if torch.compiler.is_compiling():  # inside a compiled model: the model's own compilation fuses the plain ops
        kernel(*args)
        return
    name = kernel.__name__
    if not _KERNELS_FAILED:
        try:
            if name not in _KERNELS:
                # one graph per dtype, written-out width and None-ness of the optional tensors: above dynamo's default of 8
                _KERNELS[name] = torch._dynamo.config.patch(recompile_limit=64)(torch.compile(kernel, dynamic=True, fullgraph=True))
            _KERNELS[name](*args)
            return
        except Exception as error:  # a missing C++ toolchain, an unsupported platform: fall back, once, loudly
            _KERNELS_FAILED.append(f"{type(error).__name__}: {error}")
            warnings.warn(f"aurora.loran: compiling Sinter's elementwise passes failed ({_KERNELS_FAILED[0][:200]}); using eager ops")
    kernel(*args)


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


TILE_ELEMENTS = 1 << 20  # one tile of the compiled Sinter path: 4 MiB in fp32; its three scratch tiles stay in a 32 MiB L3
INLINE_RANKS = (2, 4, 8)  # ranks whose B A the kernels write out (zero-padded up to the next width); larger ones use BLAS


def _tiles(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Row ranges of at most :data:`TILE_ELEMENTS` elements (at least one row) covering ``shape[0]`` rows, of sizes
    that differ by at most one (no short last tile, which would compile a kernel of its own)."""
    count = -(-shape[0] * shape[1] // TILE_ELEMENTS) if shape[1] <= TILE_ELEMENTS else shape[0]
    count = max(1, min(count, shape[0]))
    bounds = [shape[0] * k // count for k in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


class _TileFactors(NamedTuple):
    """What the tile kernels read: ``v = b a`` with ``b = ω · inner · B``, both zero-padded to an inline width
    (:data:`INLINE_RANKS`) that the kernels write out, or, above those ranks, unpadded for :meth:`tile` to form ``v``
    by BLAS."""

    b: torch.Tensor
    a: torch.Tensor | None

    @classmethod
    def of(cls, lora_A: torch.Tensor, lora_B: torch.Tensor, spec: LoranSpec) -> "_TileFactors":
        b = (lora_B * (spec.frequency * spec.inner)).detach()
        rank = lora_A.shape[0]
        width = next((w for w in INLINE_RANKS if rank <= w), None)
        if width is None:
            return cls(b, lora_A.detach())
        a = lora_A.detach()
        if width > rank:
            b = torch.nn.functional.pad(b, (0, width - rank))
            a = torch.nn.functional.pad(a, (0, 0, 0, width - rank))
        return cls(b, a)

    @property
    def inline(self) -> bool:
        return self.b.shape[1] in INLINE_RANKS

    def tile(self, start: int, stop: int, scratch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The kernel's ``(factor_b, factor_a)`` for rows ``start:stop`` (``scratch`` holds ``v`` when BLAS forms it)."""
        if self.inline:
            return self.b[start:stop], self.a
        return torch.mm(self.b[start:stop], self.a, out=scratch), None


def _fold_constants(spec: LoranSpec, dtype: torch.dtype) -> torch.Tensor:
    """``[c_0, c_1, a]``: ``W0 + ΔW = W0 + c_0 · v + c_1 · v ⊙ sin v`` with ``v = ω · inner · B A``."""
    omega = spec.frequency
    return torch.tensor([spec.outer / omega, spec.outer * spec.amplitude / omega, spec.amplitude], dtype=dtype)


def _tile_setup(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, spec: LoranSpec):
    """What both tiled passes start from: ``W0`` in the factors' dtype, :class:`_TileFactors`, :func:`_fold_constants`,
    the row ranges and three scratch slots of the largest tile."""
    dtype = lora_A.dtype
    tiles = _tiles(tuple(weight.shape))
    scratch = _workspace((max(stop - start for start, stop in tiles), weight.shape[1]), dtype, lora_A.device)
    base = weight if weight.dtype == dtype else weight.to(dtype)
    return base, _TileFactors.of(lora_A, lora_B, spec), _fold_constants(spec, dtype), tiles, scratch


def _tiled_forward(x, weight, bias, lora_A, lora_B, spec: LoranSpec) -> torch.Tensor:
    """``(W0 + ΔW) x + b`` tile by tile: each tile of the folded weight is formed in cache and used at once."""
    base, factors, constants, tiles, scratch = _tile_setup(weight, lora_A, lora_B, spec)
    out = torch.empty(x.shape[0], weight.shape[0], dtype=lora_A.dtype, device=x.device)
    for start, stop in tiles:
        folded, update = (slot[: stop - start] for slot in scratch[:2])
        _run_kernel(_sinter_fold, *factors.tile(start, stop, update), base[start:stop].detach(), folded, constants[:2])
        out[:, start:stop] = x @ folded.T if bias is None else torch.addmm(bias[start:stop].to(folded.dtype), x, folded.T)
    return out


def _tiled_backward(grad, x, weight, bias, lora_A, lora_B, spec: LoranSpec, needs: tuple[bool, ...]):
    """The gradients of :func:`_tiled_forward`, tile by tile: ``gᵀx`` of a tile, scaled by ``f'`` in place, feeds the
    factors' gradients while in cache; the folded tile (for ``g (W0 + ΔW)``) is formed only when ``x`` needs it."""
    base, factors, constants, tiles, scratch = _tile_setup(weight, lora_A, lora_B, spec)
    wants_factors = needs[3] or needs[4]
    grad_x = torch.zeros_like(x) if needs[0] else None
    grad_weight = torch.empty_like(weight) if needs[1] else None
    grad_A = torch.zeros_like(lora_A) if needs[3] else None
    grad_B = torch.empty_like(lora_B) if needs[4] else None
    for start, stop in tiles:
        folded, update, full = (slot[: stop - start] for slot in scratch)
        tile_factors = factors.tile(start, stop, update)
        tile_base, tile_grad = base[start:stop].detach(), grad[:, start:stop]
        if needs[1] or wants_factors:
            torch.mm(tile_grad.T, x, out=full)  # gᵀ x of the tile
            if needs[1]:
                grad_weight[start:stop] = full
        if wants_factors:
            _run_kernel(_sinter_fold_and_scale, *tile_factors, tile_base, full, folded if needs[0] else None, constants)
            if needs[3]:
                grad_A.addmm_(lora_B[start:stop].T, full)
            if needs[4]:
                torch.mm(full, lora_A.T, out=grad_B[start:stop])
        elif needs[0]:
            _run_kernel(_sinter_fold, *tile_factors, tile_base, folded, constants[:2])
        if needs[0]:
            grad_x.addmm_(tile_grad, folded)
    scaling = spec.outer * spec.inner
    return (grad_x, grad_weight, grad.sum(0).to(bias.dtype) if needs[2] else None,
            None if grad_A is None else grad_A.mul_(scaling), None if grad_B is None else grad_B.mul_(scaling))


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
    Sinter on a CPU (``spec.compiled``) does all of it tile by tile (:func:`_tiled_forward`, :func:`_tiled_backward`):
    no weight-sized matrix but ``gᵀx`` for ``W0``'s own gradient is ever formed, and every tile's intermediates stay
    in cache.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, spec: LoranSpec):  # type: ignore[override]
        if _compiles(spec, weight):
            out = _tiled_forward(x, weight, bias, lora_A, lora_B, spec)
        else:
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
        if _compiles(spec, weight):
            return (*_tiled_backward(grad, x, weight, bias, lora_A, lora_B, spec, needs[:5]), None)
        factors = needs[3] or needs[4]
        folded, derivative, scratch = _folded_weight(weight, lora_A, lora_B, spec, with_weight=needs[0], with_derivative=factors)
        grad_x = torch.mm(grad, folded) if needs[0] else None
        grad_bias = grad.sum(0).to(bias.dtype) if needs[2] else None
        grad_weight = grad_A = grad_B = None
        if needs[1] or factors:
            full = torch.mm(grad.T, x, out=scratch)  # gᵀ x, the gradient of the folded weight (reuses its slot)
            if needs[1]:
                grad_weight = full.to(weight.dtype, copy=True)
            if factors:  # ∂/∂(B A) = s · gᵀx ⊙ f'(inner · B A)
                grad_update = _times_derivative(full, derivative, spec)
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
