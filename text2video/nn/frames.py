"""Folding the frames of a video into the batch, and back: the one pair every frame-wise layer uses."""

from __future__ import annotations

import torch


def fold_frames(x: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B*T, C, H, W)``, frame ``t`` of item ``b`` at row ``b*T + t`` (one copy, stored
    in ``memory_format``: ``torch.channels_last`` gives ``(B, T, H, W, C)`` storage)."""
    b, c, t, h, w = x.shape
    if memory_format == torch.channels_last:
        return x.permute(0, 2, 3, 4, 1).reshape(b * t, h, w, c).permute(0, 3, 1, 2)
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def unfold_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B*T, C, H, W)`` -> ``(B, C, T, H, W)``, the inverse of :func:`fold_frames` (a view where possible;
    call ``.contiguous()`` for contiguous storage)."""
    bt, c, h, w = x.shape
    if bt % frames:
        raise ValueError(f"unfold_frames: {bt} rows are not a whole number of {frames}-frame videos")
    return x.unflatten(0, (bt // frames, frames)).transpose(1, 2)
