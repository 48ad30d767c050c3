"""Layers shared by the denoisers: one SDPA-based attention, timestep embeddings."""

from .attention import Attention, scaled_dot_product
from .embeddings import sinusoidal_embedding

__all__ = ["Attention", "scaled_dot_product", "sinusoidal_embedding"]
