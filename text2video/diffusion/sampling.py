"""Sampling: diffusers' schedulers behind one loop of ours.

The loop owns everything that is not the scheduler's arithmetic: the model call (through
``denoise(model, x_t, t, cond)``), classifier-free guidance in one batched pass, x0 clipping and dynamic
thresholding, given frames (image-to-video, prediction, infilling), per-video random generators and a
partial-noise start. The scheduler only steps: it always receives what the objective says it steps with,
computed from our processed x0 (`DiffusionObjective.scheduler_output`): a v-prediction for the diffusion
objective, which every diffusers scheduler accepts and which stays finite at both ends of the chain, and
the velocity for rectified flow (`text2video.diffusion.flow`), whose schedulers are diffusers' flow ones.

Schedulers keep their own state space: VP ``x_t`` for DDPM/DDIM/DPM-Solver/UniPC, ``x_t / a_t`` for the
Euler family, the path's ``x_t`` for the flow schedulers. ``scale_model_input`` maps it to the ``x_t`` the
model was trained on; the loop uses the same factor to put re-noised given frames into the scheduler's space.

A pretrained model brings its own scheduler config (``scheduler_config``, a diffusers config dict). The
plan is then that scheduler as its authors configured it (timestep spacing, offsets, final alpha), and
the scheduler receives the model's own prediction type: the raw guided prediction when x0 is neither
clipped nor thresholded, so the chain is step for step the one the original pipeline walks. Such configs
describe diffusion (DDPM-family) schedulers: a model trained with rectified flow samples with the flow
schedulers of its objective, and a scheduler config given with it is refused
(`DiffusionObjective.native_scheduler`).
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from .conditioning import Conditioning
from .denoise import denoise
from .objective import DiffusionObjective
from .schedule import SAMPLERS, resolve_sampler

logger = logging.getLogger(__name__)

__all__ = ["SAMPLERS", "SamplingPlan", "StepCallback", "plan_sampling", "sample", "denoise_from", "dynamic_threshold_x0", "randn"]

#: Called after each sampler step with (steps done, steps in all); an exception it raises stops sampling
#: (a web page's cancel button raises one).
StepCallback = Callable[[int, int], None]


# ------------------------------------------------------------------------------------- helpers


def randn(
    shape: Sequence[int],
    generators: Optional[Sequence[torch.Generator]],
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of ``shape`` (B, ...); row i from ``generators[i]`` when given.

    Each row is drawn on its generator's device and moved, so a CPU generator gives the same video on any
    device, and a batch of N equals N single draws.
    """
    if generators is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    if len(generators) != shape[0]:
        raise ConfigError(f"got {len(generators)} generators for a batch of {shape[0]}; pass one per video")
    rows = [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype).to(device) for g in generators]
    return torch.cat(rows, dim=0)


