"""3x3 convolutions (stride 1, padding 1) by Winograd's minimal filtering, for float32 CPU training.

Lavin & Gray (2016), F(m x m, 3x3): each m x m block of output pixels is computed from the
(m + 2) x (m + 2) block of input pixels around it as ``A^T [(G g G^T) * (B^T d B)] A``. Summed over input
channels, the products at each of the (m + 2)^2 positions are one matrix product, so a convolution becomes
(m + 2)^2 GEMMs. Per output pixel that is 4 multiplications per channel pair for m = 2 and 2.25 for m = 4,
against 9 for the direct method. The backward is the same GEMMs for the input and weight gradients, with
the transforms' adjoints around them. The tile and weight transforms run in the fused C kernels
(:mod:`text2video.backends.cpu.kernels`), one pass over memory each. The backward reuses the forward's
transformed input ((m + 2)^2 / m^2 times the input's size, kept in place of the input itself) and
transformed weight ((m + 2)^2 / 9 times the weight's size).

The m = 2 transforms only add, subtract and halve: results match the direct convolution to float32
rounding (errors about 3e-7 of the output's largest value). m = 4 multiplies by up to 8 and divides by 24:
errors up to about 7e-6 of it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

from . import kernels as cpu_kernels

#: Output tile sizes with kernels: F(2x2, 3x3) and F(4x4, 3x3).
TILE_SIZES = (2, 4)
#: The kernels work on blocks of this many channels: input and output channel counts must be multiples of it.
CHANNEL_BLOCK = 16


_disabled_depth = 0


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within this block :func:`winograd_applies` says no, so callers use their direct convolution (e.g. to count
    the direct method's arithmetic, or to compare results with it)."""
    global _disabled_depth
    _disabled_depth += 1
    try:
        yield
    finally:
        _disabled_depth -= 1


def transform_weight(weight: torch.Tensor, tile: int, lib=None) -> torch.Tensor:
    """``(C_out, C, 3, 3)`` -> ``(alpha^2, C_out, C)``, ``alpha = tile + 2``: ``G g G^T`` per channel pair,
    position ``alpha * a + b`` first. Not differentiable (the convolution's backward handles it)."""
    lib = lib or cpu_kernels.usable(weight)
    if lib is None:
        raise ValueError(f"transform_weight needs a float32 CPU weight and the fused CPU kernels; got {weight.dtype} on {weight.device}")
    weight = weight.detach().contiguous()
    c_out, c = weight.shape[:2]
    u = torch.empty(((tile + 2) ** 2, c_out, c), dtype=weight.dtype)
    lib.t2v_winograd_weight(weight.data_ptr(), u.data_ptr(), c_out * c, tile, cpu_kernels.threads())
    return u


def winograd_applies(x: torch.Tensor, weight: torch.Tensor, tile: int = 2) -> bool:
    """Whether :func:`conv3x3_winograd` can run this call with output tiles of ``tile`` pixels a side: float32
    CPU tensors, height and width multiples of ``tile``, channel counts multiples of :data:`CHANNEL_BLOCK`, the
    kernel library loaded."""
    return (
        not _disabled_depth
        and tile in TILE_SIZES
        and x.shape[-1] % tile == 0
        and x.shape[-2] % tile == 0
        and x.shape[1] % CHANNEL_BLOCK == 0
        and weight.shape[0] % CHANNEL_BLOCK == 0
        and cpu_kernels.usable(x, weight) is not None
    )


class _Conv3x3Winograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], tile: int, lib) -> torch.Tensor:
        n, c, h, w = x.shape
        c_out = weight.shape[0]
        tiles, nthreads = n * (h // tile) * (w // tile), cpu_kernels.threads()
        x_nhwc = x.permute(0, 2, 3, 1).contiguous()  # free for channels-last input
        v = torch.empty(((tile + 2) ** 2, tiles, c), dtype=x.dtype)
        lib.t2v_winograd_input(x_nhwc.data_ptr(), v.data_ptr(), n, h, w, c, tile, nthreads)
        u = transform_weight(weight, tile, lib)
        m = torch.bmm(v, u.transpose(1, 2))
        y = torch.empty((n, h, w, c_out), dtype=x.dtype)
        bias_c = None if bias is None else bias.contiguous()  # held while the kernel reads it
        lib.t2v_winograd_output(m.data_ptr(), cpu_kernels.ptr(bias_c), y.data_ptr(), n, h, w, c_out, tile, nthreads)
        # the backward needs the transformed input for the weight gradient and the transformed weight for the
        # input gradient: both kept. Recomputing them would be passes over memory as long as the products they
        # feed (docs/models.md).
        ctx.save_for_backward(v if ctx.needs_input_grad[1] else None, u if ctx.needs_input_grad[0] else None)
        ctx.has_bias, ctx.tile, ctx.lib, ctx.shape = bias is not None, tile, lib, (n, c, h, w, c_out)
        return y.permute(0, 3, 1, 2)  # channels-last storage

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        v, u = ctx.saved_tensors
        lib, tile, nthreads = ctx.lib, ctx.tile, cpu_kernels.threads()
        n, c, h, w, c_out = ctx.shape
        tiles = n * (h // tile) * (w // tile)
        g = grad_out.permute(0, 2, 3, 1).contiguous()  # (N, H, W, C_out)
        dm = torch.empty(((tile + 2) ** 2, tiles, c_out), dtype=g.dtype)
        lib.t2v_winograd_output_adjoint(g.data_ptr(), dm.data_ptr(), n, h, w, c_out, tile, nthreads)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            dv = torch.bmm(dm, u)
            grad_x = torch.empty((n, h, w, c), dtype=g.dtype)
            lib.t2v_winograd_input_adjoint(dv.data_ptr(), grad_x.data_ptr(), n, h, w, c, tile, nthreads)
            grad_x = grad_x.permute(0, 3, 1, 2)
            del dv
        if ctx.needs_input_grad[1]:
            du = torch.bmm(dm.transpose(1, 2), v)  # (positions, C_out, C)
            grad_w = torch.empty((c_out, c, 3, 3), dtype=du.dtype)
            lib.t2v_winograd_weight_adjoint(du.data_ptr(), grad_w.data_ptr(), c_out * c, tile, nthreads)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.view(-1, c_out).sum(dim=0)
        return grad_x, grad_w, grad_b, None, None


def conv3x3_winograd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, tile: int = 2) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for a ``(C_out, C, 3, 3)`` weight by Winograd F(tile x tile, 3x3).

    ``x`` ``(N, C, H, W)`` float32 on CPU with height and width multiples of ``tile`` (2 or 4) and channel
    counts multiples of :data:`CHANNEL_BLOCK` (see :func:`winograd_applies`); the output is channels-last.
    """
    if weight.ndim != 4 or weight.shape[-2:] != (3, 3) or weight.shape[1] != x.shape[1]:
        raise ValueError(f"conv3x3_winograd needs a (C_out, {x.shape[1]}, 3, 3) weight, got {tuple(weight.shape)}")
    lib = cpu_kernels.usable(x, weight, bias)
    if lib is None or not winograd_applies(x, weight, tile):
        raise ValueError(
            f"conv3x3_winograd needs float32 CPU tensors, height and width multiples of the tile size (one of "
            f"{TILE_SIZES}), channel counts multiples of {CHANNEL_BLOCK} and the fused CPU kernels; got tile {tile}, "
            f"input {tuple(x.shape)} {x.dtype} on {x.device}, weight {tuple(weight.shape)} {weight.dtype} "
            f"(check winograd_applies first)"
        )
    return _Conv3x3Winograd.apply(x, weight, bias, tile, lib)
