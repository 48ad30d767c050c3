"""The typed config tree of a training run: ``data``, ``text``, ``latent``, ``model``, ``diffusion``, ``train``,
``sample``.

A config is loaded from YAML (a file or a preset shipped in ``text2video/configs``), changed with dotted
overrides (``train.lr=2e-4 model.dim=32``; values are parsed as YAML scalars or lists) and validated:
an unknown key or a bad value raises `ConfigError` naming the key and what is allowed.

``model`` and ``diffusion`` hold free keyword arguments: ``model`` is ``name`` plus the constructor
arguments of that denoiser (checked against its signature), ``diffusion`` the fields of
`text2video.diffusion.objective.ObjectiveConfig` (checked against them when that module is present).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from .errors import ConfigError
from .io.text import read_text

logger = logging.getLogger(__name__)

DEFAULT_PRESET = "tiny-cpu"


def size_hw(size: Union[int, list[int], tuple[int, ...]]) -> tuple[int, int]:
    """A ``size`` setting (an int: square frames, or ``[height, width]``) as ``(height, width)``."""
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


#: A preset's former name -> its name now (docs/compat.md); loading the old name logs a note.
PRESET_ALIASES: dict[str, str] = {"seed-001": "text2video-from-scratch"}


@dataclass
class DataConfig:
    """Where the training videos come from. ``options`` go to ``make_dataset(kind, **options)``.

    ``size``: an int (square frames) or ``[height, width]``. ``channels``: 3 (RGB), 1 (grayscale) or 4
    (RGBA). ``buckets``: train on videos of mixed shapes without cropping them all to one size (see
    `text2video.data.buckets`): ``{aspect_ratios: [...], frames: [...], multiple: 8}``. ``val_split``: a share
    (below 1) or a number of items held out for the validation loss (``train.val_every``).
    """

    kind: str = "shapes"
    num_frames: int = 8
    size: Union[int, list[int]] = 32
    channels: int = 3
    options: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 0
    buckets: Optional[dict[str, Any]] = None
    val_split: float = 0.0

    @property
    def hw(self) -> tuple[int, int]:
        """The frame size as ``(height, width)``."""
        return size_hw(self.size)


@dataclass
class TextConfig:
    """The text encoder (``default`` is the offline MiniLM) and its embedding cache.

    ``padding``: ``longest`` (pad to the longest prompt, mask the padding: text2video's encoding) or
    ``max_length`` (Stable Diffusion pipelines' encoding: every prompt padded to the tokenizer's length,
    the padding attended to, the empty prompt as the unconditional input). Fine-tuning a pretrained
    ModelScope / AnimateDiff model, or exporting a run to diffusers, needs ``max_length``.

    ``encoder: none`` makes the run unconditional: no encoder is loaded, the model is built without text
    (where it can be) and ``generate`` needs no prompt.
    """

    encoder: str = "default"
    max_length: Optional[int] = None
    padding: Literal["longest", "max_length"] = "longest"
    cache: bool = True
    cache_dir: Optional[str] = None

    @property
    def unconditional(self) -> bool:
        """``encoder: none``: no text at all."""
        return is_no_encoder(self.encoder)


def is_no_encoder(spec: Any) -> bool:
    """Whether a text encoder setting means "no text" (``none``, ``null`` or empty)."""
    return spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none", "null"))


@dataclass
class LatentConfig:
    """The VAE of a latent run (``vae: null`` trains in pixel space). See ``docs/latent.md``.

    ``vae`` is a local ``AutoencoderKL`` / Stable Diffusion folder, ``tiny`` or ``tiny:SEED`` (random
    weights, fitted first when ``fit_steps`` > 0). ``micro_batch`` frames go through the VAE at once,
    in ``dtype``. ``posterior`` is how training latents are drawn. With ``cache`` the training latents
    are encoded once into ``cache_dir`` (default ``RUN/latent_cache``); ``augmentations`` is the cache's
    policy for datasets with random augmentations.
    """

    vae: Optional[str] = None
    micro_batch: int = 8
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    posterior: Literal["sample", "mode"] = "sample"
    cache: bool = False
    cache_dir: Optional[str] = None
    augmentations: Literal["warn", "freeze", "error"] = "warn"
    fit_steps: int = 0

    @property
    def enabled(self) -> bool:
        return self.vae is not None and self.vae.strip().lower() not in ("", "none", "null")


@dataclass
class ModelConfig:
    """A registered denoiser ``name`` and its constructor arguments ``kwargs`` (flat in YAML)."""

    name: str = "unet3d"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DiffusionConfig:
    """Fields of ``ObjectiveConfig`` (flat in YAML); empty means the objective's defaults."""

    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimisation, schedule, EMA, guidance training, logging and checkpoint settings.

    ``init_from`` starts from the weights of another model: a run, checkpoint or pipeline folder (anything
    `text2video.pipelines.load_pipeline` reads), a ``save_pretrained`` model folder or a ``.safetensors``
    file. ``lora`` (rank, alpha, dropout, targets; see `text2video.models.lora.LoraSettings`) trains a LoRA
    adapter on that frozen model instead of the model itself; checkpoints then hold the adapter only.
    ``epochs``, when set, replaces ``steps``: the run trains that many passes over its training items (the
    trainer works out the steps from the dataset and the batch size). ``val_every``: with a validation split
    (``data.val_split``), the validation loss is computed every so many steps (0: at every checkpoint) and the
    checkpoint with the lowest one is kept as ``checkpoints/best``.
    """

    steps: int = 1000
    epochs: Optional[int] = None
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 100
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.0
    max_grad_norm: Optional[float] = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    ema_decay: float = 0.999
    ema_warmup: bool = True
    ema_start: int = 0
    ema_every: int = 1
    cond_drop: float = 0.1
    image_share: float = 0.0
    image_mode: Literal["frames", "focus_present"] = "frames"
    seed: int = 0
    log_every: int = 10
    sample_every: int = 0
    save_every: int = 500
    val_every: int = 0
    keep_checkpoints: int = 3
    max_nonfinite: int = 20
    max_minutes: Optional[float] = None
    cpu: bool = False
    trainable: Literal["all", "motion_modules"] = "all"
    gradient_checkpointing: bool = False
    init_from: Optional[str] = None
    lora: Optional[dict[str, Any]] = None
    # sharded data parallel (docs/scaling.md): none (DDP), fsdp (FSDP2 through Accelerate) or deepspeed (ZeRO)
    sharding: Literal["none", "fsdp", "deepspeed"] = "none"
    fsdp_reshard_after_forward: bool = True  # False: ZeRO-2 like (gathered weights kept from forward to backward)
    fsdp_cpu_offload: bool = False  # sharded weights, gradients and optimizer state live in CPU memory
    fsdp_wrap: Optional[list[str]] = None  # block classes sharded as units (default: the model's _no_split_modules)
    zero_stage: Literal[1, 2] = 2  # DeepSpeed ZeRO stage (ZeRO-3, sharded parameters, is train.sharding=fsdp)
    zero_offload: bool = False  # DeepSpeed: optimizer state in CPU memory


@dataclass
class SampleConfig:
    """Fixed prompts sampled with the EMA weights during training, and sampling defaults.

    ``size``: an int or ``[height, width]`` (default: ``data.size``). ``dynamic_threshold``: a percentile in
    (0, 1] for text2video-from-scratch's (Imagen's) dynamic thresholding of the predicted clean video, or null
    for plain clipping.
    """

    prompts: list[str] = field(default_factory=lambda: ["a red circle moving right", "a blue square moving up"])
    negative_prompt: Optional[str] = None
    sampler: str = "ddim"
    steps: int = 25
    guidance_scale: float = 4.0
    num_frames: Optional[int] = None
    size: Optional[Union[int, list[int]]] = None
    seed: int = 0
    fps: float = 8.0
    dynamic_threshold: Optional[float] = None

    def hw(self, data: DataConfig) -> tuple[int, int]:
        """The sampled frame size ``(height, width)``: ``size``, else the data's."""
        return size_hw(self.size) if self.size is not None else data.hw


