"""Interpolation between two videos: noise both to one step, interpolate spherically, denoise (text2video-from-scratch, DiffusionPlayground)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..errors import ConfigError
from .conditioning import Conditioning
from .objective import DiffusionObjective
from .sampling import StepCallback, denoise_from, plan_sampling, randn


def slerp(a: torch.Tensor, b: torch.Tensor, weight: float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation per batch row between ``a`` and ``b`` at ``weight`` in [0, 1].

    Falls back to linear interpolation where the two are (nearly) parallel.
    """
    flat_a, flat_b = a.flatten(1).double(), b.flatten(1).double()
    cos = (flat_a * flat_b).sum(1) / (flat_a.norm(dim=1) * flat_b.norm(dim=1)).clamp(min=eps)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-4
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, torch.full_like(sin, 1.0 - weight), torch.sin((1.0 - weight) * omega) / safe)
    wb = torch.where(parallel, torch.full_like(sin, weight), torch.sin(weight * omega) / safe)
    out = wa[:, None] * flat_a + wb[:, None] * flat_b
    return out.view_as(a).to(a.dtype)


@torch.no_grad()
def interpolate_videos(
    model: Any,
    video1: torch.Tensor,
    video2: torch.Tensor,
    cond: Optional[Conditioning] = None,
    *,
    objective: DiffusionObjective,
    num_interp: int = 8,
    steps: int = 50,
    strength: float = 0.7,
    sampler: str = "ddim",
    guidance_scale: float = 1.0,
    negative_cond: Optional[Conditioning] = None,
    generators: Optional[Sequence[torch.Generator]] = None,
    shared_noise: bool = True,
    clip_x0: bool = True,
    progress: bool = False,
    scheduler_config: Optional[dict[str, Any]] = None,
    callback: Optional[StepCallback] = None,
    dynamic_threshold: Optional[float] = None,
) -> torch.Tensor:
    """Videos between ``video1`` and ``video2`` (both (B, C, T, H, W)): returns (B, num_interp, C, T, H, W).

    Both are noised to the step at ``strength`` of the schedule (1.0: pure noise, as text2video-from-scratch's default),
    their noisy states are interpolated spherically at ``num_interp`` weights from 0 to 1, and each is
    denoised with ``sampler`` over the remaining ``round(steps * strength)`` steps. ``shared_noise`` noises
    both with the same draw, which keeps the in-betweens close to the straight path. ``callback(done, total)``
    counts the steps of all ``num_interp`` videos. ``scheduler_config``: a pretrained model's scheduler config
    (see `plan_sampling`). ``clip_x0`` / ``dynamic_threshold`` as in `text2video.diffusion.sampling.sample`.
    """
    if video1.shape != video2.shape or video1.ndim != 5:
        raise ConfigError(f"interpolate needs two videos of one shape (B, C, T, H, W); got {tuple(video1.shape)} and {tuple(video2.shape)}")
    if num_interp < 2:
        raise ConfigError(f"num_interp must be at least 2 (the two ends), got {num_interp}")
    b = video1.shape[0]
    device, dtype = video1.device, video1.dtype
    plan = plan_sampling(objective, sampler, steps, strength, shape=video1.shape, scheduler_config=scheduler_config)
    t0 = objective.timestep_batch(plan.start_timestep, b, device)
    noise1 = randn(video1.shape, generators, device, dtype)
    noise2 = noise1 if shared_noise else randn(video1.shape, generators, device, dtype)
    x1 = objective.q_sample(video1, t0, noise1)
    x2 = objective.q_sample(video2.to(device=device, dtype=dtype), t0, noise2)
    outputs = []
    per_video = len(plan.timesteps)
    for k, weight in enumerate(torch.linspace(0.0, 1.0, num_interp).tolist()):
        # a fresh scheduler state per video
        plan_i = plan_sampling(objective, sampler, steps, strength, shape=video1.shape, scheduler_config=scheduler_config)
        start = slerp(x1, x2, weight) / plan_i.input_scale(plan_i.timesteps[0])
        step_done = None
        if callback is not None:
            step_done = lambda done, _total, k=k: callback(k * per_video + done, num_interp * per_video)  # noqa: E731
        outputs.append(
            denoise_from(
                model,
                start,
                plan_i,
                cond,
                objective=objective,
                guidance_scale=guidance_scale,
                negative_cond=negative_cond,
                generators=generators,
                clip_x0=clip_x0,
                dynamic_threshold=dynamic_threshold,
                progress=progress,
                callback=step_done,
            )  # fmt: skip
        )
    return torch.stack(outputs, dim=1)
