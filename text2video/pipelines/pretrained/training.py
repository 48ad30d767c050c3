"""A training config that describes a pretrained diffusers model, to fine-tune it (in full or with LoRA):
``text2video info --model X --train-config base.yaml``, then ``text2video train --config base.yaml ...``.

The config names the model's own parts: its denoiser settings (the ``model`` section our
``UNet3DConditionModel`` is built from), its text encoder and VAE (the folder itself: its ``text_encoder/``,
``tokenizer/`` and ``vae/``), prompts encoded as its pipeline encodes them (``text.padding: max_length``),
its noise schedule and prediction type (``diffusion``), its default size and frame count (``data``), and
``train.init_from`` the model, whose weights the run starts from through `text2video.pipelines.load_pipeline`.
Only configs are read; no weights are loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ...errors import ConfigError
from .detect import detect_model

__all__ = ["training_config", "write_training_config"]

#: model settings left for the run to fill in (its frame size, in the VAE's latent space), not weights.
_RUN_FILLED = ("sample_size",)


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (YAML writes lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def training_config(spec: str | Path, *, revision: Optional[str] = None) -> dict[str, Any]:
    """The config sections (a nested dict, as in a YAML config) that fine-tune the diffusers model ``spec``
    (a ``TextToVideoSDPipeline`` or ``AnimateDiffPipeline`` folder, or a Hub id of one)."""
    from .diffusers_folder import read_parts

    source = detect_model(spec, revision=revision)
    if source.format == "diffusers-stable-diffusion":
        raise ConfigError(
            f"{spec} is {source.description}: convert it with its motion adapter first (text2video convert --from animatediff "
            f"{spec} --motion-adapter ADAPTER --out FOLDER), then train with train.init_from=FOLDER (docs/pretrained.md)"
        )
    if not source.format.startswith("diffusers-"):
        raise ConfigError(
            f"{spec} is {source.description}: a training config describes diffusers pipeline folders; a text2video run has its "
            "own (train --config RUN/config.yaml train.init_from=RUN)"
        )
    parts = read_parts(source)
    d = parts.defaults
    root = str(source.path.resolve())
    model = {k: _plain(v) for k, v in parts.model_config.items() if k not in _RUN_FILLED}
    diffusion = {k: v for k, v in parts.objective_config.items() if k != "cond_drop_prob"}  # guidance dropping: train.cond_drop
    data: dict[str, Any] = {"num_frames": d.num_frames}
    if d.height == d.width:
        data["size"] = d.height
    return {
        "data": data,
        "text": {"encoder": root, "padding": "max_length"},
        "latent": {"vae": root},
        "model": {"name": "unet3d_condition", **model},
        "diffusion": diffusion,
        "train": {"init_from": source.spec if source.hub_id else root},
        "sample": {"sampler": d.sampler, "steps": d.steps, "guidance_scale": d.guidance_scale, "negative_prompt": "", "fps": d.fps},
    }


def write_training_config(spec: str | Path, out: str | Path, *, revision: Optional[str] = None) -> Path:
    """Write `training_config` of ``spec`` as a YAML config file at ``out``; returns its path."""
    import yaml

    config = training_config(spec, revision=revision)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Fine-tune {spec}: its denoiser settings, text encoder, VAE, schedule and default size.\n"
        "# Add the data (data.kind, data.options) and, for a LoRA, train.lora.rank; see docs/finetuning.md.\n"
    )
    out.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return out
