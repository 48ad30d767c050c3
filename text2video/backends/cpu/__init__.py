"""The CPU backend: everything that makes a model fast on a CPU, switched on by one call.

``install(model)`` turns the plain PyTorch layers of the models it knows (today `Unet3D`) into fast
subclasses that hold the same parameters: fused C kernels (:mod:`.kernels`, built from ``csrc/`` on first
use), Winograd and GEMM convolutions, oneDNN-packed weights while sampling (:func:`sampling`). Every fast
layer falls back to its plain path for calls it cannot take, so an installed model gives the same results
(up to float rounding) on any device. The trainer and the pipelines call it when they run on CPU.

``TEXT2VIDEO_CPU_BACKEND=0`` turns all of it off (:func:`install` and :func:`sampling` then leave the
model plain); ``TEXT2VIDEO_CPU_KERNELS=0`` turns off only the C library (the fast layers then use their
PyTorch formulations).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator, TypeVar

from torch import nn

from .frozen_weights import frozen_weights

logger = logging.getLogger(__name__)

ENV_SWITCH = "TEXT2VIDEO_CPU_BACKEND"

M = TypeVar("M", bound=nn.Module)

__all__ = ["ENV_SWITCH", "enabled", "install", "uninstall", "installed", "sampling"]


def enabled() -> bool:
    """Whether the backend may be installed (``TEXT2VIDEO_CPU_BACKEND`` is not 0/false/no/off)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _swaps(model: nn.Module, inverse: bool) -> Iterator[tuple[nn.Module, type]]:
    """``(layer, new class)`` for every layer of the known models inside ``model``."""
    from .unet3d import MODEL_LAYERS

    if not isinstance(model, nn.Module):
        return
    for owner in model.modules():
        table = MODEL_LAYERS.get(type(owner))
        if table is None:
            continue
        if inverse:
            table = {fast: plain for plain, fast in table.items()}
        for layer in owner.modules():
            new = table.get(type(layer))
            if new is not None:
                yield layer, new


def install(model: M) -> M:
    """Swap the fast CPU layers into ``model`` in place (idempotent) and return it.

    Parameters, buffers, state-dict keys and saved files stay as they are; a model the backend does not
    know is returned unchanged, and so is every model while ``TEXT2VIDEO_CPU_BACKEND=0``.
    """
    if not enabled():
        logger.debug("CPU backend disabled by %s", ENV_SWITCH)
        return model
    count = 0
    for layer, fast in _swaps(model, inverse=False):
        layer.__class__ = fast
        count += 1
    if count:
        logger.debug("CPU backend: %d layers of %s swapped in", count, type(model).__name__)
    return model


def uninstall(model: M) -> M:
    """Turn the fast layers of ``model`` back into plain ones (in place) and return it."""
    for layer, plain in _swaps(model, inverse=True):
        layer.__dict__.pop("_frozen_entries", None)
        layer.__class__ = plain
    return model


def installed(model: nn.Module) -> bool:
    """Whether any fast layer of this backend is in ``model``."""
    return any(True for _ in _swaps(model, inverse=True))


@contextlib.contextmanager
def sampling(model: M) -> Iterator[M]:
    """A sampling run on CPU: installs the backend, and within the block lets the fast layers keep tensors
    derived from their (unchanging) weights between no-grad calls (:func:`~.frozen_weights.frozen_weights`).
    With the backend disabled the model is left plain and the block does nothing."""
    if not enabled():
        yield model
        return
    install(model)
    with frozen_weights(model):
        yield model
