"""`VideoVAE`: an image VAE (diffusers' ``AutoencoderKL``) applied to video, frame by frame.

Frames are folded into the batch, ``(B, C, T, H, W)`` pixels in [-1, 1] <-> ``(B, c, T, h, w)`` latents,
and go through the VAE ``micro_batch`` frames at a time, so memory does not grow with the clip length.
Latents are scaled as the diffusion model sees them::

    latent = (z - shift_factor) * scaling_factor        z = latent / scaling_factor + shift_factor

with both factors read from the VAE's config (0.18215 and no shift for Stable Diffusion 1.5).

The VAE is frozen: no parameter requires a gradient, it stays in eval mode, and encoding/decoding run
under ``torch.no_grad``. Weights come from a local folder only (a diffusers ``AutoencoderKL`` folder
or a whole Stable Diffusion pipeline folder with a ``vae/`` subfolder), or from `tiny_vae_config`
with random weights for tests and CPU runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import ModelError
from ..nn.frames import fold_frames, unfold_frames

logger = logging.getLogger(__name__)

Posterior = Literal["sample", "mode"]
POSTERIORS: tuple[str, ...] = ("sample", "mode")
Generators = Union[torch.Generator, Sequence[torch.Generator], None]

WEIGHT_FILES: tuple[str, ...] = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
#: config keys that describe where a model came from, not what it computes (left out of the identity)
_PROVENANCE_KEYS = ("_name_or_path", "_diffusers_version", "_use_default_values")


def tiny_vae_config(
    *,
    latent_channels: int = 4,
    block_out_channels: Sequence[int] = (16, 32, 32),
    layers_per_block: int = 1,
    norm_num_groups: int = 8,
    in_channels: int = 3,
    scaling_factor: float = 1.0,
    shift_factor: Optional[float] = None,
    sample_size: int = 32,
) -> dict[str, Any]:
    """Keyword arguments of a small ``AutoencoderKL`` that runs fast on a CPU.

    The spatial downsample factor is ``2 ** (len(block_out_channels) - 1)`` (4 by default). A random
    VAE's latents have no meaningful scale, so the scaling factor defaults to 1; see
    `VideoVAE.estimate_scaling_factor`.
    """
    blocks = len(block_out_channels)
    if blocks < 1 or any(c % norm_num_groups for c in block_out_channels):
        raise ModelError(
            f"tiny VAE: block_out_channels {tuple(block_out_channels)} must be non-empty multiples of norm_num_groups={norm_num_groups}"
        )
    return {
        "in_channels": in_channels,
        "out_channels": in_channels,
        "down_block_types": ("DownEncoderBlock2D",) * blocks,
        "up_block_types": ("UpDecoderBlock2D",) * blocks,
        "block_out_channels": tuple(int(c) for c in block_out_channels),
        "layers_per_block": layers_per_block,
        "latent_channels": latent_channels,
        "norm_num_groups": norm_num_groups,
        "sample_size": sample_size,
        "scaling_factor": float(scaling_factor),
        "shift_factor": shift_factor,
    }


def find_vae_folder(path: str | Path) -> Path:
    """The ``AutoencoderKL`` folder at ``path``: the folder itself or its ``vae/`` subfolder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"VAE folder not found: {path}; give a local diffusers AutoencoderKL folder (or 'tiny')")
    if path.is_file():
        raise ModelError(
            f"{path} is a file; give a diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors). "
            "Convert a single-file checkpoint once with diffusers' AutoencoderKL.from_single_file(...).save_pretrained(folder)"
        )
    for folder in (path, path / "vae"):
        config_file = folder / "config.json"
        if not config_file.is_file():
            continue
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"unreadable VAE config {config_file}: {exc}; restore the file") from exc
        name = config.get("_class_name")
        if name not in (None, "AutoencoderKL"):
            if folder == path and (path / "vae" / "config.json").is_file():
                continue  # a pipeline folder's own config (model_index.json is not config.json, but be lenient)
            raise ModelError(f"{config_file} describes a {name}, not an AutoencoderKL; only AutoencoderKL VAEs are supported")
        if "latent_channels" not in config:
            continue
        if not any((folder / name).is_file() for name in WEIGHT_FILES):
            raise ModelError(f"{folder} has a VAE config but no weights ({' or '.join(WEIGHT_FILES)}); copy the weights next to it")
        return folder
    raise ModelError(
        f"{path} is not a VAE folder: expected config.json of an AutoencoderKL there or in {path / 'vae'} "
        "(a Stable Diffusion pipeline folder)"
    )


