"""Diffusion: the training objective, the samplers and the conditioning they share."""

from .conditioning import Conditioning
from .denoise import denoise

__all__ = ["Conditioning", "denoise"]