def dynamic_threshold_x0(x0: torch.Tensor, percentile: float) -> torch.Tensor:
    """text2video-from-scratch's / Imagen's dynamic thresholding: per video, take the ``percentile`` of |x0| as ``s``
    (at least 1), clamp to [-s, s] and divide by ``s``."""
    if not 0.0 < percentile <= 1.0:
        raise ConfigError(f"dynamic_threshold must be a percentile in (0, 1], got {percentile!r}")
    flat = x0.flatten(1).abs().float()
    s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0).to(x0.dtype)
    s = s.view(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


#: attribute a model carries while it is offloaded to the CPU between calls (see
#: `text2video.pipelines.memory`): the device its forward runs on, where the sampling state lives.
EXECUTION_DEVICE_ATTR = "t2v_execution_device"


def _model_device_dtype(model: Any) -> tuple[torch.device, torch.dtype]:
    try:
        p = next(model.parameters())
        device = getattr(model, EXECUTION_DEVICE_ATTR, None) or p.device
        return torch.device(device), p.dtype if p.is_floating_point() else torch.float32
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu"), torch.float32


def _complete_negative(negative: Conditioning, cond: Conditioning) -> Conditioning:
    """Give the negative prompt's condition the non-text fields (frames, fps, ...) of ``cond``."""
    fill = {}
    for name in ("image", "frame_mask", "fps", "class_labels", "segmentation", "focus_present"):
        if getattr(negative, name) is None and getattr(cond, name) is not None:
            fill[name] = getattr(cond, name)
    return replace(negative, **fill) if fill else negative


def _broadcast_cond(cond: Conditioning, batch: int, what: str) -> Conditioning:
    size = cond.batch_size
    if size is None or size == batch:
        return cond
    if size == 1:
        return cond.repeat_interleave(batch)
    raise ConfigError(f"{what} has batch size {size} but {batch} videos are sampled; give 1 or {batch} rows")


def _given_frames(cond: Conditioning, shape: Sequence[int], device: torch.device, dtype: torch.dtype):
    """(image, mask5) of the frames to hold fixed, or None. Validates shapes."""
    if cond.frame_mask is None:
        return None
    b, _, frames = shape[:3]
    mask = cond.frame_mask.to(device=device, dtype=torch.bool)
    if mask.ndim == 1:
        mask = mask.expand(b, -1)
    if mask.ndim != 2 or mask.shape[1] != frames or mask.shape[0] != b:
        raise ConfigError(
            f"frame_mask has shape {tuple(cond.frame_mask.shape)} but the video has {frames} frames "
            f"(batch {b}); pass a bool mask of shape ({b}, {frames}) or ({frames},)"
        )
    if cond.image is None:
        raise ConfigError("cond.frame_mask is set but cond.image is None; put the given frames in cond.image")
    image = cond.image.to(device=device, dtype=dtype)
    if tuple(image.shape) != tuple(shape):
        raise ConfigError(f"cond.image has shape {tuple(image.shape)}; expected the sampled shape {tuple(shape)}")
    if not bool(mask.any()):
        return None
    return image, mask[:, None, :, None, None]


# ----------------------------------------------------------------------------------------- plan


@dataclass
class SamplingPlan:
    """A scheduler set to a number of steps, the scheduler's timesteps the loop will visit, and the
    model timesteps at those steps (the same, rounded, for the diffusion objective; the times on the
    training scale for rectified flow)."""

    sampler: str
    scheduler: Any
    timesteps: torch.Tensor
    start_index: int
    model_timesteps: Optional[torch.Tensor] = None
    exact_last: bool = False
    native: bool = False  # the model's own scheduler config: the scheduler takes the model's prediction type

    def __post_init__(self) -> None:
        if self.model_timesteps is None:
            self.model_timesteps = self.timesteps.double().round()

    @property
    def start_timestep(self) -> float:
        """The model timestep of the first step."""
        return float(self.model_timesteps[0])

    def input_scale(self, t: torch.Tensor) -> float:
        """Factor from the scheduler's state to the ``x_t`` the model sees at ``t``."""
        scale = getattr(self.scheduler, "scale_model_input", None)
        return 1.0 if scale is None else float(scale(torch.ones(1), t))


def plan_sampling(
    objective: DiffusionObjective,
    sampler: str = "ddim",
    steps: int = 50,
    strength: float = 1.0,
    *,
    shape: Optional[Sequence[int]] = None,
    scheduler_config: Optional[dict[str, Any]] = None,
) -> SamplingPlan:
    """Build the scheduler of ``sampler`` for ``steps`` steps; with ``strength`` < 1 keep only the last
    ``round(steps * strength)`` of them (a partial-noise start). ``shape`` (B, C, T, H, W) is the sampled
    shape, for a rectified-flow objective whose time shift depends on the size. ``scheduler_config`` (a
    pretrained model's) builds the scheduler from that config instead of from the objective's own schedule
    (the diffusion objective only: `DiffusionObjective.native_scheduler`)."""
    key = resolve_sampler(sampler)
    total = objective.num_train_timesteps
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    if steps > total:
        raise ConfigError(f"{steps} sampling steps with sampler {key!r} is more than the {total} training timesteps; use steps <= {total}")
    if not 0.0 < strength <= 1.0:
        raise ConfigError(f"strength must be in (0, 1], got {strength!r}")
    if scheduler_config is None:
        scheduler = objective.sampling_scheduler(key, tuple(shape) if shape is not None else None)
    else:
        scheduler = objective.native_scheduler(scheduler_config, key)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    run = max(1, min(len(timesteps), round(len(timesteps) * strength)))
    start = len(timesteps) - run
    if start > 0 and hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    native = scheduler_config is not None
    return SamplingPlan(
        key, scheduler, timesteps[start:], start, objective.plan_timesteps(scheduler, start),
        exact_last=not native and objective.exact_last_step(key), native=native,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------- loop


def check_guidance(guidance_scale: float, eta: float = 0.0) -> None:
    """Refuse a guidance scale or DDIM eta that is not a finite number (a NaN gives a black video, an
    infinity a saturated one), and a negative eta."""
    for name, value in (("guidance_scale", guidance_scale), ("eta", eta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if eta < 0:
        raise ConfigError(f"eta must be >= 0 (0: deterministic DDIM, 1: DDPM-like noise), got {eta!r}")


@torch.no_grad()
def sample(
    model: Any,
    shape: Sequence[int],
    cond: Optional[Conditioning] = None,
    *,
    objective: DiffusionObjective,
    sampler: str = "ddim",
    steps: int = 50,
    guidance_scale: float = 1.0,
    negative_cond: Optional[Conditioning] = None,
    generators: Optional[Sequence[torch.Generator]] = None,
    eta: float = 0.0,
    clip_x0: bool = True,
    dynamic_threshold: Optional[float] = None,
    init: Optional[torch.Tensor] = None,
    strength: float = 0.7,
    progress: bool = False,
    device: Optional[torch.device | str] = None,
    dtype: Optional[torch.dtype] = None,
    noise: Optional[torch.Tensor] = None,
    scheduler_config: Optional[dict[str, Any]] = None,
    callback: Optional[StepCallback] = None,
) -> torch.Tensor:
    """Generate videos of ``shape`` (B, C, T, H, W) in [-1, 1] with ``model`` under ``cond``.

    sampler: ddpm | ddim | dpmpp_2m | euler | euler_ancestral | unipc (see `SAMPLERS`).
    guidance_scale: classifier-free guidance; 1 is off. The unconditional half is ``cond`` with its text
        dropped, or ``negative_cond`` (a negative prompt) when given. One forward pass of 2B rows.
    generators: one ``torch.Generator`` per video; a batch of N then equals N single calls.
    eta: DDIM's noise (0: deterministic); ignored by the other samplers.
    clip_x0 / dynamic_threshold: clamp the predicted x0 to [-1, 1], or text2video-from-scratch's percentile thresholding
        (which replaces clipping when set).
    init, strength: start from ``init`` (B, C, T, H, W) noised to the ``strength`` fraction of the schedule.
    noise: the initial noise (diffusers' ``latents``), shape ``shape``, used instead of a draw from
        ``generators``; it is scaled by the scheduler's ``init_noise_sigma`` as diffusers does.
    scheduler_config: a pretrained model's diffusers scheduler config (see `plan_sampling`).
    callback: ``callback(done, total)`` after each step (progress bars; raising in it stops sampling).
    cond.image + cond.frame_mask: frames held fixed; they are re-noised to each step and put back into the
        state (and the model also sees them in ``cond.image``); the result has them exactly.
    """
    b = int(shape[0])
    model_device, model_dtype = _model_device_dtype(model)
    device = torch.device(device) if device is not None else model_device
    dtype = dtype or model_dtype
    cond = _broadcast_cond(cond if cond is not None else Conditioning(), b, "cond").to(device)
    plan = plan_sampling(objective, sampler, steps, strength if init is not None else 1.0, shape=shape, scheduler_config=scheduler_config)
    if noise is not None:
        if tuple(noise.shape) != tuple(shape):
            raise ConfigError(f"latents (the initial noise) have shape {tuple(noise.shape)}; this call samples {tuple(shape)}")
        noise = noise.to(device=device, dtype=dtype)
    else:
        noise = randn(shape, generators, device, dtype)
    if init is not None:
        if tuple(init.shape) != tuple(shape):
            raise ConfigError(f"init has shape {tuple(init.shape)}; expected {tuple(shape)}")
        t0 = objective.timestep_batch(plan.start_timestep, b, device)
        x_vp = objective.q_sample(init.to(device=device, dtype=dtype), t0, noise)
        x = x_vp / plan.input_scale(plan.timesteps[0])
    else:
        x = noise * float(getattr(plan.scheduler, "init_noise_sigma", 1.0))
    return denoise_from(
        model, x, plan, cond,
        objective=objective, guidance_scale=guidance_scale, negative_cond=negative_cond, generators=generators,
        eta=eta, clip_x0=clip_x0, dynamic_threshold=dynamic_threshold, progress=progress, callback=callback,
    )  # fmt: skip


@torch.no_grad()
def denoise_from(
    model: Any,
    x: torch.Tensor,
    plan: SamplingPlan,
    cond: Optional[Conditioning] = None,
    *,
    objective: DiffusionObjective,
    guidance_scale: float = 1.0,
    negative_cond: Optional[Conditioning] = None,
    generators: Optional[Sequence[torch.Generator]] = None,
    eta: float = 0.0,
    clip_x0: bool = True,
    dynamic_threshold: Optional[float] = None,
    progress: bool = False,
    callback: Optional[StepCallback] = None,
) -> torch.Tensor:
    """Run ``plan`` from state ``x`` (in the scheduler's space at ``plan.timesteps[0]``) down to x0;
    ``callback(done, total)`` after each step."""
    check_guidance(guidance_scale, eta)
    b = x.shape[0]
    device, dtype = x.device, x.dtype
    cond = _broadcast_cond(cond if cond is not None else Conditioning(), b, "cond").to(device)
    given = _given_frames(cond, x.shape, device, dtype)
    guided = guidance_scale != 1.0
    if guided:
        negative = None
        if negative_cond is not None:
            negative = _complete_negative(_broadcast_cond(negative_cond, b, "negative_cond").to(device), cond)
        cond_in = cond.with_guidance_batch(negative)
    else:
        cond_in = cond
    if eta and not (plan.sampler == "ddim" and "eta" in inspect.signature(plan.scheduler.step).parameters):
        logger.info("eta=%s is used by the ddim sampler only; %s ignores it", eta, plan.sampler)

    scheduler = plan.scheduler
    step_params = inspect.signature(scheduler.step).parameters
    step_kwargs: dict[str, Any] = {}
    if "generator" in step_params and generators is not None:
        step_kwargs["generator"] = list(generators)
    if plan.sampler == "ddim" and "eta" in step_params:
        step_kwargs["eta"] = float(eta)

    last = len(plan.timesteps) - 1
    for i, t in enumerate(tqdm(plan.timesteps, desc="sampling", disable=not progress, leave=False)):
        tt = objective.timestep_batch(plan.model_timesteps[i], b, device)
        scale = plan.input_scale(t)
        if given is not None:
            image, mask = given
            renoised = objective.q_sample(image, tt, randn(x.shape, generators, device, dtype))
            x = torch.where(mask, renoised / scale, x)
        x_in = x * scale
        if guided:
            out = denoise(model, torch.cat([x_in, x_in]), torch.cat([tt, tt]), cond_in)
            pos, neg = out.chunk(2)
            prediction = neg + guidance_scale * (pos - neg)
        else:
            prediction = denoise(model, x_in, tt, cond_in)
        prediction = prediction.to(dtype)
        x0 = objective.predict_x0(x_in, tt, prediction)
        if dynamic_threshold is not None:
            x0 = dynamic_threshold_x0(x0, dynamic_threshold)
        elif clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        if plan.native:  # the model's own scheduler: its own prediction type, its own last step
            processed = dynamic_threshold is not None or clip_x0
            output = _prediction_from_x0(objective, x_in, tt, x0) if processed else prediction
            x = scheduler.step(output, t, x, **step_kwargs).prev_sample.to(dtype)
        elif i == last and plan.exact_last:
            # diffusers' DDIM steps to t - T // steps, which is 0 rather than the clean end when steps does
            # not divide T; its step to alpha_bar = 1 is exactly the predicted x0.
            x = x0
        else:
            output = objective.scheduler_output(x_in, tt, x0)
            x = scheduler.step(output, t, x, **step_kwargs).prev_sample.to(dtype)
        if callback is not None:
            callback(i + 1, last + 1)
    if given is not None:
        image, mask = given
        x = torch.where(mask, image, x)
    return x


def _prediction_from_x0(objective: DiffusionObjective, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The prediction of the objective's type that gives ``x0`` at ``x_t`` (after clipping x0)."""
    kind = objective.prediction_type
    if kind == "sample":
        return x0
    if kind == "v_prediction":
        return objective.velocity_from_x0(x_t, t, x0)
    a, s = objective.coefficients(t, x_t)
    return (x_t - a * x0) / s
