"""``text2video info --model X``: what was detected and what a sample needs.

A diffusers folder is described from its configs alone (every part rebuilt on the meta device, no weights
read), so even a multi-gigabyte model answers in seconds; other formats are loaded. The memory estimate
is `estimate.estimate_memory` at the model's default size and frame count, with guidance on (two
denoiser rows per video) when the default guidance scale is not 1.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..estimate import ESTIMATE_DTYPES, TYPICAL_PROMPT_TOKENS, estimate_memory, parameter_count
from .detect import ModelSource, detect_model

GIB = 2**30


def _family(source: ModelSource, model: torch.nn.Module) -> str:
    from .diffusers_folder import FAMILIES
    from .vdp import FAMILY

    if source.format in FAMILIES:
        return FAMILIES[source.format]
    if source.format == "video-diffusion-pytorch":
        return FAMILY
    return f"text2video {type(model).__name__}"


def _vae_facts(vae: Optional[torch.nn.Module]) -> Optional[dict[str, Any]]:
    if vae is None:
        return None
    config = vae.config
    return {
        "class": type(vae).__name__,
        "latent_channels": int(config.latent_channels),
        "downsample_factor": 2 ** (len(config.block_out_channels) - 1),
        "scaling_factor": float(getattr(config, "scaling_factor", None) or 1.0),
        "parameters": parameter_count(vae),
    }


def _skeleton(source: ModelSource, options: dict[str, Any]) -> dict[str, Any]:
    """The parts of a diffusers folder, built on the meta device from their configs."""
    import diffusers
    import transformers

    from ...text.encoders import resolve_folder, resolve_max_length
    from .diffusers_folder import read_parts

    parts = read_parts(source, motion_adapter=options.get("motion_adapter"), clip_skip=options.get("clip_skip"))
    folder = resolve_folder(source.path)
    text_config = transformers.AutoConfig.from_pretrained(str(folder.model_dir), local_files_only=True, trust_remote_code=False)
    with torch.device("meta"):
        text_model = transformers.AutoModel.from_config(text_config)
        vae = diffusers.AutoencoderKL.from_config(diffusers.AutoencoderKL.load_config(str(source.path / "vae")))
    text = {"class": type(text_model).__name__, "width": int(text_config.hidden_size), "max_length": resolve_max_length(folder),
            "padding": "max_length", "clip_skip": options.get("clip_skip"), "parameters": parameter_count(text_model)}  # fmt: skip
    return {"model": parts.skeleton_model(), "text": text, "text_model": text_model, "vae": vae, "defaults": parts.defaults,
            "scheduler": parts.scheduler_config, "objective": parts.objective_config, "notes": parts.notes,
            "null_prompt": True}  # fmt: skip


def _loaded(spec: str, options: dict[str, Any]) -> dict[str, Any]:
    from .. import load_pipeline

    pipe = load_pipeline(spec, **options)
    encoder = pipe.text_encoder
    text = None
    if encoder is not None:
        inner = getattr(encoder, "inner", encoder)
        model = getattr(inner, "model", None)
        text = {"class": type(model).__name__ if model is not None else type(encoder).__name__, "width": int(encoder.dim),
                "max_length": int(getattr(encoder, "max_length", 0)) or None,
                "padding": "max_length" if hasattr(encoder, "null_prompt") else "longest",
                "parameters": parameter_count(model) if isinstance(model, torch.nn.Module) else None}  # fmt: skip
    return {"model": pipe.model, "text": text, "text_model": getattr(encoder, "model", None), "vae": pipe.vae.vae if pipe.vae is not None else None,
            "defaults": pipe.defaults, "scheduler": pipe.scheduler_config, "objective": pipe.objective.config.to_dict(), "notes": [],
            "null_prompt": hasattr(encoder, "null_prompt")}  # fmt: skip


def describe_model(spec: str, **options: Any) -> dict[str, Any]:
    """A JSON-ready description of model ``spec`` (see the module docstring); ``options`` as `text2video.pipelines.load_pipeline`'s."""
    from dataclasses import asdict

    revision = options.pop("revision", None)
    source = detect_model(spec, revision=revision)
    facts = _skeleton(source, options) if source.format.startswith("diffusers-") else _loaded(spec, {**options, "revision": revision})
    model, vae, d = facts["model"], facts["vae"], facts["defaults"]
    vae_facts = _vae_facts(vae)
    if vae_facts is not None:
        f = vae_facts["downsample_factor"]
        sample_shape = (1, vae_facts["latent_channels"], d.num_frames, d.height // f, d.width // f)
    else:
        sample_shape = (1, d.channels, d.num_frames, d.height, d.width)
    text = facts["text"]
    shape = None
    if text is not None:  # tokens per prompt: all of them when padded to the limit, else a typical prompt
        length = text["max_length"] or 77
        shape = (length if facts["null_prompt"] else min(length, TYPICAL_PROMPT_TOKENS), text["width"], text["width"])
    guidance = d.guidance_scale != 1.0 and text is not None
    memory = estimate_memory(model, sample_shape=sample_shape, guidance=guidance, text=shape,
                             text_model=facts["text_model"] if isinstance(facts["text_model"], torch.nn.Module) else None,
                             vae=vae, dtypes=ESTIMATE_DTYPES)  # fmt: skip
    params = {"denoiser": parameter_count(model), "text_encoder": (text or {}).get("parameters") or 0,
              "vae": (vae_facts or {}).get("parameters", 0)}  # fmt: skip
    params["total"] = sum(params.values())
    scheduler = facts["scheduler"]
    objective = facts["objective"]
    return {
        "model": str(spec),
        "format": source.format,
        "detected": source.description,
        "path": str(source.path),
        "family": _family(source, model),
        "denoiser": type(model).__name__,
        "parameters": params,
        "text_encoder": text,
        "vae": vae_facts,
        "defaults": asdict(d),
        "sampler": {
            "default": d.sampler,
            "objective": objective.get("objective", "diffusion"),
            "scheduler": (scheduler or {}).get("_class_name") or _own_scheduler(objective, d.sampler),
            "beta_schedule": objective.get("beta_schedule"),
            "prediction_type": objective.get("prediction_type"),
            "num_train_timesteps": objective.get("num_train_timesteps"),
            **({"timestep_spacing": scheduler.get("timestep_spacing")} if scheduler else {}),
        },
        "memory": {
            "sample": f"1 video of {d.num_frames}x{d.height}x{d.width}" + (", guidance on (2 denoiser rows)" if guidance else ""),
            **{name: _gib(entry) for name, entry in memory.items()},
        },
        "notes": facts["notes"],
    }


def _own_scheduler(objective: dict[str, Any], sampler: str) -> str:
    """The scheduler a model without a scheduler config of its own samples with (the objective's)."""
    if objective.get("objective") == "flow":
        from ...diffusion.schedule import FLOW_SAMPLERS, resolve_sampler

        return f"{FLOW_SAMPLERS[resolve_sampler(sampler)][0]} (rectified flow)"
    return "text2video trailing schedule"


def _gib(entry: dict[str, Any]) -> dict[str, Any]:
    """Bytes, and GiB rounded for reading, of one dtype's estimate."""
    out: dict[str, Any] = {}
    for key in ("total", "total_offload", "weights", "activations"):
        out[f"{key}_gib"] = round(entry[key] / GIB, 3)
    for key in ("total", "total_offload", "weights", "activations"):
        out[f"{key}_bytes"] = int(entry[key])
    out["parts_bytes"] = entry["parts"]
    return out
