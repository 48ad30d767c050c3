"""Exponential moving average of a model's weights, with a warm-up of the decay."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, a frozen copy of ``model`` whose floating weights follow an EMA of the model's.

    The decay at update ``n`` is ``min(decay, (1 + n) / (10 + n))`` when ``warmup`` is on, so early
    averages are not dominated by the random initial weights. Updates happen every ``every`` steps
    from step ``start`` on; before ``start`` the shadow copies the model.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True, start: int = 0, every: int = 1) -> None:
        self.decay = decay
        self.warmup = warmup
        self.start = start
        self.every = every
        self.num_updates = 0
        self.shadow = copy.deepcopy(model).eval()
        self.shadow.requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def step(self, model: nn.Module, step: int) -> None:
        """Called after optimizer step number ``step`` (1-based)."""
        if step < self.start:
            self.copy_from(model)
            return
        if step % self.every:
            return
        decay = self.current_decay()
        model_params = dict(model.named_parameters())
        for name, shadow_param in self.shadow.named_parameters():
            if not model_params[name].requires_grad:  # frozen (a LoRA's base, motion-module-only training): unchanged
                continue
            param = model_params[name].detach()
            if shadow_param.is_floating_point():
                shadow_param.lerp_(param.to(shadow_param.dtype), 1.0 - decay)
            else:
                shadow_param.copy_(param)
        model_buffers = dict(model.named_buffers())
        for name, buf in self.shadow.named_buffers():
            buf.copy_(model_buffers[name])
        self.num_updates += 1

    @torch.no_grad()
    def copy_from(self, model: nn.Module) -> None:
        self.shadow.load_state_dict(model.state_dict())

    def state_dict(self) -> dict[str, Any]:
        """Counters only; the shadow weights are saved separately (safetensors)."""
        return {"num_updates": self.num_updates, "decay": self.decay, "warmup": self.warmup, "start": self.start, "every": self.every}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
