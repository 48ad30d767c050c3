"""text2video: train and sample text-to-video diffusion models.

The public surface (kept stable)::

    import text2video as t2v
    frames, fps = t2v.read_video("clip.mp4")      # uint8 (T, H, W, C), float
    t2v.write_video(frames, "clip.gif", fps=8)    # GIF, MP4/WebM by suffix
    model = t2v.load_model("model_dir")           # any denoiser saved with save_pretrained
    pipe = t2v.load_pipeline("run_or_export_dir") # a TextToVideoPipeline
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "read_video": "text2video.io.video",
    "write_video": "text2video.io.video",
    "load_model": "text2video.models.registry",
    "build_model": "text2video.models.registry",
    "load_pipeline": "text2video.pipelines",
    "Conditioning": "text2video.diffusion.conditioning",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'text2video' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
