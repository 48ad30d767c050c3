"""`fit_vae`: a few hundred steps of VAE training, so that a tiny VAE reconstructs a small dataset.

A randomly initialised VAE is enough to test the latent plumbing but its latents carry little of the
video (its posterior noise is larger than its mean). For a tiny latent run on a CPU whose samples look
like something, fit the tiny VAE to the training frames first (reconstruction MSE plus a small KL term),
then save it and point the run at the folder. Stable Diffusion's VAE needs none of this.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import DataError, ModelError
from .vae import VideoVAE

logger = logging.getLogger(__name__)


def _frames(dataset: Dataset, limit: int) -> torch.Tensor:
    """Up to ``limit`` items' frames, ``(N, C, H, W)``."""
    items = [dataset[i]["video"] for i in range(min(len(dataset), limit))]
    if not items:
        raise DataError("fit_vae needs a dataset with at least one item")
    return torch.cat([v.permute(1, 0, 2, 3) for v in items]).float()


def fit_vae(
    vae: VideoVAE,
    dataset: Dataset,
    *,
    steps: int = 300,
    batch_frames: int = 32,
    lr: float = 1e-3,
    kl_weight: float = 1e-6,
    max_items: int = 256,
    seed: int = 0,
    rescale: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``vae`` in place on frames of ``dataset`` (the first ``max_items`` items).

    Returns ``{"losses": [...], "mse_before": float, "mse_after": float, "scaling_factor": float}``,
    the MSEs being posterior-mean reconstructions of the fitted frames. With ``rescale`` the scaling
    factor is then set to ``1 / std`` of the latents (`VideoVAE.estimate_scaling_factor`). The VAE
    is frozen again afterwards.
    """
    if steps < 1 or batch_frames < 1:
        raise ModelError(f"fit_vae needs steps >= 1 and batch_frames >= 1, got {steps}, {batch_frames}")
    frames = _frames(dataset, max_items)
    if frames.shape[1] != vae.in_channels:
        raise DataError(f"dataset frames have {frames.shape[1]} channels, the VAE takes {vae.in_channels}")
    vae._check_pixels(frames.shape[-2], frames.shape[-1])
    model = vae.vae
    device, dtype = vae.device, vae.dtype
    probe = frames[: min(len(frames), 64)].to(device, dtype)

    def mse() -> float:
        with torch.no_grad():
            recon = model.decode(model.encode(probe).latent_dist.mode()).sample
            return float(((recon - probe) ** 2).mean())

    before = mse()
    gen = torch.Generator().manual_seed(seed)
    model.requires_grad_(True)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="fitting VAE", unit="step")
    try:
        for _ in range(steps):
            pick = torch.randint(0, len(frames), (min(batch_frames, len(frames)),), generator=gen)
            x = frames[pick].to(device, dtype)
            dist = model.encode(x).latent_dist
            noise = torch.randn(dist.mean.shape, generator=gen).to(device, dtype)
            recon = model.decode(dist.mean + dist.std * noise).sample
            loss = ((recon - x) ** 2).mean() + kl_weight * dist.kl().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:
        if bar is not None:
            bar.close()
        model.requires_grad_(False)
        model.eval()
        vae._fingerprint = None
    after = mse()
    if rescale:
        video = frames[: min(len(frames), 256)].permute(1, 0, 2, 3)[None]  # (1, C, N, H, W)
        vae.set_scaling_factor(vae.estimate_scaling_factor(video.to(device)))
    logger.info("fit_vae: %d steps, reconstruction MSE %.4f -> %.4f", steps, before, after)
    return {"losses": losses, "mse_before": before, "mse_after": after, "scaling_factor": vae.scaling_factor}