@dataclass
class Config:
    """The whole run: one section per part of the system."""

    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, as written to YAML (``model``/``diffusion`` kwargs flattened)."""
        out = dataclasses.asdict(self)
        out["model"] = {"name": self.model.name, **self.model.kwargs}
        out["diffusion"] = dict(self.diffusion.kwargs)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())
        return path


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "text": TextConfig,
    "latent": LatentConfig,
    "model": ModelConfig,
    "diffusion": DiffusionConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
}
#: Sections whose keys are free keyword arguments (stored in ``kwargs``), besides their typed fields.
_FREE_SECTIONS = ("model", "diffusion")


def _unknown(kind: str, name: str, allowed: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown {kind} {name!r}.{hint} Allowed: {', '.join(allowed)}")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the type ``hint`` (int -> float allowed) and return it."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint_text = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{key}: {value!r} is not allowed.{hint_text} Allowed values: {', '.join(map(str, args))}")
        return value
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r} (write it as [a, b] on the command line)")
        item = args[0] if args and (origin is not tuple or len(args) == 2 and args[1] is Ellipsis) else None
        return [_coerce(f"{key}[{i}]", v, item) if item is not None else v for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _build_section(name: str, values: Any) -> Any:
    cls = SECTIONS[name]
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"section {name!r} must be a mapping of keys to values, got {values!r}")
    if name in _FREE_SECTIONS:
        values = dict(values)
        if name == "model":
            model_name = values.pop("name", ModelConfig.name)
            if not isinstance(model_name, str):
                raise ConfigError(f"model.name: expected a string, got {model_name!r}")
            return ModelConfig(name=model_name, kwargs=values)
        return DiffusionConfig(kwargs=values)
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in allowed:
            raise _unknown("key", f"{name}.{key}", [f"{name}.{a}" for a in allowed])
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a `Config` from a nested dict (missing sections and keys take defaults)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    for key in data:
        if key not in SECTIONS:
            raise _unknown("config section", str(key), list(SECTIONS))
    _check_finite(data)
    config = Config(**{name: _build_section(name, data.get(name)) for name in SECTIONS})
    validate(config)
    return config


def _check_finite(value: Any, key: str = "") -> None:
    """Every number of a config is finite: a NaN or an infinity anywhere (``train.lr=.inf``) is refused."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} = {value} is not a finite number; give a finite value (or null where the key allows it)")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}[{i}]")


