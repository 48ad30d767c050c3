"""``text2video export --format diffusers``: a text2video pipeline as a folder diffusers loads with its own
pipeline class, reproducing our samples under the same latents and scheduler.

* a `UNet3DConditionModel` with ModelScope's structure (temporal convolutions, the input temporal
  transformer, temporal attentions without positions) -> ``TextToVideoSDPipeline`` with diffusers'
  ``UNet3DConditionModel``;
* one with AnimateDiff's structure (a Stable Diffusion UNet plus sinusoidal motion modules) ->
  ``AnimateDiffPipeline`` with a ``UNet2DConditionModel`` and a ``MotionAdapter`` (saved as diffusers
  saves that pipeline: ``unet/`` the combined ``UNetMotionModel``, ``motion_adapter/``).

Whether a model fits is decided by a round trip: the diffusers config we write must map back, through
the importers of `text2video.models.unet3d_condition_keys`, onto the model's own config, and every weight
must find its place. The weights are placed by the importers' key map read backwards. Anything else
(VideoCrafter's fps embedding, image or temporal cross-attention; Unet3D, STDiT, ...) is refused with
the format that works: ``--format text2video``.

The text encoder must encode as diffusers' pipelines do (``text.padding: max_length``): prompts padded
to the tokenizer's length and attended to in full, the empty prompt as the unconditional input. A pixel
model gets `PixelSpaceVAE`, an identity "VAE" (import ``text2video.pipelines.to_diffusers`` before
diffusers loads such a folder: diffusers only loads components of modules already imported).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin  # ModelMixin here also tells diffusers' loader how to load PixelSpaceVAE
from diffusers.configuration_utils import register_to_config

from ..errors import ModelError

logger = logging.getLogger(__name__)

FORMATS = ("text2video", "diffusers")
_REFUSAL = "export it with --format text2video (a pipeline folder that `text2video generate` and `t2v.load_pipeline` read)"
#: config keys that change nothing at inference, or only matter when an option that is checked is on.
_INERT = {"dropout", "temporal_conv_dropout", "motion_zero_init", "sample_size", "default_fps", "image_embed_dim",
          "num_image_tokens", "image_cross_attention_scale", "image_frame_channels"}  # fmt: skip
#: options diffusers' video UNets do not have, with the value they must keep (VideoCrafter's options among them).
_REQUIRED = {"fps_embedding": False, "image_cross_attention": False, "temporal_cross_attention": False,
             "flip_sin_to_cos": True, "freq_shift": 0, "transformer_layers_per_block": 1}  # fmt: skip


class PixelSpaceVAE(ModelMixin, ConfigMixin):
    """The identity "VAE" of a pixel-space model: ``decode(z).sample`` is ``z``; one block, so diffusers'
    pipelines see a downsample factor of 1, and a scaling factor of 1."""

    @register_to_config
    def __init__(self, channels: int = 3, block_out_channels: tuple[int, ...] = (3,), scaling_factor: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("unit", torch.ones(1))  # gives the module a device and a dtype

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> Any:
        from diffusers.models.autoencoders.vae import DecoderOutput

        return DecoderOutput(sample=z) if return_dict else (z,)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z


# ------------------------------------------------------------------------------------ checks


def _norm(value: Any) -> Any:
    return tuple(_norm(v) for v in value) if isinstance(value, (list, tuple)) else value


def _inert(key: str, config: dict[str, Any]) -> bool:
    """Whether ``key`` changes nothing at inference for this config (or belongs to an option that is off)."""
    if key in _INERT:
        return True
    if key in ("input_temporal_heads", "input_temporal_head_dim"):
        return not config.get("input_temporal_transformer")
    if key == "motion_max_seq_length":
        return config.get("motion_positional_embedding") is None
    return False


def _mismatches(ours: dict[str, Any], back: dict[str, Any]) -> list[str]:
    """Keys of our config that the diffusers config does not give back unchanged."""
    n = len(ours["block_out_channels"])

    def same(key: str, a: Any, b: Any) -> bool:
        if key in ("num_attention_heads", "motion_num_attention_heads"):  # an int means the same for every block
            a, b = ((v,) * n if isinstance(v, int) else v for v in (a, b))
        return _norm(a) == _norm(b)

    problems = []
    for key, value in ours.items():
        if key.startswith("_") or _inert(key, ours):
            continue
        if key in _REQUIRED:
            if _norm(value) != _REQUIRED[key]:
                problems.append(f"{key}={value!r}")
        elif key not in back or not same(key, value, back[key]):
            problems.append(f"{key}={value!r}")
    return problems


def _heads(config: dict[str, Any]) -> tuple[int, ...]:
    heads = config["num_attention_heads"]
    n = len(config["block_out_channels"])
    return tuple(heads) if isinstance(heads, (list, tuple)) else (int(heads),) * n


def modelscope_config(config: dict[str, Any]) -> dict[str, Any]:
    """A diffusers ``UNet3DConditionModel`` config for our config (ModelScope structure)."""
    widths = tuple(config["block_out_channels"])
    head_dim = widths[0] // _heads(config)[0]
    return {
        "in_channels": config["in_channels"], "out_channels": config["out_channels"], "block_out_channels": widths,
        "down_block_types": tuple(config["down_block_types"]), "up_block_types": tuple(config["up_block_types"]),
        "layers_per_block": config["layers_per_block"], "downsample_padding": config["downsample_padding"],
        "mid_block_scale_factor": config["mid_block_scale_factor"], "norm_num_groups": config["norm_num_groups"],
        "norm_eps": config["norm_eps"], "cross_attention_dim": config["cross_attention_dim"], "attention_head_dim": head_dim,
        "sample_size": config.get("sample_size"),
    }  # fmt: skip


_BLOCKS_2D = {"CrossAttnDownBlock3D": "CrossAttnDownBlock2D", "DownBlock3D": "DownBlock2D",
              "CrossAttnUpBlock3D": "CrossAttnUpBlock2D", "UpBlock3D": "UpBlock2D"}  # fmt: skip


def animatediff_configs(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Diffusers ``UNet2DConditionModel`` and ``MotionAdapter`` configs for our config (AnimateDiff structure)."""
    heads = _heads(config)
    motion_heads = config["motion_num_attention_heads"]
    unet = {
        "in_channels": config["in_channels"], "out_channels": config["out_channels"],
        "block_out_channels": tuple(config["block_out_channels"]),
        "down_block_types": tuple(_BLOCKS_2D[b] for b in config["down_block_types"]),
        "up_block_types": tuple(_BLOCKS_2D[b] for b in config["up_block_types"]),
        "layers_per_block": config["layers_per_block"], "attention_head_dim": heads if len(set(heads)) > 1 else heads[0],
        "cross_attention_dim": config["cross_attention_dim"], "norm_num_groups": config["norm_num_groups"],
        "norm_eps": config["norm_eps"], "downsample_padding": config["downsample_padding"],
        "mid_block_scale_factor": config["mid_block_scale_factor"], "flip_sin_to_cos": config["flip_sin_to_cos"],
        "freq_shift": config["freq_shift"], "sample_size": config.get("sample_size"),
    }  # fmt: skip
    adapter = {
        "block_out_channels": tuple(config["block_out_channels"]), "motion_layers_per_block": config["layers_per_block"],
        "motion_transformer_layers_per_block": config["motion_layers"], "motion_mid_block_layers_per_block": 1,
        "motion_transformer_layers_per_mid_block": config["motion_layers"],
        "motion_num_attention_heads": _norm(motion_heads), "motion_norm_num_groups": config["motion_norm_num_groups"],
        "motion_max_seq_length": config["motion_max_seq_length"], "use_motion_mid_block": config["motion_mid_block"],
    }  # fmt: skip
    return unet, adapter


