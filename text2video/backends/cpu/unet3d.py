"""Unet3D's layers for the CPU: the convolution dispatch, the fused attention and norm, packed weights.

`text2video.backends.cpu.install` turns a `~text2video.models.unet3d.Unet3D`'s plain layers into the subclasses
below, as listed in `UNET3D_LAYERS` (same parameters, same results up to float rounding); ``uninstall`` turns
them back. Each fast layer keeps
the plain PyTorch path for every call its fast path does not take (another device or dtype, autocast, a
shape the kernels refuse, no C compiler). The thresholds below choose, per call, between oneDNN,
Winograd, GEMM formulations and packed weights; docs/models.md gives the measurements behind them.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...models.unet3d import (
    ConvBlock,
    SpatialLinearAttention,
    TemporalAttention,
    Unet3D,
    channels_last_view,
    from_channels_last,
)
from ...nn.rotary import rotate_rows
from .frozen_weights import WeightDerivedCache, weight_key
from .fused_norm import rms_scale_shift_silu
from .packed_conv import packed_conv2d, packed_conv_transpose2d
from .resample_gemm import downsample_conv_gemm, upsample_conv_gemm
from .short_attention import rotates_inside, short_sequence_attention
from .small_map_conv import conv3x3_gemm_backward
from .winograd_conv import conv3x3_winograd, winograd_applies

#: Feature maps with fewer pixels than this run their convolutions in NCHW, larger ones channels-last
#: (oneDNN is slower channels-last on tiny maps, faster from 8x8 up).
CHANNELS_LAST_MIN_PIXELS = 64


#: 3x3 convolutions with at least this many input and output channels on maps of at most this many
#: pixels are backpropagated by GEMMs (:mod:`.small_map_conv`) when training on CPU, where
#: Winograd does not apply (maps below WINOGRAD_MIN_PIXELS, odd sides). The resampling convolutions to and
#: from such maps run as GEMMs too (:mod:`.resample_gemm`).
GEMM_BACKWARD_MIN_CHANNELS = 256
GEMM_BACKWARD_MAX_PIXELS = 16


#: When training on CPU, 3x3 convolutions on maps of at least this many pixels run by Winograd
#: (:mod:`.winograd_conv`): F(4x4, 3x3) from WINOGRAD_LARGE_TILE_MIN_PIXELS up (sides multiples of
#: 4), F(2x2, 3x3) below (even sides). On smaller maps the transformed weight costs more than it saves.
WINOGRAD_MIN_PIXELS = 16
WINOGRAD_LARGE_TILE_MIN_PIXELS = 256


#: Temporal attention runs over chunks of this many pixels (of all frames) at a time (0: no chunking), which
#: bounds its transient buffers on large inputs; with the fused kernels fewer, larger calls are faster.
TEMPORAL_CHUNK_TOKENS = 2048


def conv_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format a convolution over ``x`` runs fastest in."""
    return torch.channels_last if x.shape[-2] * x.shape[-1] >= CHANNELS_LAST_MIN_PIXELS else torch.contiguous_format


