"""An on-disk cache of text embeddings, so that each distinct caption is encoded once, across runs.

Entries live in a `text2video.io.store.TensorStore` under ``root/<hash of encoder id>/``, keyed by the
encoder id and the text; each holds the real (unpadded) token states ``tokens`` (L, D), ``mask`` (L,) and
``pooled`` (D,) of one text. A different encoder id hashes to another folder and another key, so it never
reads a stale entry.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..errors import TextEncoderError
from ..io.store import TensorStore, atomic_write, content_hash
from .encoders import TextEmbeddings, TextEncoder

logger = logging.getLogger(__name__)

FORMAT_VERSION = "2"


class EmbeddingCache:
    """Encode prompts through ``encoder``, storing every distinct text's embedding under ``root``.

    ``hits`` counts prompts answered from the cache (memory or disk); ``misses`` counts texts that had
    to be encoded. With ``keep_in_memory`` (default) an entry is read from disk at most once per cache.
    ``root=None`` keeps the entries in memory only (the trainer's prompt cache without ``text.cache``).
    """

    def __init__(self, root: str | Path | None, encoder: TextEncoder, *, keep_in_memory: bool = True) -> None:
        self.encoder = encoder
        self.hits = 0
        self.misses = 0
        self._memory: dict[str, TextEmbeddings] = {}
        self.root = self.folder = None
        self.store: Optional[TensorStore] = None
        self.keep_in_memory = keep_in_memory or root is None
        if root is None:
            return
        self.root = Path(root).expanduser()
        self.folder = self.root / content_hash(encoder.id)[:16]
        try:
            self.store = TensorStore(self.folder, owner=encoder.id)
        except OSError as exc:
            raise TextEncoderError(f"cannot create the embedding cache folder {self.folder}: {exc}; choose a writable folder") from exc
        about = self.folder / "encoder.json"
        if not about.exists():
            text = json.dumps({"encoder_id": encoder.id, "format": FORMAT_VERSION}, indent=2)
            atomic_write(about, lambda temp: Path(temp).write_text(text, encoding="utf-8"))

    def __repr__(self) -> str:
        return f"EmbeddingCache({self.folder}, hits={self.hits}, misses={self.misses})"

    # -- entries -------------------------------------------------------------------------------

    def _key(self, text: str) -> str:
        return f"{self.encoder.id}\0{text}"

    def path_for(self, text: str) -> Path:
        """The file that holds (or will hold) the embedding of ``text``."""
        if self.store is None:
            raise TextEncoderError("this embedding cache keeps its entries in memory only (root=None)")
        return self.store.path_for(self._key(text))

    def __contains__(self, text: str) -> bool:
        return text in self._memory or (self.store is not None and self._key(text) in self.store)

    def _read(self, text: str) -> Optional[TextEmbeddings]:
        found = None if self.store is None else self.store.get(self._key(text))
        if found is None:
            return None
        tensors = found[0]
        return TextEmbeddings(tokens=tensors["tokens"][None], mask=tensors["mask"][None].bool(), pooled=tensors["pooled"][None])

    def _write(self, text: str, entry: TextEmbeddings) -> None:
        if self.store is None:
            return
        tensors = {"tokens": entry.tokens[0], "mask": entry.mask[0], "pooled": entry.pooled[0]}
        self.store.put(self._key(text), tensors, {"text": text, "format": FORMAT_VERSION})

    def _lookup(self, text: str) -> Optional[TextEmbeddings]:
        entry = self._memory.get(text)
        if entry is None:
            entry = self._read(text)
            if entry is not None and self.keep_in_memory:
                self._memory[text] = entry
        return entry

    def _encode_and_store(self, texts: list[str]) -> dict[str, TextEmbeddings]:
        """Encode ``texts`` in one call and store each row trimmed to its real tokens."""
        batch = self.encoder.encode(texts)
        lengths = batch.mask.sum(dim=1).tolist()
        stored: dict[str, TextEmbeddings] = {}
        for i, text in enumerate(texts):
            n = int(lengths[i])
            entry = TextEmbeddings(
                tokens=batch.tokens[i : i + 1, :n].detach().cpu().clone(),
                mask=batch.mask[i : i + 1, :n].detach().cpu().clone(),
                pooled=batch.pooled[i : i + 1].detach().cpu().clone(),
            )
            self._write(text, entry)
            if self.keep_in_memory:
                self._memory[text] = entry
            stored[text] = entry
        self.misses += len(texts)
        return stored

    # -- public --------------------------------------------------------------------------------

    def encode(self, prompts: Sequence[str]) -> TextEmbeddings:
        """Embeddings of ``prompts`` (on the encoder's device and dtype), encoding only the misses."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            return self.encoder.encode([])
        bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
        if bad:
            raise TextEncoderError(f"prompts must be strings, got {', '.join(sorted(set(bad)))}; use '' for no text")
        found: dict[str, TextEmbeddings] = {}
        missing: list[str] = []
        for text in dict.fromkeys(prompts):
            entry = self._lookup(text)
            if entry is None:
                missing.append(text)
            else:
                found[text] = entry
        self.hits += sum(1 for p in prompts if p in found)
        if missing:
            found.update(self._encode_and_store(missing))
        out = TextEmbeddings.cat([found[p] for p in prompts])
        dtype = getattr(self.encoder, "dtype", None)
        return out.to(self.encoder.device, dtype)

    def precompute(self, texts: Iterable[str], *, batch_size: int = 64, progress: bool = False) -> int:
        """Encode and store every distinct text of ``texts`` not yet cached; return how many were encoded."""
        if batch_size < 1:
            raise TextEncoderError(f"batch_size must be positive, got {batch_size}")
        todo = [t for t in dict.fromkeys(texts) if t not in self]
        if not todo:
            return 0
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="encoding captions", unit="text")
        try:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                self._encode_and_store(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        logger.info("embedding cache %s: encoded %d new texts", self.folder, len(todo))
        return len(todo)
