"""A 3x3 convolution (stride 1, padding 1) whose backward is two matrix products, for tiny maps.

On CPU, oneDNN's convolution backward on very small feature maps with many channels (4x4 maps of
512 channels in a video U-Net's bottleneck) runs far below the machine's matrix-product speed. The
forward here is the ordinary convolution; the backward rebuilds the ``(N*H*W, 9*C)`` patch matrix
(one copy, in the weight's own (c, ky, kx) order) and computes the weight gradient and the patch gradient as GEMMs,
then scatters the patch gradient back with nine shifted additions. Same result up to float rounding.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def _patches(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N*H*W, C*9)`` 3x3 patches (zero padding 1), ordered (c, ky, kx) like the weight."""
    n, c, h, w = x.shape
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (N, H+2, W+2, C)
    s_n, s_h, s_w, s_c = xp.stride()
    return xp.as_strided((n, h, w, c, 3, 3), (s_n, s_h, s_w, s_c, s_h, s_w)).reshape(n * h * w, c * 9)


class _Conv3x3GemmBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=1)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        c_out = weight.shape[0]
        g = grad_out.permute(0, 2, 3, 1).reshape(n * h * w, c_out)  # (NHW, C_out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            d_patches = torch.mm(g, weight.reshape(c_out, c * 9)).view(n, h, w, c, 3, 3)
            dxp = torch.zeros((n, h + 2, w + 2, c), dtype=g.dtype, device=g.device)
            for ky in range(3):
                for kx in range(3):
                    dxp[:, ky : ky + h, kx : kx + w].add_(d_patches[..., ky, kx])
            grad_x = dxp[:, 1 : h + 1, 1 : w + 1].permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            grad_w = torch.mm(g.t(), _patches(x)).view_as(weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(dim=0)
        return grad_x, grad_w, grad_b


def conv3x3_gemm_backward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for a ``(C_out, C, 3, 3)`` weight, backward by GEMMs.

    Meant for small maps (e.g. 4x4) with many channels; ``x`` ``(N, C, H, W)``.
    """
    return _Conv3x3GemmBackward.apply(x, weight, bias)
