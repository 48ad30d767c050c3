"""Blocks of `UNet3DConditionModel` (AnimateDiff's tables): inflated ResNet, spatial transformer run per
frame, down/up samplers, and the down / middle / up blocks that pair them with motion modules.

Every block takes and returns ``(B, C, T, H, W)``. "Inflated" layers (group norm, 3x3 convolution)
work on each frame alone: frames are folded into the batch, ``(B*T, C, H, W)``, for that layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.frames import fold_frames, unfold_frames
from ..nn.motion import TemporalConvLayer, TemporalTransformer
from ..nn.transformer_block import TransformerBlock


@dataclass
class Context:
    """What the attention layers attend to: text tokens ``(B, L, D)`` with a key mask ``(B, L)``
    (False = ignored), and image tokens ``(B, N, D)`` for dual cross-attention. Any may be None."""

    text: Optional[torch.Tensor] = None
    text_mask: Optional[torch.Tensor] = None
    image: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class MotionOptions:
    """How the temporal layers of one model are built (the model's config, per block channels aside)."""

    enabled: bool = True
    layers: int = 1
    norm_groups: int = 32
    positional_embedding: Optional[str] = "sinusoidal"
    max_seq_length: int = 32
    in_plain_blocks: bool = True
    zero_init: bool = True
    cross_attention: bool = False
    temporal_conv: bool = False
    temporal_conv_dropout: float = 0.1


@dataclass(frozen=True)
class AttentionOptions:
    """Spatial transformer options shared by all blocks."""

    cross_attention_dim: int = 768
    transformer_layers: int = 1
    norm_groups: int = 32
    image_context: bool = False
    image_scale: float = 1.0


class _Checkpointed(nn.Module):
    """A module whose sub-layers may run under activation checkpointing (set by
    ``ModelMixin.enable_gradient_checkpointing``)."""

    def __init__(self) -> None:
        super().__init__()
        self.gradient_checkpointing = False

    def _run(self, layer: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(layer, *args)
        return layer(*args)


class ResnetBlock3D(nn.Module):
    """AnimateDiff's ResnetBlock3D: (inflated group norm, SiLU, 3x3 conv) twice with the timestep
    embedding added in between, dropout, 1x1 shortcut when the width changes, divided by
    ``output_scale_factor``; optionally followed by a temporal convolution (VideoCrafter)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        *,
        groups: int = 32,
        eps: float = 1e-5,
        dropout: float = 0.0,
        output_scale_factor: float = 1.0,
        temporal_conv: bool = False,
        temporal_conv_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.output_scale_factor = output_scale_factor
        self.act = nn.SiLU()
        self.temporal_conv = TemporalConvLayer(out_channels, norm_groups=groups, dropout=temporal_conv_dropout) if temporal_conv else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        frames = x.shape[2]
        x2d = fold_frames(x)
        h = self.conv1(self.act(self.norm1(x2d)))
        emb = self.time_emb_proj(self.act(temb)).to(h.dtype)
        h = h + emb.repeat_interleave(frames, dim=0)[:, :, None, None]
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        shortcut = self.conv_shortcut(x2d) if self.conv_shortcut is not None else x2d
        out = unfold_frames((shortcut + h) / self.output_scale_factor, frames)
        if self.temporal_conv is not None:
            out = self.temporal_conv(out)
        return out


class Transformer3DModel(nn.Module):
    """AnimateDiff's Transformer3DModel: frames folded into the batch, group norm, linear projection in,
    transformer blocks (self-attention, cross-attention to text and image tokens, feed-forward),
    projection out, residual. (A 1x1-convolution projection is imported as the equal linear one.)"""

    def __init__(self, channels: int, heads: int, opts: AttentionOptions, dropout: float = 0.0) -> None:
        super().__init__()
        dim_head = channels // heads
        self.norm = nn.GroupNorm(opts.norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(
                channels,
                heads,
                dim_head,
                context_dim=opts.cross_attention_dim,
                image_context=opts.image_context,
                image_scale=opts.image_scale,
                dropout=dropout,
            )
            for _ in range(opts.transformer_layers)
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(
        self,
        x: torch.Tensor,
        text: Optional[torch.Tensor] = None,
        text_mask: Optional[torch.Tensor] = None,
        image: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        b, c, t, h, w = x.shape
        x2d = fold_frames(x)
        tokens = self.proj_in(self.norm(x2d).permute(0, 2, 3, 1).reshape(b * t, h * w, c))
        for block in self.transformer_blocks:
            tokens = block(tokens, context=text, context_mask=text_mask, image_context=image)
        # contiguous(): a channels-last-strided result here crashes GroupNorm's backward in the next
        # layer on CPU (torch 2.13) and is slower for the convolutions that follow anyway.
        out = self.proj_out(tokens).reshape(b * t, h, w, c).permute(0, 3, 1, 2).contiguous()
        return unfold_frames(out + x2d, t)


class Downsample3D(nn.Module):
    """3x3 convolution with stride 2 on each frame: ``(B, C, T, H, W) -> (B, C, T, H/2, W/2)``."""

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unfold_frames(self.conv(fold_frames(x)), x.shape[2])


class Upsample3D(nn.Module):
    """Nearest 2x on H and W (or to ``output_size``), then a 3x3 convolution on each frame.

    bfloat16 input is interpolated in float32 and cast back (nearest upsampling in bf16 is not
    supported by every backend), as AnimateDiff's table says."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, output_size: Optional[tuple[int, int]] = None) -> torch.Tensor:
        frames, dtype = x.shape[2], x.dtype
        x2d = fold_frames(x)
        if dtype == torch.bfloat16:
            x2d = x2d.float()
        if output_size is None:
            x2d = F.interpolate(x2d, scale_factor=2.0, mode="nearest")
        else:
            x2d = F.interpolate(x2d, size=tuple(output_size), mode="nearest")
        x2d = x2d.to(dtype)
        return unfold_frames(self.conv(x2d), frames)


def _motion_module(channels: int, heads: int, motion: MotionOptions, attn: AttentionOptions) -> TemporalTransformer:
    return TemporalTransformer(
        channels,
        heads=heads,
        num_layers=motion.layers,
        norm_groups=motion.norm_groups,
        positional_embedding=motion.positional_embedding,
        max_seq_length=motion.max_seq_length,
        context_dim=attn.cross_attention_dim if motion.cross_attention else None,
        image_context=attn.image_context and motion.cross_attention,
        image_scale=attn.image_scale,
        zero_init=motion.zero_init,
    )


class _UNetBlock(_Checkpointed):
    """Shared construction: ``num_layers`` (ResNet, [transformer], [motion module]) triples."""

    has_cross_attention: bool = False

    def _build(
        self,
        in_widths: list[int],
        out_channels: int,
        temb_channels: int,
        *,
        heads: int,
        motion_heads: int,
        cross: bool,
        resnet_kwargs: dict[str, Any],
        motion: MotionOptions,
        attn: AttentionOptions,
    ) -> None:
        self.has_cross_attention = cross
        self.resnets = nn.ModuleList(ResnetBlock3D(c, out_channels, temb_channels, **resnet_kwargs) for c in in_widths)
        self.attentions = (
            nn.ModuleList(Transformer3DModel(out_channels, heads, attn, resnet_kwargs["dropout"]) for _ in in_widths) if cross else None
        )
        use_motion = motion.enabled and (cross or motion.in_plain_blocks)
        self.motion_modules = (
            nn.ModuleList(_motion_module(out_channels, motion_heads, motion, attn) for _ in in_widths) if use_motion else None
        )

    def _layer(self, i: int, x: torch.Tensor, temb: torch.Tensor, ctx: Context) -> torch.Tensor:
        x = self._run(self.resnets[i], x, temb)
        if self.attentions is not None:
            x = self._run(self.attentions[i], x, ctx.text, ctx.text_mask, ctx.image)
        if self.motion_modules is not None:
            x = self._run(self.motion_modules[i], x, ctx.text, ctx.text_mask, ctx.image)
        return x


class DownBlock3D(_UNetBlock):
    """``num_layers`` ResNets (each with a motion module when enabled), then an optional downsampler.
    Returns the output and the skip tensors (one per layer, plus the downsampled one)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        *,
        num_layers: int,
        heads: int,
        motion_heads: int,
        add_downsample: bool,
        downsample_padding: int,
        cross: bool = False,
        resnet_kwargs: dict[str, Any],
        motion: MotionOptions,
        attn: AttentionOptions,
    ) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * (num_layers - 1)
        self._build(
            widths,
            out_channels,
            temb_channels,
            heads=heads,
            motion_heads=motion_heads,
            cross=cross,
            resnet_kwargs=resnet_kwargs,
            motion=motion,
            attn=attn,
        )
        self.downsample = Downsample3D(out_channels, downsample_padding) if add_downsample else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        skips = []
        for i in range(len(self.resnets)):
            x = self._layer(i, x, temb, ctx)
            skips.append(x)
        if self.downsample is not None:
            x = self.downsample(x)
            skips.append(x)
        return x, tuple(skips)


class CrossAttnDownBlock3D(DownBlock3D):
    """`DownBlock3D` with a `Transformer3DModel` after every ResNet (AnimateDiff, table 1.1)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, cross=True, **kwargs)


class UpBlock3D(_UNetBlock):
    """``num_layers`` (skip concatenation, ResNet, [transformer], [motion module]), then an optional
    `Upsample3D` to ``upsample_size``."""

    def __init__(
        self,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        temb_channels: int,
        *,
        num_layers: int,
        heads: int,
        motion_heads: int,
        add_upsample: bool,
        cross: bool = False,
        resnet_kwargs: dict[str, Any],
        motion: MotionOptions,
        attn: AttentionOptions,
    ) -> None:
        super().__init__()
        widths = []
        for i in range(num_layers):
            skip = in_channels if i == num_layers - 1 else out_channels
            widths.append((prev_output_channels if i == 0 else out_channels) + skip)
        self._build(
            widths,
            out_channels,
            temb_channels,
            heads=heads,
            motion_heads=motion_heads,
            cross=cross,
            resnet_kwargs=resnet_kwargs,
            motion=motion,
            attn=attn,
        )
        self.upsample = Upsample3D(out_channels) if add_upsample else None

    def forward(
        self,
        x: torch.Tensor,
        skips: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        ctx: Context,
        upsample_size: Optional[tuple[int, int]] = None,
    ) -> torch.Tensor:
        for i in range(len(self.resnets)):
            x = torch.cat([x, skips[-1 - i]], dim=1)
            x = self._layer(i, x, temb, ctx)
        if self.upsample is not None:
            x = self.upsample(x, upsample_size)
        return x


class CrossAttnUpBlock3D(UpBlock3D):
    """`UpBlock3D` with a `Transformer3DModel` after every ResNet."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, cross=True, **kwargs)


class UNetMidBlock3DCrossAttn(_Checkpointed):
    """ResNet, then (transformer, [motion module], ResNet) ``num_layers`` times (one in SD 1.5)."""

    def __init__(
        self,
        channels: int,
        temb_channels: int,
        *,
        heads: int,
        motion_heads: int,
        use_motion: bool,
        resnet_kwargs: dict[str, Any],
        motion: MotionOptions,
        attn: AttentionOptions,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock3D(channels, channels, temb_channels, **resnet_kwargs) for _ in range(num_layers + 1))
        self.attentions = nn.ModuleList(Transformer3DModel(channels, heads, attn, resnet_kwargs["dropout"]) for _ in range(num_layers))
        self.motion_modules = (
            nn.ModuleList(_motion_module(channels, motion_heads, motion, attn) for _ in range(num_layers))
            if (use_motion and motion.enabled)
            else None
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor, ctx: Context) -> torch.Tensor:
        x = self._run(self.resnets[0], x, temb)
        for i, attn in enumerate(self.attentions):
            x = self._run(attn, x, ctx.text, ctx.text_mask, ctx.image)
            if self.motion_modules is not None:
                x = self._run(self.motion_modules[i], x, ctx.text, ctx.text_mask, ctx.image)
            x = self._run(self.resnets[i + 1], x, temb)
        return x


class ImageContextProjector(nn.Module):
    """Image embeddings -> ``num_tokens`` context tokens for dual cross-attention (VideoCrafter's
    image projector, IP-Adapter-style: one linear layer to ``num_tokens * context_dim``, layer norm).

    `encode_frames` turns a frame ``(B, C, H, W)`` into an image embedding with a small convolutional
    encoder, for when no external image encoder (CLIP) is used; embeddings from CLIP of width
    ``embed_dim`` can be given to the model directly instead.
    """

    def __init__(self, embed_dim: int, context_dim: int, num_tokens: int, frame_channels: int, encoder_width: int = 64) -> None:
        super().__init__()
        self.num_tokens, self.context_dim = num_tokens, context_dim
        self.proj = nn.Linear(embed_dim, num_tokens * context_dim)
        self.norm = nn.LayerNorm(context_dim)
        self.frame_encoder = nn.Sequential(
            nn.Conv2d(frame_channels, encoder_width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(encoder_width, encoder_width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(encoder_width, embed_dim, 1),
        )

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` frames -> ``(B, embed_dim)`` embeddings (mean over positions)."""
        return self.frame_encoder(frames).mean(dim=(2, 3))

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """``(B, embed_dim)`` or ``(B, N, embed_dim)`` -> ``(B, num_tokens [* N], context_dim)``."""
        if embeds.ndim == 2:
            embeds = embeds[:, None]
        b, n, _ = embeds.shape
        tokens = self.proj(embeds).reshape(b, n * self.num_tokens, self.context_dim)
        return self.norm(tokens)
