"""Denoisers. Every one keeps its seed's forward and adds ``forward_cond`` (see ``adapter``)."""

from .adapter import ConditionedDenoiser, denoise
from .registry import MODELS, available_models, build_model, load_model, model_class

__all__ = ["MODELS", "ConditionedDenoiser", "available_models", "build_model", "denoise", "load_model", "model_class"]
