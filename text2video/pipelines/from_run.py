"""From a run folder to a pipeline: the model of a checkpoint (EMA weights by default) with the run's
text encoder, VAE (latent runs), objective and sampling defaults; `export_run` writes it as a pipeline
folder (with ``vae/`` for a latent run). A LoRA run's model is its base (``train.init_from``) with the
checkpoint's adapter merged into the weights; a pretrained diffusers base's own scheduler comes along when
the run trained with the diffusion objective on its schedule (`text2video.pipelines.initial.base_scheduler_config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..config import Config, objective_config
from ..runs.checkpoint import load_weights, open_checkpoint
from ..runs.folder import is_run_dir, read_run_config, run_of_checkpoint

__all__ = ["export_run", "is_run_dir", "pipeline_defaults", "pipeline_from_run", "read_run_config", "run_of_checkpoint"]


def pipeline_defaults(config: Config, vae: Any = None, channels: Optional[int] = None) -> dict[str, Any]:
    """The pipeline's defaults from the run's config; sizes and channels are the output's (pixels): the VAE's,
    else ``channels``, else the model's ``channels`` setting (3)."""
    s, d = config.sample, config.data
    if vae is not None:
        channels = int(vae.in_channels)
    elif channels is None:
        channels = d.channels
    height, width = s.hw(d)
    return {
        "num_frames": s.num_frames or d.num_frames,
        "height": height,
        "width": width,
        "channels": channels,
        "fps": s.fps,
        "steps": s.steps,
        "sampler": s.sampler,
        "guidance_scale": s.guidance_scale,
        "dynamic_threshold": s.dynamic_threshold,
        # max-length (pipeline-style) encoders take the empty prompt as the unconditional input
        "negative_prompt": s.negative_prompt if s.negative_prompt is not None or config.text.padding == "longest" else "",
    }


def pipeline_from_run(
    run_dir: str | Path,
    checkpoint: str | Path = "latest",
    *,
    use_ema: bool = True,
    text_encoder: Any = None,
    kind: str = "TextToVideoPipeline",
    device: Any = None,
) -> Any:
    """A pipeline (``kind``) built from a run folder's config and a checkpoint's weights."""
    from ..runs.build import build_configured_model
    from ..runs.vae import load_run_vae
    from ..text import load_text_encoder
    from . import PIPELINES

    config = read_run_config(run_dir)
    if config.text.unconditional:
        text_encoder = None
    elif text_encoder is None:
        kwargs = {} if config.text.max_length is None else {"max_length": config.text.max_length}
        if config.text.padding != "longest":
            kwargs["padding"] = config.text.padding
        text_encoder = load_text_encoder(config.text.encoder, **kwargs)
    vae = load_run_vae(config, run_dir, device, required_copy=True)
    model = build_configured_model(config, getattr(text_encoder, "dim", None), vae=vae, text_encoder=text_encoder)
    scheduler_config = None
    # a run still training may prune the checkpoint ``latest`` names: it cannot while it is open here
    with open_checkpoint(checkpoint, run_dir) as path:
        if config.train.lora is not None:
            scheduler_config = _load_lora_run(model, config, path, use_ema, text_encoder)
        else:
            weights = path / ("ema.safetensors" if use_ema else "model.safetensors")
            if not weights.is_file():
                weights = path / "model.safetensors"
            load_weights(model, weights)
    model.eval()
    cls = PIPELINES[kind]
    ref = config.text.encoder if config.text.padding == "longest" else {"path": config.text.encoder, "padding": config.text.padding}
    if text_encoder is None:
        ref = None
    pipe = cls(model, text_encoder, objective_config(config), pipeline_defaults(config, vae),
               text_encoder_ref=ref, vae=vae, scheduler_config=scheduler_config)  # fmt: skip
    if device is not None:
        pipe.to(device)
    return pipe


def _load_lora_run(model: Any, config: Config, checkpoint: Path, use_ema: bool, text_encoder: Any) -> Optional[dict[str, Any]]:
    """The base of a LoRA run (``train.init_from``) with the checkpoint's adapter merged in; returns the base's
    own scheduler config (a pretrained diffusers base's) where the run trained on the chain it describes."""
    from ..models.lora import LoraSettings, add_lora, load_lora_weights, merge_lora
    from ..runs.checkpoint import EMA_LORA_WEIGHTS, LORA_WEIGHTS
    from .initial import base_scheduler_config, load_initial_weights

    found = load_initial_weights(model, config.train.init_from, text_encoder)
    add_lora(model, LoraSettings.from_dict(config.train.lora))
    weights = checkpoint / (EMA_LORA_WEIGHTS if use_ema else LORA_WEIGHTS)
    load_lora_weights(model, weights if weights.is_file() else checkpoint / LORA_WEIGHTS)
    merge_lora(model)
    model.requires_grad_(False)
    return base_scheduler_config(found, objective_config(config))


def export_run(run_dir: str | Path, out: str | Path, checkpoint: str | Path = "latest", *, use_ema: bool = True) -> Path:
    """Write the pipeline folder of a run's checkpoint (EMA weights by default) to ``out``."""
    pipe = pipeline_from_run(run_dir, checkpoint, use_ema=use_ema)
    return pipe.save_pretrained(out)
