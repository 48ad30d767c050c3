"""Sampling-time CPU convolutions that keep their weight in oneDNN's own layout between calls.

oneDNN convolves with the weight in a blocked layout. Given an ordinary ``(O, I, kH, kW)`` weight, it
reorders the weight on every call, and for channels-last inputs PyTorch first copies it to
channels-last too. On the small maps of a U-Net's inner levels, these copies take up to half the time
of the call. Inside :func:`~text2video.backends.cpu.frozen_weights.frozen_weights` (the sampling loop), a layer
called without gradients on CPU in float32 reorders once and reuses the result (one extra copy of its
weight, for one input shape and memory format). Where the oneDNN ops are missing or refuse a shape,
the layer falls back to the ordinary convolution for the rest of the block.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence

import torch

from .frozen_weights import WeightDerivedCache, weight_key

logger = logging.getLogger(__name__)


def _mkldnn_ops():
    """The namespace of PyTorch's oneDNN operators (the ones torch.compile's CPU weight prepacking uses)."""
    return torch.ops.mkldnn


def _packing_applies(layer: WeightDerivedCache, x: torch.Tensor, weight: torch.Tensor) -> Optional[dict]:
    """The layer's frozen-weight cache where this call may use a packed weight (float32 CPU, no autocast).

    The cache is looked up first: outside a sampling loop (every training call) that one lookup decides.
    """
    entries = layer.frozen_entries()
    if entries is None or entries.get("packing_unsupported"):
        return None
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return None
    if torch.is_autocast_enabled("cpu") or not torch.backends.mkldnn.is_available():
        return None
    return entries


def _through_packed(
    layer: WeightDerivedCache,
    x: torch.Tensor,
    weight: torch.Tensor,
    kind: str,
    pack: Callable[[Any], torch.Tensor],
    run: Callable[[Any, torch.Tensor], torch.Tensor],
) -> Optional[torch.Tensor]:
    """``run(ops, packed)`` with ``layer``'s packed weight (built by ``pack(ops)`` when missing or stale), or
    None where this call cannot use one; a refusal by oneDNN turns packing off for the rest of the block."""
    entries = _packing_applies(layer, x, weight)
    if entries is None:
        return None
    ops = _mkldnn_ops()
    try:
        packed = layer.derived("packed", lambda: (kind, tuple(x.shape), x.stride(), weight_key(weight)), lambda: pack(ops))
        return run(ops, packed)
    except (AttributeError, RuntimeError) as err:
        logger.debug("packed oneDNN convolution unavailable (%s); using the ordinary one", err)
        entries["packing_unsupported"] = True
        entries.pop("packed", None)
        return None


def packed_conv2d(
    layer: WeightDerivedCache,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Optional[torch.Tensor]:
    """``F.conv2d`` through ``layer``'s packed weight, or None where this call cannot use one (fall back)."""
    geometry = (list(padding), list(stride), list(dilation), groups)
    return _through_packed(
        layer, x, weight, "conv",
        lambda ops: ops._reorder_convolution_weight(weight, *geometry, list(x.shape)),
        lambda ops, packed: ops._convolution_pointwise(x, packed, bias, *geometry, "none", [], ""),
    )  # fmt: skip


def packed_conv_transpose2d(
    layer: WeightDerivedCache,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: Sequence[int],
    padding: Sequence[int],
    output_padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Optional[torch.Tensor]:
    """``F.conv_transpose2d`` through ``layer``'s packed weight, or None where this call cannot use one."""
    geometry = (list(padding), list(output_padding), list(stride), list(dilation), groups)
    return _through_packed(
        layer, x, weight, "transpose",
        lambda ops: ops._reorder_convolution_transpose_weight(weight, *geometry, list(x.shape)),
        lambda ops, packed: ops._convolution_transpose_pointwise(x, packed, bias, *geometry, "none", [], ""),
    )  # fmt: skip