def _flavour(model: torch.nn.Module) -> tuple[str, list[str]]:
    """``("text-to-video" | "animatediff", [])`` for a model diffusers can express, else ("", problems)."""
    from ..models import unet3d_condition_keys

    config = {k: v for k, v in dict(model.config).items() if not str(k).startswith("_")}
    problems: dict[str, list[str]] = {}
    if config.get("block_out_channels") and all(b in _BLOCKS_2D for b in (*config["down_block_types"], *config["up_block_types"])):
        try:
            back = unet3d_condition_keys.unet3d_config(modelscope_config(config))
            problems["text-to-video"] = _mismatches(config, back)
        except (ModelError, KeyError, ZeroDivisionError) as exc:
            problems["text-to-video"] = [str(exc)]
        try:
            unet, adapter = animatediff_configs(config)
            back = unet3d_condition_keys.unet2d_config(unet)
            heads = adapter["motion_num_attention_heads"]
            back.update(use_motion_modules=True, motion_layers=adapter["motion_transformer_layers_per_block"],
                        motion_num_attention_heads=heads, motion_max_seq_length=adapter["motion_max_seq_length"],
                        motion_norm_num_groups=adapter["motion_norm_num_groups"], motion_mid_block=adapter["use_motion_mid_block"],
                        motion_positional_embedding="sinusoidal", motion_in_plain_blocks=True)  # fmt: skip
            # (infer_motion_config reads these from a MotionAdapter config the same way)
            back.update(temporal_conv=False, input_temporal_transformer=False)
            problems["animatediff"] = _mismatches(config, back)
        except (ModelError, KeyError) as exc:
            problems["animatediff"] = [str(exc)]
    else:
        problems["text-to-video"] = problems["animatediff"] = ["block types"]
    for name in ("text-to-video", "animatediff"):
        if not problems[name]:
            return name, []
    best = min(problems.values(), key=len)
    return "", best


