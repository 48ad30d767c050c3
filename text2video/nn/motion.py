"""Temporal layers of inflated image UNets: the AnimateDiff motion module (a transformer over the
frames of every pixel) and the ModelScope / VideoCrafter temporal convolution. Both act on
``(B, C, T, H, W)`` and are residual, so a zero-initialised output makes them the identity.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..errors import ModelError
from .embeddings import sinusoidal_embedding
from .transformer_block import TransformerBlock


def interleaved_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """``(length, dim)`` sinusoids with sin on even and cos on odd channels (AnimateDiff's layout)."""
    emb = sinusoidal_embedding(torch.arange(length, device=device), dim)  # (L, [sin..., cos...])
    half = dim // 2
    return emb[:, : 2 * half].view(length, 2, half).transpose(1, 2).reshape(length, 2 * half)


class TemporalTransformer(nn.Module):
    """Motion module: group norm over ``(C, T, H, W)``, then every pixel's ``T`` frames form one
    token sequence through ``num_layers`` transformer blocks; output added to the input.

    ``positional_embedding="sinusoidal"`` adds frame positions before each attention (AnimateDiff);
    ``None`` uses none (ModelScope). ``context_dim`` set turns the second attention of each block
    into temporal cross-attention to text (and, with ``image_context``, image) tokens (VideoCrafter);
    otherwise it is a second self-attention. ``zero_init`` zeroes ``proj_out`` so that the module
    starts as the identity.
    """

    def __init__(
        self,
        channels: int,
        *,
        heads: int,
        dim_head: Optional[int] = None,
        num_layers: int = 1,
        norm_groups: int = 32,
        positional_embedding: Optional[str] = "sinusoidal",
        max_seq_length: int = 32,
        context_dim: Optional[int] = None,
        image_context: bool = False,
        image_scale: float = 1.0,
        dropout: float = 0.0,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if positional_embedding not in (None, "sinusoidal"):
            raise ModelError(f"unknown motion positional_embedding {positional_embedding!r}; use 'sinusoidal' or None")
        dim_head = dim_head or channels // heads
        inner = heads * dim_head
        self.positional_embedding = positional_embedding
        self.max_seq_length = max_seq_length
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(
                inner, heads, dim_head, context_dim=context_dim, image_context=image_context, image_scale=image_scale, dropout=dropout
            )
            for _ in range(num_layers)
        )
        self.proj_out = nn.Linear(inner, channels)
        if zero_init:
            nn.init.zeros_(self.proj_out.weight)
            nn.init.zeros_(self.proj_out.bias)

    def forward(
        self,
        x: torch.Tensor,
        context: Optional[torch.Tensor] = None,
        context_mask: Optional[torch.Tensor] = None,
        image_context: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        b, c, t, h, w = x.shape
        positions = None
        if self.positional_embedding == "sinusoidal":
            if t > self.max_seq_length:
                raise ModelError(
                    f"{t} frames exceed the motion modules' max_seq_length {self.max_seq_length}; "
                    "use fewer frames or build the model with a larger motion_max_seq_length"
                )
            positions = interleaved_positions(t, self.proj_in.out_features, device=x.device)
        x = x.contiguous()  # GroupNorm's CPU backward crashes on some strided inputs (torch 2.13)
        tokens = self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, context=context, context_mask=context_mask, image_context=image_context, positions=positions)
        tokens = self.proj_out(tokens)
        return x + tokens.reshape(b, h, w, t, c).permute(0, 4, 3, 1, 2).contiguous()


class TemporalConvLayer(nn.Module):
    """Four (group norm, SiLU, dropout, 3x1x1 convolution) stages over frames, added to the input;
    the last convolution starts at zero (ModelScope / VideoCrafter ResNet temporal convolution)."""

    def __init__(self, channels: int, *, norm_groups: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        for i in range(1, 5):
            setattr(self, f"norm{i}", nn.GroupNorm(norm_groups, channels))
            setattr(self, f"conv{i}", nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))
        self.act = nn.SiLU()
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.conv4.weight)
        nn.init.zeros_(self.conv4.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i in range(1, 5):
            h = self.act(getattr(self, f"norm{i}")(h))
            if i > 1:
                h = self.dropout(h)
            h = getattr(self, f"conv{i}")(h)
        return x + h
