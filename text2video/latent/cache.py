"""Latents of a dataset's items, encoded once and stored on disk, so training never runs the VAE encoder twice.

`LatentDataset(dataset, vae, cache_dir)` wraps any text2video dataset. Item ``i`` is looked up in a
`LatentCache`; on a miss the wrapped item is loaded, encoded and stored. It yields the wrapped item's
dict with ``video`` replaced by latents ``(c, T, h, w)`` (float32) and ``latent: True`` added (after the
default collate, a bool tensor of shape (B,)).

**What is stored.** The posterior's scaled mean and standard deviation, not one draw: with
``posterior="sample"`` (the default, as in Stable Diffusion training) every read draws fresh noise
``mean + std * randn`` from torch's RNG (seeded per DataLoader worker), so caching does not freeze the
VAE's sampling noise; ``posterior="mode"`` yields the mean.

**Keys.** Files live under ``cache_dir/<hash>/`` where the hash covers the VAE's `VideoVAE.id` (config,
scaling factor and every weight), the dataset's settings (class, clip sampling, transforms, size, seed,
...: `dataset_key`), the storage dtype and the format version. Inside, an item's file is named by its
identity: the video path plus its size and modification time for file-backed datasets, the index
otherwise. A different VAE, transform, or an edited video file therefore never reads a stale entry.
Writes are atomic (temp file + rename), so DataLoader workers can fill the cache concurrently.

**Random augmentations.** A random clip start, random crop or horizontal flip gives a different
pixel item on every read; a per-item cache can hold only one of them. `random_augmentations` lists
the random settings of a dataset, and the ``augmentations`` policy decides: ``"warn"`` (default)
caches the first draw of each item and logs one warning, ``"freeze"`` does the same silently, and
``"error"`` refuses. For augmentation that survives caching use deterministic settings
(``random_clip=False``, ``crop="center"``, ``hflip=0``) and let the posterior sampling add variety.
Random caption choice is kept: for file-backed datasets with several captions per video one is
picked at every read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import torch
from torch.utils.data import Dataset, Subset

from ..errors import DataError, ModelError
from ..io.store import TensorStore, content_hash
from .vae import POSTERIORS, VideoVAE

logger = logging.getLogger(__name__)

FORMAT_VERSION = "2"
AUGMENTATION_POLICIES: tuple[str, ...] = ("warn", "freeze", "error")
#: dataset attributes that list files or record runtime state; item keys cover the files
_VOLATILE_ATTRIBUTES = frozenset({"entries", "unreadable", "failed", "missing_captions"})
_STANDARD_KEYS = ("video", "text", "fps", "path")


# ------------------------------------------------------------------------------- dataset identity

_SKIP = object()


def _plain(value: Any) -> Any:
    """``value`` as JSON-able data, or ``_SKIP`` when it has no stable description."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.dtype):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        inner = _plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
        return _SKIP if inner is _SKIP else {"__class__": type(value).__qualname__, **inner}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else list(value)
        plain = [_plain(v) for v in items]
        return _SKIP if any(p is _SKIP for p in plain) else plain
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return _SKIP
        plain = {k: _plain(v) for k, v in value.items()}
        return _SKIP if any(p is _SKIP for p in plain.values()) else plain
    return _SKIP


def _base(dataset: Dataset, index: int) -> tuple[Dataset, int]:
    """The innermost dataset and index behind (nested) ``Subset``s."""
    while isinstance(dataset, Subset):
        index = int(dataset.indices[index])
        dataset = dataset.dataset
    return dataset, index


def describe_dataset(dataset: Dataset) -> dict[str, Any]:
    """The settings that decide what a dataset's items look like: its class and every public attribute
    with a plain value (sizes, seeds, clip sampler, transform, ...), files and runtime state left out."""
    inner, _ = _base(dataset, 0) if isinstance(dataset, Subset) else (dataset, 0)
    settings = {}
    for name, value in sorted(vars(inner).items()):
        if name.startswith("_") or name in _VOLATILE_ATTRIBUTES:
            continue
        plain = _plain(value)
        if plain is not _SKIP:
            settings[name] = plain
    cls = type(inner)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "settings": settings}


def dataset_key(dataset: Dataset) -> str:
    """A hash of `describe_dataset`: equal for datasets built with the same settings."""
    return content_hash(json.dumps(describe_dataset(dataset), sort_keys=True))


def random_augmentations(dataset: Dataset) -> list[str]:
    """The random settings of ``dataset`` that make an item differ between reads (empty when none)."""
    inner, _ = _base(dataset, 0) if isinstance(dataset, Subset) else (dataset, 0)
    found = []
    sampler, transform = getattr(inner, "sampler", None), getattr(inner, "transform", None)
    if getattr(sampler, "random_start", False):
        what = "a random frame (image_mode)" if getattr(inner, "image_mode", False) else "a random clip start"
        found.append(f"{what} (random_clip=True)")
    if getattr(transform, "crop", None) == "random":
        found.append("a random crop (crop='random')")
    if float(getattr(transform, "hflip", 0.0) or 0.0) > 0:
        found.append(f"a horizontal flip (hflip={transform.hflip})")
    return found


