"""Softmax attention over many short sequences (e.g. the few frames at every pixel), fast on CPU.

Temporal attention in a video U-Net attends over ``T`` frames (often 5 to 16) at every pixel and
head: tens of thousands of tiny ``T x T`` problems. ``scaled_dot_product_attention`` runs them
through paths tuned for long sequences; here they are batched matrix products whose second operand
is always contiguous (the layout in which CPU batched GEMM is fast), a softmax written as whole-tensor
operations, and a hand-written backward that saves only ``q``, ``k``, ``v`` and the probabilities.
On float32 CPU tensors both directions run instead as one C loop each over the packed ``qkv``
(:mod:`text2video.nn.cpu_kernels`), when the kernels are available.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import cpu_kernels


def _softmax_last_(s: torch.Tensor) -> torch.Tensor:
    """In-place softmax over the (short) last dimension."""
    s.sub_(s.amax(dim=-1, keepdim=True)).exp_()
    return s.div_(s.sum(dim=-1, keepdim=True))


def _attend(qkv: torch.Tensor, bias: Optional[torch.Tensor], scale: float) -> tuple[torch.Tensor, ...]:
    """Packed ``qkv`` ``(T, N, 3, H, d)`` -> ``q`` ``(N*H, T, d)``, ``k_t`` ``(N*H, d, T)``, ``v``, the
    probabilities ``p`` ``(N*H, T, T)`` and the output ``(T, N, H, d)``. Each of ``q``, ``k_t`` and ``v`` is
    one copy, laid out for the batched product it feeds (the keys straight into the transposed layout)."""
    t, n, _, h, d = qkv.shape
    m = n * h
    q = qkv[:, :, 0].permute(1, 2, 0, 3).reshape(m, t, d)
    k_t = qkv[:, :, 1].permute(1, 2, 3, 0).reshape(m, d, t)
    v = qkv[:, :, 2].permute(1, 2, 0, 3).reshape(m, t, d)
    s = torch.bmm(q, k_t).mul_(scale)
    if bias is not None:
        s.view(n, h, t, t).add_(bias.to(s.dtype))
    p = _softmax_last_(s)
    out = torch.bmm(p, v).view(n, h, t, d).permute(2, 0, 1, 3).contiguous()
    return q, k_t, v, p, out


class _ShortAttention(torch.autograd.Function):
    """Packed ``qkv`` ``(T, N, 3, H, d)``, bias ``(H, T, T)`` or None -> ``(T, N, H, d)``.

    Inside, sequences are ``(N*H, T, d)``; a product that needs a transposed operand gets a
    contiguous transposed copy (CPU batched GEMM on tiny matrices is several times slower on
    transposed views than the copy costs).
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, bias: Optional[torch.Tensor], scale: float) -> torch.Tensor:
        t, n, _, h, d = qkv.shape
        q, k_t, v, p, out = _attend(qkv, bias, scale)
        ctx.save_for_backward(q, k_t, v, p)
        ctx.scale, ctx.shape = scale, (t, n, h, d)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k_t, v, p = ctx.saved_tensors
        t, n, h, d = ctx.shape
        m = n * h
        dout = grad_out.to(p.dtype).permute(1, 2, 0, 3).reshape(m, t, d)  # (N*H, T, d), a copy
        dp = torch.bmm(dout, v.transpose(1, 2).contiguous())
        dv = torch.bmm(p.transpose(1, 2).contiguous(), dout)
        # softmax backward: ds = p * (dp - sum_j p dp)
        ds = dp.sub_((dp * p).sum(dim=-1, keepdim=True)).mul_(p)
        dbias = None
        if ctx.bias_dtype is not None and ctx.needs_input_grad[1]:
            dbias = ds.view(n, h, t, t).sum(dim=0).to(ctx.bias_dtype)
        ds.mul_(ctx.scale)
        dq = torch.bmm(ds, k_t.transpose(1, 2).contiguous())
        dk = torch.bmm(ds.transpose(1, 2).contiguous(), q)
        dqkv = torch.empty((t, n, 3, h, d), dtype=p.dtype, device=p.device)
        for i, grad in enumerate((dq, dk, dv)):
            dqkv[:, :, i].copy_(grad.view(n, h, t, d).permute(2, 0, 1, 3))
        return dqkv, dbias, None


