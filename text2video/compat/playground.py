"""DiffusionPlayground's ``VideoGenerator``: one object that loads a model, then generates and interpolates.

>>> generator = VideoGenerator("runs/tiny")            # a run (its best checkpoint when it has one), or any --model
>>> videos = generator.generate(num_samples=4, num_frames=8, height=32, width=32, num_steps=20)
>>> videos.save("samples/", fmt="mp4")                  # one MP4 per video, with its prompt and settings
>>> between = generator.interpolate(video1, video2, num_steps=50, num_interp_frames=20)

Both calls return a `text2video.pipelines.VideoOutput` (``.videos`` is ``(N, C, T, H, W)`` in [-1, 1]);
they go through text2video's `TextToVideoPipeline` and `InterpolationPipeline`, which share the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from ..pipelines import InterpolationPipeline, TextToVideoPipeline, VideoOutput, load_pipeline
from ..runs.checkpoint import BEST, LATEST, STATE_FILE, checkpoints_dir
from ..runs.folder import is_run_dir


def default_checkpoint(model_path: str | Path) -> str:
    """``best`` for a run folder that kept one (DiffusionPlayground loads its best model), else ``latest``."""
    path = Path(model_path)
    if is_run_dir(path) and (checkpoints_dir(path) / BEST / STATE_FILE).is_file():
        return BEST
    return LATEST


class VideoGenerator:
    """Load ``model_path`` (a run, checkpoint or pipeline folder, a pretrained model: anything ``--model`` takes)
    on ``device`` (default: CUDA when available); ``checkpoint`` picks a run's checkpoint (default: its best,
    else its latest); other keyword arguments go to `text2video.load_pipeline`."""

    def __init__(self, model_path: str | Path, device: Any = None, *, checkpoint: Optional[str] = None, **options: Any) -> None:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        checkpoint = checkpoint or default_checkpoint(model_path)
        if checkpoint != LATEST:
            options["checkpoint"] = checkpoint
        self.interpolator: InterpolationPipeline = load_pipeline(model_path, "InterpolationPipeline", device=device, **options)
        self.pipeline: TextToVideoPipeline = self.interpolator.as_pipeline(TextToVideoPipeline)

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
        """``num_samples`` new videos (of ``prompt`` for a text-conditioned model); sizes default to the model's."""
        return self.pipeline.generate(num_samples, num_frames, height, width, num_steps, prompt=prompt, **kwargs)

    def interpolate(
        self, video1: Any, video2: Any, num_steps: Optional[int] = None, num_interp_frames: int = 8, **kwargs: Any
    ) -> VideoOutput:
        """``num_interp_frames`` videos going from ``video1`` to ``video2`` (``(B, C, T, H, W)`` or ``(C, T, H, W)``
        in [-1, 1]) in ``num_steps`` sampling steps each (see `InterpolationPipeline.interpolate`)."""
        return self.interpolator.interpolate(video1, video2, num_steps=num_steps, num_interp_frames=num_interp_frames, **kwargs)


__all__ = ["VideoGenerator", "default_checkpoint"]
