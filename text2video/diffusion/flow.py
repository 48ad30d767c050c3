"""Rectified flow (flow matching): straight paths between data and noise, a velocity target.

``x_t = (1 - t) x0 + t noise`` for a time t in [0, 1] (t = 1 is pure noise); the model predicts the
velocity ``dx_t / dt = noise - x0``. Sampling integrates that ODE from t = 1 to 0 with diffusers'
flow-matching schedulers (`text2video.diffusion.schedule.FLOW_SAMPLERS`) behind the same loop as the
diffusion objective. The model sees times on the training-timestep scale, ``t * num_train_timesteps``
(a float), as diffusers' flow schedulers and SD3 / Open-Sora do.

Training times are drawn uniformly or logit-normally (SD3), optionally biased toward one end
(``timestep_bias``, on the quantiles of that draw) and shifted toward the noise end,
``t' = s t / (1 + (s - 1) t)``, with a shift ``s`` that may grow with the video's size
(``flow_shift_reference``). The sampling schedulers use the same shift, so training and sampling
visit the same times.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch

from ..errors import ConfigError
from .objective import DiffusionObjective, ObjectiveConfig, _draw, build_scheduler
from .schedule import FLOW_SAMPLERS

__all__ = ["FlowObjective", "refuse_scheduler_config", "shift_times"]

#: smallest time used in loss weights that divide by t (``sigma_sqrt``), so a draw of t = 0 stays finite.
MIN_WEIGHT_TIME = 1e-2


def shift_times(t: torch.Tensor, shift: float) -> torch.Tensor:
    """``s t / (1 + (s - 1) t)``: the time shift of SD3 and Open-Sora (s > 1 moves times toward noise)."""
    if shift == 1.0:
        return t
    return shift * t / (1.0 + (shift - 1.0) * t)


def refuse_scheduler_config(scheduler_config: Mapping[str, Any]) -> str:
    """Why a flow-trained model does not sample with a pretrained model's scheduler config (one line)."""
    name = scheduler_config.get("_class_name") or "a diffusers scheduler"
    return (
        f"the model was trained with rectified flow (diffusion.objective=flow) and samples with the flow samplers, but it "
        f"was given a pretrained diffusion model's scheduler config ({name}); drop the scheduler config (scheduler_config=None) "
        "to sample with the flow samplers, or train with diffusion.objective=diffusion to keep the base model's scheduler"
    )


