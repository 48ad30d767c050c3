"""Stable-Diffusion-style transformer block pieces: GEGLU feed-forward, dual-context cross-attention,
and the pre-norm block (self-attention, second attention, feed-forward) used by the spatial and the
temporal transformers of `UNet3DConditionModel`.

Cross-attention queries may be grouped: a tensor of ``B * G`` token sequences attends to a context of
``B`` rows (``G`` frames or ``G`` pixels of one video share that video's text). The queries are folded
into ``B`` long sequences, which is exact (each query attends independently) and saves repeating the
context ``G`` times.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, scaled_dot_product


class FeedForward(nn.Module):
    """GEGLU feed-forward: ``proj_out(a * gelu(b))`` with ``a, b = proj_in(x).chunk(2)``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        inner = dim * mult
        self.proj_in = nn.Linear(dim, inner * 2)
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.dropout(hidden * F.gelu(gate)))


class DualContextAttention(Attention):
    """Cross-attention to text tokens, plus (optionally) image tokens with their own keys/values.

    VideoCrafter's image-to-video "dual cross-attention": one query projection, text and image
    contexts projected to keys/values separately (``to_k``/``to_v`` and ``to_k_image``/``to_v_image``),
    the two attention outputs summed (image output times ``image_scale``) before ``to_out``.
    A missing text context (``context=None``) or a row whose key mask is all False attends to
    nothing and contributes zero; a missing image context contributes zero.
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        dim_head: int,
        context_dim: int,
        image_context: bool = False,
        image_scale: float = 1.0,
    ) -> None:
        super().__init__(dim, heads=heads, dim_head=dim_head, context_dim=context_dim)
        self.image_scale = image_scale
        inner = heads * dim_head
        if image_context:
            self.to_k_image = nn.Linear(context_dim, inner, bias=False)
            self.to_v_image = nn.Linear(context_dim, inner, bias=False)
        else:
            self.to_k_image = self.to_v_image = None

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        context: Optional[torch.Tensor] = None,
        *,
        key_mask: Optional[torch.Tensor] = None,
        image_context: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        b, n, _ = x.shape
        q = self._split(self.to_q(x))
        out = torch.zeros_like(q)
        if context is not None:
            out = out + scaled_dot_product(q, self._split(self.to_k(context)), self._split(self.to_v(context)), key_mask=key_mask)
        if image_context is not None and self.to_k_image is not None:
            k_img = self._split(self.to_k_image(image_context))
            v_img = self._split(self.to_v_image(image_context))
            out = out + self.image_scale * scaled_dot_product(q, k_img, v_img)
        return self.to_out(out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn1(norm1 x)``, ``x + attn2(norm2 x)``, ``x + ff(norm3 x)``.

    ``context_dim`` set: ``attn2`` is (dual-context) cross-attention. ``context_dim`` None: ``attn2``
    is a second self-attention (AnimateDiff / ModelScope temporal blocks). ``positions`` given to
    `forward` (``(S, dim)``) are added to the normed input of both attentions, as AnimateDiff does.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        *,
        context_dim: Optional[int] = None,
        image_context: bool = False,
        image_scale: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads=heads, dim_head=dim_head)
        self.norm2 = nn.LayerNorm(dim)
        self.is_cross = context_dim is not None
        if context_dim is not None:
            self.attn2: nn.Module = DualContextAttention(
                dim, heads=heads, dim_head=dim_head, context_dim=context_dim, image_context=image_context, image_scale=image_scale
            )
        else:
            self.attn2 = Attention(dim, heads=heads, dim_head=dim_head)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        context: Optional[torch.Tensor] = None,
        context_mask: Optional[torch.Tensor] = None,
        image_context: Optional[torch.Tensor] = None,
        positions: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``x``: ``(B * G, S, dim)``; contexts ``(B, L, context_dim)``, ``context_mask`` ``(B, L)``."""
        h = self.norm1(x)
        if positions is not None:
            h = h + positions.to(h.dtype)
        x = x + self.attn1(h)
        h = self.norm2(x)
        if positions is not None:
            h = h + positions.to(h.dtype)
        if self.is_cross:
            rows = _context_rows(context, image_context)
            if rows is None:  # no context at all: attention outputs zero, only the output bias remains
                bias = self.attn2.to_out.bias
                if bias is not None:
                    x = x + bias.to(x.dtype)
            else:
                grouped = h.reshape(rows, -1, h.shape[-1])
                out = self.attn2(grouped, context, key_mask=context_mask, image_context=image_context)
                x = x + out.reshape(x.shape)
        else:
            x = x + self.attn2(h)
        return x + self.ff(self.norm3(x))


def _context_rows(context: Optional[torch.Tensor], image_context: Optional[torch.Tensor]) -> Optional[int]:
    for c in (context, image_context):
        if c is not None:
            return c.shape[0]
    return None
