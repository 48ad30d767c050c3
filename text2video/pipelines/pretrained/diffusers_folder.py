"""A diffusers pipeline folder as a text2video pipeline, with the model's own parts.

* ``TextToVideoSDPipeline`` (ModelScope text-to-video-ms-1.7b, Zeroscope): its ``UNet3DConditionModel``
  becomes ours (``UNet3DConditionModel.from_diffusers_unet3d``: the same weights, the same outputs);
* ``AnimateDiffPipeline``: its Stable Diffusion UNet with the motion modules (a ``UNetMotionModel``, or a
  ``UNet2DConditionModel`` with ``motion_adapter/``) is inflated into ours (``from_unet2d``);
* ``StableDiffusionPipeline`` + a motion adapter (a ``MotionAdapter`` folder or an original AnimateDiff
  ``.ckpt``): the same, with AnimateDiff's sampling schedule (linear betas, DDIM with linspace spacing).

The text encoder and tokenizer are the folder's, encoded as the pipeline encodes (77-token padding, the
last hidden state or ``clip_skip``, the empty prompt as the unconditional input); the VAE and its scaling
factor are the folder's; the scheduler config becomes the default sampler; size and frame count default
to what the diffusers pipeline uses (the UNet's ``sample_size`` times the VAE's factor, 16 frames).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional

import torch

from ...errors import ModelError
from ..base import PipelineDefaults
from .detect import ModelSource, read_json

logger = logging.getLogger(__name__)

#: the diffusers pipeline's default call settings, per format.
_CALL_DEFAULTS: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        "diffusers-text-to-video": MappingProxyType({"num_frames": 16, "steps": 50, "guidance_scale": 9.0}),
        "diffusers-animatediff": MappingProxyType({"num_frames": 16, "steps": 50, "guidance_scale": 7.5}),
        "diffusers-stable-diffusion": MappingProxyType({"num_frames": 16, "steps": 25, "guidance_scale": 7.5}),
    }
)
#: what model cards of well-known repos use where the configs cannot say it (keyed by repo or folder name).
KNOWN_DEFAULTS: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        "zeroscope_v2_576w": MappingProxyType({"width": 576, "height": 320, "num_frames": 24, "steps": 40}),
        "zeroscope_v2_XL": MappingProxyType({"width": 1024, "height": 576, "num_frames": 24, "steps": 40}),
        "zeroscope_v2_dark_30x448x256": MappingProxyType({"width": 448, "height": 256, "num_frames": 30, "steps": 40}),
    }
)
#: AnimateDiff's inference schedule (its configs/inference yaml): what an SD folder + adapter samples with.
ANIMATEDIFF_SCHEDULER: MappingProxyType[str, Any] = MappingProxyType(
    {
        "_class_name": "DDIMScheduler",
        "beta_schedule": "linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "timestep_spacing": "linspace",
        "prediction_type": "epsilon",
        "num_train_timesteps": 1000,
    }  # fmt: skip
)
FAMILIES: MappingProxyType[str, str] = MappingProxyType(
    {
        "diffusers-text-to-video": "ModelScope text-to-video (diffusers TextToVideoSDPipeline)",
        "diffusers-animatediff": "AnimateDiff: Stable Diffusion 1.x + motion modules (diffusers AnimateDiffPipeline)",
        "diffusers-stable-diffusion": "AnimateDiff: Stable Diffusion 1.x + motion adapter",
    }
)


@dataclass
class DiffusersParts:
    """Everything a diffusers folder contributes, read from its configs (no weights loaded)."""

    source: ModelSource
    model_config: dict[str, Any]
    scheduler_config: dict[str, Any]
    defaults: PipelineDefaults
    text_encoder_ref: dict[str, Any]
    motion_adapter: Optional[Path] = None
    notes: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.source.path

    @property
    def family(self) -> str:
        return FAMILIES[self.source.format]

    @property
    def objective_config(self) -> dict[str, Any]:
        from ...diffusion.schedule import objective_settings_from_scheduler

        return {**objective_settings_from_scheduler(self.scheduler_config), "cond_drop_prob": 0.0}

    # ------------------------------------------------------------------------- building the parts

    def load_model(self) -> torch.nn.Module:
        """Our ``UNet3DConditionModel`` with the folder's weights."""
        from ...models.unet3d_condition import UNet3DConditionModel

        unet = self.root / "unet"
        if self.source.format == "diffusers-text-to-video":
            model = UNet3DConditionModel.from_diffusers_unet3d(unet)
        else:
            model = UNet3DConditionModel.from_unet2d(unet, self.motion_adapter)
        return model.float().eval()

    def skeleton_model(self) -> torch.nn.Module:
        """The same model with its parameters on the meta device (sizes only: for `text2video info`)."""
        from ...models.unet3d_condition import UNet3DConditionModel

        with torch.device("meta"):
            return UNet3DConditionModel(**self.model_config)

    def load_text_encoder(self, device: Any = None, dtype: Optional[torch.dtype] = None) -> Any:
        from ...text import load_text_encoder

        return load_text_encoder(self.text_encoder_ref, device=device, dtype=dtype)

    def load_vae(self, device: Any = None, dtype: Optional[torch.dtype] = None) -> Any:
        from ...latent import VideoVAE

        return VideoVAE.from_pretrained(self.root, device=device, dtype=dtype)