def _fused_forward(lib, qkv: torch.Tensor, bias: Optional[torch.Tensor], scale: float, keep_probs: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    t, n, _, h, d = qkv.shape
    out = torch.empty((t, n, h, d), dtype=qkv.dtype)
    probs = torch.empty((n, h, t, t), dtype=qkv.dtype) if keep_probs else None
    lib.t2v_short_attention_forward(
        cpu_kernels.ptr(qkv), cpu_kernels.ptr(bias), out.data_ptr(), cpu_kernels.ptr(probs), t, n, h, d, scale, cpu_kernels.threads()
    )
    return out, probs


class _FusedShortAttention(torch.autograd.Function):
    """:class:`_ShortAttention` as two C loops (``nn/csrc/cpu_kernels.c``); saves ``qkv`` and the probabilities."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, bias: Optional[torch.Tensor], scale: float, lib) -> torch.Tensor:
        out, probs = _fused_forward(lib, qkv, bias, scale, keep_probs=True)
        ctx.save_for_backward(qkv, probs)
        ctx.scale, ctx.lib = scale, lib
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        qkv, probs = ctx.saved_tensors
        t, n, _, h, d = qkv.shape
        grad_out = grad_out.to(qkv.dtype).contiguous()
        dqkv = torch.empty_like(qkv)
        want_bias = ctx.bias_dtype is not None and ctx.needs_input_grad[1]
        dbias = torch.empty((h, t, t), dtype=qkv.dtype) if want_bias else None
        status = ctx.lib.t2v_short_attention_backward(
            qkv.data_ptr(), probs.data_ptr(), grad_out.data_ptr(), dqkv.data_ptr(), cpu_kernels.ptr(dbias), t, n, h, d, ctx.scale, cpu_kernels.threads()
        )
        if status != 0:
            raise MemoryError("short-sequence attention backward could not allocate its scratch memory")
        return dqkv, None if dbias is None else dbias.to(ctx.bias_dtype), None, None


def _fused_library(qkv: torch.Tensor, bias: Optional[torch.Tensor]):
    """The C kernels when they apply: float32 CPU tensors, a contiguous ``qkv``, short enough sequences and
    a finite bias (the kernels are built with fast-math, which assumes no infinities: a ``-inf`` mask
    takes the PyTorch path)."""
    lib = cpu_kernels.usable(qkv, bias)
    if lib is None or not qkv.is_contiguous() or qkv.shape[0] > lib.t2v_max_frames():
        return None
    if bias is not None and not bool(torch.isfinite(bias).all()):
        return None
    return lib


def short_sequence_attention(qkv: torch.Tensor, bias: Optional[torch.Tensor] = None, scale: Optional[float] = None) -> torch.Tensor:
    """Softmax attention over the first axis of packed ``qkv`` ``(T, N, 3, heads, d)`` -> ``(T, N, heads, d)``.

    Each of the ``N * heads`` sequences of length ``T`` attends to itself. ``bias``: additive
    ``(heads, T, T)`` (e.g. relative positions; it receives a gradient). Equals
    ``scaled_dot_product_attention`` with ``attn_mask=bias`` on the unpacked tensors up to float
    rounding; meant for short ``T``. Runs in the dtype of ``qkv`` (under autocast, the dtype the
    projection produced).
    """
    scale = qkv.shape[-1] ** -0.5 if scale is None else scale
    needs_grad = torch.is_grad_enabled() and (qkv.requires_grad or (bias is not None and bias.requires_grad))
    with torch.autocast(device_type=qkv.device.type, enabled=False):
        lib = _fused_library(qkv, bias)
        if lib is not None:
            bias = None if bias is None else bias.contiguous()
            if not needs_grad:
                return _fused_forward(lib, qkv, bias, scale, keep_probs=False)[0]
            return _FusedShortAttention.apply(qkv, bias, scale, lib)
        if not needs_grad:
            return _attend(qkv, bias, scale)[-1]  # nothing kept for a backward
        return _ShortAttention.apply(qkv, bias, scale)