def item_key(dataset: Dataset, index: int) -> str:
    """The identity of item ``index``: its file (path, size, modification time) for file-backed
    datasets, else its index."""
    inner, i = _base(dataset, index)
    entries = getattr(inner, "entries", None)
    if isinstance(entries, Sequence) and len(entries) > i and hasattr(entries[i], "path"):
        path = Path(entries[i].path)
        try:
            stat = path.stat()
            return f"file:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            return f"file:{path}"
    return f"index:{i}"


# ------------------------------------------------------------------------------------- the store


@dataclass
class LatentEntry:
    """One cached item: posterior ``mean`` and ``std`` (c, T, h, w), its text/fps/path and extras."""

    mean: torch.Tensor
    std: torch.Tensor
    text: str = ""
    fps: float = 0.0
    path: str = ""
    extras: dict[str, Any] = field(default_factory=dict)  # JSON-able extra item fields
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # tensor extra item fields


class LatentCache:
    """`LatentEntry` files in a `text2video.io.store.TensorStore` under ``root/<hash of vae id + namespace>/``.

    ``namespace`` separates datasets (`LatentDataset` passes the dataset key and storage dtype).
    """

    def __init__(self, root: str | Path, vae_id: str, namespace: str = "") -> None:
        self.root = Path(root).expanduser()
        self.vae_id = vae_id
        self.namespace = namespace
        self.folder = self.root / content_hash(FORMAT_VERSION, vae_id, namespace)[:20]
        try:
            self.store = TensorStore(self.folder, owner=vae_id)
        except OSError as exc:
            raise DataError(f"cannot create the latent cache folder {self.folder}: {exc}; choose a writable cache_dir") from exc

    def __repr__(self) -> str:
        return f"LatentCache({self.folder})"

    def path_for(self, key: str) -> Path:
        return self.store.path_for(key)

    def __contains__(self, key: str) -> bool:
        return key in self.store

    def get(self, key: str) -> Optional[LatentEntry]:
        """The entry stored under ``key``, or None (missing, damaged or written by another VAE)."""
        found = self.store.get(key)
        if found is None:
            return None
        tensors, meta = found
        record = json.loads(meta.get("record", "{}"))
        extra_tensors = {name[len("extra.") :]: t for name, t in tensors.items() if name.startswith("extra.")}
        return LatentEntry(
            mean=tensors["mean"],
            std=tensors["std"],
            text=record.get("text", ""),
            fps=float(record.get("fps", 0.0)),
            path=record.get("path", ""),
            extras=record.get("extras", {}),
            tensors=extra_tensors,
        )

    def put(self, key: str, entry: LatentEntry, dtype: torch.dtype = torch.float32) -> Path:
        """Store ``entry`` under ``key`` (atomically); latents are written in ``dtype``."""
        tensors = {
            "mean": entry.mean.detach().to("cpu", dtype),
            "std": entry.std.detach().to("cpu", dtype),
            **{f"extra.{k}": v for k, v in entry.tensors.items()},
        }
        record = {"text": entry.text, "fps": entry.fps, "path": entry.path, "extras": entry.extras}
        return self.store.put(key, tensors, {"format": FORMAT_VERSION, "record": json.dumps(record)})

    def __len__(self) -> int:
        return len(self.store)


# ------------------------------------------------------------------------------------ the dataset


