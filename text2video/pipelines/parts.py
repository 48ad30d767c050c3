"""The text encoder entry of ``pipeline.json``: where the encoder is and how it encodes.

The entry is what `text2video.text.load_text_encoder` accepts: ``"default"``, a folder path, or a
mapping ``{"path": ..., "padding": ..., "clip_skip": ..., "max_length": ...}``. A relative ``path`` is
relative to the pipeline folder, so a pipeline that carries its own encoder (``text_encoder/`` and
``tokenizer/`` next to ``pipeline.json``, as a converted ModelScope or AnimateDiff model does) records
``"path": "."`` and can be moved or copied as one folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

TEXT_ENCODER_FOLDER = "text_encoder"
TOKENIZER_FOLDER = "tokenizer"


def _ref_path(ref: Any) -> Optional[str]:
    if isinstance(ref, Mapping):
        return None if ref.get("path") is None else str(ref["path"])
    return None if ref is None else str(ref)


def resolve_ref(ref: Any, folder: Path) -> Any:
    """``ref`` with a relative folder path made absolute against the pipeline ``folder``."""
    path = _ref_path(ref)
    if path is None or path.strip().lower() in ("default", "") or Path(path).expanduser().is_absolute():
        return ref
    absolute = str((folder / path).resolve())
    return {**ref, "path": absolute} if isinstance(ref, Mapping) else absolute


def load_text_encoder_ref(ref: Any, folder: Path, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Any:
    """The text encoder a pipeline folder's entry names (None for an unconditional model)."""
    if ref is None:
        return None
    from ..text import load_text_encoder

    return load_text_encoder(resolve_ref(ref, folder), device=device, dtype=dtype)


def embed_text_encoder(ref: Any, out: Path) -> Any:
    """Copy the encoder and tokenizer that ``ref`` names into ``out/text_encoder`` and ``out/tokenizer``;
    returns the entry that points at them (``"path": "."``)."""
    from ..text.encoders import resolve_folder

    source = resolve_folder(_ref_path(ref))
    targets = [(source.model_dir, out / TEXT_ENCODER_FOLDER)]
    if source.tokenizer_dir.resolve() != source.model_dir.resolve():  # else the tokenizer travels with the weights
        targets.append((source.tokenizer_dir, out / TOKENIZER_FOLDER))
    for src, dst in targets:
        if src.resolve() == dst.resolve():
            continue
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
    options = dict(ref) if isinstance(ref, Mapping) else {}
    options["path"] = "."
    return options
