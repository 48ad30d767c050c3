"""LoRA adapters on any denoiser, through PEFT: which layers, adding, saving, loading, merging, removing.

An adapter adds ``B @ A`` (rank ``r``, scaled by ``alpha / r``) beside chosen linear layers of a frozen
model. Targets by name:

* ``attention``: the attention projections of every family (``to_q``, ``to_k``, ``to_v``, ``to_out``,
  Unet3D's fused ``to_qkv`` / ``to_kv``, the image-attention ``to_k_image`` / ``to_v_image``);
* ``motion``: those projections inside the motion modules only (AnimateDiff's MotionLoRA);
* a list of module-name suffixes (``["to_q", "ff.proj_in"]``) for anything else.

``auto`` picks ``motion`` for a model with motion modules (an AnimateDiff-style `UNet3DConditionModel`)
and ``attention`` for every other one.

Adapters are saved as one safetensors file in the layout diffusers' ``load_lora_weights`` and PEFT read:
keys ``<prefix>.<module>.lora_A.weight`` / ``lora_B.weight`` (``prefix``: ``unet`` for the U-Nets,
``transformer`` for the DiTs) in diffusers' module names (for `UNet3DConditionModel`: those of diffusers'
``UNetMotionModel``), and the PEFT ``LoraConfig`` (rank, alpha, target modules) in the file's metadata
under ``lora_adapter_metadata``, as diffusers writes it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, ModelError

logger = logging.getLogger(__name__)

__all__ = [
    "LORA_FILE",
    "LoraSettings",
    "add_lora",
    "adapter_config",
    "adapter_names",
    "delete_lora",
    "load_lora",
    "load_lora_weights",
    "lora_state_dict",
    "merge_lora",
    "remove_lora",
    "restore_weights",
    "save_lora",
    "set_lora_scales",
    "set_lora_state_dict",
    "target_modules",
    "trainable_parameters",
]

#: the file name diffusers' ``save_lora_weights`` writes and ``load_lora_weights`` looks for in a folder.
LORA_FILE = "pytorch_lora_weights.safetensors"
METADATA_KEY = "lora_adapter_metadata"  # diffusers' key for the LoraConfig in the safetensors metadata
OUR_METADATA_KEY = "text2video"

_ATTENTION = ("to_q", "to_k", "to_v", "to_out", "to_qkv", "to_kv", "to_k_image", "to_v_image")
TARGET_SETS = ("auto", "attention", "motion")


@dataclass
class LoraSettings:
    """``train.lora``: rank, alpha (None: the rank, a scale of 1), dropout on the adapter's input and the
    targets (``auto`` | ``attention`` | ``motion`` | a list of module-name suffixes)."""

    rank: int = 8
    alpha: Optional[float] = None
    dropout: float = 0.0
    targets: Union[str, list[str]] = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"train.lora.rank must be a whole number >= 1, got {self.rank!r}")
        if self.alpha is not None and not (isinstance(self.alpha, (int, float)) and self.alpha > 0):
            raise ConfigError(f"train.lora.alpha must be positive or null (= the rank), got {self.alpha!r}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ConfigError(f"train.lora.dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.targets, str):
            if self.targets not in TARGET_SETS:
                raise ConfigError(
                    f"train.lora.targets {self.targets!r} is not a target set; choose one of {', '.join(TARGET_SETS)} "
                    "or give a list of module names such as [to_q, to_v]"
                )
        elif not (isinstance(self.targets, (list, tuple)) and self.targets and all(isinstance(t, str) and t for t in self.targets)):
            raise ConfigError(
                f"train.lora.targets must be {', '.join(TARGET_SETS)} or a non-empty list of module names, got {self.targets!r}"
            )
        else:
            self.targets = list(self.targets)

    @property
    def scale(self) -> float:
        return (self.alpha if self.alpha is not None else self.rank) / self.rank

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> LoraSettings:
        data = dict(data or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"unknown train.lora setting(s) {unknown}; known: {known}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ targets


def _has_motion_modules(model: nn.Module) -> bool:
    return any(".motion_modules." in f".{name}." for name, _ in model.named_modules())


def target_modules(model: nn.Module, targets: Union[str, list[str]] = "auto") -> list[str]:
    """Full names of the linear / convolution layers of ``model`` that ``targets`` selects."""
    if targets == "auto":
        targets = "motion" if _has_motion_modules(model) else "attention"
    if targets == "motion" and not _has_motion_modules(model):
        raise ConfigError(f"train.lora.targets = motion: {type(model).__name__} has no motion modules; use attention")
    suffixes = _ATTENTION if targets in ("attention", "motion") else tuple(targets)
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) or "base_layer" in name.split("."):
            continue
        if not any(name == s or name.endswith("." + s) for s in suffixes):
            continue
        if targets == "motion" and ".motion_modules." not in f".{name}.":
            continue
        names.append(name)
    if not names:
        raise ConfigError(f"train.lora.targets = {targets!r} selects no layer of {type(model).__name__}; name its linear layers")
    return names


def _prefix(model: nn.Module) -> str:
    """diffusers' component name for this model: ``unet`` for the U-Nets, ``transformer`` for the DiTs."""
    return "unet" if "unet" in type(model).__name__.lower() else "transformer"


