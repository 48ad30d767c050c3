"""A held-out validation split: a seeded, fixed share (or number) of a dataset's items, never trained on."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from torch.utils.data import Subset as TorchSubset

from text2video.errors import DataError


class Subset(TorchSubset):
    """The items ``indices`` of ``dataset`` (a torch ``Subset``); a bucketed dataset's ``bucket_keys`` carry over
    (``bucket_keys()`` is None when it has none)."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        super().__init__(dataset, [int(i) for i in indices])
        keys = getattr(dataset, "bucket_keys", None)
        every = keys() if keys is not None else None
        mine = None if every is None else [every[i] for i in self.indices]
        self.bucket_keys = lambda: None if mine is None else list(mine)


def validation_count(total: int, val_split: float) -> int:
    """How many of ``total`` items ``val_split`` holds out: a share below 1 (at least one item), else a count."""
    count = max(1, round(total * val_split)) if val_split < 1 else int(val_split)
    if count >= total:
        raise DataError(f"data.val_split = {val_split:g} holds out {count} of the {total} items, leaving none to train on; lower it")
    return count


def split_validation(dataset: Any, val_split: float, seed: int = 0) -> tuple[Subset, Subset]:
    """``(train, validation)`` subsets: ``val_split`` of the items, picked by a permutation seeded by ``seed``."""
    total = len(dataset)
    count = validation_count(total, val_split)
    order = np.random.default_rng([seed, 0x7A1]).permutation(total)
    return Subset(dataset, sorted(order[count:].tolist())), Subset(dataset, sorted(order[:count].tolist()))


__all__ = ["Subset", "split_validation", "validation_count"]
