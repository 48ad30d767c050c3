"""Pretrained models in, text2video pipelines out: detection of every format ``--model`` accepts,
assembly of a pipeline from a model's own parts, Hub ids, and what `text2video info --model` reports.

Formats (`FORMATS`): text2video pipeline, run and checkpoint folders; diffusers ``TextToVideoSDPipeline``
(ModelScope, Zeroscope), ``AnimateDiffPipeline`` and Stable Diffusion 1.x + a motion adapter folders; a
video-diffusion-pytorch trainer checkpoint with a BERT text encoder; any of these as a Hub id.
"""

from .detect import FORMATS, ModelSource, detect_model
from .loader import assemble

__all__ = ["FORMATS", "ModelSource", "assemble", "detect_model"]