def _key_maps(model: nn.Module) -> tuple[Callable[[str], str], Callable[[str], Optional[str]]]:
    """(ours -> diffusers, diffusers -> ours) for module and parameter names of ``model``'s family."""
    if type(model).__name__ == "UNet3DConditionModel":
        from .unet3d_condition_keys import diffusers_key, to_diffusers_key

        # ModelScope's layout (diffusers' UNet3DConditionModel: temporal convolutions, temp_attentions), else
        # AnimateDiff's (UNetMotionModel: motion_modules)
        modelscope = bool(getattr(getattr(model, "config", None), "temporal_conv", False))
        return (lambda key: to_diffusers_key(key, modelscope)), diffusers_key
    return (lambda key: key), (lambda key: key)


def _module_to_ours(to_ours: Callable[[str], Optional[str]], module: str) -> str:
    """Our name of a module named in an adapter's ``target_modules`` (the key maps work on parameter names)."""
    return str(to_ours(f"{module}.weight"))[: -len(".weight")]


# ------------------------------------------------------------------------------- add and inspect


def _lora_config(settings: LoraSettings, modules: list[str]) -> Any:
    from peft import LoraConfig

    alpha = settings.alpha if settings.alpha is not None else settings.rank
    return LoraConfig(
        r=settings.rank, lora_alpha=alpha, lora_dropout=float(settings.dropout), target_modules=modules, init_lora_weights=True
    )


def _inject(model: nn.Module, config: Any, name: str) -> None:
    from peft import inject_adapter_in_model

    if name in adapter_names(model):
        raise ConfigError(f"an adapter named {name!r} is already on the model; give another name or unload it first")
    inject_adapter_in_model(config, model, adapter_name=name)


def add_lora(model: nn.Module, settings: LoraSettings, name: str = "default") -> int:
    """Freeze ``model`` and add a trainable adapter ``name``; returns the number of trainable parameters."""
    modules = target_modules(model, settings.targets)
    model.requires_grad_(False)
    _inject(model, _lora_config(settings, modules), name)
    count = 0
    for param_name, param in model.named_parameters():
        trainable = f".{name}." in param_name and (".lora_A." in param_name or ".lora_B." in param_name)
        param.requires_grad_(trainable)
        count += param.numel() if trainable else 0
    logger.info("LoRA %r: rank %d on %d layers, %d trainable parameters", name, settings.rank, len(modules), count)
    return count


def _lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def adapter_names(model: nn.Module) -> list[str]:
    """Names of the adapters on ``model``, in the order they were added."""
    names: dict[str, None] = {}
    for _, layer in _lora_layers(model):
        names.update(dict.fromkeys(layer.lora_A.keys()))
    return list(names)