def _check_range(key: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high):
        raise ConfigError(f"{key} = {value} is out of range; it must be between {low} and {high}")


def validate(config: Config) -> None:
    """Cross-field checks and free-section checks (model constructor arguments, objective fields)."""
    t = config.train
    for key in ("steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints", "max_nonfinite", "ema_every"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} = {getattr(t, key)} must be at least 1")
    for key in ("warmup_steps", "sample_every", "save_every", "ema_start", "seed"):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key} = {getattr(t, key)} must not be negative")
    if t.lr <= 0:
        raise ConfigError(f"train.lr = {t.lr} must be positive")
    if t.weight_decay < 0:
        raise ConfigError(f"train.weight_decay = {t.weight_decay} must not be negative")
    if t.max_grad_norm is not None and t.max_grad_norm <= 0:
        raise ConfigError(f"train.max_grad_norm = {t.max_grad_norm} must be positive, or null for no clipping")
    if t.max_minutes is not None and t.max_minutes <= 0:
        raise ConfigError(f"train.max_minutes = {t.max_minutes} must be positive, or null for no time limit")
    for i, beta in enumerate(t.betas):
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"train.betas[{i}] = {beta} must be in [0, 1), e.g. [0.9, 0.999]")
    _check_range("train.cond_drop", t.cond_drop, 0.0, 1.0)
    _check_range("train.image_share", t.image_share, 0.0, 1.0)
    _check_range("train.ema_decay", t.ema_decay, 0.0, 1.0)
    _check_range("train.min_lr_ratio", t.min_lr_ratio, 0.0, 1.0)
    if len(t.betas) != 2:
        raise ConfigError(f"train.betas must be two numbers like [0.9, 0.999], got {t.betas}")
    if t.batch_size % t.grad_accum:
        raise ConfigError(
            f"train.batch_size = {t.batch_size} is not divisible by train.grad_accum = {t.grad_accum}; "
            "the batch size is the global batch, split over accumulation steps and processes"
        )
    if t.epochs is not None and t.epochs < 1:
        raise ConfigError(f"train.epochs = {t.epochs} must be at least 1 (or null to train for train.steps)")
    if t.val_every < 0:
        raise ConfigError(f"train.val_every = {t.val_every} must not be negative (0: at every checkpoint)")
    d = config.data
    _check_size("data.size", d.size)
    if d.num_frames < 1:
        raise ConfigError(f"data.num_frames must be positive, got {d.num_frames}")
    if d.num_workers < 0:
        raise ConfigError(f"data.num_workers = {d.num_workers} must not be negative")
    if d.channels not in (1, 3, 4):
        raise ConfigError(f"data.channels = {d.channels}: choose 1 (grayscale), 3 (RGB) or 4 (RGBA)")
    if d.val_split < 0 or (d.val_split >= 1 and d.val_split != int(d.val_split)):
        raise ConfigError(f"data.val_split = {d.val_split}: give a share below 1 (0.1 holds out a tenth) or a whole number of items (64)")
    if d.buckets is not None:
        from .data.buckets import Buckets

        Buckets.from_config(d.buckets, d.hw)  # its own checks, named after the keys
    s = config.sample
    if s.steps < 1:
        raise ConfigError(f"sample.steps = {s.steps} must be at least 1")
    if s.num_frames is not None and s.num_frames < 1:
        raise ConfigError(f"sample.num_frames = {s.num_frames} must be at least 1, or null for the data's")
    if s.size is not None:
        _check_size("sample.size", s.size)
    if s.fps <= 0:
        raise ConfigError(f"sample.fps = {s.fps} must be positive")
    if s.seed < 0:
        raise ConfigError(f"sample.seed = {s.seed} must not be negative")
    if s.dynamic_threshold is not None and not 0.0 < s.dynamic_threshold <= 1.0:
        raise ConfigError(f"sample.dynamic_threshold = {s.dynamic_threshold} must be a percentile in (0, 1], e.g. 0.9, or null")
    if config.text.max_length is not None and config.text.max_length < 1:
        raise ConfigError(f"text.max_length = {config.text.max_length} must be at least 1, or null for the encoder's")
    _check_latent(config)
    _check_model(config.model)
    _check_training_options(config)
    _check_diffusion(config.diffusion)
    _check_sampler(config.sample.sampler)


