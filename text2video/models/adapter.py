"""`ConditionedDenoiser`: a denoiser as an ``nn.Module`` whose ``forward`` is its ``forward_cond``.

The diffusion layer calls models through `text2video.diffusion.denoise.denoise`; the trainer hands this
wrapper to Accelerate, so DDP's gradient hooks run on the call the objective makes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..diffusion.conditioning import Conditioning


class ConditionedDenoiser(nn.Module):
    """An ``nn.Module`` whose ``forward`` is the model's ``forward_cond``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        # the class's method: a sharded model's own ``forward_cond`` is routed through this wrapper (FSDP's hooks)
        return type(self.model).forward_cond(self.model, x_t, t, cond)
