"""What every pipeline shares: defaults, the output type, prompt encoding, seeds, the optional VAE, save and load.

A pipeline with a ``vae`` (a `text2video.latent.VideoVAE`) is a latent pipeline: it samples latents of
``vae.latent_shape`` of the requested pixel shape and decodes them; given frames are encoded first.
Its defaults (``height``, ``width``, ``channels``) stay those of the output pixels.

A pipeline with a ``scheduler_config`` (a pretrained model's diffusers scheduler config) samples with
that scheduler as the model's authors set it up (see `text2video.diffusion.sampling.plan_sampling`). Such
configs describe diffusion schedulers, so a pipeline whose objective is rectified flow refuses one: it
samples with the flow samplers (`text2video.diffusion.schedule.FLOW_SAMPLERS`) whatever its origin.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np
import torch

from ..backends import cpu as cpu_backend
from ..diffusion.conditioning import Conditioning
from ..diffusion.objective import ObjectiveConfig
from ..diffusion.objectives import make_objective
from ..errors import CheckpointError, ConfigError, ModelError, NonFiniteError
from ..io.text import read_text

logger = logging.getLogger(__name__)

PIPELINE_FILE = "pipeline.json"
MODEL_FOLDER = "model"
VAE_FOLDER = "vae"
FORMAT_VERSION = 1


@dataclass
class PipelineDefaults:
    """Video and sampling settings a pipeline uses when a call does not give them."""

    num_frames: int = 8
    height: int = 32
    width: int = 32
    channels: int = 3
    fps: float = 8.0
    steps: int = 50
    sampler: str = "ddim"
    guidance_scale: float = 2.0
    eta: float = 0.0
    clip_x0: bool = True
    dynamic_threshold: Optional[float] = None
    negative_prompt: Optional[str] = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PipelineDefaults:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown pipeline default(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


@dataclass
class VideoOutput:
    """Generated videos ``(B, C, T, H, W)`` in [-1, 1] on the CPU, with their prompts, fps and seeds, and the
    ``settings`` they were sampled with (steps, sampler, guidance, size, ...)."""

    videos: torch.Tensor
    prompts: list[str]
    fps: float = 8.0
    seeds: Optional[list[int]] = None
    extras: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.videos.shape[0]

    @property
    def shape(self) -> torch.Size:
        """The videos' shape ``(B, C, T, H, W)``."""
        return self.videos.shape

    def frames(self, index: int = 0) -> np.ndarray:
        """Video ``index`` as uint8 ``(T, H, W, C)``."""
        from ..io.video import tensor_to_frames

        return tensor_to_frames(self.videos[index])

    def video_settings(self, index: int) -> dict[str, Any]:
        """What made video ``index``: its prompt, seed, fps, the sampling settings and its extras (e.g. its weight)."""
        record: dict[str, Any] = {"prompt": self.prompts[index] if index < len(self.prompts) else ""}
        if self.seeds is not None and len(self.seeds) == len(self):
            record["seed"] = self.seeds[index]
        record["fps"] = self.fps
        record.update(self.settings)
        for key, values in self.extras.items():
            record[key] = values[index] if isinstance(values, (list, tuple)) and len(values) == len(self) else values
        return record

    def save(self, dir_or_path: str | Path, fmt: str = "gif") -> list[Path]:
        """Write every video with its prompt (a same-stem ``.txt``, what ``text2video eval --videos`` reads) and
        its settings (a same-stem ``.json``). A path with a suffix (``out.mp4``) takes a single video; otherwise
        the videos go into that folder as ``000_<prompt>.<fmt>``. Returns the written video paths."""
        from ..io.video import write_video

        target = Path(dir_or_path)
        fmt = fmt.lower().lstrip(".")
        if target.suffix:
            if len(self) != 1:
                raise ConfigError(f"{target} names one file but there are {len(self)} videos; give a folder instead")
            files = [(0, target)]
        else:
            target.mkdir(parents=True, exist_ok=True)
            files = []
            for i in range(len(self)):
                prompt = self.prompts[i] if i < len(self.prompts) else ""
                slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:48] or "video"
                files.append((i, target / f"{i:03d}_{slug}.{fmt}"))
        paths = []
        for i, path in files:
            paths.append(write_video(self.frames(i), path, fps=self.fps))
            record = self.video_settings(i)
            path.with_suffix(".txt").write_text(record["prompt"] + "\n", encoding="utf-8")
            path.with_suffix(".json").write_text(json.dumps({**record, "video": path.name}, indent=2) + "\n", encoding="utf-8")
        return paths


