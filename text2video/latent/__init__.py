"""Latent space: a frozen image VAE applied to video (`VideoVAE`) and an on-disk latent cache.

Training and sampling in latent space means: encode pixels ``(B, 3, T, H, W)`` to latents
``(B, c, T, H/f, W/f)`` with `VideoVAE.encode` (or read them from a `LatentDataset`), run the
diffusion model on latents, and `VideoVAE.decode` the samples back to pixels. See ``docs/latent.md``.
"""

from __future__ import annotations

from .cache import LatentCache, LatentDataset, dataset_key, random_augmentations
from .fit import fit_vae
from .vae import POSTERIORS, VideoVAE, find_vae_folder, load_vae, tiny_vae_config

__all__ = [
    "POSTERIORS",
    "LatentCache",
    "LatentDataset",
    "VideoVAE",
    "dataset_key",
    "find_vae_folder",
    "fit_vae",
    "load_vae",
    "random_augmentations",
    "tiny_vae_config",
]
