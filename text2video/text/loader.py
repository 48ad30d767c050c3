"""`load_text_encoder`: the one way to get a text encoder, from a local folder (its backend from its
``config.json``), the bundled default, or what a pipeline folder records (a mapping); with
``padding="max_length"`` the encoder is wrapped to encode as the Stable Diffusion pipelines do
(`text2video.text.padded`)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ..errors import TextEncoderError
from .encoders import ENCODER_CLASSES, BertTextEncoder, TextEncoder, as_dtype, default_text_encoder_path, is_default_spec, resolve_folder
from .padded import PADDINGS, MaxLengthTextEncoder


@functools.lru_cache(maxsize=4)
def _cached_default(pooling: Optional[str], device: Optional[str], dtype: Optional[torch.dtype]) -> TextEncoder:
    return BertTextEncoder(default_text_encoder_path(), pooling=pooling, device=device, dtype=dtype)


def load_text_encoder(
    spec: str | Path | Mapping[str, Any] | None = "default",
    *,
    pooling: Optional[str] = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    max_length: Optional[int] = None,
    padding: str = "longest",
    clip_skip: Optional[int] = None,
) -> TextEncoder:
    """Load a frozen encoder from a local folder; the backend comes from its config.json ``model_type``.

    ``spec`` is ``"default"`` (the bundled MiniLM, loaded once per process per pooling/device/dtype and
    shared: do not move it with ``.to``, ask for the device here), a folder path, or a mapping with
    ``path`` and any of the keyword arguments (what a pipeline folder records). ``device`` defaults to
    the CPU; ``max_length`` overrides the token limit.
    ``pooling``: BERT ``"mean"`` (default) or ``"cls"``; CLIP ``"eot"``; T5 ``"mean"``.
    ``padding``: ``"longest"`` (pad to the longest prompt, mask the padding) or ``"max_length"`` (the
    Stable Diffusion pipelines' encoding, see `text2video.text.padded`); ``clip_skip`` goes with it.
    """
    if isinstance(spec, Mapping):
        options = dict(spec)
        spec = options.pop("path", "default")
        unknown = sorted(set(options) - {"pooling", "max_length", "padding", "clip_skip"})
        if unknown:
            raise TextEncoderError(f"unknown text encoder option(s) {unknown}; known: path, pooling, max_length, padding, clip_skip")
        pooling = options.get("pooling", pooling)
        max_length = options.get("max_length", max_length)
        padding = options.get("padding", padding) or "longest"
        clip_skip = options.get("clip_skip", clip_skip)
    if padding not in PADDINGS:
        raise TextEncoderError(f"unknown text padding {padding!r}; choose 'longest' (text2video) or 'max_length' (diffusers pipelines)")
    dtype = as_dtype(dtype)
    if padding == "longest" and clip_skip is not None:
        raise TextEncoderError("clip_skip goes with padding='max_length' (the Stable Diffusion pipelines' encoding)")
    if is_default_spec(spec) and max_length is None and padding == "longest":
        return _cached_default(pooling, str(torch.device(device or "cpu")), dtype)
    folder = resolve_folder(default_text_encoder_path() if is_default_spec(spec) else spec)
    cls = ENCODER_CLASSES[folder.backend]
    encoder = cls(folder, pooling=pooling, device=device, dtype=dtype, max_length=max_length)
    if padding == "max_length":
        return MaxLengthTextEncoder(encoder, clip_skip=clip_skip)
    return encoder
