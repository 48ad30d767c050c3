"""Softmax attention over many short sequences (e.g. the few frames at every pixel), fast on CPU.

Temporal attention in a video U-Net attends over ``T`` frames (often 5 to 16) at every pixel and
head: tens of thousands of tiny ``T x T`` problems. ``scaled_dot_product_attention`` runs them
through paths tuned for long sequences; here they are batched matrix products whose second operand
is always contiguous (the layout in which CPU batched GEMM is fast), a softmax written as whole-tensor
operations, and a hand-written backward that saves only ``q``, ``k``, ``v`` and the probabilities.
On float32 CPU tensors both directions run instead as one C loop each over the packed ``qkv``
(:mod:`text2video.backends.cpu.kernels`), when the kernels are available. Rotary embeddings of the queries
and keys (``angles``) are then applied inside those loops, on data already in cache; elsewhere the
queries and keys are rotated first (:func:`~text2video.nn.rotary.rotate_features`).
"""

from __future__ import annotations

from typing import Optional

import torch

from ...nn.rotary import rotate_features
from . import kernels as cpu_kernels


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


def _rotation_table(angles: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``(T, R)`` rotary angles -> their cosines and sines ``(T, R, 2)`` (float32, contiguous), or None."""
    if angles is None:
        return None
    angles = angles.detach().float()
    return torch.stack((angles.cos(), angles.sin()), dim=-1).contiguous()


def _fused_forward(
    lib, qkv: torch.Tensor, bias: Optional[torch.Tensor], rot: Optional[torch.Tensor], scale: float, keep_probs: bool
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    t, n, _, h, d = qkv.shape
    out = torch.empty((t, n, h, d), dtype=qkv.dtype)
    probs = torch.empty((n, h, t, t), dtype=qkv.dtype) if keep_probs else None
    rot_pairs = 0 if rot is None else rot.shape[1]
    lib.t2v_short_attention_forward(
        cpu_kernels.ptr(qkv), cpu_kernels.ptr(bias), cpu_kernels.ptr(rot), rot_pairs, out.data_ptr(), cpu_kernels.ptr(probs),
        t, n, h, d, scale, cpu_kernels.threads(),
    )  # fmt: skip
    return out, probs


class _FusedShortAttention(torch.autograd.Function):
    """:class:`_ShortAttention` as two C loops (``backends/cpu/csrc/cpu_kernels.c``), rotary embeddings (``rot``, a
    cosine/sine table or None) included; saves ``qkv`` and the probabilities."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, bias: Optional[torch.Tensor], rot: Optional[torch.Tensor], scale: float, lib) -> torch.Tensor:
        out, probs = _fused_forward(lib, qkv, bias, rot, scale, keep_probs=True)
        ctx.save_for_backward(qkv, probs)
        ctx.scale, ctx.lib, ctx.rot = scale, lib, rot
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
        rot_pairs = 0 if ctx.rot is None else ctx.rot.shape[1]
        status = ctx.lib.t2v_short_attention_backward(
            qkv.data_ptr(), probs.data_ptr(), cpu_kernels.ptr(ctx.rot), rot_pairs, grad_out.data_ptr(), dqkv.data_ptr(),
            cpu_kernels.ptr(dbias), t, n, h, d, ctx.scale, cpu_kernels.threads(),
        )  # fmt: skip
        if status != 0:
            raise MemoryError("short-sequence attention backward could not allocate its scratch memory")
        return dqkv, None if dbias is None else dbias.to(ctx.bias_dtype), None, None, None


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


def rotates_inside(x: torch.Tensor, frames: int) -> bool:
    """Whether :func:`short_sequence_attention` on a ``qkv`` projected from ``x`` (dtype, device; no autocast)
    over ``frames`` frames runs in the C kernels, which apply rotary embeddings at no extra cost (with a
    finite bias)."""
    if torch.is_autocast_enabled(x.device.type):
        return False  # the projection will come out in the autocast dtype, which the kernels do not take
    lib = cpu_kernels.usable(x)
    return lib is not None and frames <= lib.t2v_max_frames()


def short_sequence_attention(
    qkv: torch.Tensor, bias: Optional[torch.Tensor] = None, scale: Optional[float] = None, angles: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Softmax attention over the first axis of packed ``qkv`` ``(T, N, 3, heads, d)`` -> ``(T, N, heads, d)``.

    Each of the ``N * heads`` sequences of length ``T`` attends to itself. ``bias``: additive
    ``(heads, T, T)`` (e.g. relative positions; it receives a gradient). ``angles``: ``(T, R)`` rotary
    angles (:func:`~text2video.nn.rotary.rotary_angles`, ``2R <= d``): the queries and keys of frame ``t``
    are first rotated by ``angles[t]`` (interleaved pairs of their first ``2R`` features). Equals
    ``scaled_dot_product_attention`` with ``attn_mask=bias`` on the unpacked (rotated) tensors up to float
    rounding; meant for short ``T``. Runs in the dtype of ``qkv`` (under autocast, the dtype the
    projection produced).
    """
    t, d = qkv.shape[0], qkv.shape[-1]
    scale = d**-0.5 if scale is None else scale
    if angles is not None and (angles.shape[0] != t or 2 * angles.shape[-1] > d):
        raise ValueError(
            f"rotary angles {tuple(angles.shape)} do not fit {t} frames of {d} features per head: "
            f"pass ({t}, R) angles with 2R <= {d} (rotary_angles(frames, rot_dim))"
        )
    needs_grad = torch.is_grad_enabled() and (qkv.requires_grad or (bias is not None and bias.requires_grad))
    with torch.autocast(device_type=qkv.device.type, enabled=False):
        lib = _fused_library(qkv, bias)
        if lib is not None:
            bias = None if bias is None else bias.contiguous()
            rot = _rotation_table(angles)
            if not needs_grad:
                return _fused_forward(lib, qkv, bias, rot, scale, keep_probs=False)[0]
            return _FusedShortAttention.apply(qkv, bias, rot, scale, lib)
        if angles is not None:
            qkv = torch.cat((rotate_features(qkv[:, :, :2], 2 * angles.shape[-1], angles), qkv[:, :, 2:]), dim=2)
        if not needs_grad:
            return _attend(qkv, bias, scale)[-1]  # nothing kept for a backward
        return _ShortAttention.apply(qkv, bias, scale)
