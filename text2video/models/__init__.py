"""Denoisers. Every one keeps its origin's forward and adds ``forward_cond`` (called through
`text2video.diffusion.denoise`)."""

from .adapter import ConditionedDenoiser
from .registry import MODELS, available_models, build_model, load_model, model_class

__all__ = ["MODELS", "ConditionedDenoiser", "available_models", "build_model", "load_model", "model_class"]
