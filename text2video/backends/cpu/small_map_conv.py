"""A 3x3 convolution (stride 1, padding 1) computed as matrix products, for tiny maps.

On CPU, oneDNN's convolution on very small feature maps with many channels (4x4 maps of 512
channels in a video U-Net's bottleneck) runs far below the machine's matrix-product speed, its
backward most of all. Here the backward forms the ``(N*H*W, 9*C)`` patch matrix (in the weight's own
(c, ky, kx) order) and computes the weight gradient and the patch gradient as GEMMs, then folds the
patch gradient back onto the input. With the fused CPU kernels (:mod:`text2video.backends.cpu.kernels`) the
forward is a GEMM too: the patches are built once by a C loop, kept for the backward, and folded back
by another; without them the forward is the ordinary convolution, the patches are rebuilt by a strided
copy and folded back by nine shifted additions. Same result up to float rounding.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from . import kernels as cpu_kernels


def _patches(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N*H*W, C*9)`` 3x3 patches (zero padding 1), ordered (c, ky, kx) like the weight."""
    n, c, h, w = x.shape
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (N, H+2, W+2, C)
    s_n, s_h, s_w, s_c = xp.stride()
    return xp.as_strided((n, h, w, c, 3, 3), (s_n, s_h, s_w, s_c, s_h, s_w)).reshape(n * h * w, c * 9)


def _fold_patches(d_patches: torch.Tensor, n: int, c: int, h: int, w: int) -> torch.Tensor:
    """The adjoint of :func:`_patches`: ``(N*H*W, C*9)`` patch gradients -> ``(N, C, H, W)`` (a channels-last view)."""
    d_patches = d_patches.view(n, h, w, c, 3, 3)
    dxp = torch.zeros((n, h + 2, w + 2, c), dtype=d_patches.dtype, device=d_patches.device)
    for ky in range(3):
        for kx in range(3):
            dxp[:, ky : ky + h, kx : kx + w].add_(d_patches[..., ky, kx])
    return dxp[:, 1 : h + 1, 1 : w + 1].permute(0, 3, 1, 2)


class _Conv3x3GemmBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], lib) -> torch.Tensor:
        n, c, h, w = x.shape
        ctx.has_bias, ctx.lib, ctx.shape = bias is not None, lib, (n, c, h, w)
        if lib is None:
            ctx.save_for_backward(x, weight)
            return F.conv2d(x, weight, bias, padding=1)
        patches = torch.empty((n * h * w, c * 9), dtype=x.dtype)
        lib.t2v_im2col3x3(x.data_ptr(), patches.data_ptr(), n, c, h, w, cpu_kernels.threads())
        ctx.save_for_backward(patches, weight)
        w2d = weight.reshape(weight.shape[0], c * 9)
        y = torch.mm(patches, w2d.t()) if bias is None else torch.addmm(bias, patches, w2d.t())
        return y.view(n, h, w, -1).permute(0, 3, 1, 2)  # channels-last storage

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        saved, weight = ctx.saved_tensors
        n, c, h, w = ctx.shape
        c_out = weight.shape[0]
        g = grad_out.permute(0, 2, 3, 1).reshape(n * h * w, c_out)  # (NHW, C_out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            d_patches = torch.mm(g, weight.reshape(c_out, c * 9))
            if ctx.lib is None:
                grad_x = _fold_patches(d_patches, n, c, h, w)
            else:
                grad_x = torch.empty((n, c, h, w), dtype=d_patches.dtype)
                ctx.lib.t2v_col2im3x3(d_patches.data_ptr(), grad_x.data_ptr(), n, c, h, w, cpu_kernels.threads())
        if ctx.needs_input_grad[1]:
            patches = _patches(saved) if ctx.lib is None else saved
            grad_w = torch.mm(g.t(), patches).view_as(weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(dim=0)
        return grad_x, grad_w, grad_b, None


def conv3x3_gemm_backward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for a ``(C_out, C, 3, 3)`` weight, backward by GEMMs.

    Meant for small maps (e.g. 4x4) with many channels; ``x`` ``(N, C, H, W)``. The forward is a GEMM
    too when the fused CPU kernels apply (float32 CPU tensors); its output is then channels-last.
    """
    x = x.contiguous()
    lib = cpu_kernels.usable(x, weight, bias)
    return _Conv3x3GemmBackward.apply(x, weight, bias, lib)
