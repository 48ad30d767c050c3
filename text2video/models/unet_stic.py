"""`UNetSTIC`: a spatio-temporal UNet with cross-attention and image conditioning (Open-Sora).

The 2-D blocks (ResNet blocks, spatial transformers with self- and cross-attention) run on frames
folded into the batch; after every block layer a temporal attention mixes each pixel's features
across frames. Temporal mixers, transformer outputs and the output convolution start at zero, so a
fresh model predicts exactly zeros and a fresh temporal mixer is the identity.

Two text2video additions, off by default (Open-Sora's model has neither). ``pooled_text``: the caption's masked
mean (the null token on dropped rows) goes through an MLP into the timestep embedding, so the caption steers
every ResBlock; through cross-attention alone it reaches the output only as the product of two zero-initialised
layers (the transformers' ``proj_out`` and ``conv_out``), and after 3 steps a caption changed a tiny model's
prediction by 0.3% of its size (the Unet3D's by 60%). ``coord_channels``: each pixel's x and y in [-1, 1] are two
more input channels, so the model knows where a pixel is (its self-attention has no positions; without them
a caption's direction cannot decide where a shape starts).

Layouts. The Open-Sora document gives the public input as ``(batch, num_frames, channel, height, width)`` but
its code concatenates ``cond_image`` on dim 1 as if both were ``(B, C, T, H, W)``, and returns
``[B, out_channels, T, H, W]``. text2video resolves this once, at the model's edge:

* ``x`` and ``cond_image`` are both ``(B, T, C, H, W)`` (``cond_image`` "has the same shape as x");
  they are joined on their channel axis (dim 2), never on dim 1;
* ``.sample`` is ``(B, out_channels, T, H, W)``, that document's output and text2video's internal layout;
* ``forward_cond`` takes and returns ``(B, C, T, H, W)`` like every other denoiser.

``in_channels`` counts the latent channels plus the ``cond_image`` channels (that document's note); without
``cond_image`` those channels are zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..diffusion.conditioning import Conditioning
from ..errors import ModelError
from ..nn.attention import Attention
from ..nn.dit_blocks import Mlp, TimestepEmbedder, sincos_1d
from .image_cond import as_batch_timesteps, cond_image_channels
from .unet3d import pixel_coordinates

_DOWN_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
_UP_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Two 3x3 convolutions with the timestep embedding added in between; 1x1 skip if needed."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(in_ch, groups), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(temb_dim, out_ch)
        self.norm2, self.conv2 = _norm(out_ch, groups), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SpatialTransformer(nn.Module):
    """Per-frame transformer over the ``H*W`` pixels: self-attention, cross-attention to text, MLP."""

    def __init__(self, ch: int, heads: int, head_dim: int, context_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = _norm(ch, groups)
        self.proj_in = nn.Linear(ch, ch)
        self.norm1, self.self_attn = nn.LayerNorm(ch), Attention(ch, heads=heads, dim_head=head_dim)
        self.norm2 = nn.LayerNorm(ch)
        self.cross_attn = Attention(ch, heads=heads, dim_head=head_dim, context_dim=context_dim)
        self.norm3, self.mlp = nn.LayerNorm(ch), Mlp(ch, 4 * ch)
        self.proj_out = _zero(nn.Linear(ch, ch))

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: Optional[torch.Tensor]) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        tokens = tokens + self.self_attn(self.norm1(tokens))
        tokens = tokens + self.cross_attn(self.norm2(tokens), context, key_mask=context_mask)
        tokens = tokens + self.mlp(self.norm3(tokens))
        return x + self.proj_out(tokens).transpose(1, 2).reshape(n, c, h, w)


class TemporalMixer(nn.Module):
    """Attention across the frames of each pixel, with sin-cos frame positions; identity at init."""

    def __init__(self, ch: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(ch)
        self.attn = Attention(ch, heads=heads, dim_head=head_dim)
        _zero(self.attn.to_out)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        b = bt // frames
        seq = x.view(b, frames, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, frames, c)
        pos = sincos_1d(torch.arange(frames, device=x.device), c).to(x.dtype)
        mixed = self.attn(self.norm(seq) + pos)
        return x + mixed.view(b, h * w, frames, c).permute(0, 2, 3, 1).reshape(bt, c, h, w)


class STLayer(nn.Module):
    """ResBlock, optional spatial transformer, temporal mixer."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, attention: bool, head_dim: int, context_dim: int, groups: int) -> None:
        super().__init__()
        heads = max(out_ch // head_dim, 1)
        dim_head = out_ch // heads
        self.res = ResBlock(in_ch, out_ch, temb_dim, groups)
        self.spatial = SpatialTransformer(out_ch, heads, dim_head, context_dim, groups) if attention else None
        self.temporal = TemporalMixer(out_ch, heads, dim_head)

    def forward(self, x, temb, context, context_mask, frames: int) -> torch.Tensor:  # noqa: ANN001
        x = self.res(x, temb)
        if self.spatial is not None:
            x = self.spatial(x, context, context_mask)
        return self.temporal(x, frames)


@dataclass
class UNetSTICOutput(BaseOutput):
    """``sample``: the prediction ``(B, out_channels, T, H, W)``."""

    sample: torch.Tensor


class UNetSTIC(ModelMixin, ConfigMixin):
    """Spatio-temporal UNet with text cross-attention and channel-concatenated image conditioning."""

    _supports_gradient_checkpointing = True
    _no_split_modules = ["STLayer"]  # the unit FSDP shards and gathers (train.sharding)

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 8,
        out_channels: int = 4,
        down_block_types: Sequence[str] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types: Sequence[str] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels: Sequence[int] = (128, 256, 512),
        layers_per_block: int = 2,
        cross_attention_dim: int = 768,
        attention_head_dim: int = 64,
        norm_num_groups: int = 32,
        num_frames: int = 16,
        pooled_text: bool = False,
        coord_channels: bool = False,
    ) -> None:
        super().__init__()
        levels = len(block_out_channels)
        if len(down_block_types) != levels or len(up_block_types) != levels:
            raise ModelError("down_block_types, up_block_types and block_out_channels must have the same length")
        for kind in down_block_types:
            if kind not in _DOWN_TYPES:
                raise ModelError(f"unknown down block {kind!r}; choose one of {_DOWN_TYPES}")
        for kind in up_block_types:
            if kind not in _UP_TYPES:
                raise ModelError(f"unknown up block {kind!r}; choose one of {_UP_TYPES}")
        ch0, groups = block_out_channels[0], norm_num_groups
        temb_dim = 4 * ch0
        self.time_embedding = TimestepEmbedder(temb_dim, frequency_dim=ch0)
        self.null_text_embedding = nn.Parameter(torch.randn(1, cross_attention_dim) / cross_attention_dim**0.5)
        self.pooled_proj = Mlp(cross_attention_dim, temb_dim, temb_dim) if pooled_text else None
        self.conv_in = nn.Conv2d(in_channels + (2 if coord_channels else 0), ch0, 3, padding=1)

        def layer(i: int, o: int, attention: bool) -> STLayer:
            return STLayer(i, o, temb_dim, attention, attention_head_dim, cross_attention_dim, groups)

        ch, skips = ch0, [ch0]
        self.down = nn.ModuleList()
        for level, (kind, out_ch) in enumerate(zip(down_block_types, block_out_channels)):
            stage = nn.Module()
            stage.layers = nn.ModuleList()
            for _ in range(layers_per_block):
                stage.layers.append(layer(ch, out_ch, kind.startswith("CrossAttn")))
                ch = out_ch
                skips.append(ch)
            stage.downsample = nn.Conv2d(ch, ch, 3, stride=2, padding=1) if level < levels - 1 else None
            if stage.downsample is not None:
                skips.append(ch)
            self.down.append(stage)
        self.mid = nn.ModuleList([layer(ch, ch, True), layer(ch, ch, False)])
        self.up = nn.ModuleList()
        for level, (kind, out_ch) in enumerate(zip(up_block_types, reversed(block_out_channels))):
            stage = nn.Module()
            stage.layers = nn.ModuleList()
            for _ in range(layers_per_block + 1):
                stage.layers.append(layer(ch + skips.pop(), out_ch, kind.startswith("CrossAttn")))
                ch = out_ch
            stage.upsample = nn.Conv2d(ch, ch, 3, padding=1) if level < levels - 1 else None
            self.up.append(stage)
        self.norm_out = _norm(ch, groups)
        self.conv_out = _zero(nn.Conv2d(ch, out_channels, 3, padding=1))
        self.gradient_checkpointing = False  # enable_gradient_checkpointing(): each layer recomputed in backward

    # -- text ---------------------------------------------------------------------------------
    def text_context(
        self, tokens: Optional[torch.Tensor], mask: Optional[torch.Tensor], batch: int, drop: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, L, D)`` tokens and ``(B, L)`` mask; rows dropped (or no tokens) get the null token."""
        null = self.null_text_embedding
        device = null.device
        if tokens is None:
            tokens = null.new_zeros(batch, 1, null.shape[1])
            mask = torch.zeros(batch, 1, dtype=torch.bool, device=device)
            drop = torch.ones(batch, dtype=torch.bool, device=device)
        if tokens.ndim != 3 or tokens.shape[0] != batch or tokens.shape[2] != null.shape[1]:
            raise ModelError(
                f"encoder_hidden_states must be [B={batch}, seq_len, cross_attention_dim={null.shape[1]}], "
                f"got {tuple(tokens.shape)}; match cross_attention_dim to the text encoder's width"
            )
        tokens = tokens.to(device=device, dtype=null.dtype)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=device) if mask is None else mask.to(device).bool()
        if mask.shape != tokens.shape[:2]:
            raise ModelError(f"mask must be [B, seq_len] = {tuple(tokens.shape[:2])}, got {tuple(mask.shape)}")
        if drop is not None:
            drop = drop.to(device).bool()
            null_tokens = F.pad(null, (0, 0, 0, tokens.shape[1] - 1))[None].expand_as(tokens)
            null_mask = (torch.arange(tokens.shape[1], device=device) == 0)[None].expand_as(mask)
            tokens = torch.where(drop[:, None, None], null_tokens, tokens)
            mask = torch.where(drop[:, None], null_mask, mask)
        return tokens, mask

    # -- forward ------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        cond_image: Optional[torch.Tensor] = None,
        mask: Optional[torch.Tensor] = None,
        return_dict: bool = True,
    ) -> UNetSTICOutput | tuple[torch.Tensor]:
        """``x`` ``(B, T, C, H, W)``; ``cond_image`` ``(B, T, C_cond, H, W)`` (x's layout);
        ``encoder_hidden_states`` ``[B, seq_len, cross_attention_dim]`` (None: the null token);
        ``mask`` ``[B, seq_len]`` True on real tokens. ``.sample`` is ``(B, out_channels, T, H, W)``."""
        context, context_mask = self.text_context(encoder_hidden_states, mask, x.shape[0])
        out = self._run(x, timestep, context, context_mask, cond_image)
        return UNetSTICOutput(sample=out) if return_dict else (out,)

    def _run(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor | float,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        cond_image: Optional[torch.Tensor],
    ) -> torch.Tensor:
        if x.ndim != 5:
            raise ModelError(f"UNetSTIC expects x of shape (B, T, C, H, W), got {tuple(x.shape)}")
        b, frames, _, h, w = x.shape
        x = self._with_cond_image(x, cond_image)
        factor = 2 ** (len(self.config.block_out_channels) - 1)
        if h % factor or w % factor:
            raise ModelError(f"UNetSTIC input {h}x{w} must be divisible by {factor} (one halving per level)")
        temb = self.time_embedding(as_batch_timesteps(timestep, b, x.device))
        if self.pooled_proj is not None:  # the caption's masked mean (the null token on dropped rows) joins the timestep
            weights = context_mask.to(context.dtype)[..., None]
            temb = temb + self.pooled_proj((context * weights).sum(1) / weights.sum(1).clamp(min=1.0)).to(temb.dtype)
        temb = temb.repeat_interleave(frames, dim=0)
        context = context.repeat_interleave(frames, dim=0)
        context_mask = context_mask.repeat_interleave(frames, dim=0)
        x = x.reshape(b * frames, *x.shape[2:])
        if self.config.coord_channels:
            x = torch.cat([x, pixel_coordinates(x[:, :, None])[:, :, 0]], dim=1)
        hs = self.conv_in(x)
        skips = [hs]
        for stage in self.down:
            for layer in stage.layers:
                hs = self._layer(layer, hs, temb, context, context_mask, frames)
                skips.append(hs)
            if stage.downsample is not None:
                hs = stage.downsample(hs)
                skips.append(hs)
        for layer in self.mid:
            hs = self._layer(layer, hs, temb, context, context_mask, frames)
        for stage in self.up:
            for layer in stage.layers:
                hs = self._layer(layer, torch.cat([hs, skips.pop()], dim=1), temb, context, context_mask, frames)
            if stage.upsample is not None:
                hs = stage.upsample(F.interpolate(hs, scale_factor=2.0, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(hs)))
        return out.view(b, frames, *out.shape[1:]).permute(0, 2, 1, 3, 4)

    def _layer(self, layer: nn.Module, *args) -> torch.Tensor:  # noqa: ANN002
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(layer, *args)
        return layer(*args)

    def _with_cond_image(self, x: torch.Tensor, cond_image: Optional[torch.Tensor]) -> torch.Tensor:
        want = self.config.in_channels
        if cond_image is not None:
            if cond_image.ndim != 5 or cond_image.shape[:2] != x.shape[:2] or cond_image.shape[3:] != x.shape[3:]:
                raise ModelError(f"cond_image must be (B, T, C_cond, H, W) like x {tuple(x.shape)}, got {tuple(cond_image.shape)}")
            x = torch.cat([x, cond_image.to(x.dtype)], dim=2)
        elif x.shape[2] < want:
            x = torch.cat([x, x.new_zeros(*x.shape[:2], want - x.shape[2], *x.shape[3:])], dim=2)
        if x.shape[2] != want:
            raise ModelError(
                f"UNetSTIC was built with in_channels={want} (latent + cond_image channels) but got {x.shape[2]}; "
                "check the layout is (B, T, C, H, W) and in_channels = latent + cond_image channels"
            )
        return x

    def forward_cond(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """``(B, C, T, H, W)`` in and out; token-level text with the null token where ``null_text``;
        ``cond.image`` / ``frame_mask`` as ``cond_image`` channels."""
        context, context_mask = self.text_context(cond.text_tokens, cond.text_mask, x_t.shape[0], cond.null_text)
        image = cond_image_channels(cond, x_t, self.config.in_channels - x_t.shape[1], "UNetSTIC")
        image = image.permute(0, 2, 1, 3, 4) if image is not None else None
        return self._run(x_t.permute(0, 2, 1, 3, 4), t, context, context_mask, image)
