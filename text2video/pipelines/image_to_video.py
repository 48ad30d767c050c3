"""Given frames in, the rest generated: image-to-video (first frame) and prediction (first k frames)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..diffusion.sampling import StepCallback, sample
from ..errors import ConfigError
from .base import VideoOutput, VideoPipeline, as_prompt_list, make_generators

__all__ = ["ImageToVideoPipeline", "as_frames_tensor", "given_frames"]


def as_frames_tensor(frames: Any) -> torch.Tensor:
    """Given frames as float ``(B, C, k, H, W)`` in [-1, 1].

    Accepts a tensor ``(C, H, W)``, ``(B, C, H, W)`` or ``(B, C, k, H, W)`` in [-1, 1], or uint8 numpy
    ``(H, W, C)`` / ``(k, H, W, C)`` as read by ``text2video.read_video``.
    """
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8:
            raise ConfigError(f"numpy frames must be uint8 (H, W, C) or (k, H, W, C), got {frames.dtype}")
        array = frames[None] if frames.ndim == 3 else frames
        if array.ndim != 4:
            raise ConfigError(f"numpy frames must be (H, W, C) or (k, H, W, C), got shape {frames.shape}")
        return torch.from_numpy(np.ascontiguousarray(array)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
    tensor = torch.as_tensor(frames)
    if tensor.ndim == 3:
        tensor = tensor[None, :, None]
    elif tensor.ndim == 4:
        tensor = tensor[:, :, None]
    elif tensor.ndim != 5:
        raise ConfigError(f"frames must be (C, H, W), (B, C, H, W) or (B, C, k, H, W), got shape {tuple(tensor.shape)}")
    return tensor.float()


def given_frames(frames: torch.Tensor, num_frames: int, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Place ``frames`` (B, C, k, H, W) at ``positions`` of a ``num_frames`` video: (image, frame_mask)."""
    b, c, k, h, w = frames.shape
    if len(positions) != k:
        raise ConfigError(f"{k} given frames need {k} positions, got {list(positions)}")
    if any(p < 0 or p >= num_frames for p in positions) or len(set(positions)) != k:
        raise ConfigError(f"frame positions {list(positions)} must be distinct and inside 0..{num_frames - 1}")
    if k >= num_frames:
        raise ConfigError(f"{k} given frames leave nothing to generate in a {num_frames}-frame video; raise num_frames")
    image = torch.zeros(b, c, num_frames, h, w, dtype=frames.dtype)
    mask = torch.zeros(b, num_frames, dtype=torch.bool)
    image[:, :, list(positions)] = frames
    mask[:, list(positions)] = True
    return image, mask


class ImageToVideoPipeline(VideoPipeline):
    """Animate an image, or continue a clip: the given frames are kept exactly, the rest is generated.

    A latent pipeline encodes the given frames (posterior mean) and keeps their latents; after decoding,
    those frames are the VAE's reconstructions of the given ones.
    """

    pipeline_name = "ImageToVideoPipeline"

    def _generate_with(
        self,
        frames: torch.Tensor,
        positions: Sequence[int],
        prompt: str | Sequence[str] | None,
        *,
        num_frames: Optional[int],
        steps: Optional[int],
        guidance_scale: Optional[float],
        negative_prompt: str | Sequence[str] | None,
        seed: Optional[int],
        sampler: Optional[str],
        num_videos_per_prompt: int,
        progress: bool,
        latents: Optional[torch.Tensor] = None,
        fps: Optional[float] = None,
        callback: Optional[StepCallback] = None,
        dynamic_threshold: Optional[float] = None,
    ) -> VideoOutput:
        d = self.defaults
        fps = self.frame_rate(fps)
        b = frames.shape[0]
        count = b * num_videos_per_prompt
        num_frames = self.output_shape(count, num_frames, frames.shape[3], frames.shape[4])[2]
        if frames.shape[1] != d.channels:
            raise ConfigError(f"the given frames have {frames.shape[1]} channels; the model generates {d.channels}")
        prompts = as_prompt_list(prompt)
        if len(prompts) == 1 and b > 1:
            prompts = prompts * b
        if len(prompts) != b:
            raise ConfigError(f"got {len(prompts)} prompts for {b} given clips; give one, or one per clip")
        pixel_hw = (frames.shape[3], frames.shape[4])
        frames = self.encode_frames(frames).float().cpu()  # latent pipelines: the frames' latents
        image, mask = given_frames(frames, num_frames, positions)
        cond = self._condition(prompts, num_videos_per_prompt, fps)
        cond = replace(cond, image=image.repeat_interleave(num_videos_per_prompt, 0).to(self.device),
                       frame_mask=mask.repeat_interleave(num_videos_per_prompt, 0).to(self.device))  # fmt: skip
        negative_prompt = negative_prompt if negative_prompt is not None else d.negative_prompt
        negative = self._negative(negative_prompt, count)
        generators, seeds = make_generators(count, seed)
        options = self._sampling_kwargs(steps=steps, sampler=sampler, guidance_scale=guidance_scale, dynamic_threshold=dynamic_threshold)
        shape = self.sample_shape((count, d.channels, num_frames, *pixel_hw))
        with self.backend():
            videos = sample(self.model, shape, cond, objective=self.objective, negative_cond=negative,
                            generators=generators, progress=progress, noise=latents, callback=callback, **options)  # fmt: skip
        videos = self.decode(videos)
        settings = {**options, "negative_prompt": negative_prompt if self.text_encoder is not None else None}
        settings["given_frames"] = list(positions)
        return self._finish(videos, [p for p in prompts for _ in range(num_videos_per_prompt)], seeds, fps, settings)

    def __call__(
        self,
        image: Any,
        prompt: str | Sequence[str] | None = None,
        *,
        num_frames: Optional[int] = None,
        steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        negative_prompt: str | Sequence[str] | None = None,
        seed: Optional[int] = None,
        sampler: Optional[str] = None,
        num_videos_per_prompt: int = 1,
        progress: bool = True,
        latents: Optional[torch.Tensor] = None,
        fps: Optional[float] = None,
        callback: Optional[StepCallback] = None,
        dynamic_threshold: Optional[float] = None,
    ) -> VideoOutput:
        """Videos whose first frame(s) are ``image``: one image animates it, k frames continue the clip.
        ``latents``: the initial noise of the sampled shape, as in diffusers; ``fps``, ``callback`` and
        ``dynamic_threshold`` as in `TextToVideoPipeline.__call__`."""
        frames = as_frames_tensor(image)
        return self._generate_with(
            frames, list(range(frames.shape[2])), prompt, num_frames=num_frames, steps=steps,
            guidance_scale=guidance_scale, negative_prompt=negative_prompt, seed=seed, sampler=sampler,
            num_videos_per_prompt=num_videos_per_prompt, progress=progress, latents=latents, fps=fps, callback=callback,
            dynamic_threshold=dynamic_threshold,
        )  # fmt: skip

    def predict(
        self, frames: Any, num_frames: Optional[int] = None, prompt: str | Sequence[str] | None = None, **kwargs: Any
    ) -> VideoOutput:
        """Continue the clip ``frames`` (its k frames stay first) to ``num_frames`` frames."""
        return self(frames, prompt, num_frames=num_frames, **kwargs)
