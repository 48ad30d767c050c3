"""Multi-head attention through ``torch.nn.functional.scaled_dot_product_attention``.

Parameters follow diffusers' layout (``to_q``, ``to_k``, ``to_v``, ``to_out``) so that importers of
diffusers checkpoints map names one to one; fused-qkv checkpoints are split by their importer.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn


def scaled_dot_product(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_mask: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Attention of ``(B, heads, Nq, d)`` queries over ``(B, heads, Nk, d)`` keys and values.

    key_mask: ``(B, Nk)`` bool, True on keys that may be attended to.
    bias:     additive ``(heads, Nq, Nk)`` or ``(B, heads, Nq, Nk)`` bias (e.g. relative positions).
    A query whose keys are all masked attends to nothing and returns zeros (never NaN).
    """
    attn_mask = None
    if bias is not None:
        attn_mask = bias.to(q.dtype)
    if key_mask is not None:
        allowed = key_mask[:, None, None, :].to(torch.bool)
        neg = torch.full((), float("-inf"), dtype=q.dtype, device=q.device)
        additive = torch.where(allowed, torch.zeros((), dtype=q.dtype, device=q.device), neg)
        attn_mask = additive if attn_mask is None else attn_mask + additive
    if attn_mask is not None and key_mask is not None:
        empty = ~key_mask.any(dim=1)
        if empty.any():
            # Give fully masked rows one harmless key so softmax is defined, then zero them.
            attn_mask = attn_mask.clone() if attn_mask.shape[0] == q.shape[0] else attn_mask.expand(q.shape[0], -1, -1, -1).clone()
            attn_mask[empty] = 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            return out.masked_fill(empty[:, None, None, None], 0.0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


class Attention(nn.Module):
    """Self- or cross-attention over token sequences ``(B, N, dim)``.

    ``context_dim`` set makes it cross-attention over ``context`` ``(B, M, context_dim)``.
    ``rotary``: an optional function applied to queries and keys ``(B, heads, N, d)`` (rotary
    position embeddings). ``qk_norm`` normalises queries and keys per head (as in recent DiTs).
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 8,
        dim_head: int = 64,
        context_dim: Optional[int] = None,
        qkv_bias: bool = False,
        out_bias: bool = True,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.to_q = nn.Linear(dim, inner, bias=qkv_bias)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=qkv_bias)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=qkv_bias)
        self.to_out = nn.Linear(inner, dim, bias=out_bias)
        self.q_norm = nn.LayerNorm(dim_head, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim_head, eps=1e-6) if qk_norm else nn.Identity()

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.dim_head).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: Optional[torch.Tensor] = None,
        *,
        key_mask: Optional[torch.Tensor] = None,
        bias: Optional[torch.Tensor] = None,
        rotary: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    ) -> torch.Tensor:
        source = x if context is None else context
        q = self.q_norm(self._split(self.to_q(x)))
        k = self.k_norm(self._split(self.to_k(source)))
        v = self._split(self.to_v(source))
        if rotary is not None:
            q, k = rotary(q), rotary(k)
        out = scaled_dot_product(q, k, v, key_mask=key_mask, bias=bias)
        b, _, n, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))
