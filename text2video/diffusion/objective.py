"""The training objective: forward noising, prediction targets, loss weights and random frame masks.

Two objectives share this config and this interface: ``objective: diffusion`` (this module's
`DiffusionObjective`, a discrete variance-preserving chain) and ``objective: flow`` (rectified flow,
`text2video.diffusion.flow.FlowObjective`); `text2video.diffusion.objectives.make_objective` picks one.

Notation of the diffusion objective: ``x_t = a_t * x0 + s_t * noise`` with ``a_t = sqrt(alpha_bar_t)`` and ``s_t = sqrt(1 - alpha_bar_t)``.
Targets: ``epsilon`` -> noise, ``sample`` -> x0, ``v_prediction`` -> ``a_t * noise - s_t * x0`` (diffusers' names).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .conditioning import Conditioning
from .denoise import denoise
from .schedule import (
    BETA_SCHEDULE_ALIASES,
    BETA_SCHEDULES,
    SAMPLERS,
    make_betas,
    rescale_to_zero_terminal_snr,
    resolve_sampler,
    scheduler_from_config,
)

logger = logging.getLogger(__name__)

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
LOSS_TYPES = ("l1", "l2", "huber")
MASK_TASKS = ("image_to_video", "prediction", "interpolation")


TIMESTEP_BIASES: tuple[str, ...] = ("none", "later", "earlier")
#: the training objectives: a discrete VP diffusion chain, or rectified flow (straight paths, velocity target).
OBJECTIVE_KINDS: tuple[str, ...] = ("diffusion", "flow")
OBJECTIVE_ALIASES: MappingProxyType[str, str] = MappingProxyType(
    {"ddpm": "diffusion", "vp": "diffusion", "rectified_flow": "flow", "flow_matching": "flow"}
)
#: how rectified flow draws its training times: uniform in (0, 1), or logit-normal (SD3's default).
FLOW_TIMESTEPS: tuple[str, ...] = ("uniform", "logit_normal")
#: per-time loss weights of rectified flow (SD3's names): none, sigma_sqrt (1 / sigma^2), cosmap.
FLOW_LOSS_WEIGHTINGS: tuple[str, ...] = ("none", "sigma_sqrt", "cosmap")


def _default_mask_tasks() -> dict[str, float]:
    return {task: 1.0 for task in MASK_TASKS}


@dataclass
class ObjectiveConfig:
    """Settings of the training objective; they also fix the sampling schedule.

    objective: diffusion (a discrete noising chain with the betas below) | flow (rectified flow:
        ``x_t = (1 - t) x0 + t noise`` with t in (0, 1), the model predicts the velocity ``noise - x0``;
        beta_*, prediction_type and rescale_zero_terminal_snr do not apply to it).
    num_train_timesteps: length of the noising chain (text2video-from-scratch used 10, a defect; 1000 is standard).
    beta_schedule: linear | scaled_linear | cosine (text2video-from-scratch's; diffusers calls it squaredcos_cap_v2).
    beta_start, beta_end: endpoints of the linear and scaled_linear schedules.
    rescale_zero_terminal_snr: make the last timestep pure noise (needs v_prediction or sample).
    prediction_type: what the model predicts: epsilon (noise) | sample (x0) | v_prediction.
    loss_type: l1 (text2video-from-scratch) | l2 | huber (``huber_delta``).
    min_snr_gamma: weight each timestep by min(SNR, gamma) relative to the target (Hang et al. 2023); None: off.
        It down-weights the noisiest steps, where a model learns the layout of the video.
    timestep_bias: how training timesteps are drawn: none (uniform) | later (the noisiest
        ``timestep_bias_portion`` of the chain is drawn ``timestep_bias_multiplier`` times as often) | earlier
        (the least noisy portion is). Drawing the noisy end more often teaches a small model the
        caption-dependent layout (where a shape starts and which way it goes) in fewer steps.
    timestep_bias_steps: apply the bias only for the first this many training steps, then draw uniformly
        (None: always). The trainer passes the step to `loss`; a call without one counts as biased.
    offset_noise: scale of a per-video, per-channel constant added to the noise (0: off).
    flow_timesteps: (flow) how training times are drawn: uniform | logit_normal (``sigmoid(N(logit_mean,
        logit_std^2))``, SD3's choice: more weight on the middle of the path).
    flow_shift: (flow) shift of the times toward the noise end, ``t' = s t / (1 + (s - 1) t)``, in training and
        sampling alike (SD3, Open-Sora); 1 is none.
    flow_shift_reference: (flow) make the shift resolution-dependent: the shift is ``flow_shift *
        sqrt(n / flow_shift_reference)`` for videos of n = frames x height x width values per channel (of the
        latents in a latent run), so larger videos, whose pixels are more redundant, are noised longer (SD3's
        resolution shift; Open-Sora's over space and time). None: the shift is ``flow_shift`` at every size.
    loss_weighting: (flow) weight per time: none | sigma_sqrt (``1 / t^2``) | cosmap (SD3's names);
        ``min_snr_gamma`` also applies to flow, with ``SNR = ((1 - t) / t)^2``.
    frame_mask_prob: probability that a training item gets given frames (image-to-video, prediction or
        interpolation, drawn with ``mask_tasks`` weights); given frames go to ``cond.image`` /
        ``cond.frame_mask`` and are left out of the loss.
    """

    objective: str = "diffusion"
    num_train_timesteps: int = 1000
    beta_schedule: str = "cosine"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    rescale_zero_terminal_snr: bool = False
    prediction_type: str = "epsilon"
    loss_type: str = "l2"
    huber_delta: float = 1.0
    min_snr_gamma: Optional[float] = None
    timestep_bias: str = "none"
    timestep_bias_portion: float = 0.25
    timestep_bias_multiplier: float = 1.0
    timestep_bias_steps: Optional[int] = None
    offset_noise: float = 0.0
    flow_timesteps: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    flow_shift: float = 1.0
    flow_shift_reference: Optional[int] = None
    loss_weighting: str = "none"
    frame_mask_prob: float = 0.0
    mask_tasks: dict[str, float] = field(default_factory=_default_mask_tasks)

    def __post_init__(self) -> None:
        self.objective = OBJECTIVE_ALIASES.get(str(self.objective).lower(), str(self.objective).lower())
        _choice("objective", self.objective, OBJECTIVE_KINDS)
        self._check_flow()
        self.beta_schedule = BETA_SCHEDULE_ALIASES.get(self.beta_schedule, self.beta_schedule)
        _choice("beta_schedule", self.beta_schedule, tuple(BETA_SCHEDULES))
        _choice("prediction_type", self.prediction_type, PREDICTION_TYPES)
        _choice("loss_type", self.loss_type, LOSS_TYPES)
        if not isinstance(self.num_train_timesteps, int) or self.num_train_timesteps < 2:
            raise ConfigError(f"num_train_timesteps must be an integer >= 2, got {self.num_train_timesteps!r}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ConfigError(f"need 0 < beta_start < beta_end < 1, got beta_start={self.beta_start}, beta_end={self.beta_end}")
        if self.rescale_zero_terminal_snr and self.prediction_type == "epsilon" and self.objective == "diffusion":
            raise ConfigError(
                "rescale_zero_terminal_snr=True with prediction_type='epsilon' cannot recover x0 at the last "
                "timestep (zero signal); use prediction_type='v_prediction' or 'sample'"
            )
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ConfigError(f"min_snr_gamma must be positive or None, got {self.min_snr_gamma!r}")
        _choice("timestep_bias", self.timestep_bias, TIMESTEP_BIASES)
        if not 0.0 < self.timestep_bias_portion <= 1.0:
            raise ConfigError(f"timestep_bias_portion must be in (0, 1], got {self.timestep_bias_portion!r}")
        if not self.timestep_bias_multiplier > 0:
            raise ConfigError(f"timestep_bias_multiplier must be positive, got {self.timestep_bias_multiplier!r}")
        if self.timestep_bias_steps is not None and not (isinstance(self.timestep_bias_steps, int) and self.timestep_bias_steps >= 0):
            raise ConfigError(f"timestep_bias_steps must be a whole number >= 0 or None, got {self.timestep_bias_steps!r}")
        if self.huber_delta <= 0:
            raise ConfigError(f"huber_delta must be positive, got {self.huber_delta!r}")
        if self.offset_noise < 0:
            raise ConfigError(f"offset_noise must be >= 0, got {self.offset_noise!r}")
        if not 0.0 <= self.frame_mask_prob <= 1.0:
            raise ConfigError(f"frame_mask_prob must be a probability in [0, 1], got {self.frame_mask_prob!r}")
        self.mask_tasks = dict(self.mask_tasks)
        for task, weight in self.mask_tasks.items():
            _choice("mask_tasks key", task, MASK_TASKS)
            if weight < 0:
                raise ConfigError(f"mask_tasks[{task!r}] must be >= 0, got {weight!r}")
        if self.frame_mask_prob > 0 and sum(self.mask_tasks.values()) <= 0:
            raise ConfigError(f"frame_mask_prob={self.frame_mask_prob} needs a positive weight in mask_tasks {MASK_TASKS}")

    def _check_flow(self) -> None:
        _choice("flow_timesteps", self.flow_timesteps, FLOW_TIMESTEPS)
        _choice("loss_weighting", self.loss_weighting, FLOW_LOSS_WEIGHTINGS)
        if not self.logit_std > 0:
            raise ConfigError(f"logit_std must be positive, got {self.logit_std!r}")
        if not self.flow_shift > 0:
            raise ConfigError(f"flow_shift must be positive (1 is no shift), got {self.flow_shift!r}")
        reference = self.flow_shift_reference
        if reference is not None and not (isinstance(reference, int) and not isinstance(reference, bool) and reference > 0):
            raise ConfigError(f"flow_shift_reference must be a positive whole number (frames x height x width) or None, got {reference!r}")
        if self.objective == "flow":
            if self.rescale_zero_terminal_snr:
                raise ConfigError("rescale_zero_terminal_snr applies to objective=diffusion; rectified flow already ends in pure noise")
            return
        flow_only = {
            "flow_timesteps": "uniform", "logit_mean": 0.0, "logit_std": 1.0, "flow_shift": 1.0,
            "flow_shift_reference": None, "loss_weighting": "none",
        }  # fmt: skip
        changed = [name for name, default in flow_only.items() if getattr(self, name) != default]
        if changed:
            raise ConfigError(f"{', '.join(changed)} apply to objective=flow; set diffusion.objective=flow or leave them out")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectiveConfig:
        """Build from a mapping; unknown keys give a `ConfigError` naming them. ``cond_drop_prob`` (written by
        earlier versions; the trainer's ``train.cond_drop`` drops the text now) is ignored; a mapping without
        ``objective`` (written before rectified flow) is the diffusion objective."""
        data = {k: v for k, v in data.items() if k != "cond_drop_prob"}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown diffusion setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} {value!r} is not supported; choose one of: {', '.join(allowed)}")


class DiffusionObjective:
    """Forward process, targets and the training loss of one `ObjectiveConfig`."""

    def __init__(self, config: ObjectiveConfig | Mapping[str, Any] | None = None) -> None:
        if config is None:
            config = ObjectiveConfig()
        elif not isinstance(config, ObjectiveConfig):
            config = ObjectiveConfig.from_dict(config)
        self.config = config
        betas = make_betas(config.beta_schedule, config.num_train_timesteps, config.beta_start, config.beta_end)
        if config.rescale_zero_terminal_snr:
            betas = rescale_to_zero_terminal_snr(betas)
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self._tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self._warn_epsilon_near_zero_terminal_snr()

    def _warn_epsilon_near_zero_terminal_snr(self) -> None:
        """Epsilon prediction on a schedule whose last steps keep almost no signal (the cosine schedule:
        ``a_T`` = 5e-5) gives the clean video at those steps as ``(x_t - s_t eps) / a_t``: the model's error
        times ``s_t / a_t`` (20000 at t = 999, 13 at t = 950). Sampling starts there and decides the layout
        there, so such a model samples noise (docs/reference.md has the measurements)."""
        a_last = float(self.alphas_cumprod[-1].sqrt())
        if self.prediction_type == "epsilon" and a_last < 1e-3:
            logger.warning(
                "prediction_type=epsilon on the %s schedule: its last timestep keeps sqrt(alpha_bar) = %.1e of the "
                "signal, so the clean video predicted there amplifies the model's error %.0fx and samples start from "
                "noise; use prediction_type=v_prediction (or sample)",
                self.config.beta_schedule, a_last, 1.0 / max(a_last, 1e-12),
            )  # fmt: skip

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    @property
    def prediction_type(self) -> str:
        return self.config.prediction_type

    # ------------------------------------------------------------------------------- coefficients

    def coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a_t, s_t)`` for timesteps ``t`` (B,), shaped to broadcast against ``like`` (B, ...)."""
        key = (like.device, like.dtype if like.is_floating_point() else torch.float32)
        if key not in self._tables:
            ab = self.alphas_cumprod
            self._tables[key] = (ab.sqrt().to(*key), (1.0 - ab).sqrt().to(*key))
        sqrt_ab, sqrt_1m_ab = self._tables[key]
        t = torch.as_tensor(t, device=like.device)
        if t.ndim == 0:
            t = t.expand(like.shape[0])
        if t.is_floating_point():
            t = t.round()
        index = t.long().clamp(0, self.num_train_timesteps - 1)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return sqrt_ab[index].view(shape), sqrt_1m_ab[index].view(shape)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` at integer timesteps ``t``."""
        ab = self.alphas_cumprod.to(device=torch.as_tensor(t).device)[torch.as_tensor(t).long()]
        return (ab / (1.0 - ab)).float()

    # ---------------------------------------------------------------------------- forward process

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise ``x0`` to timesteps ``t``: ``a_t x0 + s_t noise`` (diffusers' ``add_noise``)."""
        a, s = self.coefficients(t, x0)
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the model should output for ``x_t = q_sample(x0, t, noise)``."""
        kind = self.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "sample":
            return x0
        a, s = self.coefficients(t, x0)
        return a * noise - s * x0

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """The clean video implied by a model ``prediction`` at ``x_t``."""
        kind = self.prediction_type
        if kind == "sample":
            return prediction
        a, s = self.coefficients(t, x_t)
        if kind == "epsilon":
            return (x_t - s * prediction) / a
        return a * x_t - s * prediction

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """The noise implied by a model ``prediction`` at ``x_t``."""
        kind = self.prediction_type
        if kind == "epsilon":
            return prediction
        a, s = self.coefficients(t, x_t)
        if kind == "sample":
            return (x_t - a * prediction) / s
        return s * x_t + a * prediction

    def velocity_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The v-prediction that gives ``x0`` at ``x_t``: ``(a_t x_t - x0) / s_t`` (stable at both ends)."""
        a, s = self.coefficients(t, x_t)
        return (a * x_t - x0) / s

    # --------------------------------------------------------------------------------------- loss

    def timestep_probabilities(self) -> torch.Tensor:
        """``(num_train_timesteps,)`` probabilities of drawing each training timestep (``timestep_bias``)."""
        c, n = self.config, self.num_train_timesteps
        weights = torch.ones(n, dtype=torch.float64)
        if c.timestep_bias != "none":
            k = max(1, round(c.timestep_bias_portion * n))
            part = slice(n - k, n) if c.timestep_bias == "later" else slice(0, k)
            weights[part] *= c.timestep_bias_multiplier
        return weights / weights.sum()

    def sample_timesteps(
        self, batch: int, generator: Optional[torch.Generator] = None, device: torch.device | str = "cpu", step: Optional[int] = None
    ) -> torch.Tensor:
        """``(batch,)`` training timesteps drawn from ``generator``: uniform, or biased by ``timestep_bias``
        (at training ``step`` below ``timestep_bias_steps``, when that is set)."""
        c = self.config
        ended = c.timestep_bias_steps is not None and step is not None and step >= c.timestep_bias_steps
        if c.timestep_bias == "none" or c.timestep_bias_multiplier == 1 or ended:
            return _draw(lambda d: torch.randint(0, self.num_train_timesteps, (batch,), generator=generator, device=d), generator, device)
        probs = self.timestep_probabilities()
        return _draw(lambda d: torch.multinomial(probs.to(d), batch, replacement=True, generator=generator), generator, device)

    def training_timesteps(
        self, shape: tuple[int, ...], generator: Optional[torch.Generator], device: torch.device | str, step: Optional[int]
    ) -> torch.Tensor:
        """The timesteps `loss` draws for a batch of videos of ``shape`` (B, C, T, H, W)."""
        return self.sample_timesteps(shape[0], generator, device, step)

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Per-item weights (B,): min-SNR-gamma relative to the target, or ones."""
        gamma = self.config.min_snr_gamma
        if gamma is None:
            return torch.ones(t.shape[0], device=t.device)
        snr = self.snr(t)
        clipped = snr.clamp(max=gamma)
        if self.prediction_type == "epsilon":
            return clipped / snr.clamp(min=1e-12)
        if self.prediction_type == "v_prediction":
            return clipped / (snr + 1.0)
        return clipped

    def random_frame_masks(
        self, batch: int, frames: int, device: torch.device | str = "cpu", generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """(B, T) bool masks of given frames, drawn per item with ``frame_mask_prob`` and ``mask_tasks``.

        image_to_video: frame 0; prediction: the first k frames (k uniform in 1..T-1);
        interpolation: the first and the last frame. Items without a task (or T < 2) get no given frame.
        """
        masks = torch.zeros(batch, frames, dtype=torch.bool)
        prob = self.config.frame_mask_prob
        if prob <= 0 or frames < 2:
            return masks.to(device)
        tasks = [t for t in MASK_TASKS if self.config.mask_tasks.get(t, 0) > 0 and (t != "interpolation" or frames >= 3)]
        if not tasks:
            return masks.to(device)
        gen_device = generator.device if generator is not None else "cpu"
        chosen = torch.rand(batch, generator=generator, device=gen_device).cpu() < prob
        weights = torch.tensor([self.config.mask_tasks[t] for t in tasks], dtype=torch.float64)
        task_ids = torch.multinomial(weights.to(gen_device), batch, replacement=True, generator=generator).cpu()
        ks = torch.randint(1, frames, (batch,), generator=generator, device=gen_device).cpu()
        for i in range(batch):
            if not chosen[i]:
                continue
            task = tasks[int(task_ids[i])]
            if task == "image_to_video":
                masks[i, 0] = True
            elif task == "prediction":
                masks[i, : int(ks[i])] = True
            else:
                masks[i, 0] = masks[i, -1] = True
        return masks.to(device)

    def loss(
        self,
        model: Any,
        x0: torch.Tensor,
        cond: Optional[Conditioning] = None,
        *,
        generator: Optional[torch.Generator] = None,
        t: Optional[torch.Tensor] = None,
        step: Optional[int] = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss of ``model`` on clean videos ``x0`` (B, C, T, H, W) under ``cond``.

        Draws timesteps (unless ``t`` is given), noise and frame masks from ``generator`` (the text is dropped
        for guidance training by the caller, through ``cond.null_text``: the trainer's ``train.cond_drop``);
        ``step`` (the training step) ends a ``timestep_bias`` limited to ``timestep_bias_steps``.
        Returns the scalar loss and detached statistics (scalar tensors; no device sync).
        """
        if x0.ndim != 5:
            raise ConfigError(f"loss expects videos (B, C, T, H, W), got shape {tuple(x0.shape)}")
        cond = cond if cond is not None else Conditioning()
        b, _, frames = x0.shape[:3]
        device = x0.device
        if t is None:
            t = self.training_timesteps(x0.shape, generator, device, step)
        noise = _draw(lambda d: torch.randn(x0.shape, generator=generator, device=d, dtype=x0.dtype), generator, device)
        if self.config.offset_noise > 0:
            offset = _draw(lambda d: torch.randn(b, x0.shape[1], 1, 1, 1, generator=generator, device=d, dtype=x0.dtype), generator, device)
            noise = noise + self.config.offset_noise * offset

        dropped = torch.zeros(b, dtype=torch.bool, device=device) if cond.null_text is None else cond.null_text.to(device)

        if cond.frame_mask is not None:
            given = cond.frame_mask.to(device=device, dtype=torch.bool)
        else:
            given = self.random_frame_masks(b, frames, device, generator)
            if bool(given.any()):
                image = x0 * given[:, None, :, None, None].to(x0.dtype)
                cond = _with_fields(cond, image=image, frame_mask=given)
        if given.shape != (b, frames):
            raise ConfigError(f"frame_mask has shape {tuple(given.shape)}; expected (batch, frames) = ({b}, {frames})")

        x_t = self.q_sample(x0, t, noise)
        prediction = denoise(model, x_t, t, cond)
        if prediction.shape != x0.shape:
            raise ConfigError(
                f"the model returned shape {tuple(prediction.shape)} for input {tuple(x0.shape)}; forward_cond must "
                "return the prediction in the input's shape"
            )
        target = self.target(x0, noise, t)
        element = self._elementwise(prediction.float(), target.float())
        keep = (~given).to(element.dtype)[:, None, :, None, None].expand_as(element)
        per_item = (element * keep).flatten(1).sum(1) / keep.flatten(1).sum(1).clamp(min=1.0)
        weights = self.loss_weights(t).to(per_item)
        loss = (per_item * weights).mean()
        stats = {
            "loss": loss.detach(),
            "loss_unweighted": per_item.detach().mean(),
            "t_mean": t.detach().float().mean(),
            "text_dropped": dropped.float().mean(),
            "given_frames": given.float().mean(),
        }
        return loss, stats

    def _elementwise(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kind = self.config.loss_type
        if kind == "l1":
            return (prediction - target).abs()
        if kind == "l2":
            return (prediction - target) ** 2
        return F.huber_loss(prediction, target, reduction="none", delta=self.config.huber_delta)

    # -------------------------------------------------------------------------------- schedulers

    def to_scheduler_config(self) -> dict[str, Any]:
        """A diffusers scheduler config describing this schedule and prediction type."""
        c = self.config
        return {
            "num_train_timesteps": c.num_train_timesteps,
            "beta_schedule": BETA_SCHEDULES[c.beta_schedule],
            "beta_start": c.beta_start,
            "beta_end": c.beta_end,
            "prediction_type": c.prediction_type,
            "rescale_betas_zero_snr": c.rescale_zero_terminal_snr,
            "timestep_spacing": "trailing",
            "steps_offset": 0,
        }

    def make_scheduler(self, name: str, **overrides: Any) -> Any:
        """The diffusers scheduler of sampler ``name`` (see `SAMPLERS`) on this schedule."""
        return build_scheduler(SAMPLERS, name, self.to_scheduler_config(), overrides)

    # ------------------------------------------------------------------- what the sampler loop asks

    def sampling_scheduler(self, name: str, shape: Optional[tuple[int, ...]] = None) -> Any:
        """The scheduler the sampling loop drives for sampler ``name``: it is always handed a v-prediction
        (computed from the loop's processed x0), whatever the model predicts. ``shape`` is unused here."""
        return self.make_scheduler(name, prediction_type="v_prediction")

    def check_scheduler_config(self, scheduler_config: Mapping[str, Any]) -> None:
        """Whether a model trained with this objective samples with a pretrained model's own diffusers
        ``scheduler_config`` (the diffusion objective does; `ConfigError` otherwise)."""

    def native_scheduler(self, scheduler_config: Mapping[str, Any], name: str) -> Any:
        """The scheduler of sampler ``name`` on a pretrained model's own diffusers ``scheduler_config``
        (`text2video.diffusion.schedule.scheduler_from_config`): it steps with the model's prediction type."""
        self.check_scheduler_config(scheduler_config)
        return scheduler_from_config(dict(scheduler_config), name)

    def plan_timesteps(self, scheduler: Any, start: int) -> torch.Tensor:
        """The timesteps the model sees at the steps from ``start`` on (the scheduler's, as whole numbers)."""
        return scheduler.timesteps[start:].double().round()

    def timestep_batch(self, value: float | torch.Tensor, batch: int, device: torch.device | str) -> torch.Tensor:
        """``(batch,)`` model timesteps of value ``value`` in the dtype this objective trains with (long)."""
        return torch.full((batch,), int(round(float(value))), device=device, dtype=torch.long)

    def scheduler_output(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """What a scheduler built by `sampling_scheduler` steps with, for the processed ``x0`` at ``x_t``."""
        return self.velocity_from_x0(x_t, t, x0)

    def exact_last_step(self, sampler: str) -> bool:
        """Whether the loop ends on the predicted x0 instead of the scheduler's last step: diffusers' DDIM
        steps to ``t - T // steps``, which is not the clean end when steps does not divide T."""
        return resolve_sampler(sampler) == "ddim"


def build_scheduler(
    table: Mapping[str, tuple[str, Mapping[str, Any]]], name: str, base: Mapping[str, Any], overrides: Mapping[str, Any]
) -> Any:
    """The diffusers scheduler of sampler ``name`` in ``table`` (name -> (class name, settings)): ``base``
    (the schedule), then the row's settings, then ``overrides``; options the class does not take are left out."""
    import diffusers

    key = resolve_sampler(name)
    class_name, settings = table[key]
    cls = getattr(diffusers, class_name)
    merged = {**base, **settings, **overrides}
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in merged.items() if k in accepted})


def _draw(fn: Any, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """Run ``fn(device)`` on the generator's device (so a CPU generator works for GPU data), move to ``device``."""
    source = generator.device if generator is not None else device
    return fn(source).to(device)


def _with_fields(cond: Conditioning, **values: Any) -> Conditioning:
    from dataclasses import replace

    return replace(cond, **values)