class FastConv2d(WeightDerivedCache, nn.Conv2d):
    """``nn.Conv2d`` that picks, per call, the fastest CPU formulation: a matrix product for 1x1 kernels,
    Winograd or GEMMs for training calls on small maps, oneDNN in the faster memory format for the map's size
    otherwise, with its weight kept packed between calls inside :func:`~.frozen_weights.frozen_weights`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0) and self.groups == 1:
            # a 1x1 convolution is a matrix product over channels: run it on the channels-last tokens
            weight = self.weight.view(self.out_channels, self.in_channels).to(x.dtype)
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return from_channels_last(F.linear(channels_last_view(x), weight, bias))
        tile = self._winograd_tile(x)
        if tile:
            return conv3x3_winograd(x, self.weight, self.bias, tile)
        if self._gemm_backward_pays(x):
            return conv3x3_gemm_backward(x, self.weight, self.bias)
        if self._gemm_downsample_pays(x):
            return downsample_conv_gemm(x, self.weight, self.bias)
        x = x.contiguous(memory_format=conv_format(x))
        if self.padding_mode == "zeros" and not isinstance(self.padding, str):
            y = packed_conv2d(self, x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            if y is not None:
                return y
        weight = self.weight
        if (
            x.device.type == "cpu"
            and weight.requires_grad
            and torch.is_grad_enabled()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            # oneDNN wants a channels-last weight for a channels-last input: PyTorch would copy it in the forward
            # and again in the backward; once here, and the backward reuses this copy
            weight = weight.contiguous(memory_format=torch.channels_last)
        return self._conv_forward(x, weight, self.bias)

    def _winograd_tile(self, x: torch.Tensor) -> int:
        """The Winograd output tile size for this call (0: not Winograd): F(4x4, 3x3) on large maps, F(2x2, 3x3)
        down to :data:`WINOGRAD_MIN_PIXELS`, where its smaller transformed weight wins."""
        pixels = x.shape[-2] * x.shape[-1]
        if pixels < WINOGRAD_MIN_PIXELS or not self._cpu_training_3x3(x):
            return 0
        tile = 4 if pixels >= WINOGRAD_LARGE_TILE_MIN_PIXELS and x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0 else 2
        return tile if winograd_applies(x, self.weight, tile) else 0

    def _gemm_backward_pays(self, x: torch.Tensor) -> bool:
        """Whether this call is a training step of a 3x3 convolution that oneDNN backpropagates slowly (many
        channels on a tiny map)."""
        return (
            self._cpu_training_3x3(x)
            and min(self.in_channels, self.out_channels) >= GEMM_BACKWARD_MIN_CHANNELS
            and x.shape[-2] * x.shape[-1] <= GEMM_BACKWARD_MAX_PIXELS
        )

    def _gemm_downsample_pays(self, x: torch.Tensor) -> bool:
        """Whether this call is a training step of a down-sampling convolution (4x4, stride 2, padding 1) that
        oneDNN runs slowly: the same channel and map limits as :meth:`_gemm_backward_pays`, on the output map."""
        return (
            _cpu_float32_training(self, x, (4, 4), (2, 2), (1, 1))
            and min(self.in_channels, self.out_channels) >= GEMM_BACKWARD_MIN_CHANNELS
            and x.shape[-2] * x.shape[-1] <= 4 * GEMM_BACKWARD_MAX_PIXELS
            and x.shape[-2] % 2 == 0
            and x.shape[-1] % 2 == 0
        )

    def _cpu_training_3x3(self, x: torch.Tensor) -> bool:
        """Whether this call is a float32 CPU training call of a 3x3 convolution with stride 1 and padding 1."""
        return _cpu_float32_training(self, x, (3, 3), (1, 1), (1, 1))


def _cpu_float32_training(
    conv: nn.modules.conv._ConvNd, x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> bool:
    """Whether this call of ``conv`` is a float32 CPU training call with this kernel, stride and zero padding (no
    dilation, groups or output padding)."""
    return (
        conv.kernel_size == kernel
        and conv.stride == stride
        and conv.padding == padding
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and all(p == 0 for p in getattr(conv, "output_padding", (0, 0)))
        and x.device.type == "cpu"
        and x.dtype == conv.weight.dtype == torch.float32
        and torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


class FastConvTranspose2d(WeightDerivedCache, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` that lays its input out in the faster memory format for its size
    (and, like :class:`FastConv2d`, packs its weight for no-grad CPU calls)."""

    def forward(self, x: torch.Tensor, output_size: Optional[list[int]] = None) -> torch.Tensor:
        if output_size is None and self._gemm_upsample_pays(x):
            return upsample_conv_gemm(x, self.weight, self.bias)
        x = x.contiguous(memory_format=conv_format(x))
        if output_size is None:
            y = packed_conv_transpose2d(
                self, x, self.weight, self.bias, self.stride, self.padding, self.output_padding, self.dilation, self.groups
            )
            if y is not None:
                return y
        return super().forward(x, output_size)

    def _gemm_upsample_pays(self, x: torch.Tensor) -> bool:
        """Whether this call is a training step of an up-sampling convolution (4x4, stride 2, padding 1) that
        oneDNN runs slowly: the channel and map limits of :meth:`FastConv2d._gemm_backward_pays`, on the input map."""
        return (
            _cpu_float32_training(self, x, (4, 4), (2, 2), (1, 1))
            and min(self.in_channels, self.out_channels) >= GEMM_BACKWARD_MIN_CHANNELS
            and x.shape[-2] * x.shape[-1] <= GEMM_BACKWARD_MAX_PIXELS
        )