def _plain_settings(options: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-able sampling settings of a call (the scheduler config is left out: it is the model's)."""
    keep = ("steps", "sampler", "guidance_scale", "eta", "clip_x0", "dynamic_threshold", "negative_prompt", "strength", "given_frames")
    return {k: options[k] for k in keep if k in options and isinstance(options[k], (int, float, str, bool, list, type(None)))}


def as_prompt_list(prompt: str | Sequence[str] | None) -> list[str]:
    if prompt is None:
        return [""]
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, (list, tuple)):
        raise ConfigError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
    prompts = list(prompt)
    wrong = [type(p).__name__ for p in prompts if not isinstance(p, str)]
    if not prompts or wrong:
        raise ConfigError(f"prompt must be a string or a non-empty list of strings{f', got a list holding {wrong[0]}' if wrong else ''}")
    return prompts


MAX_SEED = 2**63 - 1
#: The working memory of sampling is at least this many times the sampled tensor (a denoiser's first
#: level alone holds tens of channels per sampled value); a request above the device's memory even by this
#: coarse lower bound is refused before anything is allocated.
WORKING_MEMORY_FACTOR = 64


def check_seed(seed: Any, count: int = 1) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED - count:
        raise ConfigError(f"seed must be an integer from 0 to {MAX_SEED - count}, got {seed!r}")


def device_memory(device: torch.device) -> Optional[int]:
    """Total memory of ``device`` in bytes (None where unknown)."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        if device.type == "cpu":
            return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError, RuntimeError):
        return None
    return None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def make_generators(count: int, seed: Optional[int]) -> tuple[list[torch.Generator], list[int]]:
    """One CPU generator per video, seeded ``seed, seed + 1, ...`` (a random base seed when None)."""
    if seed is not None:
        check_seed(seed, count)
    base = int(torch.randint(0, 2**31 - 1, (1,)).item()) if seed is None else int(seed)
    seeds = [base + i for i in range(count)]
    return [torch.Generator().manual_seed(s) for s in seeds], seeds


class VideoPipeline:
    """A denoiser, a text encoder (or None for unconditional models), an objective, defaults, and a VAE
    (None: the model works on pixels)."""

    pipeline_name: ClassVar[str] = "VideoPipeline"

    def __init__(
        self,
        model: Any,
        text_encoder: Any = None,
        objective_config: ObjectiveConfig | Mapping[str, Any] | None = None,
        defaults: PipelineDefaults | Mapping[str, Any] | None = None,
        *,
        text_encoder_ref: Any = None,
        vae: Any = None,
        scheduler_config: Optional[Mapping[str, Any]] = None,
        embed_text_encoder: bool = False,
    ) -> None:
        self.model = model
        self.vae = vae
        #: a pretrained model's diffusers scheduler config (None: our trailing schedule of the objective)
        self.scheduler_config = dict(scheduler_config) if scheduler_config else None
        #: save_pretrained copies the text encoder into the folder (a pretrained model's own encoder)
        self.embed_text_encoder = embed_text_encoder
        self.text_encoder = text_encoder
        self.objective = make_objective(objective_config)
        if self.scheduler_config is not None:  # a flow-trained model refuses a diffusion model's scheduler
            self.objective.check_scheduler_config(self.scheduler_config)
        self.defaults = defaults if isinstance(defaults, PipelineDefaults) else PipelineDefaults.from_dict(defaults)
        if text_encoder_ref is None and text_encoder is not None:
            text_encoder_ref = "default"
        self.text_encoder_ref = text_encoder_ref
        self.lora_scales: dict[str, float] = {}  # adapters loaded by load_lora, and their scales
        self._unmerged: Optional[dict[str, torch.Tensor]] = None  # the weights fuse_lora changed

    # ------------------------------------------------------------------------------------- LoRA

    def load_lora(self, path: str | Path, scale: float = 1.0, name: Optional[str] = None) -> str:
        """Add a LoRA adapter (a ``.safetensors`` file, its folder, or a LoRA run / checkpoint folder) at ``scale``;
        several may be loaded, each with its own scale. Returns its name (``name``, else ``lora0``, ``lora1``, ...)."""
        from ..models.lora import load_lora, set_lora_scales
        from .lora import lora_file

        if self._unmerged is not None:
            raise ConfigError("the loaded adapters are merged into the weights (fuse_lora); call unload_lora() before loading another")
        name = name or f"lora{len(self.lora_scales)}"
        load_lora(self.model, lora_file(path), name)
        self.lora_scales[name] = float(scale)
        set_lora_scales(self.model, self.lora_scales)
        logger.info("LoRA %s loaded from %s at scale %s", name, path, scale)
        return name

    def set_lora_scale(self, name: str, scale: float) -> None:
        """Change the scale of a loaded adapter (0 turns it off)."""
        from ..models.lora import set_lora_scales

        if name not in self.lora_scales:
            raise ConfigError(f"no LoRA named {name!r}; loaded: {sorted(self.lora_scales) or 'none'}")
        if self._unmerged is not None:
            raise ConfigError("the adapters are merged into the weights (fuse_lora); unload_lora() and load them again to rescale")
        self.lora_scales[name] = float(scale)
        set_lora_scales(self.model, self.lora_scales)

    def fuse_lora(self) -> None:
        """Merge the loaded adapters (at their scales) into the weights: sampling then runs at the base model's
        speed. `unload_lora` gives the base weights back exactly."""
        from ..models.lora import merge_lora

        if not self.lora_scales or self._unmerged is not None:
            return
        self._unmerged = merge_lora(self.model)

    def unload_lora(self) -> None:
        """Remove every adapter (merged or not); the model is the base model again, bit for bit."""
        from ..models.lora import remove_lora, restore_weights

        if self._unmerged is not None:
            restore_weights(self.model, self._unmerged)
        else:
            remove_lora(self.model)
        self._unmerged = None
        self.lora_scales = {}

    # ------------------------------------------------------------------------------- properties

    @property
    def objective_config(self) -> ObjectiveConfig:
        return self.objective.config

    @property
    def device(self) -> torch.device:
        """Where sampling runs (while the model is offloaded to the CPU: the device it runs on)."""
        from ..diffusion.sampling import EXECUTION_DEVICE_ATTR

        offloaded = getattr(self.model, EXECUTION_DEVICE_ATTR, None)
        if offloaded is not None:
            return torch.device(offloaded)
        try:
            return next(self.model.parameters()).device
        except (AttributeError, StopIteration, TypeError):
            return torch.device("cpu")

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> VideoPipeline:
        """Move the model and the VAE to ``device`` and/or cast them to ``dtype`` (the text encoder keeps the
        device and dtype it was loaded with; its output is moved to the model's device)."""
        if isinstance(self.model, torch.nn.Module):  # (nn.Module's own .to: diffusers' warns on every dtype cast)
            torch.nn.Module.to(self.model, device=device, dtype=dtype)
        elif hasattr(self.model, "to"):
            self.model.to(device=device, dtype=dtype)
        if self.vae is not None:
            self.vae.to(device=device, dtype=dtype)
        return self

    def backend(self) -> contextlib.AbstractContextManager:
        """The context every sampling run of this pipeline goes in: on CPU, the CPU backend's fast layers
        with their weight-derived tensors built once for all steps (`text2video.backends.cpu.sampling`)."""
        if self.device.type != "cpu":
            return contextlib.nullcontext()
        return cpu_backend.sampling(self.model)

    def as_pipeline(self, cls: type[VideoPipeline]) -> VideoPipeline:
        """The same model, text encoder, VAE and defaults behind another pipeline class (no copy of the weights)."""
        if type(self) is cls:
            return self
        pipe = cls(self.model, self.text_encoder, self.objective_config, self.defaults, text_encoder_ref=self.text_encoder_ref,
                   vae=self.vae, scheduler_config=self.scheduler_config, embed_text_encoder=self.embed_text_encoder)  # fmt: skip
        if hasattr(self, "source"):
            pipe.source = self.source
        return pipe

    # ------------------------------------------------------------------------------ latent space

    def frame_rate(self, fps: Optional[float]) -> float:
        """``fps`` (the default when None), refused unless a positive finite number."""
        if fps is None:
            return float(self.defaults.fps)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
            raise ConfigError(f"fps must be a positive number, got {fps!r}")
        return float(fps)

    def sample_shape(self, pixel_shape: Sequence[int]) -> tuple[int, ...]:
        """The shape the sampler works at for output videos of ``pixel_shape`` (B, C, T, H, W)."""
        return tuple(pixel_shape) if self.vae is None else self.vae.latent_shape(pixel_shape)

    def output_shape(
        self, count: int, num_frames: Optional[int] = None, height: Optional[int] = None, width: Optional[int] = None
    ) -> tuple[int, int, int, int, int]:
        """The pixel shape (B, C, T, H, W) of ``count`` videos, the defaults filling what is None; sizes that
        are not positive integers, or so large that sampling them cannot fit the device, are refused here,
        before anything is allocated."""
        d = self.defaults
        given = {"num_frames": num_frames, "height": height, "width": width}
        sizes = {k: getattr(d, k) if v is None else v for k, v in given.items()}
        for name, value in [("number of videos", count), *sizes.items()]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        shape = (count, d.channels, sizes["num_frames"], sizes["height"], sizes["width"])
        sampled = math.prod(self.sample_shape(shape))
        need = 4 * max(sampled * WORKING_MEMORY_FACTOR, math.prod(shape) * 4)
        total = device_memory(self.device)
        if total is not None and need > total:
            raise ConfigError(
                f"{count} video(s) of {shape[2]} frames at {shape[3]}x{shape[4]} need at least {_size(need)} while sampling, "
                f"more than the {_size(total)} of {self.device}; lower the size, the frames or the batch"
            )
        return shape

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Pixel frames (B, C, k, H, W) in [-1, 1] -> what the model works on (latents: the posterior mean)."""
        if self.vae is None:
            return frames
        return self.vae.encode(frames.to(self.vae.device), posterior="mode")

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Sampler output -> pixel videos in [-1, 1]."""
        return x if self.vae is None else self.vae.decode(x)

    # ------------------------------------------------------------------------------ conditions

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Text fields of a `Conditioning` for ``prompts`` (empty when there is no text encoder)."""
        if self.text_encoder is None:
            return Conditioning()
        emb = self.text_encoder.encode(list(prompts))
        return Conditioning(text_tokens=emb.tokens, text_mask=emb.mask, text_pooled=emb.pooled)

    def _condition(self, prompts: list[str], per_prompt: int, fps: float) -> Conditioning:
        cond = self.encode_prompts(prompts).repeat_interleave(per_prompt)
        count = len(prompts) * per_prompt
        cond.fps = torch.full((count,), float(fps))
        return cond.to(self.device)

    def _negative(self, negative_prompt: str | Sequence[str] | None, count: int) -> Optional[Conditioning]:
        if negative_prompt is None or self.text_encoder is None:
            return None
        negatives = as_prompt_list(negative_prompt)
        if len(negatives) == 1:
            negatives = negatives * count
        if len(negatives) != count:
            raise ConfigError(f"got {len(negatives)} negative prompts for {count} videos; give one, or one per video")
        return self.encode_prompts(negatives).to(self.device)

    def _sampling_kwargs(self, **given: Any) -> dict[str, Any]:
        """Call arguments with the defaults filled in where None."""
        d = self.defaults
        out = {}
        for name in ("steps", "sampler", "guidance_scale", "eta", "clip_x0", "dynamic_threshold"):
            value = given.get(name)
            out[name] = getattr(d, name) if value is None else value
        if self.vae is not None:  # latents are not bounded to [-1, 1]: no clipping unless a call asks for it
            out["clip_x0"] = bool(given.get("clip_x0") or False)
            out["dynamic_threshold"] = given.get("dynamic_threshold")
        if self.text_encoder is None:
            out["guidance_scale"] = 1.0  # nothing to guide with
        out["scheduler_config"] = self.scheduler_config
        return out

    def _finish(
        self,
        videos: torch.Tensor,
        prompts: list[str],
        seeds: Optional[list[int]],
        fps: Optional[float] = None,
        settings: Optional[dict[str, Any]] = None,
        **extras: Any,
    ) -> VideoOutput:
        videos = videos.detach().float()
        if not bool(torch.isfinite(videos).all()):
            bad = sorted({i for i in range(videos.shape[0]) if not bool(torch.isfinite(videos[i]).all())})
            raise NonFiniteError(
                f"{len(bad)} of {videos.shape[0]} sampled videos hold NaN or infinite values (videos {bad[:5]}); nothing is "
                "written. The weights may be non-finite (check the run's checkpoints) or the sampling settings extreme"
            )
        fps = float(self.defaults.fps if fps is None else fps)
        out = VideoOutput(videos.clamp(-1, 1).cpu(), prompts, fps, seeds, extras)
        out.settings = {"pipeline": self.pipeline_name, **_plain_settings(settings or {})}
        out.settings.update(num_frames=int(out.videos.shape[2]), height=int(out.videos.shape[3]), width=int(out.videos.shape[4]))
        return out

    # ---------------------------------------------------------------------------- save and load

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``model/`` (the model's ``save_pretrained``), ``vae/`` for a latent pipeline, and ``pipeline.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if not hasattr(self.model, "save_pretrained"):
            raise ModelError("the pipeline's model has no save_pretrained; subclass diffusers' ModelMixin + ConfigMixin")
        if self.lora_scales and self._unmerged is None:
            raise ConfigError("the pipeline has LoRA adapters loaded: fuse_lora() to save them merged, or unload_lora() first")
        self.model.save_pretrained(str(path / MODEL_FOLDER))
        if self.vae is not None:
            self.vae.save_pretrained(path / VAE_FOLDER)
        cls = type(self.model)
        text_encoder_ref = self.text_encoder_ref
        if self.embed_text_encoder and text_encoder_ref is not None:
            from .parts import embed_text_encoder

            text_encoder_ref = embed_text_encoder(text_encoder_ref, path)
        record = {
            "format_version": FORMAT_VERSION,
            "pipeline": self.pipeline_name,
            "model_class": f"{cls.__module__}:{cls.__qualname__}",
            "objective": self.objective.config.to_dict(),
            "text_encoder": text_encoder_ref,
            "defaults": asdict(self.defaults),
        }
        if self.vae is not None:
            record["vae"] = VAE_FOLDER
        if self.scheduler_config is not None:
            record["scheduler"] = self.scheduler_config
        (path / PIPELINE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        model: Any = None,
        text_encoder: Any = None,
        vae: Any = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        model_classes: Sequence[type] = (),
    ) -> VideoPipeline:
        """Load a folder written by `save_pretrained`. ``model`` / ``text_encoder`` / ``vae`` replace the
        saved ones; ``dtype`` casts the model, the VAE and the text encoder. The model's class must be a
        registered one (or a subclass), or one of the ``model_classes`` the caller trusts."""
        from .parts import load_text_encoder_ref

        path = Path(path)
        record = read_pipeline_record(path)
        if model is None:
            model = _load_model(path / MODEL_FOLDER, record.get("model_class"), tuple(model_classes))
        ref = record.get("text_encoder")
        if text_encoder is None and ref is not None:
            text_encoder = load_text_encoder_ref(ref, path, device=device, dtype=dtype)
        vae_folder = record.get("vae")
        if vae is None and vae_folder:
            from ..latent import load_vae

            folder = path / str(vae_folder)
            if not (folder / "config.json").is_file():
                raise CheckpointError(f"{path} is a latent pipeline but its VAE folder {folder} is missing; copy the whole pipeline folder")
            vae = load_vae(folder)
        embedded = isinstance(ref, Mapping) and ref.get("path") == "."
        pipe = cls(model, text_encoder, record.get("objective"), record.get("defaults"), text_encoder_ref=ref, vae=vae,
                   scheduler_config=record.get("scheduler"), embed_text_encoder=embedded)  # fmt: skip
        if embedded:  # keep pointing at this folder's copy, so a second save copies it again
            from .parts import resolve_ref

            pipe.text_encoder_ref = resolve_ref(ref, path)
        if device is not None or dtype is not None:
            pipe.to(device, dtype)
        if hasattr(model, "eval"):
            model.eval()
        return pipe


def read_pipeline_record(path: Path) -> dict[str, Any]:
    file = path / PIPELINE_FILE
    if not file.is_file():
        raise CheckpointError(f"{path} is not a pipeline folder: it has no {PIPELINE_FILE} (write one with save_pretrained)")
    try:
        record = json.loads(read_text(file, "pipeline record"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file} is not valid JSON: {exc}") from exc
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{file} has format_version {record['format_version']}; this text2video reads up to {FORMAT_VERSION}")
    return record


def _load_model(folder: Path, model_class: Optional[str], trusted: tuple[type, ...] = ()) -> Any:
    """Load through the model registry. ``model_class`` (``module:qualname`` in ``pipeline.json``) may name
    only a registered model class or a subclass of one (or of a ``trusted`` class the caller passes), from a
    module already imported: no code is imported, and no other class's loader (such as transformers'
    ``AutoModel`` with its ``auto_map``) is reached, on the say-so of a file."""
    from ..models.registry import MODELS, load_model
    from ..models.registry import model_class as registered_class

    try:
        return load_model(folder)
    except ModelError as exc:
        if not model_class or ":" not in model_class:
            raise
        module_name, qualname = model_class.split(":", 1)
        module = sys.modules.get(module_name)
        if module is None:
            raise ModelError(
                f"{folder} holds a {qualname} from module {module_name!r}, which is not imported; import it first "
                "or pass model= to from_pretrained"
            ) from exc
        target: Any = module
        for part in qualname.split("."):
            target = getattr(target, part, None)
        allowed = tuple(registered_class(name) for name in MODELS) + trusted
        if not (isinstance(target, type) and issubclass(target, allowed)):
            raise ModelError(
                f"{folder / PIPELINE_FILE} names model_class {model_class!r}, which is not a text2video model (registered: "
                f"{', '.join(sorted(MODELS))}, or subclasses of them); it is not loaded"
            ) from exc
        return target.from_pretrained(str(folder))
