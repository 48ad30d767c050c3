"""Prompts in, videos out: text encoder -> sampler -> (VAE decoder) -> frames."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..diffusion.sampling import StepCallback, sample
from ..errors import ConfigError
from .base import PipelineDefaults, VideoOutput, VideoPipeline, as_prompt_list, make_generators

__all__ = ["TextToVideoPipeline", "PipelineDefaults", "VideoOutput"]


class TextToVideoPipeline(VideoPipeline):
    """Generate videos from prompts with any denoiser reachable through ``forward_cond``.

    >>> pipe = TextToVideoPipeline(model, text_encoder, ObjectiveConfig(), PipelineDefaults(num_frames=8))
    >>> out = pipe("a red circle moving left", steps=25, guidance_scale=4.0, seed=0)
    >>> out.save("samples/")            # one GIF per video
    """

    pipeline_name = "TextToVideoPipeline"

    def __call__(
        self,
        prompt: str | Sequence[str] | None = None,
        *,
        num_frames: Optional[int] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        negative_prompt: str | Sequence[str] | None = None,
        seed: Optional[int] = None,
        sampler: Optional[str] = None,
        num_videos_per_prompt: int = 1,
        eta: Optional[float] = None,
        dynamic_threshold: Optional[float] = None,
        progress: bool = True,
        generators: Optional[Sequence[torch.Generator]] = None,
        latents: Optional[torch.Tensor] = None,
        clip_x0: Optional[bool] = None,
        fps: Optional[float] = None,
        callback: Optional[StepCallback] = None,
    ) -> VideoOutput:
        """Videos for ``prompt`` (a string or a list): ``num_videos_per_prompt`` each, video ``i`` seeded
        ``seed + i`` so any one of them can be reproduced alone; or drawn from ``generators`` (one per video)
        when given. ``latents`` is the initial noise, as in diffusers (the sampled shape, latent for a latent
        pipeline; it replaces the seeded draw); ``clip_x0`` overrides clipping the predicted clean video to [-1, 1].
        ``fps``: the videos' frame rate, which models with an fps embedding are also conditioned on (default:
        the pipeline's). ``callback(done, total)`` follows the sampler's steps."""
        prompts = as_prompt_list(prompt)
        if isinstance(num_videos_per_prompt, bool) or not isinstance(num_videos_per_prompt, int) or num_videos_per_prompt < 1:
            raise ConfigError(f"num_videos_per_prompt must be >= 1, got {num_videos_per_prompt!r}")
        d = self.defaults
        # latent pipelines sample at the VAE's latent shape
        shape = self.sample_shape(self.output_shape(len(prompts) * num_videos_per_prompt, num_frames, height, width))
        fps = self.frame_rate(fps)
        cond = self._condition(prompts, num_videos_per_prompt, fps)
        negative_prompt = negative_prompt if negative_prompt is not None else d.negative_prompt
        negative = self._negative(negative_prompt, shape[0])
        if generators is None:
            generators, seeds = make_generators(shape[0], seed)
        else:
            generators, seeds = list(generators), None
        options = self._sampling_kwargs(steps=steps, sampler=sampler, guidance_scale=guidance_scale, eta=eta,
                                        dynamic_threshold=dynamic_threshold, clip_x0=clip_x0)  # fmt: skip
        with self.backend():
            videos = sample(self.model, shape, cond, objective=self.objective, negative_cond=negative,
                            generators=generators, progress=progress, noise=latents, callback=callback, **options)  # fmt: skip
        videos = self.decode(videos)
        settings = {**options, "negative_prompt": negative_prompt if self.text_encoder is not None else None}
        return self._finish(videos, [p for p in prompts for _ in range(num_videos_per_prompt)], seeds, fps, settings)

    def generate(
        self,
        num_samples: int = 1,
        num_frames: Optional[int] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        num_steps: Optional[int] = None,
        prompt: str = "",
        **kwargs: Any,
    ) -> VideoOutput:
        """DiffusionPlayground's ``VideoGenerator.generate``: ``num_samples`` videos of ``prompt`` (none needed by
        an unconditional model); ``.videos`` is ``(N, C, T, H, W)`` in [-1, 1], ``.save("out/", fmt="mp4")``
        writes them as MP4."""
        return self(prompt, num_frames=num_frames, height=height, width=width, steps=num_steps,
                    num_videos_per_prompt=num_samples, **kwargs)  # fmt: skip