def adapter_config(model: nn.Module, name: str = "default") -> dict[str, Any]:
    """Rank, alpha and target layers of adapter ``name``, read from its layers."""
    layers = [(n, layer) for n, layer in _lora_layers(model) if name in layer.lora_A]
    if not layers:
        raise ModelError(f"the model has no LoRA adapter {name!r}; it has {adapter_names(model) or 'none'}")
    first = layers[0][1]
    return {"r": int(first.r[name]), "lora_alpha": float(first.lora_alpha[name]), "target_modules": [n for n, _ in layers]}


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_state_dict(model: nn.Module, name: str = "default") -> dict[str, torch.Tensor]:
    """Adapter ``name``'s weights in our module names (``<module>.lora_A.weight``), detached copies."""
    out = {}
    for key, value in model.state_dict().items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}.{name}."
            if marker in key:
                out[key.replace(marker, f".{part}.")] = value.detach().clone()
    if not out:
        raise ModelError(f"the model has no LoRA adapter {name!r}; it has {adapter_names(model) or 'none'}")
    return out


@torch.no_grad()
def set_lora_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], name: str = "default") -> None:
    """Load adapter weights (our names) into the adapter ``name`` already on ``model``; every key must fit."""
    expected = lora_state_dict(model, name)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"the adapter weights do not fit the model's adapter: missing {missing[:3]}, unexpected {unexpected[:3]}; "
            "were they saved with other train.lora targets or rank?"
        )
    params = dict(model.named_parameters())
    for key, value in state.items():
        part = "lora_A" if ".lora_A." in key else "lora_B"
        target = params[key.replace(f".{part}.", f".{part}.{name}.")]
        if target.shape != value.shape:
            raise CheckpointError(f"adapter weight {key} has shape {tuple(value.shape)}, the model's {tuple(target.shape)}: another rank?")
        target.copy_(value.to(target.dtype))


# ------------------------------------------------------------------------------------ save and load


