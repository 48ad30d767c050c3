"""Helpers the Open-Sora-family denoisers (STDiT, UNetSTIC, SegDiT) share to turn a `Conditioning` into their forward's inputs."""

from __future__ import annotations

from typing import Optional

import torch

from ..diffusion.conditioning import Conditioning
from ..errors import ModelError


def as_batch_timesteps(timestep: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
    """A number, a 0-d tensor or a ``(B,)`` tensor -> ``(B,)`` float timesteps on ``device``."""
    t = torch.as_tensor(timestep, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ModelError(f"timestep must be a number or a ({batch},) tensor, got shape {tuple(t.shape)}")
    return t.float()


def cond_image_channels(cond: Conditioning, x_t: torch.Tensor, n_channels: int, model_name: str) -> Optional[torch.Tensor]:
    """The ``cond_image`` a channel-concatenating model gets from ``cond``: ``(B, n_channels, T, H, W)``.

    ``n_channels`` is how many channels the model concatenates to ``x_t`` (``in_channels`` minus
    the channels of ``x_t``): 0 (no image input: returns None), ``C`` (the given frames, zeros where
    ``cond.frame_mask`` is False) or ``C + 1`` (the same plus the frame mask as a 0/1 channel).
    Without ``cond.image`` the frames are zeros (and the mask all False): the unconditional input.
    """
    b, c, frames, h, w = x_t.shape
    if n_channels == 0:
        if cond.image is not None:
            raise ModelError(
                f"{model_name} has no image-conditioning channels but the condition carries an image; "
                f"build it with in_channels = {2 * c} (frames) or {2 * c + 1} (frames + mask)"
            )
        return None
    if n_channels not in (c, c + 1):
        raise ModelError(
            f"{model_name} concatenates {n_channels} conditioning channels, but forward_cond can only fill "
            f"{c} (given frames) or {c + 1} (frames + mask) for a {c}-channel input; fix in_channels"
        )
    if cond.frame_mask is not None:
        mask = cond.frame_mask.to(device=x_t.device, dtype=torch.bool)
        if mask.shape != (b, frames):
            raise ModelError(f"cond.frame_mask must be ({b}, {frames}), got {tuple(mask.shape)}")
    else:
        mask = torch.full((b, frames), cond.image is not None, dtype=torch.bool, device=x_t.device)
    if cond.image is not None:
        if cond.image.shape != x_t.shape:
            raise ModelError(f"cond.image must match x_t's shape {tuple(x_t.shape)}, got {tuple(cond.image.shape)}")
        frames_in = cond.image.to(x_t.dtype) * mask[:, None, :, None, None].to(x_t.dtype)
    else:
        frames_in = torch.zeros_like(x_t)
        mask = torch.zeros_like(mask)
    if n_channels == c:
        return frames_in
    mask_channel = mask[:, None, :, None, None].to(x_t.dtype).expand(b, 1, frames, h, w)
    return torch.cat([frames_in, mask_channel], dim=1)
