"""Running big pipelines on small machines: the sampling dtype, VAE decoding in frame slices and
spatial tiles, and model CPU offload.

* ``dtype`` (float32 | float16 | bfloat16) casts the denoiser, the VAE and the text encoder. It changes the
  numbers, so it is off (float32) unless asked for.
* VAE frame slices (``vae_frames``: frames per VAE call, 8 by default) bound the decoder's memory by the
  slice rather than the clip; the frames are decoded independently, so the result does not change.
* VAE tiles (``vae_tiling``): diffusers' overlapping spatial tiles for large frames. The blended seams
  change the numbers slightly, so tiling is off unless asked for.
* Model CPU offload (``offload``): the text encoder, the denoiser and the VAE wait on the CPU and only the
  part that runs sits on the GPU. It changes no number, only memory and time; ``"auto"`` turns it on
  when the `text2video.pipelines.estimate` of a sample does not fit in the GPU's free memory.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Optional

import torch

from ..diffusion.sampling import EXECUTION_DEVICE_ATTR
from ..errors import ConfigError

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}  # fmt: skip
OFFLOAD_MODES = ("off", "on", "auto")


def parse_dtype(dtype: Any) -> Optional[torch.dtype]:
    """``None``, a ``torch.dtype`` or one of float32 / float16 / bfloat16 (fp32, fp16, bf16, half)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = DTYPES.get(str(dtype).lower().replace("torch.", ""))
    if value is None:
        raise ConfigError(f"unknown dtype {dtype!r}; choose float32, float16 or bfloat16")
    return value


def configure_vae(pipe: Any, *, frames_per_call: Optional[int] = None, tiling: bool = False) -> None:
    """Frame slices and spatial tiles of the pipeline's VAE (no-op for a pixel pipeline)."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        if tiling or frames_per_call:
            logger.info("the model works on pixels: VAE slicing and tiling do not apply")
        return
    if frames_per_call is not None:
        if frames_per_call < 1:
            raise ConfigError(f"VAE frames per call must be >= 1, got {frames_per_call}")
        vae.micro_batch = int(frames_per_call)
    if tiling:
        vae.enable_tiling()


class _Offloader:
    """Keeps at most one of the registered modules on the execution device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.modules: list[torch.nn.Module] = []

    def activate(self, module: torch.nn.Module) -> None:
        for other in self.modules:
            if other is not module and _device_of(other) != torch.device("cpu"):
                other.to("cpu")
        if _device_of(module) != self.device:
            module.to(self.device)

    def wrap(self, owner: Any, method: str, module: torch.nn.Module) -> None:
        """Make ``owner.method`` bring ``module`` to the device before it runs."""
        original = getattr(owner, method)

        @functools.wraps(original)
        def run(*args: Any, **kwargs: Any) -> Any:
            self.activate(module)
            return original(*args, **kwargs)

        object.__setattr__(owner, method, run) if isinstance(owner, torch.nn.Module) else setattr(owner, method, run)


def _device_of(module: torch.nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def enable_model_cpu_offload(pipe: Any, device: torch.device | str = "cuda") -> None:
    """Keep the pipeline's parts on the CPU and move each to ``device`` only while it runs."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model CPU offload moves each part to the GPU while it runs, and no CUDA GPU is available; drop --offload")
    offloader = _Offloader(device)
    pipe.to("cpu")
    model = pipe.model
    offloader.modules.append(model)
    offloader.wrap(model, "forward_cond", model)
    setattr(model, EXECUTION_DEVICE_ATTR, device)
    if pipe.vae is not None:
        offloader.modules.append(pipe.vae)
        for method in ("encode_moments", "decode"):
            offloader.wrap(pipe.vae, method, pipe.vae)
    text_model = getattr(pipe.text_encoder, "model", None)
    if isinstance(text_model, torch.nn.Module) and pipe.embed_text_encoder:  # an encoder of its own, not a shared one
        text_model.to("cpu")
        offloader.modules.append(text_model)
        offloader.wrap(pipe.text_encoder, "encode", text_model)
    pipe.offloaded = True
    logger.info("model CPU offload: each part moves to %s while it runs", device)


def should_offload(mode: str, pipe: Any, device: torch.device) -> bool:
    """Whether ``mode`` (off | on | auto) offloads on ``device``; auto compares the estimate of one sample
    at the default size in the pipeline's dtype with the GPU's free memory."""
    if mode not in OFFLOAD_MODES:
        raise ConfigError(f"unknown offload mode {mode!r}; choose one of: {', '.join(OFFLOAD_MODES)}")
    if mode == "off" or device.type != "cuda":
        if mode == "on" and device.type != "cuda":
            raise ConfigError(f"model CPU offload needs a CUDA device, not {device}; drop --offload or pass --device cuda")
        return False
    if mode == "on":
        return True
    from .estimate import estimate_pipeline_memory

    try:
        need = estimate_pipeline_memory(pipe)["total_bytes"]
    except Exception as exc:  # noqa: BLE001 - an estimate that fails must not stop sampling
        logger.info("no memory estimate for this model (%s); not offloading", exc)
        return False
    free, _ = torch.cuda.mem_get_info(device)
    if need > free:
        logger.info(
            "one sample needs about %.1f GiB and %.1f GiB are free on %s: offloading parts to the CPU", need / 2**30, free / 2**30, device
        )
        return True
    return False


def configure_runtime(
    pipe: Any,
    *,
    device: Any = None,
    dtype: Any = None,
    offload: str = "off",
    vae_frames: Optional[int] = None,
    vae_tiling: bool = False,
) -> Any:
    """Apply the memory options to a loaded pipeline: dtype, device (or offload), VAE slices and tiles.
    A text encoder keeps the dtype it was loaded with (pretrained loaders load it in ``dtype``)."""
    dtype = parse_dtype(dtype)
    target = torch.device(device) if device is not None else None
    if dtype is not None:
        pipe.to(dtype=dtype)
    configure_vae(pipe, frames_per_call=vae_frames, tiling=vae_tiling)
    if target is not None and should_offload(offload, pipe, target):
        enable_model_cpu_offload(pipe, target)
    elif target is not None:
        pipe.to(target)
        if pipe.embed_text_encoder and hasattr(pipe.text_encoder, "to"):  # its own encoder (not a shared one) goes along
            pipe.text_encoder.to(target)
    return pipe
