"""Frozen-weight sampling: layers keep tensors derived from their weights between no-grad calls.

A sampling run calls the denoiser tens of times with the same weights, so work that depends only on
the weights can be done once per run: oneDNN's reordered convolution weights
(:mod:`text2video.backends.cpu.packed_conv`), or Unet3D's per-frame rotated attention projections.
``with frozen_weights(model):`` allows this for the layers of ``model`` that opt in
(:class:`WeightDerivedCache`). The sampling loop wraps its steps in it.

Each entry is keyed by what it was derived from, including the weights' storage and version counters,
so an in-place update of a weight rebuilds it instead of using a stale copy. Calls with
gradients enabled never use the cache. On exit the entries are freed. A deep copy or pickle of a
layer never carries them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Hashable, Iterator, Optional

import torch

_DEPTH = "_frozen_depth"
_ENTRIES = "_frozen_entries"


def weight_key(*tensors: Optional[torch.Tensor]) -> tuple:
    """What identifies the values of ``tensors``: storage, version counter, shape and dtype of each."""
    return tuple(None if t is None else (t.data_ptr(), t._version, tuple(t.shape), t.dtype) for t in tensors)


class WeightDerivedCache:
    """Mixin for ``nn.Module`` layers that may keep weight-derived tensors inside :func:`frozen_weights`."""

    def frozen_entries(self) -> Optional[dict[str, Any]]:
        """This layer's cache, or None where this call may not use one (outside the block, or with gradients)."""
        if self.__dict__.get(_DEPTH, 0) <= 0 or torch.is_grad_enabled():
            return None
        return self.__dict__.setdefault(_ENTRIES, {})

    def derived(self, name: str, key: Callable[[], Hashable], build: Callable[[], Any]) -> Any:
        """``build()``, reused while ``key()`` stays the same within the block (the old entry is freed first).

        Outside the block, or with gradients enabled, this is just ``build()`` (``key`` is not called).
        """
        entries = self.frozen_entries()
        if entries is None:
            return build()
        key = key()
        entry = entries.get(name)
        if entry is not None and entry[0] == key:
            return entry[1]
        entries.pop(name, None)
        value = build()
        entries[name] = (key, value)
        return value

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop(_ENTRIES, None)  # may hold opaque oneDNN tensors: neither deep-copyable nor picklable
        state.pop(_DEPTH, None)
        return state


@contextmanager
def frozen_weights(model: object) -> Iterator[object]:
    """Within the block, the opting-in layers of ``model`` reuse weight-derived tensors between no-grad calls.

    Nests; the entries are freed when the outermost block exits. Anything that is not an ``nn.Module``,
    or a module without such layers, is unaffected.
    """
    modules = model.modules() if isinstance(model, torch.nn.Module) else ()
    layers = [m for m in modules if isinstance(m, WeightDerivedCache)]
    for layer in layers:
        layer.__dict__[_DEPTH] = layer.__dict__.get(_DEPTH, 0) + 1
    try:
        yield model
    finally:
        for layer in layers:
            layer.__dict__[_DEPTH] -= 1
            if layer.__dict__[_DEPTH] <= 0:
                del layer.__dict__[_DEPTH]
                layer.__dict__.pop(_ENTRIES, None)
