"""Denoisers by name, built from a config or loaded from a ``save_pretrained`` folder."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

from torch import nn

from ..errors import ModelError

#: name -> "module:ClassName". Imported lazily so that ``import text2video`` stays light.
MODELS: MappingProxyType[str, str] = MappingProxyType(
    {
        "unet3d": "text2video.models.unet3d:Unet3D",
        "unet3d_condition": "text2video.models.unet3d_condition:UNet3DConditionModel",
        "stdit": "text2video.models.stdit:STDiT",
        "diffuser_stdit": "text2video.models.stdit:DiffuserSTDiT",
        "unet_stic": "text2video.models.unet_stic:UNetSTIC",
        "segdit": "text2video.models.segdit:SegDiTTransformer2DModel",
    }
)


def model_class(name: str) -> type[nn.Module]:
    """The class registered under ``name`` (also accepts the class name itself)."""
    target = MODELS.get(name)
    if target is None:
        by_class = {v.split(":")[1]: v for v in MODELS.values()}
        target = by_class.get(name)
    if target is None:
        raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def available_models() -> list[str]:
    """Names of the registered models."""
    return list(MODELS)


def build_model(name: str, **config: Any) -> nn.Module:
    """Build the model ``name`` with keyword arguments ``config``; bad keys give a `ModelError`."""
    cls = model_class(name)
    try:
        return cls(**config)
    except TypeError as exc:
        raise ModelError(f"cannot build model {name!r} from config {sorted(config)}: {exc}") from exc


def load_model(path: str | Path, **kwargs: Any) -> nn.Module:
    """Load any denoiser saved with ``save_pretrained`` (safetensors) from ``path``."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{path} is not a model folder: it has no config.json (save one with model.save_pretrained)")
    class_name = json.loads(config_file.read_text()).get("_class_name")
    if not class_name:
        raise ModelError(f"{config_file} has no _class_name; it was not written by save_pretrained")
    return model_class(class_name).from_pretrained(str(path), **kwargs)
