"""The one call the diffusion layer makes into any denoiser: ``denoise(model, x_t, t, cond)``.

Every denoiser keeps the public ``forward`` its origin documents and adds one method,
``forward_cond(x_t, t, cond) -> prediction``, which maps a `Conditioning` onto that forward.
``x_t`` and the prediction are ``(B, C, T, H, W)``; ``t`` is ``(B,)`` timesteps (long or float) on the
training schedule's scale (0 .. num_train_timesteps - 1). A model that predicts extra channels
(a learned variance) returns only the ``C`` channels of the prediction from ``forward_cond``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .conditioning import Conditioning


def denoise(model: Any, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """Run ``model`` on ``x_t`` at timesteps ``t`` under ``cond`` and return its prediction.

    ``model`` is a denoiser (has ``forward_cond``), a `~text2video.models.adapter.ConditionedDenoiser`
    (possibly wrapped by DistributedDataParallel or torch.compile), or any callable ``f(x_t, t, cond)``.
    """
    forward_cond: Callable | None = getattr(model, "forward_cond", None)
    if forward_cond is not None:
        return forward_cond(x_t, t, cond)
    return model(x_t, t, cond)