def save_lora(model: nn.Module, path: str | Path, name: str = "default", state: Optional[Mapping[str, torch.Tensor]] = None) -> Path:
    """Write adapter ``name`` (or ``state``, weights in our names) of ``model`` as a diffusers/PEFT LoRA file:
    ``path`` is a ``.safetensors`` file or a folder (then ``path/pytorch_lora_weights.safetensors``)."""
    from safetensors.torch import save_file

    config = adapter_config(model, name)
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / LORA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    to_theirs, _ = _key_maps(model)
    prefix = _prefix(model)
    weights = state if state is not None else lora_state_dict(model, name)
    tensors = {f"{prefix}.{to_theirs(k)}": v.detach().contiguous().cpu() for k, v in weights.items()}
    lora_config = {
        "r": config["r"],
        "lora_alpha": config["lora_alpha"],
        "lora_dropout": 0.0,
        "target_modules": sorted(to_theirs(m) for m in config["target_modules"]),
        "bias": "none",
        "use_dora": False,
    }
    metadata = {
        "format": "pt",
        METADATA_KEY: json.dumps({f"{prefix}.{k}": v for k, v in lora_config.items()}, sort_keys=True),
        OUR_METADATA_KEY: json.dumps({"model_class": type(model).__name__, "prefix": prefix}),
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def read_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """(tensors, LoraConfig fields, prefix) of a LoRA file; the fields come from its metadata, or are
    inferred (rank from the shapes, alpha = rank) for files written without it."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a bad adapter
        raise CheckpointError(f"cannot read the LoRA file {path}: {exc}") from exc
    lora_keys = [k for k in tensors if ".lora_A." in k or ".lora_B." in k]
    if not lora_keys:
        raise CheckpointError(f"{path} holds no LoRA weights (no lora_A / lora_B keys)")
    ours = json.loads(metadata.get(OUR_METADATA_KEY, "{}"))
    prefix = ours.get("prefix") or lora_keys[0].split(".", 1)[0]
    packed = json.loads(metadata.get(METADATA_KEY, "{}"))
    fields_ = {k.removeprefix(f"{prefix}."): v for k, v in packed.items() if k.startswith(f"{prefix}.")}
    tensors = {k.removeprefix(f"{prefix}."): v for k, v in tensors.items() if k.startswith(f"{prefix}.")}
    if not fields_:
        ranks = {v.shape[0] for k, v in tensors.items() if ".lora_A." in k}
        modules = sorted({k.split(".lora_", 1)[0] for k in tensors})
        rank = max(ranks)
        fields_ = {"r": rank, "lora_alpha": rank, "target_modules": modules, "lora_dropout": 0.0}
    return tensors, fields_, prefix


def load_lora_weights(model: nn.Module, path: str | Path, name: str = "default") -> None:
    """Load the weights of a LoRA file into adapter ``name`` already on ``model`` (resuming, sampling a run)."""
    tensors, _, _ = read_lora_file(path)
    _, to_ours = _key_maps(model)
    try:
        set_lora_state_dict(model, {to_ours(k): v for k, v in tensors.items()}, name)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def load_lora(model: nn.Module, path: str | Path, name: str = "default") -> None:
    """Add the adapter of a LoRA file (ours, or one in diffusers' layout for this model) to ``model`` as
    ``name``; its weights must fit the model's layers."""
    from peft import LoraConfig

    if name in adapter_names(model):
        raise ConfigError(f"an adapter named {name!r} is already loaded; give another name or unload it first")
    tensors, config, prefix = read_lora_file(path)
    if prefix != _prefix(model):
        raise CheckpointError(
            f"{path} is an adapter for a {prefix} but the model is a {type(model).__name__}; use an adapter of this model"
        )
    _, to_ours = _key_maps(model)
    state = {to_ours(k): v for k, v in tensors.items()}
    modules = sorted({_module_to_ours(to_ours, m) for m in config["target_modules"]})
    have = dict(model.named_modules())
    absent = [m for m in modules if m not in have]
    if absent:
        raise CheckpointError(f"{path} adapts layers this {type(model).__name__} does not have ({absent[:3]}); is it for another model?")
    lora_config = LoraConfig(r=int(config["r"]), lora_alpha=float(config["lora_alpha"]), lora_dropout=0.0, target_modules=modules)
    _inject(model, lora_config, name)
    try:
        set_lora_state_dict(model, state, name)
    except CheckpointError as exc:
        delete_lora(model, name)
        raise CheckpointError(f"{path} does not fit the model: {exc}") from exc
    model.requires_grad_(False)


def set_lora_scales(model: nn.Module, scales: Mapping[str, float]) -> None:
    """Activate the adapters ``scales`` names, each at its scale (1: as trained; 0: off); others go inactive."""
    names = list(scales)
    unknown = sorted(set(names) - set(adapter_names(model)))
    if unknown:
        raise ConfigError(f"no LoRA adapter named {unknown}; loaded: {adapter_names(model) or 'none'}")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for _, layer in _lora_layers(model):
        present = [n for n in names if n in layer.lora_A]
        layer.set_adapter(present)
        for n in present:
            layer.set_scale(n, float(scales[n]))
    for n, p in model.named_parameters():  # set_adapter marks active adapters trainable: keep what was
        p.requires_grad_(n in trainable)


def delete_lora(model: nn.Module, name: str) -> None:
    """Remove adapter ``name`` from every layer (other adapters stay)."""
    for _, layer in _lora_layers(model):
        if name in layer.lora_A:
            layer.delete_adapter(name)


# ------------------------------------------------------------------------------- merge and remove


def merge_lora(model: nn.Module) -> dict[str, torch.Tensor]:
    """Add the active adapters (at their scales) into the weights and take the LoRA layers out, so the model
    is plain and as fast as before; returns copies of the weights it changed (for `restore_weights`)."""
    originals = {f"{name}.weight": layer.get_base_layer().weight.detach().clone() for name, layer in _lora_layers(model)}
    for _, layer in _lora_layers(model):
        layer.merge(adapter_names=list(layer.active_adapters))
    remove_lora(model)
    return originals


def remove_lora(model: nn.Module) -> None:
    """Take every LoRA layer out of ``model`` (its base layers stay as they are) and forget the adapters."""
    for name, layer in _lora_layers(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())


@torch.no_grad()
def restore_weights(model: nn.Module, originals: Mapping[str, torch.Tensor]) -> None:
    """Put back weights saved by `merge_lora` (bit for bit)."""
    params = dict(model.named_parameters())
    for key, value in originals.items():
        params[key].copy_(value)


def describe(model: nn.Module, name: str = "default") -> dict[str, Any]:
    """Trainable parameters and the adapter's size in bytes (float32 as trained, before any cast)."""
    state = lora_state_dict(model, name)
    return {"parameters": sum(v.numel() for v in state.values()), "bytes": sum(v.numel() * v.element_size() for v in state.values())}