def _adapted(*layers: nn.Module) -> bool:
    """Whether any of ``layers`` carries an adapter (a PEFT LoRA layer wraps the plain one as ``base_layer``):
    the fused paths read the projection weights directly and would leave the adapter out."""
    return any(hasattr(layer, "base_layer") for layer in layers)


class FastTemporalAttention(WeightDerivedCache, TemporalAttention):
    """Temporal attention through :func:`~.short_attention.short_sequence_attention`, in chunks of pixels.

    Where the fused CPU kernels run the attention, they also apply the rotary embedding. Elsewhere it is
    applied to the projection weights (one rotated copy per frame; inside
    :func:`~.frozen_weights.frozen_weights`, the sampling loop, built once per run) or, when a frame has
    fewer tokens than channels, to the projected queries and keys.
    """

    #: pixels (of all frames) attended per call; 0: all at once (see :data:`TEMPORAL_CHUNK_TOKENS`)
    chunk_tokens: int = TEMPORAL_CHUNK_TOKENS

    def forward(
        self,
        x: torch.Tensor,
        batch: int,
        angles: torch.Tensor,
        bias: torch.Tensor,
        focus: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if _adapted(self.to_qkv, self.to_out):
            return super().forward(x, batch, angles, bias, focus)
        bt, c, h, w = x.shape
        frames, hw, inner = bt // batch, h * w, self.heads * self.dim_head
        tokens = self.norm.normed_tokens(x).reshape(batch, frames, hw, c)
        if focus is not None and bool(focus.all()):
            # every item attends only to its own frame: attention returns the values
            w_v = self.to_qkv.weight[2 * inner :]
            return from_channels_last(self.to_out(F.linear(tokens, w_v)).view(bt, h, w, c))
        # frame-major tokens (T, B*HW, C), attended in chunks of pixels
        n = batch * hw
        tokens = tokens.transpose(0, 1).reshape(frames, n, c)
        if n < c or rotates_inside(tokens, frames):
            # the kernels rotate the queries and keys, or few tokens per frame: rotate them after projecting
            weights = self.to_qkv.weight.to(tokens.dtype)
        else:
            # many tokens per frame: rotate the projection rows once per frame, one batched product
            weights = self.derived(
                "rotated_projection",
                lambda: (tokens.dtype, tuple(angles.flatten().tolist()), weight_key(self.to_qkv.weight)),
                lambda: self._rotated_projection(angles, tokens.dtype),
            )
        rows = None if focus is None or not bool(focus.any()) else focus.repeat_interleave(hw).view(1, n, 1, 1)
        chunk = self.chunk_tokens if self.chunk_tokens > 0 else n
        # split (not slices): its backward concatenates the chunks' gradients once, where each slice's
        # backward would write a full-size zero tensor
        row_parts = [None] * math.ceil(n / chunk) if rows is None else rows.split(chunk, dim=1)
        outs = [self._attend(part, weights, angles, bias, keep) for part, keep in zip(tokens.split(chunk, dim=1), row_parts)]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)  # (T, B*HW, C)
        return from_channels_last(out.view(frames, batch, hw, c).transpose(0, 1).reshape(bt, h, w, c))

    def _rotated_projection(self, angles: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``(T, C, 3*inner)``: the query and key rows rotated by each frame's angles, and the value rows."""
        inner = self.heads * self.dim_head
        w_q, w_k, w_v = self.to_qkv.weight.split(inner)
        frames, c = angles.shape[0], w_q.shape[1]
        rotated = torch.cat(
            (
                rotate_rows(w_q, self.heads, self.rot_dim, angles),
                rotate_rows(w_k, self.heads, self.rot_dim, angles),
                w_v.expand(frames, inner, c),
            ),
            dim=1,
        )
        return rotated.transpose(1, 2).to(dtype)

    def _attend(
        self, tokens: torch.Tensor, weights: torch.Tensor, angles: torch.Tensor, bias: torch.Tensor, rows: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """Attention over frames of frame-major ``tokens`` ``(T, n, C)`` -> output projection ``(T, n, C)``."""
        frames, n, _ = tokens.shape
        if weights.ndim == 2:
            qkv = F.linear(tokens, weights).view(frames, n, 3, self.heads, self.dim_head)
            out = short_sequence_attention(qkv, bias, angles=angles)  # (T, n, heads, d), queries and keys rotated
        else:
            qkv = torch.bmm(tokens, weights).view(frames, n, 3, self.heads, self.dim_head)
            out = short_sequence_attention(qkv, bias)
        if rows is not None:
            out = torch.where(rows, qkv[:, :, 2], out)
        return self.to_out(out.reshape(frames, n, self.heads * self.dim_head))


class FastSpatialLinearAttention(SpatialLinearAttention):
    """Linear attention with its products reordered by size: with more pixels than channels the values are
    never formed and the output projection is folded into the small context."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _adapted(self.to_qkv, self.to_out):
            return super().forward(x)
        bt, c, h, w = x.shape
        n, inner = h * w, self.heads * self.dim_head
        tokens = self.norm.normed_tokens(x).reshape(bt, n, c)
        # queries token-major (BT, N, heads*d): their softmax over features reads memory in order;
        # keys channel-major (BT, heads*d, N): their softmax over pixels does too
        w_q, w_k, w_v = self.to_qkv.weight.to(tokens.dtype).split(inner)
        q = F.linear(tokens, w_q).view(bt, n, self.heads, self.dim_head).softmax(dim=-1)
        tokens_t = tokens.transpose(1, 2)
        k = torch.bmm(w_k.expand(bt, -1, -1), tokens_t).softmax(dim=-1)  # (BT, heads*d, N)
        if n >= c:
            # more pixels than channels: the values are never formed,
            # context = softmax(k) @ (tokens @ W_v^T)^T = (softmax(k) @ tokens) @ W_v^T
            pooled = torch.bmm(k, tokens).view(bt, self.heads, self.dim_head, c)  # (BT, heads, d, C)
            context = torch.matmul(pooled, w_v.view(self.heads, self.dim_head, c).transpose(1, 2))  # (BT, heads, d, e)
        else:
            v = torch.bmm(w_v.expand(bt, -1, -1), tokens_t).view(bt, self.heads, self.dim_head, n)
            context = torch.matmul(k.view(bt, self.heads, self.dim_head, n), v.transpose(-1, -2))  # (BT, heads, d, e)
        context = context * (self.dim_head**-0.5)
        if n > c:
            # more pixels than channels: fold the output projection into the (small) context,
            # out = q @ (context @ W_out^T)
            w_out = self.to_out.weight.view(c, self.heads, self.dim_head).to(context.dtype)
            mixer = torch.einsum("bhde,che->bhdc", context, w_out).reshape(bt, inner, c)
            out = torch.baddbmm(self.to_out.bias.to(q.dtype), q.reshape(bt, n, inner), mixer.to(q.dtype))
        else:
            # few pixels (the bottleneck levels): each head's queries times its context, then the projection
            per_head = torch.matmul(q.transpose(1, 2), context.to(q.dtype))  # (BT, heads, N, e)
            out = self.to_out(per_head.transpose(1, 2).reshape(bt, n, inner))
        return from_channels_last(out.view(bt, h, w, c))


class FastConvBlock(ConvBlock):
    """A conv block whose RMS norm, scale-shift and SiLU run as one autograd node (one C loop on CPU)."""

    def forward(self, x: torch.Tensor, scale_shift: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        x = self.proj(x)
        if self.norm.kind == "rms":
            # norm, scale-shift and SiLU as one autograd node on the channels-last tokens
            n, c, h, w = x.shape
            scale = shift = None
            if scale_shift is not None:
                scale, shift = (t.reshape(n, c) for t in scale_shift)
            y = rms_scale_shift_silu(channels_last_view(x).reshape(n, h * w, c), self.norm.weight, scale, shift, self.norm.eps)
            return from_channels_last(y.view(n, h, w, c))
        x = self.norm(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = torch.addcmul(shift, x, scale + 1)
        return F.silu(x)


#: plain layer class -> its fast subclass, within a Unet3D
UNET3D_LAYERS: dict[type, type] = {
    nn.Conv2d: FastConv2d,
    nn.ConvTranspose2d: FastConvTranspose2d,
    TemporalAttention: FastTemporalAttention,
    SpatialLinearAttention: FastSpatialLinearAttention,
    ConvBlock: FastConvBlock,
}

#: model class -> its swap table; a model not listed here runs as it is
MODEL_LAYERS: dict[type, dict[type, type]] = {Unet3D: UNET3D_LAYERS}
