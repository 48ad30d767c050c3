"""Building blocks of diffusion transformers (DiT and its video variants).

adaLN-Zero: a conditioning vector ``c`` (timestep embedding, plus class embedding) is mapped by a
zero-initialised linear layer to shifts, scales and gates that modulate each residual branch, so a
freshly built block is the identity and a freshly built model (zero final layer) predicts zeros.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention
from .embeddings import sinusoidal_embedding


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` with ``(B, D)`` shift/scale broadcast over the token axes of ``x``."""
    extra = x.ndim - shift.ndim
    shape = (shift.shape[0],) + (1,) * extra + (shift.shape[-1],)
    return x * (1 + scale.view(shape)) + shift.view(shape)


def gated(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``gate * x`` with a ``(B, D)`` gate broadcast over the token axes of ``x``."""
    shape = (gate.shape[0],) + (1,) * (x.ndim - gate.ndim) + (gate.shape[-1],)
    return x * gate.view(shape)


class TimestepEmbedder(nn.Module):
    """``(B,)`` timesteps -> ``(B, hidden)``: a sinusoidal code then a two-layer SiLU MLP.

    ``freq_shift=0`` is DiT's frequency convention; diffusers' DiT port uses ``freq_shift=1``.
    Both put the cosines first.
    """

    def __init__(self, hidden_size: int, frequency_dim: int = 256, freq_shift: float = 0.0) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.freq_shift = freq_shift
        self.linear_1 = nn.Linear(frequency_dim, hidden_size)
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        code = sinusoidal_embedding(t, self.frequency_dim, freq_shift=self.freq_shift, cos_first=True)
        return self.linear_2(F.silu(self.linear_1(code.to(self.linear_1.weight.dtype))))


class LabelEmbedder(nn.Module):
    """Class ids -> vectors, with one extra row (id ``num_classes``) as the null class for guidance.

    In training mode, ``dropout_prob`` of the labels are replaced by the null class (DiT's label
    dropout); ``drop`` forces the null class on chosen rows.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, labels: torch.Tensor, drop: Optional[torch.Tensor] = None, *, random_drop: bool = True) -> torch.Tensor:
        """``random_drop=False`` turns label dropout off (callers that drop conditions themselves)."""
        labels = labels.long()
        if random_drop and self.training and self.dropout_prob > 0:
            random_drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            drop = random_drop if drop is None else (drop.bool() | random_drop)
        if drop is not None:
            labels = torch.where(drop.bool(), torch.full_like(labels, self.null_class), labels)
        return self.embedding_table(labels)


class PooledTextEmbedder(nn.Module):
    """One pooled text vector per item ``(B, text_dim)`` -> ``(B, hidden)`` through DiT's MLP, with a learned
    null text (classifier-free guidance) on the rows ``drop`` marks and on calls without text."""

    def __init__(self, text_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.null = nn.Parameter(torch.randn(text_dim) / text_dim**0.5)
        self.mlp = Mlp(text_dim, hidden_size, hidden_size)

    def forward(self, text: Optional[torch.Tensor], batch: int, drop: Optional[torch.Tensor] = None) -> torch.Tensor:
        null = self.null[None].expand(batch, -1)
        if text is None:
            return self.mlp(null)
        text = text.to(null.dtype)
        if drop is not None:
            text = torch.where(drop.to(text.device).bool()[:, None], null, text)
        return self.mlp(text)


class Mlp(nn.Module):
    """Two linear layers with a tanh-approximated GELU between them (DiT's feed-forward)."""

    def __init__(self, dim: int, hidden_dim: int, out_dim: Optional[int] = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class AdaLNModulation(nn.Module):
    """``c (B, D) -> n_chunks`` tensors ``(B, D)`` through SiLU and a zero-initialised linear layer."""

    def __init__(self, hidden_size: int, n_chunks: int) -> None:
        super().__init__()
        self.n_chunks = n_chunks
        self.linear = nn.Linear(hidden_size, n_chunks * hidden_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(F.silu(c)).chunk(self.n_chunks, dim=-1)


class DiTBlock(nn.Module):
    """One adaLN-Zero transformer block over ``(B, N, D)`` tokens: self-attention then MLP.

    ``norm_eps`` is the epsilon of the MLP's LayerNorm (DiT: 1e-6, diffusers' port: 1e-5).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        head_dim: Optional[int] = None,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        head_dim = head_dim or hidden_size // num_heads
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, heads=num_heads, dim_head=head_dim, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=norm_eps)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.modulation = AdaLNModulation(hidden_size, 6)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(c)
        x = x + gated(self.dropout(self.attn(modulate(self.norm1(x), shift_a, scale_a))), gate_a)
        return x + gated(self.dropout(self.mlp(modulate(self.norm2(x), shift_m, scale_m))), gate_m)


class FinalLayer(nn.Module):
    """Modulated LayerNorm then a linear map to the patch pixels; zero-initialised (outputs zeros)."""

    def __init__(self, hidden_size: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.modulation = AdaLNModulation(hidden_size, 2)
        self.linear = nn.Linear(hidden_size, out_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c)
        return self.linear(modulate(self.norm(x), shift, scale))


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed position code ``(N,) -> (N, dim)``: sines then cosines, DiT's (MAE's) convention."""
    return sinusoidal_embedding(positions, dim, freq_shift=0.0, cos_first=False)


def sincos_2d(
    height: int,
    width: int,
    dim: int,
    *,
    base_size: Optional[Sequence[int]] = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Fixed 2-D position code of a ``height x width`` token grid, ``(height * width, dim)`` row-major.

    The first half of each vector codes the column, the second half the row (DiT's layout).
    ``base_size=(h0, w0)``: the grid the model was built for; other grid sizes are given positions
    spread over the same range (``arange(n) * n0 / n``), as diffusers and PixArt do.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a dim divisible by 4, got {dim}")
    h0, w0 = base_size if base_size is not None else (height, width)
    rows = torch.arange(height, dtype=torch.float32, device=device) * (h0 / height)
    cols = torch.arange(width, dtype=torch.float32, device=device) * (w0 / width)
    grid_rows = rows[:, None].expand(height, width).reshape(-1)
    grid_cols = cols[None, :].expand(height, width).reshape(-1)
    return torch.cat([sincos_1d(grid_cols, dim // 2), sincos_1d(grid_rows, dim // 2)], dim=-1)


def init_dit_weights(module: nn.Module) -> None:
    """DiT's initialisation: Xavier-uniform linear weights and zero biases, then the adaLN
    modulations and final projections zeroed again (adaLN-Zero: a fresh model predicts zeros)."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.xavier_uniform_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
    for sub in module.modules():
        zeroed = [sub.linear] if isinstance(sub, (AdaLNModulation, FinalLayer)) else []
        for layer in zeroed:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