# ---------------------------------------------------------------------------------- weights


def _place_weights(target: torch.nn.Module, ours: dict[str, torch.Tensor], used: set[str]) -> None:
    """Fill a diffusers model from our state dict through the importers' key map read backwards."""
    from ..models.unet3d_condition_keys import diffusers_key

    state = target.state_dict()
    new = {}
    for key, tensor in state.items():
        mine = diffusers_key(key)
        if mine is None:
            continue  # fixed sinusoid tables: the diffusers model's own
        if mine not in ours:
            raise ModelError(f"diffusers' {type(target).__name__} has {key}, which this model lacks (as {mine}); {_REFUSAL}")
        value = ours[mine]
        if value.numel() != tensor.numel():
            raise ModelError(f"{mine} has shape {tuple(value.shape)}; diffusers' {key} has {tuple(tensor.shape)}; {_REFUSAL}")
        new[key] = value.reshape(tensor.shape).to(tensor.dtype)
        used.add(mine)
    target.load_state_dict(new, strict=False)


def diffusers_unet(model: torch.nn.Module, sample_size: int | None = None) -> tuple[str, dict[str, torch.nn.Module]]:
    """The diffusers modules holding ``model``'s weights: ``("text-to-video", {"unet"})`` or
    ``("animatediff", {"unet", "motion_adapter"})``; a `ModelError` names why a model does not fit.
    ``sample_size`` (the default frame size over the VAE factor) is what diffusers' pipelines default to."""
    from ..models.unet3d_condition import UNet3DConditionModel

    if not isinstance(model, UNet3DConditionModel):
        raise ModelError(f"diffusers has no pipeline for a {type(model).__name__}; {_REFUSAL}")
    flavour, problems = _flavour(model)
    if not flavour:
        raise ModelError(
            f"this UNet3DConditionModel has options diffusers' TextToVideoSDPipeline and AnimateDiffPipeline cannot express "
            f"({', '.join(problems[:6])}); {_REFUSAL}"
        )
    import diffusers

    config = dict(model.config)
    if sample_size is not None:
        config["sample_size"] = int(sample_size)
    ours = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    used: set[str] = set()
    if flavour == "text-to-video":
        modules = {"unet": diffusers.UNet3DConditionModel(**modelscope_config(config))}
    else:
        unet_config, adapter_config = animatediff_configs(config)
        modules = {"unet": diffusers.UNet2DConditionModel(**unet_config), "motion_adapter": diffusers.MotionAdapter(**adapter_config)}
    for module in modules.values():
        _place_weights(module, ours, used)
        module.eval()
    left = sorted(set(ours) - used - {k for k in ours if k.endswith("pos_encoder.pe") or k.endswith("pos_embed.pe")})
    if left:
        raise ModelError(f"{len(left)} weights of the model have no place in diffusers' {flavour} modules ({left[:3]}); {_REFUSAL}")
    return flavour, modules


# ---------------------------------------------------------------------------------- the rest


def _text_parts(pipe: Any) -> tuple[torch.nn.Module, Any, list[str]]:
    """(text encoder model, tokenizer, notes): diffusers' pipelines call ``text_encoder(ids)[0]``."""
    encoder = pipe.text_encoder
    if encoder is None:
        raise ModelError(f"the model has no text encoder, and diffusers' video pipelines need one; {_REFUSAL}")
    if not hasattr(encoder, "null_prompt"):
        raise ModelError(
            "the model's text encoder pads prompts to the longest and masks the padding, while diffusers' pipelines pad "
            f"to the tokenizer's length and attend to all of it: train with text.padding=max_length to export to diffusers, or {_REFUSAL}"
        )
    model, tokenizer, notes = encoder.inner.model, encoder.inner.tokenizer, []
    if type(model).__name__ == "CLIPTextModelWithProjection":  # [0] would be the projected embedding: keep the text model
        from transformers import CLIPTextModel

        plain = CLIPTextModel(model.config)
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith("text_model.")})
        model = plain
    if encoder.clip_skip:
        notes.append(f"the model uses clip_skip={encoder.clip_skip}: pass clip_skip={encoder.clip_skip} to the diffusers pipeline")
    tokenizer.model_max_length = encoder.max_length
    return model.float().eval(), tokenizer, notes


