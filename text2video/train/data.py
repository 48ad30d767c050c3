"""Resumable, sharded batches: every epoch a seeded permutation, split into global batches, each global
batch split over processes. The position (epoch, index in the epoch's permutation) is a pure function of
how many batches were consumed, so a resumed run reads exactly the items the uninterrupted run would.
`BucketBatches` does the same for datasets of mixed shapes: every batch comes from one bucket."""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from ..errors import DataError


def seeded_generator(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded from a tuple of non-negative ints (seed, step, rank, ...)."""
    seed = int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


class ShardedBatches:
    """Infinite iterable of per-process index lists, starting after ``consumed`` batches.

    ``global_batch`` items per batch are drawn from the epoch's permutation (the tail that does not
    fill a batch is dropped); process ``rank`` of ``world`` takes its contiguous share.
    """

    def __init__(self, num_items: int, global_batch: int, rank: int = 0, world: int = 1, seed: int = 0, consumed: int = 0) -> None:
        if global_batch % world:
            raise DataError(f"the batch of {global_batch} items cannot be split over {world} processes")
        self.per_epoch = num_items // global_batch
        if self.per_epoch == 0:
            raise DataError(
                f"the dataset has {num_items} items, fewer than one batch of {global_batch}; add data or lower train.batch_size"
            )
        self.num_items = num_items
        self.global_batch = global_batch
        self.local = global_batch // world
        self.rank = rank
        self.seed = seed
        self.consumed = consumed

    def position(self, consumed: int) -> tuple[int, int]:
        """(epoch, index of the next item in that epoch's permutation) after ``consumed`` batches."""
        return consumed // self.per_epoch, (consumed % self.per_epoch) * self.global_batch

    def permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.num_items, generator=seeded_generator(self.seed, epoch, 0x5EED))

    def __iter__(self) -> Iterator[list[int]]:
        epoch, index = self.position(self.consumed)
        while True:
            perm = self.permutation(epoch)
            while index + self.global_batch <= self.num_items:
                start = index + self.rank * self.local
                yield perm[start : start + self.local].tolist()
                index += self.global_batch
            epoch, index = epoch + 1, 0


def bucket_keys(dataset: Any) -> Optional[list[Any]]:
    """Every item's bucket of a bucketed dataset (its ``bucket_keys()``), else None."""
    keys = getattr(dataset, "bucket_keys", None)
    return keys() if callable(keys) else None


class BucketBatches(ShardedBatches):
    """`ShardedBatches` for a dataset whose items have shapes (``keys[i]``, e.g. `text2video.data.buckets.Bucket`):
    each global batch holds items of one key only, so it stacks.

    Every epoch each bucket's items are permuted (seeded by ``(seed, epoch, bucket)``) and cut into global
    batches; a bucket's last, short batch is filled up with its own first items of the epoch (so a bucket
    smaller than a batch still trains), and the order of all the epoch's batches is permuted too.
    """

    def __init__(self, keys: Sequence[Any], global_batch: int, rank: int = 0, world: int = 1, seed: int = 0, consumed: int = 0) -> None:
        if global_batch % world:
            raise DataError(f"the batch of {global_batch} items cannot be split over {world} processes")
        if not keys:
            raise DataError("the dataset has no items to put in buckets")
        self.groups: list[list[int]] = []
        index_of: dict[Any, int] = {}
        for item, key in enumerate(keys):
            if key not in index_of:
                index_of[key] = len(self.groups)
                self.groups.append([])
            self.groups[index_of[key]].append(item)
        self.keys = list(index_of)
        self.num_items = len(keys)
        self.global_batch = global_batch
        self.local = global_batch // world
        self.rank = rank
        self.seed = seed
        self.consumed = consumed
        self.per_epoch = sum(-(-len(group) // global_batch) for group in self.groups)

    def position(self, consumed: int) -> tuple[int, int]:
        """(epoch, index of the next batch in that epoch) after ``consumed`` batches."""
        return consumed // self.per_epoch, consumed % self.per_epoch

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's global batches, in the order they are drawn."""
        batches = []
        for b, group in enumerate(self.groups):
            order = torch.randperm(len(group), generator=seeded_generator(self.seed, epoch, 0xB0C7, b)).tolist()
            items = [group[i] for i in order]
            short = -len(items) % self.global_batch
            items += (items * (short // len(items) + 1))[:short]
            batches += [items[i : i + self.global_batch] for i in range(0, len(items), self.global_batch)]
        shuffle = torch.randperm(len(batches), generator=seeded_generator(self.seed, epoch, 0x5EED)).tolist()
        return [batches[i] for i in shuffle]

    def __iter__(self) -> Iterator[list[int]]:
        epoch, index = self.position(self.consumed)
        while True:
            batches = self.epoch_batches(epoch)
            for batch in batches[index:]:
                start = self.rank * self.local
                yield batch[start : start + self.local]
            epoch, index = epoch + 1, 0


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``video`` (and ``fps``) into tensors; keep every other field as a list."""
    out: dict[str, Any] = {"video": torch.stack([item["video"] for item in items])}
    out["fps"] = torch.tensor([float(item.get("fps", 8.0)) for item in items])
    out["text"] = [item.get("text") or "" for item in items]
    for key in items[0]:
        if key not in out:
            out[key] = [item.get(key) for item in items]
    return out