def _check_size(key: str, size: Any) -> None:
    if isinstance(size, int):
        values = [size]
    elif isinstance(size, list) and len(size) == 2:
        values = size
    else:
        raise ConfigError(f"{key} = {size!r}: give one number (square frames) or [height, width]")
    if any(v < 1 for v in values):
        raise ConfigError(f"{key} = {size!r} must be at least 1")


def _check_latent(config: Config) -> None:
    lat = config.latent
    if lat.micro_batch < 1:
        raise ConfigError(f"latent.micro_batch = {lat.micro_batch} must be at least 1 (frames per VAE call)")
    if lat.fit_steps < 0:
        raise ConfigError(f"latent.fit_steps = {lat.fit_steps} must not be negative")
    if not lat.enabled:
        if lat.fit_steps:
            raise ConfigError("latent.fit_steps is set but latent.vae is null; set latent.vae: tiny to fit a tiny VAE")
        return
    spec = lat.vae.strip()
    if spec.startswith("tiny:"):
        try:
            int(spec.partition(":")[2])
        except ValueError:
            raise ConfigError(f"latent.vae = {spec!r}: write 'tiny' or 'tiny:SEED' with an integer seed") from None


def _model_presets(cls: type) -> Optional[list[str]]:
    """Preset names of a model class (its ``PRESETS`` table, `text2video.models.presets`), else None."""
    presets = getattr(cls, "PRESETS", None)
    return sorted(presets) if presets is not None else None


def _check_training_options(config: Config) -> None:
    from .errors import ModelError
    from .models.registry import model_class

    t = config.train
    if t.lora is not None:
        from .models.lora import LoraSettings

        LoraSettings.from_dict(t.lora)
        if not t.init_from:
            raise ConfigError(
                "train.lora fine-tunes an existing model: set train.init_from to a run, checkpoint or pipeline folder "
                "(or a save_pretrained model folder)"
            )
        if t.trainable != "all":
            raise ConfigError("train.lora decides what trains: use train.lora.targets=motion instead of train.trainable=motion_modules")
    if t.trainable == "all" and not t.gradient_checkpointing:
        return
    try:
        cls = model_class(config.model.name)
    except ModelError:
        return
    if t.trainable == "motion_modules" and not hasattr(cls, "freeze_except_motion_modules"):
        raise ConfigError(
            f"train.trainable = motion_modules needs a model with motion modules (unet3d_condition); "
            f"{config.model.name!r} has none: use train.trainable=all"
        )
    if t.gradient_checkpointing and not getattr(cls, "_supports_gradient_checkpointing", False):
        raise ConfigError(f"train.gradient_checkpointing: model {config.model.name!r} does not support it; set it to false")


