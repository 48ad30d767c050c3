"""A U-Net's resampling convolutions (4x4 kernel, stride 2, padding 1) and their transposes as matrix products.

On CPU, oneDNN runs these well below the machine's matrix-product speed on tiny maps with many channels
(the down-sampling to, and the up-sampling from, a 4x4 bottleneck of 256 channels). Here the down-sampling
convolution is one GEMM over the ``(N*Ho*Wo, 16*C)`` patch matrix, copied once from a strided view of the padded
channels-last input and kept for the backward; its backward is two GEMMs, the patch gradients folded back onto
the input by four shifted additions. The transposed convolution is its adjoint: one GEMM from every input pixel
to its ``16*C_out`` output contributions, folded onto the output. Same results as ``F.conv2d`` /
``F.conv_transpose2d`` up to float rounding; any float dtype and device.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def _patches(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` (even sides) -> ``(N*H/2*W/2, 16*C)``: the 4x4 window (zero padding 1) of every output pixel
    of a stride-2 convolution, ordered (ky, kx, c)."""
    n, c, h, w = x.shape
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (N, H+2, W+2, C)
    s_n, s_h, s_w, s_c = xp.stride()
    windows = xp.as_strided((n, h // 2, w // 2, 4, 4, c), (s_n, 2 * s_h, 2 * s_w, s_h, s_w, s_c))
    return windows.reshape(n * (h // 2) * (w // 2), 16 * c)


def _fold(d_patches: torch.Tensor, n: int, c: int, h: int, w: int) -> torch.Tensor:
    """The adjoint of :func:`_patches`: ``(N*H/2*W/2, 16*C)`` -> ``(N, C, H, W)`` (a channels-last view).

    Padded row ``2i + ky`` is row ``ky % 2`` of block ``i + ky // 2``: per (block row, block column) offset one
    shifted addition of whole blocks."""
    ho, wo = h // 2, w // 2
    d_patches = d_patches.view(n, ho, wo, 2, 2, 2, 2, c)  # (.., block row offset, row, block column offset, column, c)
    blocks = torch.zeros((n, ho + 1, 2, wo + 1, 2, c), dtype=d_patches.dtype, device=d_patches.device)
    for a in range(2):
        for b in range(2):
            blocks[:, a : a + ho, :, b : b + wo].add_(d_patches[:, :, :, a, :, b].permute(0, 1, 3, 2, 4, 5))
    return blocks.view(n, h + 2, w + 2, c)[:, 1 : h + 1, 1 : w + 1].permute(0, 3, 1, 2)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N*H*W, C)`` (a view when ``t`` is channels-last)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


class _DownsampleGemm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        n, c, h, w = x.shape
        patches = _patches(x)
        w2d = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], 16 * c)  # (C_out, (ky, kx, c))
        y = torch.mm(patches, w2d.t()) if bias is None else torch.addmm(bias, patches, w2d.t())
        ctx.save_for_backward(patches, w2d)
        ctx.shape, ctx.has_bias = (n, c, h, w), bias is not None
        return y.view(n, h // 2, w // 2, -1).permute(0, 3, 1, 2)  # channels-last storage

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        patches, w2d = ctx.saved_tensors
        n, c, h, w = ctx.shape
        g = _rows(grad_out)  # (N*Ho*Wo, C_out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _fold(torch.mm(g, w2d), n, c, h, w)
        if ctx.needs_input_grad[1]:
            grad_w = torch.mm(g.t(), patches).view(-1, 4, 4, c).permute(0, 3, 1, 2)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(dim=0)
        return grad_x, grad_w, grad_b


class _UpsampleGemm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        n, c, h, w = x.shape
        c_out = weight.shape[1]
        rows = _rows(x)  # (N*H*W, C)
        w2d = weight.permute(0, 2, 3, 1).reshape(c, 16 * c_out)  # (C, (ky, kx, c_out))
        y = _fold(torch.mm(rows, w2d), n, c_out, 2 * h, 2 * w)
        if bias is not None:
            y.add_(bias.view(1, -1, 1, 1))  # y is a view of the fold's own fresh buffer
        ctx.save_for_backward(rows, w2d)
        ctx.shape, ctx.has_bias = (n, c, h, w, c_out), bias is not None
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        rows, w2d = ctx.saved_tensors
        n, c, h, w, c_out = ctx.shape
        d_out = _patches(grad_out)  # (N*H*W, 16*C_out): each input pixel's output contributions' gradients
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(d_out, w2d.t()).view(n, h, w, c).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            grad_w = torch.mm(rows.t(), d_out).view(c, 4, 4, c_out).permute(0, 3, 1, 2)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b


def _check(x: torch.Tensor, weight: torch.Tensor, what: str, weight_in_dim: int, even: bool) -> None:
    """Raises for shapes ``what`` does not take: a 4-D input (with even sides where ``even``) and a 4x4 kernel whose
    axis ``weight_in_dim`` matches the input's channels."""
    fits = x.ndim == 4 and weight.ndim == 4 and weight.shape[-2:] == (4, 4) and weight.shape[weight_in_dim] == x.shape[1]
    if not fits or (even and (x.shape[-1] % 2 or x.shape[-2] % 2)):
        sides = " with even height and width" if even else ""
        raise ValueError(
            f"{what} needs an (N, C, H, W) input{sides} and a 4x4 kernel taking its C channels; "
            f"got input {tuple(x.shape)}, weight {tuple(weight.shape)}"
        )


def downsample_conv_gemm(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride=2, padding=1)`` for a ``(C_out, C, 4, 4)`` weight, by GEMMs.

    ``x`` ``(N, C, H, W)`` with even sides; the output ``(N, C_out, H/2, W/2)`` is channels-last."""
    _check(x, weight, "downsample_conv_gemm", weight_in_dim=1, even=True)
    return _DownsampleGemm.apply(x, weight, bias)


def upsample_conv_gemm(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.conv_transpose2d(x, weight, bias, stride=2, padding=1)`` for a ``(C, C_out, 4, 4)`` weight, by GEMMs.

    ``x`` ``(N, C, H, W)``; the output ``(N, C_out, 2H, 2W)`` is channels-last."""
    _check(x, weight, "upsample_conv_gemm", weight_in_dim=0, even=False)
    return _UpsampleGemm.apply(x, weight, bias)
