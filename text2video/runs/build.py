"""The model a run's config describes, with the sizes the run implies (text width, video or latent channels
and size, image-conditioning channels, no text for an unconditional run).

Which constructor argument of each model takes which size is written out per model in `RUN_ARGS` (no
guessing from signatures): a new model registers its names there.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..config import Config
from ..errors import ConfigError, ModelError, Text2VideoError, TextEncoderError

logger = logging.getLogger(__name__)
#: `RunArgs.text_off` of a model that keeps its text width in an unconditional run (it attends to its null context).
KEEP = "keep"


@dataclass(frozen=True)
class RunArgs:
    """The constructor arguments of one model that a run fills in.

    text: takes the text encoder's token width (checked when set, except ``cond_dim``, a pooled width).
    pooled: takes the width of the text encoder's pooled vector (filled in when unset, never checked).
    channels: one argument for input and output latent channels (Unet3D's ``channels``; ``out_dim`` checked).
    in_out: ``in_channels`` / ``out_channels`` (an explicit ``in_channels`` may add conditioning channels).
    size: ``sample_size`` (H, or [H, W]) or ``input_size`` (T, H, W) of latent frames.
    image_channels: ``in_channels`` may add the given frames and their mask (``cond_image``): a run with frame masks
        (``diffusion.frame_mask_prob`` > 0) whose ``in_channels`` equals the video's channels C gets 2C + 1.
    text_off: the value of ``text`` in an unconditional run (``text.encoder: none``), or `KEEP`.
    text_alias: another name of ``text`` the model accepts (checked instead when the config sets it).
    """

    text: Optional[str] = None
    pooled: Optional[str] = None
    channels: bool = False
    in_out: bool = False
    size: Optional[str] = None
    image_channels: bool = False
    text_off: Any = KEEP
    text_alias: Optional[str] = None


#: registered model name -> its run arguments
RUN_ARGS: dict[str, RunArgs] = {
    "unet3d": RunArgs(text="cond_dim", channels=True, text_off=None),
    "unet3d_condition": RunArgs(text="cross_attention_dim", in_out=True, size="sample_size"),
    "stdit": RunArgs(text="caption_channels", in_out=True, size="input_size", image_channels=True, text_off=0),
    "diffuser_stdit": RunArgs(
        text="caption_channels", in_out=True, size="input_size", image_channels=True, text_off=0, text_alias="cross_attention_dim"
    ),
    "unet_stic": RunArgs(text="cross_attention_dim", in_out=True, size="sample_size", image_channels=True),
    "segdit": RunArgs(pooled="text_embed_dim", in_out=True, size="sample_size"),
}


def _check_explicit(key: str, value: Any, wanted: Any, why: str) -> None:
    if value != wanted:
        raise ConfigError(f"model.{key} = {value!r} does not fit {why}: it must be {wanted!r}; remove model.{key} to have it filled in")


def run_args(name: str) -> RunArgs:
    """The run arguments of registered model ``name`` (or its class name)."""
    from ..models.registry import MODELS, model_class

    if name not in RUN_ARGS:
        cls = model_class(name)
        name = next((key for key, target in MODELS.items() if target.endswith(f":{cls.__name__}")), name)
    args = RUN_ARGS.get(name)
    if args is None:
        raise ModelError(f"model {name!r} has no entry in text2video.runs.build.RUN_ARGS; add one naming its size arguments")
    return args


def _fill_text(kwargs: dict[str, Any], key: str, text_dim: int, text_encoder: Any) -> None:
    if kwargs.get(key) is None:
        kwargs[key] = int(text_dim)
    elif key != "cond_dim" and int(kwargs[key]) != int(text_dim):
        if text_encoder is not None:
            from ..text.encoders import check_context_dim

            check_context_dim(text_encoder, int(kwargs[key]), f"model.{key}")
        raise TextEncoderError(
            f"the text encoder gives {text_dim}-dim token states but model.{key} is {kwargs[key]}; "
            f"set model.{key} to {text_dim}, or use a text encoder whose hidden size is {kwargs[key]}"
        )


def _fill_channels(kwargs: dict[str, Any], args: RunArgs, channels: int, why: str) -> None:
    """The model's input and output channels: ``channels`` where unset, checked where set."""
    if args.channels:  # Unet3D: one argument for input and output
        if kwargs.get("channels") is None:
            kwargs["channels"] = channels
        _check_explicit("channels", kwargs["channels"], channels, why)
        if kwargs.get("out_dim") is not None:
            _check_explicit("out_dim", kwargs["out_dim"], channels, why)
    if args.in_out:
        if kwargs.get("in_channels") is None:
            kwargs["in_channels"] = channels
        if kwargs.get("out_channels") is None:
            kwargs["out_channels"] = channels
        _check_explicit("out_channels", kwargs["out_channels"], channels, why)


def _fill_image_channels(kwargs: dict[str, Any], args: RunArgs, config: Config, channels: int) -> None:
    """A run trained with frame masks: a model that can take ``cond_image`` gets the frames and their mask."""
    from ..config import objective_config

    frame_masks = objective_config(config).frame_mask_prob > 0
    if args.image_channels and frame_masks and kwargs.get("in_channels") == channels:
        kwargs["in_channels"] = 2 * channels + 1
        logger.info(
            "frame masks (diffusion.frame_mask_prob > 0): model.in_channels %d -> %d (the video, the given frames and their mask)",
            channels,
            2 * channels + 1,
        )


def _fill_latent(kwargs: dict[str, Any], args: RunArgs, config: Config, vae: Any) -> None:
    from .vae import latent_model_sizes

    channels, h, w = latent_model_sizes(config, vae)
    _fill_channels(kwargs, args, channels, f"the VAE's {channels}-channel latents")
    size_why = f"{config.data.size} frames in the VAE's latent space ({h}x{w})"
    if args.size == "sample_size":
        if kwargs.get("sample_size") is None:
            kwargs["sample_size"] = h
        elif isinstance(kwargs["sample_size"], (list, tuple)):
            _check_explicit("sample_size", list(kwargs["sample_size"]), [h, w], size_why)
        else:
            _check_explicit("sample_size", kwargs["sample_size"], h, size_why)
    elif args.size == "input_size":  # STDiT: (T, H, W)
        if kwargs.get("input_size") is None:
            kwargs["input_size"] = [config.data.num_frames, h, w]
        else:
            _check_explicit("input_size", list(kwargs["input_size"])[-2:], [h, w], size_why)


def configured_model_kwargs(
    config: Config, text_dim: Optional[int], vae: Any = None, text_encoder: Any = None
) -> tuple[type[nn.Module], Optional[str], dict[str, Any]]:
    """``(class, preset, constructor kwargs)`` of the config's model, with the sizes the run implies.

    Filled in when the config does not set them (a ``model.preset``'s values count as unset): the text
    width from the text encoder and, with a VAE, the latent channels and frame size (see `RunArgs`). Set
    explicitly, they are checked instead (a `TextEncoderError` / `ConfigError`).
    """
    from ..models.registry import model_class

    cls = model_class(config.model.name)
    args = run_args(config.model.name)
    kwargs = dict(config.model.kwargs)
    preset = kwargs.pop("preset", None)
    text_key = args.text_alias if args.text_alias and kwargs.get(args.text_alias) is not None else args.text
    if config.text.unconditional and text_key is not None and args.text_off is not KEEP:
        kwargs[text_key] = args.text_off  # no text branch at all
    elif text_dim is not None and text_key is not None:
        _fill_text(kwargs, text_key, text_dim, text_encoder)
    if not config.text.unconditional and text_dim is not None and args.pooled is not None and kwargs.get(args.pooled) is None:
        kwargs[args.pooled] = int(getattr(text_encoder, "pooled_dim", None) or text_dim)
    if vae is not None:
        _fill_latent(kwargs, args, config, vae)
        channels = int(vae.latent_channels)
    else:
        channels = config.data.channels
        _fill_channels(kwargs, args, channels, f"data.channels = {channels} (the videos' channels)")
    _fill_image_channels(kwargs, args, config, channels)
    return cls, preset, kwargs


def build_configured_model(config: Config, text_dim: Optional[int], vae: Any = None, text_encoder: Any = None) -> nn.Module:
    """The config's model (``model.preset`` through the class's ``from_preset``), its text width set to the text
    encoder's and, with a ``vae``, its channels and sizes set to the latent space's (`configured_model_kwargs`)."""
    from ..models.registry import build_model

    cls, preset, kwargs = configured_model_kwargs(config, text_dim, vae, text_encoder)
    name = config.model.name
    if preset is None:
        return checked_build(lambda: build_model(name, **kwargs), name, kwargs)
    return checked_build(lambda: cls.from_preset(preset, **kwargs), f"{name} (preset {preset!r})", kwargs)  # type: ignore[attr-defined]


#: exceptions a model constructor raises on impossible settings (zero or negative sizes, heads that do not divide ...)
_BUILD_ERRORS = (TypeError, ValueError, RuntimeError, AssertionError, ZeroDivisionError, IndexError, KeyError)


def checked_build(make: Callable[[], nn.Module], name: str, kwargs: dict[str, Any]) -> nn.Module:
    """``make()``, after a dry build on the meta device (no memory) has shown that the settings build a model
    that fits this machine: impossible settings and absurd sizes are a one-line `ModelError` naming them."""
    settings = ", ".join(f"model.{k}={v!r}" for k, v in sorted(kwargs.items()) if v is not None)
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "initializing zero-element tensors is a no-op": reported below
            probe = make()
    except Text2VideoError:
        raise
    except Exception:  # noqa: BLE001 - a constructor that computes values cannot build on meta: the real build checks
        probe = None
    if probe is not None:
        empty = [n for n, p in probe.named_parameters() if p.numel() == 0]
        if empty:
            raise ModelError(
                f"model {name!r} with {settings} has layers without weights ({empty[0]}): a size is zero; check these model.* values"
            )
        count = sum(p.numel() for p in probe.parameters())
        need = 4 * count  # float32 weights alone; training needs about four times this
        total = _machine_memory()
        if total is not None and need > total:
            raise ModelError(
                f"model {name!r} with {settings} has {count:.3g} parameters ({need / 2**30:.1f} GB of float32 weights), more "
                f"than this machine's {total / 2**30:.1f} GB; use smaller model.* sizes"
            )
        del probe
    try:
        return make()
    except Text2VideoError:
        raise
    except _BUILD_ERRORS as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(f"cannot build model {name!r} with {settings}: {reason}; check these model.* values") from exc


def _machine_memory() -> Optional[int]:
    try:
        cpu = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    if torch.cuda.is_available():
        return max(cpu, max(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())))
    return int(cpu)
