"""RMS normalisation over channels, per-item scale and shift, and SiLU as one autograd node.

A convolution block of a diffusion U-Net computes ``silu(rms_norm(x) * weight * (1 + scale) + shift)``;
run op by op, autograd keeps five full-size intermediates and its backward walks a dozen kernels.
Here the forward saves only the input and the per-row reciprocal norms, and the backward recomputes
the pre-activation and applies the chain rule in a handful of whole-tensor operations. On float32 CPU
tensors each direction is instead one C loop over the rows (:mod:`text2video.backends.cpu.kernels`), when the
kernels are available.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import kernels as cpu_kernels


def _coef(weight: torch.Tensor, scale: Optional[torch.Tensor]) -> torch.Tensor:
    """The per-channel (or per-group, per-channel) multiplier ``weight * (1 + scale)``, contiguous."""
    return (weight if scale is None else weight * (scale + 1)).contiguous()


def _coef_grads(
    dcoef: torch.Tensor, weight: torch.Tensor, scale: Optional[torch.Tensor], needs_weight: bool, needs_scale: bool
) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Gradients of ``weight`` and ``scale`` from ``dcoef`` ``(G, C)``, the gradient of the per-group :func:`_coef`."""
    if scale is None:
        return (dcoef.sum(dim=0) if needs_weight else None), None
    return ((dcoef * (scale + 1)).sum(dim=0) if needs_weight else None), (dcoef * weight if needs_scale else None)


class _RmsScaleShiftSilu(torch.autograd.Function):
    """``x`` ``(G, P, C)``; ``weight`` ``(C,)``; ``scale``/``shift`` ``(G, C)`` or None -> ``(G, P, C)``."""

    @staticmethod
    def forward(ctx, x, weight, scale, shift, eps: float):
        r = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True).add_(eps))  # (G, P, 1)
        coef = _coef(weight, scale)  # (C,) or (G, C)
        coef3 = coef if coef.ndim == 1 else coef[:, None, :]
        a = x * r
        a.mul_(coef3)
        if shift is not None:
            a.add_(shift[:, None, :])
        ctx.save_for_backward(x, r, weight, scale, shift)
        ctx.eps = eps
        return torch.nn.functional.silu(a)

    @staticmethod
    def backward(ctx, grad_out):
        x, r, weight, scale, shift = ctx.saved_tensors
        coef = _coef(weight, scale)
        coef3 = coef if coef.ndim == 1 else coef[:, None, :]
        xn = x * r
        a = xn * coef3
        if shift is not None:
            a.add_(shift[:, None, :])
        sig = torch.sigmoid(a)
        # d silu(a) / da = sig * (1 + a * (1 - sig))
        da = a.mul_(sig.neg().add_(1)).add_(1).mul_(sig).mul_(grad_out)
        del sig
        grad_weight = grad_scale = grad_shift = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            dcoef = (da * xn).sum(dim=1)  # (G, C)
            grad_weight, grad_scale = _coef_grads(dcoef, weight, scale, ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        if shift is not None and ctx.needs_input_grad[3]:
            grad_shift = da.sum(dim=1)
        grad_x = None
        if ctx.needs_input_grad[0]:
            dxn = da.mul_(coef3)
            dot = (dxn * xn).mean(dim=-1, keepdim=True)
            grad_x = dxn.sub_(xn.mul_(dot)).mul_(r)
        return grad_x, grad_weight, grad_scale, grad_shift, None


def _group_stride(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None or t.ndim == 1 else t.shape[-1]


class _FusedRmsScaleShiftSilu(torch.autograd.Function):
    """:class:`_RmsScaleShiftSilu` as two C loops (``backends/cpu/csrc/cpu_kernels.c``): one pass forward, one backward."""

    @staticmethod
    def forward(ctx, x, weight, scale, shift, eps: float, lib):
        coef = _coef(weight, scale)
        y, r = _fused_forward(lib, x, coef, shift, eps)
        ctx.save_for_backward(x, r, weight, scale, shift, coef)
        ctx.lib = lib
        return y

    @staticmethod
    def backward(ctx, grad_out):
        x, r, weight, scale, shift, coef = ctx.saved_tensors
        g, p, c = x.shape
        grad_out = grad_out.contiguous()
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        dcoef = torch.empty((g, c), dtype=x.dtype)
        dshift = torch.empty((g, c), dtype=x.dtype) if shift is not None else None
        status = ctx.lib.t2v_rms_silu_backward(
            x.data_ptr(),
            r.data_ptr(),
            coef.data_ptr(),
            _group_stride(coef),
            cpu_kernels.ptr(shift),
            _group_stride(shift),
            grad_out.data_ptr(),
            cpu_kernels.ptr(dx),
            dcoef.data_ptr(),
            cpu_kernels.ptr(dshift),
            g,
            p,
            c,
            cpu_kernels.threads(),
        )
        if status != 0:
            raise MemoryError("fused RMS norm backward could not allocate its scratch memory")
        grad_weight, grad_scale = _coef_grads(dcoef, weight, scale, ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        grad_shift = dshift if shift is not None and ctx.needs_input_grad[3] else None
        return dx, grad_weight, grad_scale, grad_shift, None, None


def _fused_forward(
    lib, x: torch.Tensor, coef: torch.Tensor, shift: Optional[torch.Tensor], eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    g, p, c = x.shape
    y = torch.empty_like(x)
    r = torch.empty((g, p, 1), dtype=x.dtype)
    lib.t2v_rms_silu_forward(
        x.data_ptr(),
        coef.data_ptr(),
        _group_stride(coef),
        cpu_kernels.ptr(shift),
        _group_stride(shift),
        y.data_ptr(),
        r.data_ptr(),
        g,
        p,
        c,
        eps,
        cpu_kernels.threads(),
    )
    return y, r


def rms_scale_shift_silu(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: Optional[torch.Tensor] = None,
    shift: Optional[torch.Tensor] = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """``silu(x / sqrt(mean(x**2) + eps) * weight * (1 + scale) + shift)`` over the last axis of ``x``.

    ``x`` ``(G, P, C)`` (groups of tokens, e.g. frames of pixels); ``weight`` ``(C,)``; ``scale`` and
    ``shift`` ``(G, C)`` per group, or both None. Equals the composition of ``F.rms_norm``,
    ``torch.addcmul`` and ``F.silu`` up to float rounding; runs in the dtype of ``x``.
    """
    if (scale is None) != (shift is None):
        raise ValueError("rms_scale_shift_silu takes scale and shift together, or neither")
    dtype = x.dtype
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, weight = x.contiguous(), weight.to(dtype)
        scale = None if scale is None else scale.to(dtype).contiguous()
        shift = None if shift is None else shift.to(dtype).contiguous()
        lib = cpu_kernels.usable(x, weight, scale, shift)
        if lib is not None:
            if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in (x, weight, scale, shift)):
                return _fused_forward(lib, x, _coef(weight, scale), shift, eps)[0]
            return _FusedRmsScaleShiftSilu.apply(x, weight, scale, shift, eps, lib)
        return _RmsScaleShiftSilu.apply(x, weight, scale, shift, eps)
