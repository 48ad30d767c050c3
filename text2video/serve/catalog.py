"""The models a server offers: names for the picker, folders, pipelines loaded on first use, and a summary.

Every model goes through `text2video.load_pipeline`, so whatever it can load (pipeline, run and checkpoint
folders, diffusers pipeline folders, a video-diffusion-pytorch ``.pt``, Hub ids) can be served, with the
loading options given (``dtype``, ``offload``, ``motion_adapter``, ...; the same for every model). A model is
loaded once, on the device given, and shared by every tab; image-to-video and interpolation use the same
weights.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

__all__ = ["ModelCatalog", "find_model_folders", "describe_pipeline", "looks_like_model_folder"]

#: Files that mark a folder `load_pipeline` can read: a pipeline folder, a diffusers pipeline folder.
_MARKERS = ("pipeline.json", "model_index.json")


def looks_like_model_folder(path: Path) -> bool:
    """A pipeline folder, a diffusers pipeline folder, or a training run folder."""
    from ..runs.folder import is_run_dir

    return any((path / marker).is_file() for marker in _MARKERS) or is_run_dir(path)


def find_model_folders(models_dir: str | Path) -> list[Path]:
    """The model folders directly inside ``models_dir``, sorted by name."""
    root = Path(models_dir)
    if not root.is_dir():
        raise CheckpointError(f"models folder {root} does not exist; give a folder that holds pipeline or run folders")
    if looks_like_model_folder(root):
        raise ConfigError(f"{root} is itself a model folder; serve it with --model {root}")
    found = sorted(p for p in root.iterdir() if p.is_dir() and looks_like_model_folder(p))
    if not found:
        raise CheckpointError(
            f"no model folder in {root}: put pipeline folders (text2video export) or run folders (text2video train) in it"
        )
    return found


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """Folder names, with the parent folder added where two are alike."""
    plain = [p.name or str(p) for p in paths]
    names = [f"{p.parent.name}/{name}" if plain.count(name) > 1 else name for p, name in zip(paths, plain)]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):  # still alike: number them
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name} ({seen[name]})"
    return names


def _parameter_count(module: Any) -> Optional[int]:
    try:
        return sum(p.numel() for p in module.parameters())
    except (AttributeError, TypeError):
        return None


def describe_pipeline(pipe: Any, path: Optional[Path] = None) -> dict[str, Any]:
    """What a person choosing a model wants to know: its kind, size, text encoder, space and defaults."""
    from .limits import limits_for

    model = pipe.model
    cls = type(model)
    encoder = pipe.text_encoder
    vae = getattr(pipe, "vae", None)
    limits = limits_for(pipe)
    facts: dict[str, Any] = {
        "path": str(path) if path is not None else None,
        "pipeline": type(pipe).__name__,
        "model": cls.__name__,
        "parameters": _parameter_count(model),
        "text_encoder": None
        if encoder is None
        else {
            "name": getattr(pipe, "text_encoder_ref", None) or getattr(encoder, "id", None),
            "dim": getattr(encoder, "dim", None),
        },
        "space": "pixels" if vae is None else f"latents (VAE, {getattr(vae, 'downsample_factor', '?')}x smaller)",
        "device": str(pipe.device),
        "takes_fps": limits.takes_fps,
        "size_multiple": int(limits.height.step),
        "defaults": asdict(pipe.defaults),
        "objective": getattr(getattr(pipe, "objective_config", None), "objective", None),
        "lora": dict(getattr(pipe, "lora_scales", {}) or {}),
    }
    if vae is not None:
        facts["vae_parameters"] = _parameter_count(vae)
    return facts


class ModelCatalog:
    """Named model folders; `pipeline` loads one on first use (thread-safe) and keeps it."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        device: Optional[str] = None,
        options: Optional[dict[str, Any]] = None,
        loras: Sequence[tuple[str, float]] = (),
    ) -> None:
        from ..pipelines.pretrained.detect import detect_local
        from ..pipelines.pretrained.hub import looks_like_hub_id

        paths = [Path(p) for p in paths]
        if not paths:
            raise ConfigError("no model to serve: give --model FOLDER (repeatable) or --models-dir DIR")
        for path in paths:
            if path.exists():
                detect_local(path)  # a folder or file load_pipeline cannot read: its one-line error now, not on first use
            elif not looks_like_hub_id(str(path)):
                raise CheckpointError(f"model folder {path} does not exist; give a local folder or file, or a Hugging Face Hub id")
        self.names = _unique_names(paths)
        self.paths = dict(zip(self.names, paths))
        self.device = device
        #: keyword arguments of `load_pipeline` for every model (dtype, offload, motion_adapter, ...)
        self.options = {k: v for k, v in (options or {}).items() if v is not None}
        self.loras = list(loras)  # (path, scale) of the LoRA adapters merged into every served model
        self._pipelines: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_args(
        cls,
        models: Sequence[str] = (),
        models_dir: Optional[str] = None,
        device: Optional[str] = None,
        options: Optional[dict[str, Any]] = None,
        loras: Sequence[str] = (),
    ) -> ModelCatalog:
        """``--model`` folders first, then the model folders found in ``--models-dir``; ``--lora PATH[:SCALE]``."""
        from ..pipelines.lora import parse_lora_spec

        paths = [Path(m) for m in models]
        if models_dir:
            paths += [p for p in find_model_folders(models_dir) if p not in paths]
        return cls(paths, device=device, options=options, loras=[parse_lora_spec(spec) for spec in loras])

    def spec(self, name: str) -> str:
        """Model ``name`` as the command line takes it: its absolute path, or its Hub id."""
        path = self.paths[name]
        return str(path.resolve()) if path.exists() else str(path)

    def option_flags(self) -> list[str]:
        """The loading options as the command line's flags (``dtype="float16"`` -> ``--dtype float16``), then
        the adapters (``--lora PATH:SCALE``)."""
        flags: list[str] = []
        for key, value in self.options.items():
            if value is False or (key == "offload" and value == "off"):
                continue
            flags.append("--" + key.replace("_", "-"))
            if value is not True:
                flags.append(str(value))
        for path, scale in self.loras:
            flags += ["--lora", f"{Path(path).expanduser().resolve()}:{scale:g}"]
        return flags

    @property
    def default(self) -> str:
        return self.names[0]

    def resolve_device(self) -> str:
        import torch

        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def check_name(self, name: Optional[str]) -> str:
        """``name``, or the first model when empty; a `ConfigError` naming the choices when unknown."""
        name = name or self.default
        if name not in self.paths:
            raise ConfigError(f"no model named {name!r} is served; choose one of: {', '.join(self.names)}")
        return name

    def pipeline(self, name: Optional[str] = None, kind: str = "TextToVideoPipeline") -> Any:
        """The loaded pipeline of model ``name``; ``kind="InterpolationPipeline"`` gives the one for given
        frames (first frame, first and last, two videos), sharing the weights."""
        name = self.check_name(name)
        key = (name, kind)
        with self._lock:
            if key not in self._pipelines:
                self._pipelines[key] = self._load(name, kind)
            return self._pipelines[key]

    def _load(self, name: str, kind: str) -> Any:
        from ..pipelines import PIPELINES, load_pipeline

        base_key = (name, "TextToVideoPipeline")
        base = self._pipelines.get(base_key)
        if base is None:
            logger.info("loading model %s from %s", name, self.paths[name])
            base = load_pipeline(self.paths[name], device=self.resolve_device(), lora=self.loras, **self.options)
            self._pipelines[base_key] = base
        if kind == "TextToVideoPipeline" or type(base).__name__ == kind:
            return base
        cls = PIPELINES.get(kind)
        if cls is None:
            raise ConfigError(f"unknown pipeline {kind!r}; choose one of: {', '.join(PIPELINES)}")
        if type(base) in PIPELINES.values():  # one of ours: the same weights behind another interface
            return base.as_pipeline(cls)
        return load_pipeline(self.paths[name], kind, device=self.resolve_device(), **self.options)

    def describe(self, name: Optional[str] = None) -> dict[str, Any]:
        name = self.check_name(name)
        return {"name": name, **describe_pipeline(self.pipeline(name), self.paths[name])}