class FlowObjective(DiffusionObjective):
    """The rectified-flow objective of an `ObjectiveConfig` with ``objective: flow``.

    It keeps the interface of `DiffusionObjective` (``q_sample``, ``target``, ``predict_x0``, ``loss``,
    frame masks, the sampling-loop hooks) with ``a_t = 1 - t`` and ``s_t = t``, so the trainer, the
    sampling loop and the pipelines use either without knowing which.
    """

    def __init__(self, config: ObjectiveConfig | Mapping[str, Any] | None = None) -> None:
        if config is None:
            config = ObjectiveConfig(objective="flow")
        elif not isinstance(config, ObjectiveConfig):
            config = ObjectiveConfig.from_dict(config)
        if config.objective != "flow":
            raise ConfigError(f"FlowObjective needs objective='flow', got {config.objective!r}; use make_objective(config)")
        self.config = config
        self._tables: dict = {}

    # ------------------------------------------------------------------------------- time and paths

    def times(self, t: torch.Tensor) -> torch.Tensor:
        """Model timesteps (0 .. num_train_timesteps) -> path times in [0, 1]."""
        return torch.as_tensor(t).float() / self.num_train_timesteps

    def coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1 - t, t)`` for model timesteps ``t`` (B,) or a scalar, shaped to broadcast against ``like``."""
        t = torch.as_tensor(t, device=like.device)
        if t.ndim == 0:
            t = t.expand(like.shape[0])
        dtype = like.dtype if like.is_floating_point() else torch.float32
        sigma = (t.to(torch.float64) / self.num_train_timesteps).clamp(0.0, 1.0).to(dtype)
        sigma = sigma.view((-1,) + (1,) * (like.ndim - 1))
        return 1.0 - sigma, sigma

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """``((1 - t) / t)^2`` at model timesteps ``t``."""
        sigma = self.times(t).clamp(min=1e-12)
        return ((1.0 - sigma) / sigma) ** 2

    def shift_for(self, shape: Optional[tuple[int, ...]]) -> float:
        """The time shift for videos of ``shape`` (B, C, T, H, W): ``flow_shift``, times
        ``sqrt(T * H * W / flow_shift_reference)`` when a reference size is set."""
        c = self.config
        if c.flow_shift_reference is None or shape is None:
            return float(c.flow_shift)
        values = math.prod(int(n) for n in shape[2:])
        return float(c.flow_shift) * math.sqrt(values / c.flow_shift_reference)

    # ------------------------------------------------------------------------------ targets

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity ``noise - x0`` (the same at every time of a straight path)."""
        return noise - x0

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        _, sigma = self.coefficients(t, x_t)
        return x_t - sigma * prediction

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        a, _ = self.coefficients(t, x_t)
        return x_t + a * prediction

    def velocity_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The velocity that gives ``x0`` at ``x_t``: ``(x_t - x0) / t`` (t > 0)."""
        _, sigma = self.coefficients(t, x_t)
        return (x_t - x0) / sigma.clamp(min=torch.finfo(sigma.dtype).tiny)

    # ------------------------------------------------------------------------------- training draw

    def sample_timesteps(
        self,
        batch: int,
        generator: Optional[torch.Generator] = None,
        device: torch.device | str = "cpu",
        step: Optional[int] = None,
        shift: Optional[float] = None,
    ) -> torch.Tensor:
        """``(batch,)`` float model timesteps: quantiles drawn uniformly (more often in the ``timestep_bias``
        portion, until ``timestep_bias_steps``), mapped through the uniform or logit-normal distribution,
        then shifted (``shift``; default: ``flow_shift``)."""
        c = self.config
        q = _draw(lambda d: torch.rand(batch, generator=generator, device=d, dtype=torch.float64), generator, device)
        ended = c.timestep_bias_steps is not None and step is not None and step >= c.timestep_bias_steps
        if c.timestep_bias != "none" and c.timestep_bias_multiplier != 1 and not ended:
            k, m = c.timestep_bias_portion, c.timestep_bias_multiplier
            pick = _draw(lambda d: torch.rand(batch, generator=generator, device=d, dtype=torch.float64), generator, device)
            inside = pick < m * k / (m * k + 1.0 - k)
            low = 1.0 - k if c.timestep_bias == "later" else 0.0  # the portion [low, low + k] of the quantiles
            rest = torch.where(q * (1.0 - k) < low, q * (1.0 - k), q * (1.0 - k) + k)  # the other 1 - k, uniformly
            q = torch.where(inside, low + k * q, rest)
        if c.flow_timesteps == "logit_normal":
            normal = math.sqrt(2.0) * torch.erfinv(2.0 * q.clamp(1e-12, 1.0 - 1e-12) - 1.0)
            times = torch.sigmoid(c.logit_mean + c.logit_std * normal)
        else:
            times = q
        times = shift_times(times, self.config.flow_shift if shift is None else shift)
        return (times * self.num_train_timesteps).float()

    def training_timesteps(
        self, shape: tuple[int, ...], generator: Optional[torch.Generator], device: torch.device | str, step: Optional[int]
    ) -> torch.Tensor:
        return self.sample_timesteps(shape[0], generator, device, step, shift=self.shift_for(shape))

    def timestep_probabilities(self) -> torch.Tensor:
        raise ConfigError("rectified flow draws continuous times; see FlowObjective.sample_timesteps")

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Per-item weights (B,): ``loss_weighting`` (none, sigma_sqrt ``1 / t^2``, cosmap) times min-SNR-gamma
        relative to the velocity target (``min(SNR, gamma) t^2``, since an x0 error is t times a velocity error)."""
        sigma = self.times(t)
        kind = self.config.loss_weighting
        if kind == "sigma_sqrt":
            weights = sigma.clamp(min=MIN_WEIGHT_TIME) ** -2
        elif kind == "cosmap":
            weights = 2.0 / (math.pi * (1.0 - 2.0 * sigma + 2.0 * sigma**2))
        else:
            weights = torch.ones_like(sigma)
        gamma = self.config.min_snr_gamma
        if gamma is not None:
            weights = weights * torch.minimum((1.0 - sigma) ** 2, gamma * sigma**2)
        return weights

    # ---------------------------------------------------------------------------------- sampling

    def to_scheduler_config(self) -> dict[str, Any]:
        return {"num_train_timesteps": self.num_train_timesteps}

    def make_scheduler(self, name: str, shape: Optional[tuple[int, ...]] = None, **overrides: Any) -> Any:
        """The diffusers flow scheduler of sampler ``name`` (see `FLOW_SAMPLERS`), shifted for ``shape``."""
        shift = self.shift_for(shape)
        base = {**self.to_scheduler_config(), "shift": shift, "flow_shift": shift}
        return build_scheduler(FLOW_SAMPLERS, name, base, overrides)

    def sampling_scheduler(self, name: str, shape: Optional[tuple[int, ...]] = None) -> Any:
        return self.make_scheduler(name, shape)

    def check_scheduler_config(self, scheduler_config: Mapping[str, Any]) -> None:
        """Refused: a pretrained model's scheduler config describes a diffusion chain, and a model trained with
        rectified flow samples only with the flow schedulers of `FLOW_SAMPLERS` (its own time shift)."""
        raise ConfigError(refuse_scheduler_config(scheduler_config))

    def plan_timesteps(self, scheduler: Any, start: int) -> torch.Tensor:
        """The model timesteps of the steps from ``start`` on: the scheduler's times (``sigmas``) on the
        training scale, not its rounded ``timesteps``, so the model sees the time the state is at."""
        count = len(scheduler.timesteps)
        return scheduler.sigmas[start:count].double() * self.num_train_timesteps

    def timestep_batch(self, value: float | torch.Tensor, batch: int, device: torch.device | str) -> torch.Tensor:
        return torch.full((batch,), float(value), device=device, dtype=torch.float32)

    def exact_last_step(self, sampler: str) -> bool:
        return False
