"""Between two videos (DiffusionPlayground's ``interpolate``), and infilling between a first and a last frame."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..diffusion.interpolation import interpolate_videos
from ..diffusion.sampling import StepCallback
from ..errors import ConfigError
from .base import VideoOutput, as_prompt_list, make_generators
from .image_to_video import ImageToVideoPipeline, as_frames_tensor

__all__ = ["InterpolationPipeline"]


class InterpolationPipeline(ImageToVideoPipeline):
    """Interpolate between videos in noise space, or fill the frames between two given frames."""

    pipeline_name = "InterpolationPipeline"

    def interpolate(
        self,
        video1: torch.Tensor,
        video2: torch.Tensor,
        num_steps: Optional[int] = None,
        num_interp_frames: int = 8,
        *,
        prompt: str | Sequence[str] | None = None,
        strength: float = 0.7,
        sampler: Optional[str] = None,
        guidance_scale: Optional[float] = None,
        seed: Optional[int] = None,
        progress: bool = True,
        fps: Optional[float] = None,
        callback: Optional[StepCallback] = None,
        dynamic_threshold: Optional[float] = None,
    ) -> VideoOutput:
        """``num_interp_frames`` videos going from ``video1`` to ``video2`` (both (B, C, T, H, W) or
        (C, T, H, W) in [-1, 1]). Output videos are ``(B * num_interp_frames, C, T, H, W)``, pair-major:
        for one pair, video k sits at weight k / (num_interp_frames - 1). ``strength`` is how far both are
        noised before the spherical interpolation (1.0: pure noise). ``fps`` and ``callback`` as in
        `TextToVideoPipeline.__call__` (the callback counts the steps of every video)."""
        v1, v2 = (torch.as_tensor(v).float() for v in (video1, video2))
        if v1.ndim == 4:
            v1, v2 = v1[None], v2[None]
        if v1.shape != v2.shape or v1.ndim != 5:
            raise ConfigError(f"video1 and video2 must share one shape (B, C, T, H, W); got {tuple(v1.shape)} and {tuple(v2.shape)}")
        b = v1.shape[0]
        prompts = as_prompt_list(prompt)
        if len(prompts) == 1 and b > 1:
            prompts = prompts * b
        if len(prompts) != b:
            raise ConfigError(f"got {len(prompts)} prompts for {b} video pairs; give one, or one per pair")
        fps = self.frame_rate(fps)
        cond = self._condition(prompts, 1, fps)
        negative = self._negative(self.defaults.negative_prompt, b)
        generators, seeds = make_generators(b, seed)
        options = self._sampling_kwargs(
            steps=num_steps, sampler=sampler, guidance_scale=guidance_scale, dynamic_threshold=dynamic_threshold
        )
        v1, v2 = self.encode_frames(v1), self.encode_frames(v2)  # latent pipelines: interpolate the latents
        with self.backend():
            videos = interpolate_videos(
                self.model, v1.to(self.device), v2.to(self.device), cond, objective=self.objective,
                num_interp=num_interp_frames, steps=options["steps"], strength=strength, sampler=options["sampler"],
                guidance_scale=options["guidance_scale"], generators=generators, clip_x0=options["clip_x0"], progress=progress,
                dynamic_threshold=options["dynamic_threshold"],
                negative_cond=negative, scheduler_config=options["scheduler_config"], callback=callback,
            )  # fmt: skip
        flat = self.decode(videos.flatten(0, 1))
        weights = torch.linspace(0.0, 1.0, num_interp_frames).tolist()
        settings = {**options, "strength": strength}
        return self._finish(flat, [p for p in prompts for _ in weights], seeds, fps, settings, weights=weights)

    def infill(
        self,
        first_frame: Any,
        last_frame: Any,
        num_frames: Optional[int] = None,
        prompt: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> VideoOutput:
        """A ``num_frames`` video that starts at ``first_frame`` and ends at ``last_frame`` (kept exactly);
        keyword arguments as in `ImageToVideoPipeline.__call__`."""
        first, last = as_frames_tensor(first_frame), as_frames_tensor(last_frame)
        if first.shape != last.shape or first.shape[2] != 1:
            raise ConfigError(f"first and last frame must be single frames of one shape; got {tuple(first.shape)} and {tuple(last.shape)}")
        num_frames = self.defaults.num_frames if num_frames is None else num_frames
        frames = torch.cat([first, last], dim=2)
        defaults = dict(steps=None, guidance_scale=None, negative_prompt=None, seed=None, sampler=None,
                        num_videos_per_prompt=1, progress=True)  # fmt: skip
        defaults.update(kwargs)
        return self._generate_with(frames, [0, num_frames - 1], prompt, num_frames=num_frames, **defaults)
