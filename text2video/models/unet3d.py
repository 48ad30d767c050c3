"""``Unet3D``: the pixel-space video U-Net of video-diffusion-pytorch (lucidrains), text-conditioned.

An initial ``(1, k, k)`` convolution and temporal attention, a sinusoidal time embedding MLP with the
text embedding concatenated to it (a learned null embedding for classifier-free guidance), per level
two ResNet blocks with scale-shift conditioning, spatial linear attention and temporal attention with
relative position bias and rotary embeddings, a middle block with full spatial and temporal attention,
and a final block fed with the skip from the initial features.

Inside, frames are folded into the batch (`~text2video.nn.frames.fold_frames`) and stored channels-last:
every activation is a ``(B*T, C, H, W)`` tensor laid out as ``(B, T, H, W, C)``, so normalisations over
channels and the token projections of attention read memory in order. The public tensors stay
``(B, C, T, H, W)``. The layers are plain PyTorch; `text2video.backends.cpu.install` swaps faster CPU
versions of some of them in.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..diffusion.conditioning import Conditioning
from ..errors import ModelError
from ..nn.attention import scaled_dot_product
from ..nn.embeddings import sinusoidal_embedding
from ..nn.frames import fold_frames, unfold_frames
from ..nn.rotary import rotary_angles, rotate_features

logger = logging.getLogger(__name__)

BLOCK_TYPES = ("resnet", "basic")
BLOCK_NORMS = ("rms", "layer", "group")


# ----------------------------------------------------------------------------------------------
# layout helpers


def pixel_coordinates(x: torch.Tensor) -> torch.Tensor:
    """``(B, 2, T, H, W)`` x and y of every pixel in [-1, 1] (extra input channels: absolute position)."""
    b, _, t, h, w = x.shape
    ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))  # (2, H, W): x then y
    return grid[None, :, None].expand(b, 2, t, h, w)


def channels_last_view(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, H, W, C)``; a view when ``x`` is channels-last."""
    return x.permute(0, 2, 3, 1)


def from_channels_last(y: torch.Tensor) -> torch.Tensor:
    """``(N, H, W, C)`` -> ``(N, C, H, W)`` view (channels-last storage)."""
    return y.permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------------
# normalisation


class ChannelNorm(nn.Module):
    """Normalisation over the channels of a ``(N, C, H, W)`` tensor.

    ``rms``: ``x / ||x|| * sqrt(C) * weight`` (video-diffusion-pytorch's Block norm);
    ``layer``: layer norm over channels with weight and bias; ``layer_nobias``: with weight only
    (the pre-norm of the attention layers); ``group``: group norm (8 groups or fewer).
    """

    def __init__(self, dim: int, kind: str = "layer_nobias", eps: Optional[float] = None) -> None:
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if kind in ("layer", "group") else None
        self.eps = eps if eps is not None else (1e-12 if kind == "rms" else 1e-5)
        self.groups = math.gcd(8, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "group":
            return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)
        y = channels_last_view(x)
        c = y.shape[-1]
        weight, bias = self._affine(y.dtype)
        if self.kind == "rms":
            y = F.rms_norm(y, (c,), weight, self.eps)
        else:
            y = F.layer_norm(y, (c,), weight, bias, self.eps)
        return from_channels_last(y)

    def _affine(self, dtype: torch.dtype) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        bias = None if self.bias is None else self.bias.to(dtype)
        return self.weight.to(dtype), bias

    def normed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised ``(N, H, W, C)`` tokens of ``x`` (pre-norm of an attention layer)."""
        y = channels_last_view(x)
        weight, bias = self._affine(y.dtype)
        return F.layer_norm(y, (y.shape[-1],), weight, bias, self.eps)


# ----------------------------------------------------------------------------------------------
# positions


class RelativePositionBias(nn.Module):
    """A learned bias per head for each bucket of relative frame distance (T5's bucketing)."""

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 32) -> None:
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.embedding = nn.Embedding(num_buckets, heads)

    def buckets(self, n: int, device: torch.device) -> torch.Tensor:
        pos = torch.arange(n, device=device)
        offset = pos[None, :] - pos[:, None]  # key minus query
        half = self.num_buckets // 2
        exact = half // 2
        distance = -offset
        bucket = (distance < 0).long() * half
        distance = distance.abs()
        log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(self.max_distance / exact)
        far = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
        return bucket + torch.where(distance < exact, distance, far)

    def forward(self, n: int, device: torch.device) -> torch.Tensor:
        """``(heads, n, n)`` additive attention bias."""
        return self.embedding(self.buckets(n, device)).permute(2, 0, 1)


