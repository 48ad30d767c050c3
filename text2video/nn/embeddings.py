"""Sinusoidal embeddings of timesteps and positions."""

from __future__ import annotations

import math

import torch


def sinusoidal_embedding(
    positions: torch.Tensor,
    dim: int,
    *,
    max_period: float = 10000.0,
    freq_shift: float = 0.0,
    cos_first: bool = False,
    scale: float = 1.0,
) -> torch.Tensor:
    """``(N,)`` positions -> ``(N, dim)`` sines and cosines at geometric frequencies.

    Frequency ``i`` of ``dim // 2`` is ``max_period ** (-i / (dim // 2 - freq_shift))``.
    The conventions in use: DiT (``freq_shift=0, cos_first=True``), lucidrains / text2video-from-scratch
    (``freq_shift=1, cos_first=False``), diffusers (``freq_shift`` as ``downscale_freq_shift``,
    ``cos_first`` as ``flip_sin_to_cos``). An odd ``dim`` is zero-padded by one column.
    """
    if positions.ndim != 1:
        raise ValueError(f"positions must be 1-D, got shape {tuple(positions.shape)}")
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    args = positions.float()[:, None] * freqs[None, :] * scale
    parts = (torch.cos(args), torch.sin(args)) if cos_first else (torch.sin(args), torch.cos(args))
    emb = torch.cat(parts, dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb
