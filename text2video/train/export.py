"""From a run folder to a pipeline: the model of a checkpoint (EMA weights by default) with the run's
text encoder, objective and sampling defaults; `export_run` writes it as a pipeline folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..config import Config, config_from_dict, objective_config
from ..errors import CheckpointError
from .checkpoint import load_weights, resolve_checkpoint

RUN_CONFIG = "config.yaml"


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / RUN_CONFIG).is_file() and (path / "checkpoints").is_dir()


def read_run_config(run_dir: str | Path) -> Config:
    import yaml

    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run folder: it has no {RUN_CONFIG} (train into it with `text2video train`)")
    return config_from_dict(yaml.safe_load(path.read_text()) or {})


def pipeline_defaults(config: Config) -> dict[str, Any]:
    s, d = config.sample, config.data
    return {
        "num_frames": s.num_frames or d.num_frames,
        "height": s.size or d.size,
        "width": s.size or d.size,
        "channels": int(config.model.kwargs.get("channels", 3) or 3),
        "fps": s.fps,
        "steps": s.steps,
        "sampler": s.sampler,
        "guidance_scale": s.guidance_scale,
        "negative_prompt": s.negative_prompt,
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
    from ..pipelines import PIPELINES
    from ..text import load_text_encoder
    from .trainer import build_configured_model

    config = read_run_config(run_dir)
    path = resolve_checkpoint(checkpoint, run_dir)
    if text_encoder is None:
        kwargs = {} if config.text.max_length is None else {"max_length": config.text.max_length}
        text_encoder = load_text_encoder(config.text.encoder, **kwargs)
    model = build_configured_model(config, getattr(text_encoder, "dim", None))
    weights = path / ("ema.safetensors" if use_ema else "model.safetensors")
    if not weights.is_file():
        weights = path / "model.safetensors"
    load_weights(model, weights)
    model.eval()
    cls = PIPELINES[kind]
    pipe = cls(model, text_encoder, objective_config(config, for_training=False), pipeline_defaults(config),
               text_encoder_ref=config.text.encoder)  # fmt: skip
    if device is not None:
        pipe.to(device)
    return pipe


def export_run(run_dir: str | Path, out: str | Path, checkpoint: str | Path = "latest", *, use_ema: bool = True) -> Path:
    """Write the pipeline folder of a run's checkpoint (EMA weights by default) to ``out``."""
    pipe = pipeline_from_run(run_dir, checkpoint, use_ema=use_ema)
    return pipe.save_pretrained(out)


def load_any_pipeline(path: str | Path, kind: Optional[str] = None, **kwargs: Any) -> Any:
    """A pipeline from a pipeline folder or a run folder (its latest checkpoint, EMA weights)."""
    if is_run_dir(path):
        return pipeline_from_run(path, kind=kind or "TextToVideoPipeline", **kwargs)
    from ..pipelines import load_pipeline

    return load_pipeline(path, kind, **kwargs)