def _scheduler(pipe: Any) -> tuple[Any, list[str]]:
    """The scheduler our sampling uses by default, as a diffusers scheduler with the model's prediction type."""
    import diffusers

    d = pipe.defaults
    notes = []
    if pipe.scheduler_config is not None:
        from ..diffusion.schedule import scheduler_from_config

        return scheduler_from_config(pipe.scheduler_config, d.sampler), notes
    scheduler = pipe.objective.make_scheduler(d.sampler)
    clip = pipe.vae is None and d.clip_x0 and d.dynamic_threshold is None
    if clip and "clip_sample" in scheduler.config:
        scheduler = type(scheduler).from_config(scheduler.config, clip_sample=True)
        notes.append("pixel model: the scheduler clips the predicted x0 (clip_sample) as text2video does; diffusers keeps the "
                     "model's noise estimate after clipping where text2video recomputes it, so results agree where nothing is clipped")  # fmt: skip
    elif pipe.vae is None and d.clip_x0:
        notes.append(f"{type(scheduler).__name__} has no clip_sample: diffusers will not clip x0 as text2video does for pixel models")
    if d.sampler == "ddim" and pipe.objective.num_train_timesteps % d.steps:
        notes.append(f"DDIM with {d.steps} steps of {pipe.objective.num_train_timesteps}: diffusers ends on alpha_bar[0], "
                     "text2video on the predicted x0; use a step count that divides it for identical results")  # fmt: skip
    return getattr(diffusers, type(scheduler).__name__).from_config(scheduler.config), notes


def export_diffusers(pipe: Any, out: str | Path) -> dict[str, Any]:
    """Write ``pipe`` (a text2video pipeline) as a diffusers pipeline folder at ``out``; returns a report."""
    import diffusers

    out = Path(out)
    d = pipe.defaults
    if pipe.objective.config.objective != "diffusion":
        raise ModelError(
            f"the model was trained with rectified flow (diffusion.objective={pipe.objective.config.objective}), and diffusers' "
            "TextToVideoSDPipeline / AnimateDiffPipeline sample with diffusion schedulers (they call scale_model_input, which "
            f"the flow-matching schedulers lack); {_REFUSAL}"
        )
    factor = pipe.vae.downsample_factor if pipe.vae is not None else 1
    if d.height != d.width:
        logger.info("diffusers' pipelines default to square frames: pass height=%d, width=%d to them", d.height, d.width)
    flavour, modules = diffusers_unet(pipe.model, sample_size=d.height // factor)
    text_encoder, tokenizer, notes = _text_parts(pipe)
    scheduler, scheduler_notes = _scheduler(pipe)
    notes += scheduler_notes
    if pipe.vae is not None:
        vae = pipe.vae.vae.float().eval()
    else:
        vae = PixelSpaceVAE(channels=pipe.defaults.channels)
        notes.append("pixel model: vae/ is text2video's PixelSpaceVAE; `import text2video.pipelines.to_diffusers` before "
                     "diffusers' from_pretrained")  # fmt: skip
    parts = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler, **modules)
    if flavour == "text-to-video":
        cls = diffusers.TextToVideoSDPipeline
    else:
        cls = diffusers.AnimateDiffPipeline
    target = cls(**parts)
    target.save_pretrained(str(out), safe_serialization=True)
    report = {
        "format": "diffusers",
        "pipeline": cls.__name__,
        "output": str(out),
        "scheduler": type(scheduler).__name__,
        "default_call": {
            "num_frames": pipe.defaults.num_frames,
            "height": pipe.defaults.height,
            "width": pipe.defaults.width,
            "num_inference_steps": pipe.defaults.steps,
            "guidance_scale": pipe.defaults.guidance_scale,
        },  # fmt: skip
        "notes": notes,
    }
    logger.info("wrote a diffusers %s folder to %s", cls.__name__, out)
    return report
