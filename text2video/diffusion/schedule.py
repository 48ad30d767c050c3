"""Noise schedules (betas) and the names of the samplers built on them.

A schedule is the sequence ``beta_0 .. beta_{T-1}``; everything else (``alpha_bar``, SNR) follows from it.
The three schedules are the ones diffusers knows by the same names, so a diffusers scheduler built from
`DiffusionObjective.to_scheduler_config` walks exactly the chain the model was trained on.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

import torch

from ..errors import ConfigError

#: schedule name -> name diffusers uses for the same schedule.
BETA_SCHEDULES: MappingProxyType[str, str] = MappingProxyType(
    {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
)
#: accepted spellings that map onto a schedule name.
BETA_SCHEDULE_ALIASES: MappingProxyType[str, str] = MappingProxyType({"squaredcos_cap_v2": "cosine"})

#: Largest beta of the cosine schedule. text2video-from-scratch clips at 0.9999, diffusers at 0.999; with 1000 steps only
#: the very last beta differs. We follow diffusers so that its schedulers agree with our objective.
COSINE_MAX_BETA = 0.999
COSINE_OFFSET = 0.008


def cosine_alpha_bar(u: float) -> float:
    """The cosine schedule's ``alpha_bar`` at continuous time ``u`` in [0, 1] (Nichol & Dhariwal 2021)."""
    return math.cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2


def make_betas(schedule: str, num_train_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Betas of ``schedule`` (linear | scaled_linear | cosine) as a float64 tensor of length T."""
    schedule = BETA_SCHEDULE_ALIASES.get(schedule, schedule)
    n = num_train_timesteps
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    if schedule == "cosine":
        betas = [min(1 - cosine_alpha_bar((i + 1) / n) / cosine_alpha_bar(i / n), COSINE_MAX_BETA) for i in range(n)]
        return torch.tensor(betas, dtype=torch.float64)
    raise ConfigError(f"unknown beta_schedule {schedule!r}; choose one of: {', '.join(BETA_SCHEDULES)}")


def rescale_to_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale ``sqrt(alpha_bar)`` so the last step is pure noise (Lin et al. 2023, algorithm 1).

    The first ``alpha_bar`` is kept; the last becomes exactly 0 (infinite noise, zero SNR).
    """
    root = torch.cumprod(1.0 - betas.double(), dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    alpha_bar = root**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1.0 - alphas


# ----------------------------------------------------------------------------------------- samplers

#: sampler name -> (diffusers scheduler class, settings). Every sampler runs on "trailing" timesteps, so the
#: first step starts at the last training timestep whatever the number of steps.
SAMPLERS: MappingProxyType[str, tuple[str, MappingProxyType[str, Any]]] = MappingProxyType(
    {
        "ddpm": ("DDPMScheduler", MappingProxyType({"variance_type": "fixed_small", "clip_sample": False})),
        "ddim": ("DDIMScheduler", MappingProxyType({"clip_sample": False, "set_alpha_to_one": True})),
        "dpmpp_2m": (
            "DPMSolverMultistepScheduler",
            MappingProxyType({"algorithm_type": "dpmsolver++", "solver_order": 2, "final_sigmas_type": "zero"}),
        ),
        "euler": ("EulerDiscreteScheduler", MappingProxyType({})),
        "euler_ancestral": ("EulerAncestralDiscreteScheduler", MappingProxyType({})),
        "unipc": ("UniPCMultistepScheduler", MappingProxyType({"solver_order": 2})),
    }
)
_FLOW_SIGMAS = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "final_sigmas_type": "zero"}
#: stochastic sampling on a flow model: SDE-DPM-Solver++ (first order), correct for any Gaussian path
_FLOW_SDE = ("DPMSolverMultistepScheduler", MappingProxyType({**_FLOW_SIGMAS, "algorithm_type": "sde-dpmsolver++", "solver_order": 1}))
#: The same sampler names on a rectified-flow model (``objective: flow``): diffusers' flow-matching Euler and
#: the flow variants of UniPC and DPM-Solver++ (``use_flow_sigmas``; the loop hands them a velocity). On a
#: straight path the deterministic DDIM update is exactly the Euler step; DDPM and Euler ancestral become the
#: stochastic SDE-DPM-Solver++.
FLOW_SAMPLERS: MappingProxyType[str, tuple[str, MappingProxyType[str, Any]]] = MappingProxyType(
    {
        "ddpm": _FLOW_SDE,
        "ddim": ("FlowMatchEulerDiscreteScheduler", MappingProxyType({})),
        "dpmpp_2m": ("DPMSolverMultistepScheduler", MappingProxyType({**_FLOW_SIGMAS, "algorithm_type": "dpmsolver++", "solver_order": 2})),
        "euler": ("FlowMatchEulerDiscreteScheduler", MappingProxyType({})),
        "euler_ancestral": _FLOW_SDE,
        "unipc": ("UniPCMultistepScheduler", MappingProxyType({**_FLOW_SIGMAS, "solver_order": 2})),
    }
)
#: other spellings accepted for a sampler name.
SAMPLER_ALIASES: MappingProxyType[str, str] = MappingProxyType(
    {
        "dpm++2m": "dpmpp_2m",
        "dpm_solver++": "dpmpp_2m",
        "dpmsolver++": "dpmpp_2m",
        "euler_a": "euler_ancestral",
        "uni_pc": "unipc",
    }
)


def resolve_sampler(name: str) -> str:
    """The canonical name of sampler ``name``; `ConfigError` listing the choices when unknown."""
    key = str(name).lower().replace("-", "_")
    key = SAMPLER_ALIASES.get(key, key)
    if key not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return key


# ------------------------------------------------------------------------- pretrained schedulers

#: settings a sampler brings when its scheduler is built from another scheduler's config (a pretrained
#: model's): the solver itself, never the schedule (spacing, offsets, clipping stay the model's).
_SOLVER_SETTINGS: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        "ddpm": MappingProxyType({"variance_type": "fixed_small"}),
        "dpmpp_2m": MappingProxyType({"algorithm_type": "dpmsolver++", "solver_order": 2}),
        "unipc": MappingProxyType({"solver_order": 2}),
    }
)