def _check_posterior(posterior: str) -> None:
    if posterior not in POSTERIORS:
        raise ModelError(f"unknown posterior {posterior!r}; choose 'sample' (a draw, as in training) or 'mode' (the mean)")


class VideoVAE(nn.Module):
    """A frozen ``AutoencoderKL`` that encodes and decodes videos in frame micro-batches.

    Args:
        vae: the diffusers ``AutoencoderKL``.
        micro_batch: frames per VAE call (lower it when memory runs out; it never changes the result
            beyond float rounding).
        source: where the weights came from (a folder, ``"tiny"``), recorded for the pipeline.
    """

    def __init__(self, vae: nn.Module, *, micro_batch: int = 8, source: Optional[str] = None) -> None:
        super().__init__()
        if micro_batch < 1:
            raise ModelError(f"VAE micro_batch must be >= 1, got {micro_batch}")
        for name in ("encode", "decode", "config"):
            if not hasattr(vae, name):
                raise ModelError(f"{type(vae).__name__} is not a diffusers AutoencoderKL (no {name})")
        self.vae = vae
        self.micro_batch = int(micro_batch)
        self.source = source
        self._fingerprint: Optional[str] = None
        self.vae.requires_grad_(False)
        self.vae.eval()

    # ------------------------------------------------------------------------------ constructors

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        micro_batch: int = 8,
    ) -> VideoVAE:
        """Load a local ``AutoencoderKL`` folder or a Stable Diffusion folder with ``vae/`` (never downloads)."""
        from diffusers import AutoencoderKL

        folder = find_vae_folder(path)
        try:
            vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - diffusers raises many kinds; name the folder and the cause
            raise ModelError(f"cannot load the VAE in {folder}: {exc}") from exc
        out = cls(vae, micro_batch=micro_batch, source=str(folder.resolve()))
        return out.to(device=device, dtype=dtype)

    @classmethod
    def tiny(
        cls,
        *,
        seed: int = 0,
        micro_batch: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **config: Any,
    ) -> VideoVAE:
        """A randomly initialised small VAE (`tiny_vae_config` plus ``config`` overrides), the same for a seed."""
        from diffusers import AutoencoderKL

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = AutoencoderKL(**tiny_vae_config(**config))
        return cls(vae, micro_batch=micro_batch, source="tiny").to(device=device, dtype=dtype)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the VAE as a diffusers folder (safetensors), loadable by `load_vae`."""
        path = Path(path)
        self.vae.save_pretrained(str(path), safe_serialization=True)
        return path

    # ------------------------------------------------------------------------------- properties

    @property
    def config(self) -> Any:
        return self.vae.config

    @property
    def scaling_factor(self) -> float:
        return float(getattr(self.config, "scaling_factor", None) or 1.0)

    @property
    def shift_factor(self) -> float:
        return float(getattr(self.config, "shift_factor", None) or 0.0)

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent along H and W (8 for Stable Diffusion's VAE)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.config.latent_channels)

    @property
    def in_channels(self) -> int:
        return int(self.config.in_channels)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def id(self) -> str:
        """A fingerprint of what this VAE computes: its config (scale and shift included) and every
        weight, in the weights' dtype. Two VAEs with the same id give the same latents."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            config = {k: v for k, v in dict(self.config).items() if k not in _PROVENANCE_KEYS}
            digest.update(json.dumps(config, sort_keys=True, default=str).encode("utf-8"))
            for name, tensor in self.vae.state_dict().items():
                data = tensor.detach().to("cpu").contiguous()
                digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
                digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001 - nn.Module hook: .to()/.half() change the weights
        self._fingerprint = None
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True) -> VideoVAE:
        """The VAE stays in eval mode (it is frozen)."""
        return super().train(False)

    def latent_shape(self, pixel_shape: Sequence[int]) -> tuple[int, ...]:
        """``(B, C, T, H, W)`` -> ``(B, c, T, H/f, W/f)`` (checks that H and W divide by f)."""
        *lead, c, t, h, w = pixel_shape
        self._check_pixels(h, w)
        f = self.downsample_factor
        return (*lead, self.latent_channels, t, h // f, w // f)

    def pixel_shape(self, latent_shape: Sequence[int]) -> tuple[int, ...]:
        """``(B, c, T, h, w)`` -> ``(B, C, T, h*f, w*f)``."""
        *lead, c, t, h, w = latent_shape
        f = self.downsample_factor
        return (*lead, int(self.config.out_channels), t, h * f, w * f)

    # ---------------------------------------------------------------- memory pass-throughs

    def enable_slicing(self) -> None:
        """diffusers' sliced VAE: one image per call inside each micro-batch."""
        self.vae.enable_slicing()

    def disable_slicing(self) -> None:
        self.vae.disable_slicing()

    def enable_tiling(self) -> None:
        """diffusers' tiled VAE: large frames are encoded/decoded in overlapping tiles (approximate)."""
        self.vae.enable_tiling()

    def disable_tiling(self) -> None:
        self.vae.disable_tiling()

    # -------------------------------------------------------------------------- checks

    def _check_pixels(self, h: int, w: int) -> None:
        f = self.downsample_factor
        if h % f or w % f:
            raise ModelError(
                f"frame size {h}x{w} is not divisible by the VAE's downsample factor {f}; "
                f"use a size that is a multiple of {f} (e.g. {max(f, h // f * f)}x{max(f, w // f * f)})"
            )

    def _check_video(self, video: torch.Tensor) -> None:
        if not isinstance(video, torch.Tensor) or video.ndim != 5:
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise ModelError(f"VideoVAE.encode takes a (B, C, T, H, W) tensor, got {shape}; add a batch dim with video[None]")
        if video.shape[1] != self.in_channels:
            raise ModelError(f"the VAE takes {self.in_channels}-channel frames, got {video.shape[1]} channels (shape {tuple(video.shape)})")
        self._check_pixels(video.shape[-2], video.shape[-1])

    def _check_latents(self, latents: torch.Tensor) -> None:
        if not isinstance(latents, torch.Tensor) or latents.ndim != 5:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ModelError(f"VideoVAE.decode takes (B, c, T, h, w) latents, got {shape}")
        if latents.shape[1] != self.latent_channels:
            raise ModelError(
                f"the VAE's latents have {self.latent_channels} channels, got {latents.shape[1]} (shape {tuple(latents.shape)}); "
                "is the model's channel count the VAE's latent_channels?"
            )

    # ------------------------------------------------------------------------ encode / decode

    @torch.no_grad()
    def encode_moments(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of the posterior, both scaled: ``(B, c, T, h, w)`` each.

        A draw is ``mean + std * noise``. Outputs keep the input's device and float dtype.
        """
        self._check_video(video)
        b, _, t, _, _ = video.shape
        out_dtype = video.dtype if video.is_floating_point() else torch.float32
        frames = fold_frames(video)
        means, stds = [], []
        for start in range(0, frames.shape[0], self.micro_batch):
            chunk = frames[start : start + self.micro_batch].to(self.device, self.dtype)
            dist = self.vae.encode(chunk).latent_dist
            means.append(((dist.mean - self.shift_factor) * self.scaling_factor).to(video.device, out_dtype))
            stds.append((dist.std * self.scaling_factor).to(video.device, out_dtype))
        return unfold_frames(torch.cat(means), t).contiguous(), unfold_frames(torch.cat(stds), t).contiguous()

    @torch.no_grad()
    def encode(self, video: torch.Tensor, *, posterior: Posterior = "mode", generator: Generators = None) -> torch.Tensor:
        """Pixels ``(B, C, T, H, W)`` in [-1, 1] -> scaled latents ``(B, c, T, H/f, W/f)``.

        ``posterior="mode"`` gives the posterior mean (deterministic); ``"sample"`` a draw from it, with
        noise from ``generator`` (one, or one per video) drawn for the whole batch at once, so the
        result does not depend on ``micro_batch``.
        """
        _check_posterior(posterior)
        mean, std = self.encode_moments(video)
        if posterior == "mode":
            return mean
        return mean + std * sample_noise(mean.shape, generator, device=mean.device, dtype=mean.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, clamp: bool = True) -> torch.Tensor:
        """Scaled latents ``(B, c, T, h, w)`` -> pixels ``(B, C, T, h*f, w*f)``, clamped to [-1, 1]
        unless ``clamp=False``. Outputs keep the input's device and float dtype."""
        self._check_latents(latents)
        b, _, t, _, _ = latents.shape
        out_dtype = latents.dtype if latents.is_floating_point() else torch.float32
        frames = fold_frames(latents)
        outs = []
        for start in range(0, frames.shape[0], self.micro_batch):
            z = frames[start : start + self.micro_batch].to(self.device, self.dtype) / self.scaling_factor + self.shift_factor
            pixels = self.vae.decode(z).sample
            outs.append((pixels.clamp(-1.0, 1.0) if clamp else pixels).to(latents.device, out_dtype))
        return unfold_frames(torch.cat(outs), t).contiguous()

    def forward(self, video: torch.Tensor, *, posterior: Posterior = "mode", generator: Generators = None) -> torch.Tensor:
        """``decode(encode(video))``: what the VAE keeps of a video."""
        return self.decode(self.encode(video, posterior=posterior, generator=generator))

    # ------------------------------------------------------------------------------- scaling

    @torch.no_grad()
    def estimate_scaling_factor(self, videos: torch.Tensor | Sequence[torch.Tensor]) -> float:
        """``1 / std`` of the unscaled posterior means of ``videos`` (the Latent Diffusion recipe), so
        that scaled latents have unit variance. Use it for a VAE without a known factor (a tiny one)."""
        batches = [videos] if isinstance(videos, torch.Tensor) else list(videos)
        if not batches:
            raise ModelError("estimate_scaling_factor needs at least one video batch")
        means = [self.encode_moments(v)[0].float() / self.scaling_factor for v in batches]
        std = float(torch.cat([m.flatten() for m in means]).std())
        if not std > 0:
            raise ModelError("the VAE's latents have zero variance on these videos; cannot estimate a scaling factor")
        return 1.0 / std

    def set_scaling_factor(self, value: float) -> None:
        """Change the scaling factor (it is saved with the VAE and changes `id`)."""
        if not value > 0:
            raise ModelError(f"the scaling factor must be positive, got {value}")
        self.vae.register_to_config(scaling_factor=float(value))
        self._fingerprint = None

    def extra_repr(self) -> str:
        return (
            f"source={self.source!r}, latent_channels={self.latent_channels}, downsample_factor={self.downsample_factor}, "
            f"scaling_factor={self.scaling_factor}, shift_factor={self.shift_factor}, micro_batch={self.micro_batch}"
        )


def sample_noise(shape: Sequence[int], generator: Generators, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal noise of ``shape``; a list of generators draws one row of the batch each."""
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=torch.float32).to(device, dtype)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ModelError(f"got {len(gens)} generators for a batch of {shape[0]}; give one generator or one per video")
    rows = [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=torch.float32) for g in gens]
    return torch.cat([r.to(device) for r in rows]).to(dtype)


def load_vae(
    spec: Union[str, Path, VideoVAE, None],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    micro_batch: int = 8,
) -> Optional[VideoVAE]:
    """A `VideoVAE` from a config value: a local folder, ``"tiny"`` (random, seed 0) or ``"tiny:SEED"``,
    an existing `VideoVAE` (moved to ``device``/``dtype``), or None / ``"none"`` / ``""`` for pixel space."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none", "null")):
        return None
    if isinstance(spec, VideoVAE):
        return spec.to(device=device, dtype=dtype)
    if isinstance(spec, nn.Module):
        return VideoVAE(spec, micro_batch=micro_batch).to(device=device, dtype=dtype)
    text = str(spec).strip()
    if text == "tiny" or text.startswith("tiny:"):
        seed_text = text.partition(":")[2] or "0"
        try:
            seed = int(seed_text)
        except ValueError as exc:
            raise ModelError(f"bad VAE spec {text!r}; write 'tiny' or 'tiny:SEED' with an integer seed") from exc
        vae = VideoVAE.tiny(seed=seed, micro_batch=micro_batch, device=device, dtype=dtype)
        vae.source = text
        return vae
    return VideoVAE.from_pretrained(text, device=device, dtype=dtype, micro_batch=micro_batch)
