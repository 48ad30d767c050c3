"""Diffusion: the training objective, the samplers and the conditioning they share."""

from .conditioning import Conditioning

__all__ = ["Conditioning"]