def _check_model(model: ModelConfig) -> None:
    from .errors import ModelError
    from .models.registry import MODELS, model_class

    try:
        cls = model_class(model.name)
    except ModelError:
        raise _unknown("model.name", model.name, sorted(MODELS)) from None
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    presets = _model_presets(cls)
    if presets is not None:
        allowed.append("preset")
        preset = model.kwargs.get("preset")
        if preset is not None and presets and preset not in presets:
            raise _unknown(f"preset of model {model.name!r}", f"model.preset={preset}", presets)
    for key in model.kwargs:
        if key not in allowed:
            raise _unknown(f"key of model {model.name!r}", f"model.{key}", [f"model.{a}" for a in allowed])
    hints = _constructor_hints(cls)
    for key, value in model.kwargs.items():
        if key in hints and value is not None:
            try:
                _coerce(f"model.{key}", value, hints[key])
            except ConfigError as exc:
                raise ConfigError(f"{exc} ({cls.__name__} takes {key}: {_hint_text(hints[key])})") from None


def _constructor_hints(cls: type) -> dict[str, Any]:
    """The type hints of a model constructor's arguments ({} where they cannot be resolved)."""
    try:
        return typing.get_type_hints(inspect.unwrap(cls.__init__))
    except Exception:  # noqa: BLE001 - an unresolvable annotation only turns the type check off
        return {}


def _hint_text(hint: Any) -> str:
    if typing.get_origin(hint) is None and hasattr(hint, "__name__"):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


def _objective_fields() -> list[str]:
    from .diffusion.objective import ObjectiveConfig

    return [f.name for f in dataclasses.fields(ObjectiveConfig)]


def _check_diffusion(diffusion: DiffusionConfig) -> None:
    if "cond_drop_prob" in diffusion.kwargs:
        raise ConfigError(
            "diffusion.cond_drop_prob is set by the trainer: use train.cond_drop (the share of samples whose "
            "text is dropped for classifier-free guidance) instead"
        )
    allowed = _objective_fields()
    for key in diffusion.kwargs:
        if key not in allowed:
            raise _unknown("key", f"diffusion.{key}", [f"diffusion.{a}" for a in allowed])
    from .diffusion.objective import ObjectiveConfig

    try:
        ObjectiveConfig(**diffusion.kwargs)  # its own checks of values (schedule names, ranges)
    except ConfigError as exc:
        raise ConfigError(f"diffusion section: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"diffusion section: {exc}") from exc


def _check_sampler(name: str) -> None:
    from .diffusion.schedule import SAMPLERS, resolve_sampler

    try:
        resolve_sampler(name)
    except ConfigError:
        raise _unknown("sample.sampler", name, list(SAMPLERS)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=2e-4"`` -> (["train", "lr"], 0.0002). Values are YAML scalars or lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. train.lr=2e-4")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if len(parts) < 2:
        raise ConfigError(f"override {text!r} must name a section and a key, e.g. model.dim=32")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: cannot parse the value {raw!r} as YAML ({exc})") from exc
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)
    return parts, value


def _looks_numeric(text: str) -> bool:
    # YAML 1.1 reads "2e-4" as a string; accept it as the number a user means.
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted overrides to a nested dict (in place) and return it."""
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] not in SECTIONS:
            raise _unknown("config section", parts[0], list(SECTIONS))
        node = data.setdefault(parts[0], {}) or {}
        data[parts[0]] = node
        for part in parts[1:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def preset_names() -> list[str]:
    """Names of the presets shipped with the package (not the old names in `PRESET_ALIASES`)."""
    root = resources.files("text2video") / "configs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_source(source: str | Path) -> dict[str, Any]:
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; give a YAML file or one of the presets: {', '.join(preset_names())}")
        text = read_text(path, "config file")
    else:
        names = preset_names()
        if str(source) in PRESET_ALIASES:
            new = PRESET_ALIASES[str(source)]
            logger.warning("preset %r is now called %r (docs/compat.md); loading %r", str(source), new, new)
            source = new
        if str(source) not in names:
            raise _unknown("preset", str(source), names)
        text = (resources.files("text2video") / "configs" / f"{source}.yaml").read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {source}: invalid YAML ({exc})") from exc
    return data or {}


def load_config(source: str | Path | None = None, overrides: Optional[list[str]] = None) -> Config:
    """Load a preset name or YAML path (default: the ``tiny-cpu`` preset) and apply overrides."""
    data = _read_source(source if source is not None else DEFAULT_PRESET)
    return config_from_dict(apply_overrides(data, list(overrides or [])))


def objective_config(config: Config) -> Any:
    """The ``ObjectiveConfig`` of this run's ``diffusion`` section (guidance dropping is ``train.cond_drop``)."""
    from .diffusion.objective import ObjectiveConfig

    kwargs = dict(config.diffusion.kwargs)
    try:
        return ObjectiveConfig(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"diffusion section: {exc}") from exc
