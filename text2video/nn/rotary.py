"""Rotary position embeddings over frames (interleaved pairs of features), applied to activations or weights."""

from __future__ import annotations

import torch


def rotary_angles(frames: int, rot_dim: int, device: torch.device, theta: float = 10000.0) -> torch.Tensor:
    """``(frames, rot_dim // 2)`` rotation angles of the rotary embedding (pairs of adjacent features)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rot_dim, 2, device=device)[: rot_dim // 2].float() / rot_dim))
    return torch.arange(frames, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]


def rotate_rows(weight: torch.Tensor, heads: int, rot_dim: int, angles: torch.Tensor) -> torch.Tensor:
    """Per-frame rotated copies ``(T, heads*d, C)`` of a query/key projection ``weight`` ``(heads*d, C)``.

    Rotating the projection's output rows by frame ``f``'s angles equals rotating every query of that
    frame (rotary embeddings with interleaved pairs), at the cost of a weight-sized operation.
    """
    inner, c = weight.shape
    d = inner // heads
    w = weight.view(heads, d, c)
    pairs = w[:, :rot_dim].view(heads, rot_dim // 2, 2, c)
    even, odd = pairs[:, :, 0], pairs[:, :, 1]  # (heads, r, C)
    cos = angles.cos().to(weight.dtype)[:, None, :, None]  # (T, 1, r, 1)
    sin = angles.sin().to(weight.dtype)[:, None, :, None]
    rot_even = even * cos - odd * sin
    rot_odd = odd * cos + even * sin
    rotated = torch.stack((rot_even, rot_odd), dim=3).reshape(angles.shape[0], heads, rot_dim, c)
    if rot_dim < d:
        rest = w[:, rot_dim:].expand(angles.shape[0], heads, d - rot_dim, c)
        rotated = torch.cat((rotated, rest), dim=2)
    return rotated.reshape(angles.shape[0], inner, c)


def rotate_features(x: torch.Tensor, rot_dim: int, angles: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x`` ``(T, ..., d)`` (interleaved pairs of its first ``rot_dim`` features) by frame.

    The activation-side twin of :func:`rotate_rows`, cheaper when a frame has fewer tokens than channels.
    """
    t, d = x.shape[0], x.shape[-1]
    view = (t,) + (1,) * (x.ndim - 2) + (rot_dim // 2,)
    cos = angles.cos().to(x.dtype).view(view)
    sin = angles.sin().to(x.dtype).view(view)
    pairs = x[..., :rot_dim].unflatten(-1, (rot_dim // 2, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)
    return rotated if rot_dim == d else torch.cat((rotated, x[..., rot_dim:]), dim=-1)