def sampler_for_scheduler(class_name: str | None) -> str | None:
    """Our sampler name of a diffusers scheduler class name (None when we have no sampler of that class)."""
    for key, (name, _) in SAMPLERS.items():
        if name == class_name:
            return key
    return None


def scheduler_from_config(config: dict[str, Any], sampler: str) -> Any:
    """The diffusers scheduler of ``sampler`` on a pretrained model's scheduler ``config`` (a dict with
    ``_class_name``). The model's own class is rebuilt from its config unchanged; another sampler takes
    the schedule from the config and only its solver settings from us."""
    import diffusers

    key = resolve_sampler(sampler)
    class_name = SAMPLERS[key][0]
    cls = getattr(diffusers, class_name)
    if config.get("_class_name") == class_name:
        return cls.from_config(dict(config))
    return cls.from_config(dict(config), **_SOLVER_SETTINGS.get(key, {}))


def objective_settings_from_scheduler(config: dict[str, Any]) -> dict[str, Any]:
    """`ObjectiveConfig` fields (schedule and prediction type) of a diffusers scheduler config; a
    `ConfigError` names what text2video's objective cannot express."""
    if config.get("trained_betas") is not None:
        raise ConfigError(
            "the scheduler config lists trained_betas; text2video's objective supports linear, scaled_linear and cosine schedules"
        )
    schedule = config.get("beta_schedule", "linear")
    schedule = BETA_SCHEDULE_ALIASES.get(schedule, schedule)
    if schedule not in BETA_SCHEDULES:
        raise ConfigError(f"the scheduler config's beta_schedule {schedule!r} is not supported; use one of: {', '.join(BETA_SCHEDULES)}")
    return {
        "num_train_timesteps": int(config.get("num_train_timesteps", 1000)),
        "beta_schedule": schedule,
        "beta_start": float(config.get("beta_start", 0.0001)),
        "beta_end": float(config.get("beta_end", 0.02)),
        "prediction_type": str(config.get("prediction_type", "epsilon")),
        "rescale_zero_terminal_snr": bool(config.get("rescale_betas_zero_snr", False)),
    }