# ----------------------------------------------------------------------------------------------
# attention layers (each includes its pre-norm; the caller adds the residual)


class TemporalAttention(nn.Module):
    """Self-attention across the frames at each pixel, with rotary embeddings and relative position bias.

    ``focus`` ``(B,)`` bool: those items attend to their own frame only (their output is the values).
    """

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.rot_dim = min(32, dim_head)
        self.norm = ChannelNorm(dim, "layer_nobias")
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        batch: int,
        angles: torch.Tensor,
        bias: torch.Tensor,
        focus: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        bt, c, h, w = x.shape
        frames, hw = bt // batch, h * w
        tokens = self.norm.normed_tokens(x).reshape(batch, frames, hw, c)
        qkv = self.to_qkv(tokens).view(batch, frames, hw, 3, self.heads, self.dim_head)
        q, k, v = qkv.permute(3, 1, 0, 2, 4, 5)  # (T, B, HW, heads, d): frames first for the rotation
        q, k = (rotate_features(t, self.rot_dim, angles) for t in (q, k))
        q, k, v = (t.permute(1, 2, 3, 0, 4) for t in (q, k, v))  # (B, HW, heads, T, d)
        out = scaled_dot_product(q, k, v, bias=bias)
        if focus is not None:
            out = torch.where(focus.view(batch, 1, 1, 1, 1), v, out)
        out = out.permute(0, 3, 1, 2, 4).reshape(bt, h, w, self.heads * self.dim_head)
        return from_channels_last(self.to_out(out))