class LatentDataset(Dataset):
    """``dataset``'s items with ``video`` replaced by VAE latents, encoded once and cached on disk.

    Args:
        dataset: any text2video dataset (items ``video`` (C, T, H, W) in [-1, 1], ``text``, ``fps``, ``path``).
        vae: the `VideoVAE` (its `id` keys the cache).
        cache_dir: where the latents go (created).
        posterior: ``"sample"`` draws ``mean + std * randn`` at every read; ``"mode"`` yields the mean.
        augmentations: ``"warn"``, ``"freeze"`` or ``"error"`` for datasets with random
            augmentations (see the module doc).
        storage_dtype: float32 (default) or float16/bfloat16 to halve the disk use.
        key: replaces `dataset_key` (the dataset's share of the cache key) when given.
    """

    def __init__(
        self,
        dataset: Dataset,
        vae: VideoVAE,
        cache_dir: str | Path,
        *,
        posterior: str = "sample",
        augmentations: str = "warn",
        storage_dtype: torch.dtype = torch.float32,
        key: Optional[str] = None,
    ) -> None:
        if posterior not in POSTERIORS:
            raise ModelError(f"unknown posterior {posterior!r}; choose from: {', '.join(POSTERIORS)}")
        if augmentations not in AUGMENTATION_POLICIES:
            raise DataError(f"unknown augmentations policy {augmentations!r}; choose from: {', '.join(AUGMENTATION_POLICIES)}")
        if not isinstance(vae, VideoVAE):
            raise ModelError(f"LatentDataset needs a VideoVAE, got {type(vae).__name__}; build one with load_vae(...)")
        self.dataset, self.vae, self.posterior = dataset, vae, posterior
        if callable(getattr(dataset, "bucket_keys", None)):  # mixed shapes: each item's latents keep its bucket's shape
            self.bucket_keys = dataset.bucket_keys
        self.storage_dtype = storage_dtype
        self.dataset_key = key or dataset_key(dataset)
        self.cache = LatentCache(cache_dir, vae.id, f"{self.dataset_key}:{storage_dtype}")
        self.hits = 0
        self.misses = 0
        randomness = random_augmentations(dataset)
        if randomness:
            what = ", ".join(randomness)
            fix = "set random_clip=False, crop='center', hflip=0 (the latent posterior sampling still adds variety)"
            if augmentations == "error":
                raise DataError(f"cannot cache latents of a dataset with random augmentations ({what}); {fix}")
            if augmentations == "warn":
                logger.warning(
                    "latent cache: the dataset uses %s; each item's first draw is cached and reused, so these "
                    "augmentations stop varying. To avoid it, %s; to silence this, use augmentations='freeze'",
                    what,
                    fix,
                )

    def __len__(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        return f"LatentDataset({type(self.dataset).__name__}, {self.cache.folder}, posterior={self.posterior!r})"

    def key_for(self, index: int) -> str:
        """The cache key of item ``index``."""
        return item_key(self.dataset, index)

    def __contains__(self, index: int) -> bool:
        return self.key_for(index) in self.cache

    # ---------------------------------------------------------------------------------- misses

    def _encode_item(self, index: int) -> LatentEntry:
        worker = torch.utils.data.get_worker_info()
        if worker is not None and self.vae.device.type != "cpu":
            raise DataError(
                f"latent cache miss for item {index} inside a DataLoader worker with the VAE on {self.vae.device}; "
                "fill the cache first with LatentDataset.precompute() (or keep the VAE on the CPU)"
            )
        item = self.dataset[index]
        video = item.get("video") if isinstance(item, dict) else None
        if not isinstance(video, torch.Tensor) or video.ndim != 4:
            raise DataError(f"item {index} of {type(self.dataset).__name__} has no (C, T, H, W) 'video' tensor; cannot encode it")
        mean, std = self.vae.encode_moments(video[None].float())
        extras, tensors = {}, {}
        for name, value in item.items():
            if name in _STANDARD_KEYS or name == "latent":
                continue
            if isinstance(value, torch.Tensor):
                tensors[name] = value
            elif (plain := _plain(value)) is not _SKIP:
                extras[name] = plain
            else:
                logger.debug("latent cache: item field %r (%s) is not stored", name, type(value).__name__)
        entry = LatentEntry(
            mean=mean[0].float().cpu(),
            std=std[0].float().cpu(),
            text=str(item.get("text", "") or ""),
            fps=float(item.get("fps", 0.0) or 0.0),
            path=str(item.get("path", "")),
            extras=extras,
            tensors=tensors,
        )
        self.cache.put(self.key_for(index), entry, self.storage_dtype)
        self.misses += 1
        return entry

    def entry(self, index: int) -> LatentEntry:
        """The cached entry of item ``index``, encoding and storing it on a miss."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index %= len(self)
        found = self.cache.get(self.key_for(index))
        if found is None:
            return self._encode_item(index)
        self.hits += 1
        return found

    # ------------------------------------------------------------------------------------ items

    def _text(self, index: int, entry: LatentEntry) -> str:
        """The stored caption, or a fresh random pick among the file's captions (file-backed datasets)."""
        inner, i = _base(self.dataset, index)
        entries = getattr(inner, "entries", None)
        if getattr(inner, "caption", None) != "random" or not isinstance(entries, Sequence) or i >= len(entries):
            return entry.text
        source = entries[i]
        captions = [c for c in getattr(source, "captions", ()) if c.strip()]
        if len(captions) < 2 or str(getattr(source, "path", "")) != entry.path:
            return entry.text
        return captions[int(torch.randint(len(captions), ()).item())]

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entry(index)
        mean, std = entry.mean.float(), entry.std.float()
        latents = mean + std * torch.randn_like(mean) if self.posterior == "sample" else mean
        item: dict[str, Any] = {
            "video": latents,
            "text": self._text(index % len(self), entry),
            "fps": entry.fps,
            "path": entry.path,
            "latent": True,
        }
        item.update(entry.extras)
        item.update(entry.tensors)
        return item

    def precompute(self, *, progress: bool = True, indices: Optional[Iterable[int]] = None) -> int:
        """Encode and store every item not yet cached (or those of ``indices``); return how many were encoded."""
        wanted = range(len(self)) if indices is None else list(indices)
        todo = [i for i in wanted if i not in self]
        if not todo:
            return 0
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="encoding latents", unit="item")
        try:
            for i in todo:
                self._encode_item(i)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        logger.info("latent cache %s: encoded %d new items", self.cache.folder, len(todo))
        return len(todo)

    def latent_shape(self) -> tuple[int, ...]:
        """``(c, T, h, w)`` of the items (from item 0)."""
        return tuple(self.entry(0).mean.shape)