def _scheduler_config(root: Path) -> dict[str, Any]:
    config = read_json(root / "scheduler" / "scheduler_config.json", "scheduler/scheduler_config.json")
    if not config.get("_class_name"):
        raise ModelError(f"{root / 'scheduler'} has a scheduler config without _class_name; download the model again")
    return config


def _resolve_adapter(spec: Any) -> Path:
    from .hub import looks_like_hub_id, resolve_hub_id

    path = Path(str(spec)).expanduser()
    if path.exists():
        return path
    if looks_like_hub_id(str(spec)):
        return resolve_hub_id(str(spec))
    raise ModelError(f"--motion-adapter {spec} does not exist: pass a MotionAdapter folder, an AnimateDiff .ckpt, or a Hub id")


def _model_config(source: ModelSource, unet_config: dict[str, Any], adapter: Optional[Path]) -> dict[str, Any]:
    from ...models import unet3d_condition_keys

    if source.format == "diffusers-text-to-video":
        return unet3d_condition_keys.unet3d_config(unet_config)
    config = unet3d_condition_keys.unet2d_config(unet_config)
    if unet_config.get("_class_name") == "UNetMotionModel" and adapter is None:
        config.update(unet3d_condition_keys.motion_unet_config(unet_config))
    elif adapter is not None:
        state, adapter_config = unet3d_condition_keys.read_motion_source(adapter)
        config.update(unet3d_condition_keys.infer_motion_config(state, adapter_config))
    return config


def _defaults(source: ModelSource, unet_config: dict[str, Any], vae_config: dict[str, Any], sampler: str) -> PipelineDefaults:
    factor = 2 ** (len(vae_config.get("block_out_channels", (1, 1, 1, 1))) - 1)
    size = int(unet_config.get("sample_size") or 64) * factor
    call = dict(_CALL_DEFAULTS[source.format])
    values: dict[str, Any] = {"height": size, "width": size, "channels": int(vae_config.get("in_channels", 3)), "fps": 8.0,
                              "sampler": sampler, "negative_prompt": "", "clip_x0": False, **call}  # fmt: skip
    names = {source.path.name, source.spec.rstrip("/").split("/")[-1]}
    for name in names:
        values.update(KNOWN_DEFAULTS.get(name, {}))
    return PipelineDefaults.from_dict(values)


def read_parts(source: ModelSource, *, motion_adapter: Any = None, clip_skip: Optional[int] = None) -> DiffusersParts:
    """The parts of the diffusers folder ``source`` (configs only; weights load in `DiffusersParts`)."""
    from ...diffusion.schedule import sampler_for_scheduler

    root = source.path
    unet_config = read_json(root / "unet" / "config.json", "unet/config.json")
    vae_config = read_json(root / "vae" / "config.json", "vae/config.json")
    notes: list[str] = []
    adapter: Optional[Path] = None
    if motion_adapter is not None:
        if source.format == "diffusers-text-to-video":
            raise ModelError(
                "--motion-adapter applies to Stable Diffusion and AnimateDiff folders; a TextToVideoSDPipeline has its own temporal layers"
            )
        adapter = _resolve_adapter(motion_adapter)
    elif source.format == "diffusers-animatediff" and unet_config.get("_class_name") == "UNet2DConditionModel":
        adapter = root / "motion_adapter"
    elif source.format == "diffusers-stable-diffusion":
        raise ModelError(
            f"{source.spec} is a Stable Diffusion image pipeline: add --motion-adapter DIR_OR_CKPT (an AnimateDiff "
            "MotionAdapter folder or Hub id, or an original mm_sd_v15*.ckpt) to animate it"
        )
    if source.format == "diffusers-stable-diffusion":
        scheduler = {**_scheduler_config(root), **ANIMATEDIFF_SCHEDULER}
        notes.append("sampling with AnimateDiff's schedule (DDIM, linear betas 0.00085-0.012, linspace spacing)")
    else:
        scheduler = _scheduler_config(root)
    sampler = sampler_for_scheduler(scheduler["_class_name"])
    if sampler is None:
        notes.append(f"the folder's {scheduler['_class_name']} is not one of text2video's samplers: DDIM on its schedule is the default")
        sampler = "ddim"
    text_encoder_config = read_json(root / "text_encoder" / "config.json", "text_encoder/config.json")
    if text_encoder_config.get("model_type") not in ("clip_text_model", "clip") and clip_skip:
        raise ModelError("--clip-skip applies to CLIP text encoders; this pipeline's text encoder is not CLIP")
    return DiffusersParts(
        source=source,
        model_config=_model_config(source, unet_config, adapter),
        scheduler_config=scheduler,
        defaults=_defaults(source, unet_config, vae_config, sampler),
        text_encoder_ref={"path": str(root.resolve()), "padding": "max_length", "clip_skip": clip_skip},
        motion_adapter=adapter,
        notes=notes,
    )
