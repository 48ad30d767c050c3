"""Text conditioning: frozen pretrained text encoders (BERT, CLIP, T5) and an on-disk embedding cache."""

from .cache import EmbeddingCache
from .encoders import (
    BertTextEncoder,
    ClipTextEncoder,
    T5TextEncoder,
    TextEmbeddings,
    TextEncoder,
    check_context_dim,
    default_text_encoder_path,
    describe_text_encoder,
    info,
    masked_mean,
)
from .loader import load_text_encoder

__all__ = [
    "BertTextEncoder",
    "ClipTextEncoder",
    "EmbeddingCache",
    "T5TextEncoder",
    "TextEmbeddings",
    "TextEncoder",
    "check_context_dim",
    "default_text_encoder_path",
    "describe_text_encoder",
    "info",
    "load_text_encoder",
    "masked_mean",
]
