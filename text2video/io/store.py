"""A content-addressed store of safetensors files: the one on-disk cache behind the text and latent caches.

Layout: ``folder/<2 hex>/<sha256 of key>.safetensors``. Each file records its ``owner`` (what produced it:
an encoder id, a VAE id) and its ``key`` in its metadata, and a read checks both, so a hash collision or a
file copied from elsewhere is a miss, never a wrong answer. A damaged file is a miss too (logged; the
caller rewrites it). Writes go to a temporary file that is renamed into place, so concurrent writers
(DataLoader workers) never leave a half-written entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch

logger = logging.getLogger(__name__)


def content_hash(*parts: str) -> str:
    """SHA-256 hex digest of ``parts`` (each followed by a NUL byte, so ``("ab", "c") != ("a", "bc")``)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(temp_path)`` then move the temporary file onto ``path`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class TensorStore:
    """Named tensors and string metadata per ``key``, under ``folder``, written by ``owner``."""

    def __init__(self, folder: str | Path, owner: str) -> None:
        self.folder = Path(folder).expanduser()
        self.owner = owner
        self.folder.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"TensorStore({self.folder})"

    def path_for(self, key: str) -> Path:
        """The file that holds (or will hold) ``key``'s entry."""
        digest = content_hash(key)
        return self.folder / digest[:2] / f"{digest}.safetensors"

    def __contains__(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("??/*.safetensors"))

    def get(self, key: str) -> Optional[tuple[dict[str, torch.Tensor], dict[str, str]]]:
        """``(tensors, metadata)`` of ``key``, or None (missing, damaged, or another owner's or key's file)."""
        path = self.path_for(key)
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                if meta.get("owner") != self.owner or meta.get("key") != key:
                    logger.warning("cache entry %s was written for another owner or key; computing it again", path)
                    return None
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except Exception as exc:  # noqa: BLE001 - a damaged file is a miss, reported and rewritten
            logger.warning("unreadable cache entry %s (%s); computing it again", path, exc)
            return None
        return tensors, meta

    def put(self, key: str, tensors: dict[str, torch.Tensor], metadata: Optional[dict[str, str]] = None) -> Path:
        """Store ``tensors`` (moved to the CPU) and ``metadata`` under ``key``, atomically."""
        from safetensors.torch import save_file

        tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
        meta = {**(metadata or {}), "owner": self.owner, "key": key}
        target = self.path_for(key)
        atomic_write(target, lambda temp: save_file(tensors, temp, metadata=meta))
        return target
