"""`Conditioning`: everything a denoiser may be conditioned on, as one batch-first dataclass."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional, Sequence

import torch

from ..errors import ModelError


@dataclass
class Conditioning:
    """Batched conditions of one denoiser call. Every field is optional and batch-first.

    text_tokens: ``(B, L, D)`` token states of the text encoder.
    text_mask:   ``(B, L)`` bool, True on real tokens.
    text_pooled: ``(B, D)`` one vector per prompt (masked mean or CLS).
    null_text:   ``(B,)`` bool, True where the text condition is dropped (classifier-free guidance).
                 Models replace the text of those items by their null condition (a learned null
                 embedding, or zeros); the text fields of those rows are then ignored.
    image:       ``(B, C, T, H, W)`` given frames in [-1, 1] (image-to-video, prediction, infilling).
    frame_mask:  ``(B, T)`` bool, True where the frame of ``image`` is given.
    fps:         ``(B,)`` float frames per second.
    class_labels: ``(B,)`` long class ids (class-conditional models; the null class drops them).
    segmentation: ``(B, C_seg, H, W)`` or ``(B, C_seg, T, H, W)`` segmentation map.
    focus_present: ``(B,)`` bool, text2video-from-scratch's ``focus_present_mask``: attend only to the present frame.
    """

    text_tokens: Optional[torch.Tensor] = None
    text_mask: Optional[torch.Tensor] = None
    text_pooled: Optional[torch.Tensor] = None
    null_text: Optional[torch.Tensor] = None
    image: Optional[torch.Tensor] = None
    frame_mask: Optional[torch.Tensor] = None
    fps: Optional[torch.Tensor] = None
    class_labels: Optional[torch.Tensor] = None
    segmentation: Optional[torch.Tensor] = None
    focus_present: Optional[torch.Tensor] = None

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @property
    def batch_size(self) -> Optional[int]:
        """The batch size the fields agree on, or None for an empty condition."""
        sizes = {name: t.shape[0] for name, t in self._tensors().items()}
        if not sizes:
            return None
        if len(set(sizes.values())) > 1:
            raise ModelError(f"Conditioning fields disagree on the batch size: {sizes}")
        return next(iter(sizes.values()))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Conditioning:
        """Move every tensor to ``device``; cast floating tensors to ``dtype``."""
        moved = {}
        for name, t in self._tensors().items():
            moved[name] = t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else None)
        return replace(self, **moved)

    def index(self, idx: torch.Tensor | slice | Sequence[int]) -> Conditioning:
        """Select rows of every field."""
        return replace(self, **{name: t[idx] for name, t in self._tensors().items()})

    def repeat_interleave(self, n: int) -> Conditioning:
        """Repeat every row ``n`` times (one prompt, ``n`` videos)."""
        return replace(self, **{name: t.repeat_interleave(n, dim=0) for name, t in self._tensors().items()})

    def text_dropped(self, drop: Optional[torch.Tensor] = None) -> Conditioning:
        """The same condition with the text dropped where ``drop`` is True (everywhere when None)."""
        b = self.batch_size
        if b is None:
            return self
        device = next(iter(self._tensors().values())).device
        drop = torch.ones(b, dtype=torch.bool, device=device) if drop is None else drop.to(device=device, dtype=torch.bool)
        if drop.shape != (b,):
            raise ModelError(f"drop mask must have shape ({b},), got {tuple(drop.shape)}")
        current = self.null_text if self.null_text is not None else torch.zeros_like(drop)
        return replace(self, null_text=current | drop)

    def with_guidance_batch(self, negative: Optional[Conditioning] = None) -> Conditioning:
        """Conditional rows followed by unconditional rows, for classifier-free guidance in one pass.

        ``negative`` (a negative prompt's condition) replaces the null condition of the second half.
        """
        uncond = self.text_dropped() if negative is None else negative
        return Conditioning.cat([self, uncond])

    @staticmethod
    def cat(items: Sequence[Conditioning]) -> Conditioning:
        """Concatenate conditions along the batch; a field must be set in all or none of them.

        Text token sequences of different lengths are right-padded (mask False) to the longest.
        """
        out = {}
        for f in fields(Conditioning):
            values = [getattr(c, f.name) for c in items]
            present = [v is not None for v in values]
            if not any(present):
                continue
            if not all(present):
                if f.name == "null_text":
                    values = [v if v is not None else torch.zeros(c.batch_size or 0, dtype=torch.bool) for v, c in zip(values, items)]
                else:
                    raise ModelError(f"cannot concatenate Conditioning: field {f.name!r} is set in some items only")
            if f.name in ("text_tokens", "text_mask"):
                longest = max(v.shape[1] for v in values)
                values = [_pad_dim1(v, longest) for v in values]
            out[f.name] = torch.cat([v.to(values[0].device) for v in values], dim=0)
        return Conditioning(**out)


def _pad_dim1(t: torch.Tensor, length: int) -> torch.Tensor:
    if t.shape[1] == length:
        return t
    pad_shape = (t.shape[0], length - t.shape[1], *t.shape[2:])
    return torch.cat([t, torch.zeros(pad_shape, dtype=t.dtype, device=t.device)], dim=1)