class SpatialAttention(nn.Module):
    """Softmax self-attention over the pixels of each frame, or of the whole clip (``over_time``)."""

    def __init__(self, dim: int, heads: int, dim_head: int, over_time: bool = False) -> None:
        super().__init__()
        self.heads, self.dim_head, self.over_time = heads, dim_head, over_time
        self.norm = ChannelNorm(dim, "layer_nobias")
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        groups = batch if self.over_time else bt
        tokens = self.norm.normed_tokens(x).reshape(groups, -1, c)
        qkv = self.to_qkv(tokens).view(groups, tokens.shape[1], 3, self.heads, self.dim_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = scaled_dot_product(q, k, v).transpose(1, 2).reshape(bt, h, w, self.heads * self.dim_head)
        return from_channels_last(self.to_out(out))


class SpatialLinearAttention(nn.Module):
    """Linear attention over the pixels of each frame (softmax over features of q, over pixels of k)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.norm = ChannelNorm(dim, "layer_nobias")
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bt, c, h, w = x.shape
        tokens = self.norm.normed_tokens(x).reshape(bt, h * w, c)
        q, k, v = self.to_qkv(tokens).view(bt, h * w, 3, self.heads, self.dim_head).unbind(2)  # (BT, N, heads, d)
        q = q.softmax(dim=-1) * self.dim_head**-0.5
        k = k.softmax(dim=1)
        context = torch.einsum("bnhd,bnhe->bhde", k, v)
        out = torch.einsum("bnhd,bhde->bnhe", q, context).reshape(bt, h, w, self.heads * self.dim_head)
        return from_channels_last(self.to_out(out))


class TextCrossAttention(nn.Module):
    """Attention of every pixel of every frame to the caption's token states (output zero-initialised)."""

    def __init__(self, dim: int, text_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.norm = ChannelNorm(dim, "layer_nobias")
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(text_dim, 2 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor, batch: int, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        bt, c, h, w = x.shape
        inner = self.heads * self.dim_head
        tokens = self.norm.normed_tokens(x).reshape(batch, -1, c)  # (B, T*H*W, C)
        q = self.to_q(tokens).view(batch, -1, self.heads, self.dim_head).transpose(1, 2)
        k, v = self.to_kv(text.to(tokens.dtype)).view(batch, text.shape[1], 2, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        out = scaled_dot_product(q, k, v, key_mask=text_mask).transpose(1, 2).reshape(bt, h, w, inner)
        return from_channels_last(self.to_out(out))


# ----------------------------------------------------------------------------------------------
# convolution blocks


class ConvBlock(nn.Module):
    """(1, 3, 3) convolution, channel norm, optional scale-shift, SiLU."""

    def __init__(self, dim: int, dim_out: int, norm: str) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim_out, 3, padding=1)
        self.norm = ChannelNorm(dim_out, norm)

    def forward(self, x: torch.Tensor, scale_shift: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = torch.addcmul(shift, x, scale + 1)
        return F.silu(x)


class ResnetBlock(nn.Module):
    """Two conv blocks and a residual; the first (or both, ``cond_norm``) scaled and shifted by the embedding."""

    def __init__(self, dim: int, dim_out: int, *, emb_dim: Optional[int], norm: str, cond_norm: bool = False) -> None:
        super().__init__()
        self.cond_norm = cond_norm and emb_dim is not None
        self.mlp = nn.Linear(emb_dim, dim_out * (4 if self.cond_norm else 2)) if emb_dim is not None else None
        self.block1 = ConvBlock(dim, dim_out, norm)
        self.block2 = ConvBlock(dim_out, dim_out, norm)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb_act: Optional[torch.Tensor] = None, frames: int = 1) -> torch.Tensor:
        ss1 = ss2 = None
        if self.mlp is not None:
            if emb_act is None:
                raise ModelError("this ResnetBlock is conditioned: pass the (SiLU-activated) embedding")
            params = self.mlp(emb_act)
            if params.shape[0] != x.shape[0]:  # one embedding per clip (not per frame): repeat it over the frames
                params = params.repeat_interleave(frames, dim=0)
            params = params[:, :, None, None]
            chunks = params.chunk(4 if self.cond_norm else 2, dim=1)
            ss1 = (chunks[0], chunks[1])
            if self.cond_norm:
                ss2 = (chunks[2], chunks[3])
        h = self.block2(self.block1(x, ss1), ss2)
        return h + self.res_conv(x)


class UnetLevel(nn.Module):
    """One resolution of the U-Net: two ResNet blocks, spatial and temporal attention, resampling."""

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        *,
        emb_dim: int,
        heads: int,
        dim_head: int,
        spatial_dim_head: int,
        linear_attn: bool,
        resample: Optional[str],
        norm: str,
        cond_norm: bool,
    ) -> None:
        super().__init__()
        self.res1 = ResnetBlock(dim_in, dim_out, emb_dim=emb_dim, norm=norm, cond_norm=cond_norm)
        self.res2 = ResnetBlock(dim_out, dim_out, emb_dim=emb_dim, norm=norm, cond_norm=cond_norm)
        self.spatial_attn = SpatialLinearAttention(dim_out, heads, spatial_dim_head) if linear_attn else None
        self.temporal_attn = TemporalAttention(dim_out, heads, dim_head)
        self.cross_attn: Optional[TextCrossAttention] = None  # set by Unet3D(text_cross_attn=True)
        if resample == "down":
            self.sample: Optional[nn.Module] = nn.Conv2d(dim_out, dim_out, 4, 2, 1)
        elif resample == "up":
            self.sample = nn.ConvTranspose2d(dim_out, dim_out, 4, 2, 1)
        else:
            self.sample = None

    def body(self, x: torch.Tensor, emb_act: Optional[torch.Tensor], ctx: _Context) -> torch.Tensor:
        x = self.res1(x, emb_act, ctx.frames)
        x = self.res2(x, emb_act, ctx.frames)
        if self.spatial_attn is not None:
            x = x + self.spatial_attn(x)
        x = x + self.temporal_attn(x, ctx.batch, ctx.angles, ctx.bias, ctx.focus)
        if self.cross_attn is not None and ctx.text is not None:
            x = x + self.cross_attn(x, ctx.batch, *ctx.text)
        return x


class MidBlock(nn.Module):
    """The bottleneck: ResNet block, full spatial (or spatio-temporal) attention, temporal attention, ResNet block."""

    def __init__(
        self, dim: int, *, emb_dim: int, heads: int, dim_head: int, spatial_dim_head: int, norm: str, cond_norm: bool, attn_3d: bool
    ) -> None:
        super().__init__()
        self.res1 = ResnetBlock(dim, dim, emb_dim=emb_dim, norm=norm, cond_norm=cond_norm)
        self.spatial_attn = SpatialAttention(dim, heads, spatial_dim_head, over_time=attn_3d)
        self.temporal_attn = TemporalAttention(dim, heads, dim_head)
        self.cross_attn: Optional[TextCrossAttention] = None  # set by Unet3D(text_cross_attn=True)
        self.res2 = ResnetBlock(dim, dim, emb_dim=emb_dim, norm=norm, cond_norm=cond_norm)

    def forward(self, x: torch.Tensor, emb_act: Optional[torch.Tensor], ctx: _Context) -> torch.Tensor:
        x = self.res1(x, emb_act, ctx.frames)
        x = x + self.spatial_attn(x, ctx.batch)
        x = x + self.temporal_attn(x, ctx.batch, ctx.angles, ctx.bias, ctx.focus)
        if self.cross_attn is not None and ctx.text is not None:
            x = x + self.cross_attn(x, ctx.batch, *ctx.text)
        return self.res2(x, emb_act, ctx.frames)


class _Context:
    """What every layer of one forward pass shares: sizes, rotary angles, position bias, focus mask."""

    def __init__(self, batch: int, frames: int, angles: torch.Tensor, bias: torch.Tensor, focus: Optional[torch.Tensor]) -> None:
        self.batch, self.frames, self.angles, self.bias, self.focus = batch, frames, angles, bias, focus
        self.text: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # caption tokens and mask (cross-attention)


# ----------------------------------------------------------------------------------------------
# the model


class Unet3D(ModelMixin, ConfigMixin):
    """video-diffusion-pytorch's text-conditioned video U-Net on pixels ``(B, C, T, H, W)``, as text2video-from-scratch uses it.

    Config keys (text2video-from-scratch): ``dim`` base width; ``cond_dim`` size of the pooled text embedding (768 for
    BERT-base, 384 for MiniLM, None for an unconditional model); ``out_dim`` output channels (default
    ``channels``); ``dim_mults`` width multipliers per level; ``channels`` input channels;
    ``attn_heads`` / ``attn_dim_head`` of temporal attention; ``init_dim`` / ``init_kernel_size`` of the
    first convolution; ``use_sparse_linear_attn`` spatial linear attention per level; ``block_type``
    (``resnet``; ``basic`` is accepted as an alias, as in text2video-from-scratch's config).
    Further: ``spatial_attn_dim_head`` (head size of the spatial attentions, 32 in video-diffusion-pytorch);
    ``block_norm`` (``rms`` as video-diffusion-pytorch, ``group``, or ``layer``, all over channels);
    DiffusionPlayground's options ``attn_3d`` (the middle attention spans all frames' pixels), ``frame_pos_emb``
    (a sinusoidal frame-index encoding added after the first convolution), ``cond_norm`` (both
    normalisations of every ResNet block are conditional, scale-shift); ``gradient_checkpointing``;
    ``frame_cond`` (an MLP of the text and the frame position adds a per-frame term to the block
    embedding, so the scale-shift of every frame can differ: text-steered motion; off by default);
    ``text_cross_attn`` (every level and the middle attend to the caption's token states, width
    ``cond_dim``, given through ``forward_cond``; the original ``forward`` sees the null token; off by default);
    ``coord_channels`` (the pixels' x and y in [-1, 1] are two extra input channels of the first
    convolution, so the conditioning can place things in the frame; off by default);
    ``patch_size`` (the network runs on ``patch_size`` x ``patch_size`` pixel blocks folded into channels,
    space-to-depth: a 32x32 RGB frame becomes a 16x16 map of 12 channels at 2, and the output is unfolded
    back; a lossless, free "latent space" that cuts the cost of every layer by ``patch_size ** 2``; 1: off).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["ResnetBlock", "MidBlock"]  # the units FSDP shards and gathers (train.sharding; called as modules)

    @register_to_config
    def __init__(
        self,
        dim: int = 64,
        cond_dim: Optional[int] = None,
        out_dim: Optional[int] = None,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        channels: int = 3,
        attn_heads: int = 8,
        attn_dim_head: int = 32,
        init_dim: Optional[int] = None,
        init_kernel_size: int = 7,
        use_sparse_linear_attn: bool = True,
        block_type: str = "resnet",
        spatial_attn_dim_head: int = 32,
        block_norm: str = "rms",
        attn_3d: bool = False,
        frame_pos_emb: bool = False,
        cond_norm: bool = False,
        rel_pos_max_distance: int = 32,
        gradient_checkpointing: bool = False,
        frame_cond: bool = False,
        text_cross_attn: bool = False,
        coord_channels: bool = False,
        patch_size: int = 1,
    ) -> None:
        super().__init__()
        if block_type not in BLOCK_TYPES:
            raise ModelError(f"Unet3D block_type {block_type!r} is unknown; use one of {BLOCK_TYPES}")
        if block_norm not in BLOCK_NORMS:
            raise ModelError(f"Unet3D block_norm {block_norm!r} is unknown; use one of {BLOCK_NORMS}")
        if init_kernel_size % 2 == 0:
            raise ModelError(f"Unet3D init_kernel_size must be odd, got {init_kernel_size}")
        if not dim_mults:
            raise ModelError("Unet3D dim_mults must name at least one level, e.g. [1, 2, 4, 8]")
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ModelError(f"Unet3D patch_size must be a whole number >= 1, got {patch_size!r}")
        folded = patch_size * patch_size
        self.gradient_checkpointing = gradient_checkpointing
        init_dim = init_dim or dim
        dims = [init_dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        time_dim = dim * 4
        self.has_cond = cond_dim is not None
        emb_dim = time_dim + (cond_dim or 0)
        common = dict(
            heads=attn_heads, dim_head=attn_dim_head, spatial_dim_head=spatial_attn_dim_head, norm=block_norm, cond_norm=cond_norm
        )

        self.rel_pos_bias = RelativePositionBias(attn_heads, num_buckets=32, max_distance=rel_pos_max_distance)
        self.init_conv = nn.Conv2d(
            channels * folded + (2 if coord_channels else 0), init_dim, init_kernel_size, padding=init_kernel_size // 2
        )
        self.frame_pos = nn.Linear(init_dim, init_dim) if frame_pos_emb else None
        if self.frame_pos is not None:
            nn.init.zeros_(self.frame_pos.weight)
            nn.init.zeros_(self.frame_pos.bias)
        self.init_temporal_attn = TemporalAttention(init_dim, attn_heads, attn_dim_head)
        self.time_mlp = nn.Sequential(nn.Linear(dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim))
        self.null_cond_emb = nn.Parameter(torch.randn(1, cond_dim)) if self.has_cond else None
        # frame_cond: an MLP of (text, frame position) adds a per-frame term to the embedding, so the text
        # can modulate each frame differently (zero-initialised: the model starts as without it)
        self.frame_cond_mlp = None
        if frame_cond and self.has_cond:
            self.frame_cond_mlp = nn.Sequential(nn.Linear(cond_dim + dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            nn.init.zeros_(self.frame_cond_mlp[2].weight)
            nn.init.zeros_(self.frame_cond_mlp[2].bias)

        n = len(in_out)
        self.downs = nn.ModuleList(
            UnetLevel(a, b, emb_dim=emb_dim, linear_attn=use_sparse_linear_attn, resample="down" if i < n - 1 else None, **common)
            for i, (a, b) in enumerate(in_out)
        )
        self.mid = MidBlock(dims[-1], emb_dim=emb_dim, attn_3d=attn_3d, **common)
        self.ups = nn.ModuleList(
            UnetLevel(b * 2, a, emb_dim=emb_dim, linear_attn=use_sparse_linear_attn, resample="up" if i < n - 1 else None, **common)
            for i, (a, b) in enumerate(reversed(in_out))
        )
        self.final_block = ResnetBlock(init_dim * 2, dim, emb_dim=None, norm=block_norm)
        # text_cross_attn: every level and the middle attend to the caption tokens (a learned null token
        # is always present, and is all that dropped or missing captions leave)
        self.null_text_token = None
        if text_cross_attn and self.has_cond:
            self.null_text_token = nn.Parameter(torch.randn(1, 1, cond_dim) * 0.02)
            for block in (*self.downs, self.mid, *self.ups):
                width = block.temporal_attn.norm.weight.shape[0]
                block.cross_attn = TextCrossAttention(width, cond_dim, attn_heads, attn_dim_head)
        self.final_conv = nn.Conv2d(dim, (out_dim or channels) * folded, 1)

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def downsample_factor(self) -> int:
        """Height and width must be multiples of this (the levels' halvings times the patch size)."""
        return 2 ** (len(self.config.dim_mults) - 1) * self.config.patch_size

    def _check_input(self, x: torch.Tensor, time: torch.Tensor) -> None:
        if x.ndim != 5:
            raise ModelError(f"Unet3D expects video (B, C, T, H, W), got a tensor of shape {tuple(x.shape)}")
        if x.shape[1] != self.config.channels:
            raise ModelError(f"Unet3D was built for {self.config.channels} channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        f = self.downsample_factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ModelError(
                f"Unet3D with {len(self.config.dim_mults)} levels and patch_size {self.config.patch_size} needs height and "
                f"width divisible by {f}, got {x.shape[-2]}x{x.shape[-1]}; resize or crop the video, or use fewer dim_mults"
            )
        if time.ndim != 1 or time.shape[0] != x.shape[0]:
            raise ModelError(f"Unet3D expects time of shape ({x.shape[0]},), got {tuple(time.shape)}")

    def _cond_embedding(
        self, cond: Optional[torch.Tensor], null_rows: Optional[torch.Tensor], batch: int, device: torch.device
    ) -> Optional[torch.Tensor]:
        if not self.has_cond:
            return None
        null = self.null_cond_emb.expand(batch, -1)
        if cond is None:
            return null
        if cond.ndim != 2 or cond.shape != (batch, self.config.cond_dim):
            raise ModelError(f"Unet3D expects cond of shape ({batch}, {self.config.cond_dim}), got {tuple(cond.shape)}")
        if null_rows is None:
            return cond.to(null.dtype)
        return torch.where(null_rows.to(device=device, dtype=torch.bool)[:, None], null, cond.to(null.dtype))

    def _run(self, fn: Callable[..., torch.Tensor], *args) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    # -- forward ----------------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        cond: Optional[torch.Tensor] = None,
        null_cond_prob: float = 0.0,
        focus_present_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """text2video-from-scratch's call: ``x`` ``(B, C, T, H, W)``, ``time`` ``(B,)``, ``cond`` ``(B, cond_dim)`` pooled text.

        ``null_cond_prob`` replaces each item's text by the null embedding with that probability
        (classifier-free guidance training); a conditional model called without ``cond`` uses the null
        embedding for every item. ``focus_present_mask`` ``(B,)`` bool makes those items' temporal
        attention look at their own frame only (joint image/video training).
        """
        null_rows = None
        if self.has_cond and null_cond_prob > 0:
            null_rows = torch.rand(x.shape[0], device=x.device) < null_cond_prob
        return self._forward(
            x, time, self._cond_embedding(cond, null_rows, x.shape[0], x.device) if self.has_cond else None, focus_present_mask
        )

    def forward_cond(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The adapter call: pooled text, null-text rows and the focus mask of ``cond`` (its image is ignored)."""
        emb = self._cond_embedding(cond.text_pooled, cond.null_text, x_t.shape[0], x_t.device)
        text = self._text_context(cond.text_tokens, cond.text_mask, cond.null_text, x_t.shape[0])
        return self._forward(x_t, t, emb, cond.focus_present, text)

    def _text_context(
        self, tokens: Optional[torch.Tensor], mask: Optional[torch.Tensor], null_rows: Optional[torch.Tensor], batch: int
    ) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Keys of the cross-attention: the null token then the caption tokens ``(B, 1+L, D)`` and their mask."""
        if self.null_text_token is None:
            return None
        null = self.null_text_token.expand(batch, -1, -1)
        if tokens is None:
            return null, torch.ones(batch, 1, dtype=torch.bool, device=null.device)
        if tokens.ndim != 3 or tokens.shape[0] != batch or tokens.shape[2] != self.config.cond_dim:
            raise ModelError(f"Unet3D expects text tokens of shape ({batch}, L, {self.config.cond_dim}), got {tuple(tokens.shape)}")
        keep = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device) if mask is None else mask.to(tokens.device).bool()
        if null_rows is not None:
            keep = keep & ~null_rows.to(device=tokens.device, dtype=torch.bool)[:, None]
        first = torch.ones(batch, 1, dtype=torch.bool, device=tokens.device)
        return torch.cat((null, tokens.to(null.dtype)), dim=1), torch.cat((first, keep), dim=1)

    def forward_with_cond_scale(
        self, x: torch.Tensor, time: torch.Tensor, cond: Optional[torch.Tensor] = None, cond_scale: float = 1.0, **kwargs
    ) -> torch.Tensor:
        """Classifier-free guidance in one batched pass: ``null + (cond - null) * cond_scale``."""
        if cond_scale == 1 or not self.has_cond or cond is None:
            return self.forward(x, time, cond, **kwargs)
        b = x.shape[0]
        null_rows = torch.arange(2 * b, device=x.device) >= b
        emb = self._cond_embedding(torch.cat((cond, cond)), null_rows, 2 * b, x.device)
        focus = kwargs.get("focus_present_mask")
        out = self._forward(torch.cat((x, x)), torch.cat((time, time)), emb, None if focus is None else torch.cat((focus, focus)))
        with_text, without = out.chunk(2)
        return without + (with_text - without) * cond_scale

    def _per_frame_embedding(self, emb: torch.Tensor, cond_emb: torch.Tensor, frames: int) -> torch.Tensor:
        """``(B, E)`` -> ``(B*T, E)``: the clip embedding plus an MLP of (text, sinusoidal frame position)."""
        b = emb.shape[0]
        pos = sinusoidal_embedding(torch.arange(frames, device=emb.device), self.config.dim, freq_shift=1).to(emb.dtype)
        pair = torch.cat((cond_emb[:, None].expand(b, frames, -1), pos[None].expand(b, -1, -1)), dim=-1)
        return (emb[:, None] + self.frame_cond_mlp(pair)).reshape(b * frames, -1)

    def _forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        cond_emb: Optional[torch.Tensor],
        focus: Optional[torch.Tensor],
        text: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        self._check_input(x, time)
        b, _, frames = x.shape[:3]
        device = x.device
        if focus is not None:
            focus = focus.to(device=device, dtype=torch.bool).reshape(b)
            if not bool(focus.any()):
                focus = None
        angles = rotary_angles(frames, self.init_temporal_attn.rot_dim, device)
        ctx = _Context(b, frames, angles, self.rel_pos_bias(frames, device), focus)
        ctx.text = text if text is not None else self._text_context(None, None, None, b)

        x = x.to(self.init_conv.weight.dtype)
        patch = self.config.patch_size
        if patch > 1:
            x = unfold_frames(F.pixel_unshuffle(fold_frames(x), patch), frames)
        if self.config.coord_channels:
            x = torch.cat((x, pixel_coordinates(x)), dim=1)
        h = self.init_conv(fold_frames(x, torch.channels_last))
        if self.frame_pos is not None:
            pos = sinusoidal_embedding(torch.arange(frames, device=device), h.shape[1], freq_shift=1)
            h = h + self.frame_pos(pos.to(h.dtype)).repeat(b, 1)[:, :, None, None]
        # the initial temporal attention ignores the focus mask (as in video-diffusion-pytorch)
        h = h + self.init_temporal_attn(h, b, angles, ctx.bias, None)
        skip0 = h

        emb = self.time_mlp(sinusoidal_embedding(time, self.config.dim, freq_shift=1).to(h.dtype))
        if cond_emb is not None:
            emb = torch.cat((emb, cond_emb.to(emb.dtype)), dim=-1)
            if self.frame_cond_mlp is not None:
                emb = self._per_frame_embedding(emb, cond_emb.to(emb.dtype), frames)
        emb_act = F.silu(emb)

        skips = []
        for level in self.downs:
            h = self._run(level.body, h, emb_act, ctx)
            skips.append(h)
            if level.sample is not None:
                h = level.sample(h)
        h = self._run(self.mid, h, emb_act, ctx)
        for level in self.ups:
            h = self._run(level.body, torch.cat((h, skips.pop()), dim=1), emb_act, ctx)
            if level.sample is not None:
                h = level.sample(h)
        h = self.final_block(torch.cat((h, skip0), dim=1))
        out = self.final_conv(h)
        if patch > 1:
            out = F.pixel_shuffle(out.contiguous(), patch)
        return unfold_frames(out, frames).contiguous()
