"""The VAE of a run's ``latent`` section: which one, where it lives, and the model sizes it implies.

A run in latent space uses the VAE named by ``latent.vae``. A tiny VAE (``tiny`` / ``tiny:SEED``), and
any VAE fitted with ``latent.fit_steps``, is written once into the run folder (``RUN/vae``) before the
first step; resume, ``generate`` and ``export`` then read that copy, so they use exactly the weights the
model was trained with. A VAE given as a folder (Stable Diffusion's) is read from that folder each time
and copied only into exported pipelines.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..config import Config, size_hw
from ..errors import CheckpointError, ConfigError, ModelError

logger = logging.getLogger(__name__)

RUN_VAE_FOLDER = "vae"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def vae_dtype(config: Config) -> torch.dtype:
    """The torch dtype of ``latent.dtype``."""
    return _DTYPES[config.latent.dtype]


def is_tiny_spec(spec: Optional[str]) -> bool:
    text = (spec or "").strip()
    return text == "tiny" or text.startswith("tiny:")


def keeps_run_copy(config: Config) -> bool:
    """Whether the run's VAE lives in ``RUN/vae`` (tiny or fitted) rather than at ``latent.vae``."""
    return config.latent.enabled and (is_tiny_spec(config.latent.vae) or config.latent.fit_steps > 0)


def _load_spec(config: Config, spec: str | Path, device: Any, dtype: torch.dtype) -> Any:
    from ..latent import load_vae

    try:
        return load_vae(str(spec), device=device, dtype=dtype, micro_batch=config.latent.micro_batch)
    except ModelError as exc:
        raise ConfigError(
            f"latent.vae = {config.latent.vae!r}: {exc}. Point latent.vae at a local Stable Diffusion (1.5) folder "
            "or its vae/ subfolder, use 'tiny' for a small VAE, or null for pixel space"
        ) from exc


def load_run_vae(config: Config, run_dir: str | Path, device: Any = None, *, required_copy: bool = False) -> Optional[Any]:
    """The `VideoVAE` of a run (None in pixel space): ``RUN/vae`` when the run keeps a copy, else ``latent.vae``.

    ``required_copy``: a fitted VAE whose copy is missing is an error (it cannot be rebuilt); otherwise
    a missing tiny copy is rebuilt from its seed.
    """
    if not config.latent.enabled:
        return None
    dtype = vae_dtype(config)
    copy = Path(run_dir) / RUN_VAE_FOLDER
    if keeps_run_copy(config) and (copy / "config.json").is_file():
        return _load_spec(config, copy, device, dtype)
    if config.latent.fit_steps > 0 and required_copy:
        raise CheckpointError(
            f"{run_dir} has no fitted VAE in {copy} (latent.fit_steps = {config.latent.fit_steps}); "
            "train the run first (the VAE is fitted and saved before the first step)"
        )
    return _load_spec(config, config.latent.vae, device, dtype)


def prepare_run_vae(
    config: Config,
    run_dir: str | Path,
    dataset: Any,
    *,
    device: Any,
    is_main: bool,
    wait: Callable[[], None],
    progress: bool = False,
) -> Optional[Any]:
    """Load (and on the first start, fit and save) the run's VAE; every process returns the same one.

    The main process builds the VAE, fits it on ``dataset`` when ``latent.fit_steps`` > 0 and writes the
    run copy; the others wait for it and read it.
    """
    if not config.latent.enabled:
        return None
    copy = Path(run_dir) / RUN_VAE_FOLDER
    if keeps_run_copy(config) and not (copy / "config.json").is_file() and is_main:
        vae = _load_spec(config, config.latent.vae, device, torch.float32)
        if config.latent.fit_steps > 0:
            from ..latent import fit_vae

            result = fit_vae(vae, dataset, steps=config.latent.fit_steps, seed=config.train.seed, progress=progress)
            logger.info(
                "fitted the VAE for %d steps: reconstruction MSE %.4f -> %.4f, scaling factor %.4f",
                config.latent.fit_steps,
                result["mse_before"],
                result["mse_after"],
                result["scaling_factor"],
            )
        copy.parent.mkdir(parents=True, exist_ok=True)
        vae.save_pretrained(copy)
        logger.info("run VAE saved to %s", copy)
    wait()
    return load_run_vae(config, run_dir, device)


def latent_model_sizes(config: Config, vae: Any) -> tuple[int, int, int]:
    """``(latent channels, latent height, latent width)`` for the run's frames; sizes must divide by f."""
    f = int(vae.downsample_factor)
    for key, size in (("data.size", config.data.size), ("sample.size", config.sample.size)):
        for side in () if size is None else sorted(set(size_hw(size))):
            if side % f:
                low = max(f, side // f * f)
                raise ConfigError(
                    f"{key} = {size}: {side} is not a multiple of the VAE's downsample factor {f}; "
                    f"use {low} or {low + f} (latents are {f}x smaller than frames)"
                )
    h, w = config.data.hw
    return int(vae.latent_channels), h // f, w // f


__all__ = ["RUN_VAE_FOLDER", "keeps_run_copy", "latent_model_sizes", "load_run_vae", "prepare_run_vae", "vae_dtype"]
