"""How much memory one sample needs, computed from the model itself.

The denoiser, the text encoder and the VAE are rebuilt on PyTorch's ``meta`` device (shapes, no data),
and one denoiser call (both guidance halves in one batch, as sampling runs it), one text-encoder call and
one VAE decoder call (a slice of frames) run on it under a dispatch mode that counts the bytes of every
tensor while it is alive. The peak of live bytes of each part, plus the weights, gives the estimate:

* without offload: every part's weights stay resident, plus the largest of the three activation peaks;
* with model CPU offload: the largest of (a part's weights + its activation peak).

Attention is counted as a fused kernel (flash / memory-efficient attention, what CUDA runs for fp16 and
bf16): its output, not the ``L x L`` score matrix. The allocator's caching and CUDA's own context (a few
hundred MiB) are not included, so measured peaks run somewhat higher.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

logger = logging.getLogger(__name__)

#: tokens of a typical prompt, for encoders that pad to the longest prompt rather than to their limit.
TYPICAL_PROMPT_TOKENS = 32
ESTIMATE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages created inside the mode while they are referenced."""

    def __init__(self, ignore: set[int]) -> None:
        super().__init__()
        self.ignore = set(ignore)
        self.counts: dict[int, int] = {}
        self.live = 0
        self.peak = 0

    def _release(self, key: int, nbytes: int) -> None:
        self.counts[key] -= 1
        if self.counts[key] == 0:
            del self.counts[key]
            self.live -= nbytes

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key, nbytes = storage._cdata, storage.nbytes()
        if key in self.ignore:
            return
        if key not in self.counts:
            self.counts[key] = 0
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self.counts[key] += 1
        weakref.finalize(t, self._release, key, nbytes)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "meta":
                self._track(t)
        return out


class _FusedAttention(TorchFunctionMode):
    """Attention as a fused kernel (output only), and data-dependent checks on meta tensors answered
    with "no" (no fully masked row, no non-finite value): the common path of a sampling call."""

    def __torch_function__(self, func: Callable, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, v = args[0], args[2] if len(args) > 2 else kwargs["value"]
            return torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)
        if func is torch.Tensor.__bool__ and isinstance(args[0], torch.Tensor) and args[0].device.type == "meta":
            return False
        return func(*args, **kwargs)


@dataclass
class PartEstimate:
    """Bytes of one part: its weights and the activation peak of one call."""

    weights: int
    activations: int


def _storage_keys(module: torch.nn.Module) -> set[int]:
    return {t.untyped_storage()._cdata for t in list(module.parameters()) + list(module.buffers())}


def run_peak(module: torch.nn.Module, call: Callable[[], Any]) -> int:
    """Peak live bytes (beyond the module's own weights) of ``call()`` on a meta ``module``."""
    with torch.no_grad(), _FusedAttention(), _LiveBytes(_storage_keys(module)) as counter:
        out = call()
        del out
    return counter.peak


def weight_bytes(module: torch.nn.Module, dtype: torch.dtype) -> int:
    """Bytes of the module's floating parameters and buffers in ``dtype`` (others as they are)."""
    size = torch.empty((), dtype=dtype).element_size()
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        total += t.numel() * (size if t.is_floating_point() else t.element_size())
    return total


def parameter_count(module: Optional[torch.nn.Module]) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def meta_copy(module: torch.nn.Module) -> torch.nn.Module:
    """The module rebuilt on the meta device from its config (diffusers / transformers models)."""
    config = getattr(module, "config", None)
    if hasattr(type(module), "from_config") and config is not None and hasattr(config, "keys"):
        with torch.device("meta"):
            return type(module).from_config(dict(config))
    if config is not None and hasattr(config, "to_dict"):  # a transformers model
        with torch.device("meta"):
            return type(module)(config)
    import copy

    return copy.deepcopy(module).to("meta")


def denoiser_peak(model: torch.nn.Module, shape: tuple[int, ...], text: Optional[tuple[int, int, int]], dtype: torch.dtype) -> int:
    """Activation peak of one denoiser call on a batch of ``shape`` with text tokens ``(L, D, pooled D)``."""
    from ..diffusion.conditioning import Conditioning
    from ..diffusion.denoise import denoise

    model = torch.nn.Module.to(model, dtype=dtype).eval()  # (diffusers' own .to warns about dtype casts)

    def call() -> Any:
        b = shape[0]
        x = torch.empty(shape, dtype=dtype, device="meta")
        t = torch.zeros(b, dtype=torch.long, device="meta")
        cond = Conditioning(fps=torch.full((b,), 8.0, device="meta"))
        if text is not None:
            length, dim, pooled = text
            cond.text_tokens = torch.empty(b, length, dim, dtype=dtype, device="meta")
            cond.text_mask = torch.ones(b, length, dtype=torch.bool, device="meta")
            cond.text_pooled = torch.empty(b, pooled, dtype=dtype, device="meta")
        return denoise(model, x, t, cond)

    return run_peak(model, call)


def vae_decode_peak(vae: torch.nn.Module, latent_frames: tuple[int, int, int, int], dtype: torch.dtype) -> int:
    """Activation peak of decoding ``(frames, c, h, w)`` latents at once with a diffusers AutoencoderKL."""
    vae = torch.nn.Module.to(vae, dtype=dtype).eval()
    return run_peak(vae, lambda: vae.decode(torch.empty(latent_frames, dtype=dtype, device="meta")).sample)


def text_encoder_peak(model: torch.nn.Module, batch: int, length: int) -> int:
    ids = lambda: torch.zeros(batch, length, dtype=torch.long, device="meta")  # noqa: E731
    return run_peak(model, lambda: model(input_ids=ids()))


def estimate_memory(
    model: torch.nn.Module,
    *,
    sample_shape: tuple[int, int, int, int, int],
    guidance: bool = True,
    text: Optional[tuple[int, int, int]] = None,
    text_model: Optional[torch.nn.Module] = None,
    vae: Optional[torch.nn.Module] = None,
    vae_frames: int = 8,
    dtypes: dict[str, torch.dtype] = ESTIMATE_DTYPES,
) -> dict[str, Any]:
    """Bytes one sampling call needs, per dtype: ``{dtype: {weights, activations, total, total_offload,
    parts}}``. ``sample_shape`` is what the denoiser samples (latents for a latent model); ``text`` is
    (tokens, token width, pooled width); ``vae_frames`` frames go through the decoder at once."""
    meta_model = meta_copy(model)
    meta_text = meta_copy(text_model) if text_model is not None else None
    meta_vae = meta_copy(vae) if vae is not None else None
    batch = sample_shape[0] * (2 if guidance and text is not None else 1)
    out: dict[str, Any] = {}
    by_size: dict[int, dict[str, Any]] = {}  # float16 and bfloat16 take the same bytes: run once per size
    for name, dtype in dtypes.items():
        size = torch.empty((), dtype=dtype).element_size()
        if size in by_size:
            out[name] = by_size[size]
            continue
        parts = {
            "denoiser": PartEstimate(weight_bytes(meta_model, dtype), denoiser_peak(meta_model, (batch, *sample_shape[1:]), text, dtype))
        }
        if meta_text is not None and text is not None:
            parts["text_encoder"] = PartEstimate(
                weight_bytes(meta_text, dtype), text_encoder_peak(torch.nn.Module.to(meta_text, dtype=dtype), 2, text[0])
            )
        if meta_vae is not None:
            _, c, t, h, w = sample_shape
            frames = min(vae_frames, sample_shape[0] * t)
            parts["vae"] = PartEstimate(weight_bytes(meta_vae, dtype), vae_decode_peak(meta_vae, (frames, c, h, w), dtype))
        state = 4 * torch.empty((), dtype=dtype).element_size() * int(torch.tensor(sample_shape).prod())  # x, noise, x0, step
        weights = sum(p.weights for p in parts.values())
        peak = max(p.activations for p in parts.values())
        out[name] = {
            "weights": weights,
            "activations": peak,
            "total": weights + peak + state,
            "total_offload": max(p.weights + p.activations for p in parts.values()) + state,
            "parts": {k: {"weights": v.weights, "activations": v.activations} for k, v in parts.items()},
        }
        by_size[size] = out[name]
    return out


def estimate_pipeline_memory(pipe: Any, *, dtype: Optional[torch.dtype] = None) -> dict[str, Any]:
    """`estimate_memory` of a loaded pipeline at its default size, in its model's dtype (or ``dtype``)."""
    d = pipe.defaults
    shape = pipe.sample_shape((1, d.channels, d.num_frames, d.height, d.width))
    text = text_shape(pipe.text_encoder)
    vae = pipe.vae.vae if pipe.vae is not None else None
    if dtype is None:
        dtype = next(pipe.model.parameters()).dtype
    name = next(k for k, v in ESTIMATE_DTYPES.items() if v == dtype)
    frames = getattr(pipe.vae, "micro_batch", 8) if pipe.vae is not None else 8
    result = estimate_memory(pipe.model, sample_shape=shape, guidance=d.guidance_scale != 1.0, text=text,
                             text_model=getattr(pipe.text_encoder, "model", None), vae=vae, vae_frames=frames,
                             dtypes={name: dtype})[name]  # fmt: skip
    result["total_bytes"] = result["total_offload"] if getattr(pipe, "offloaded", False) else result["total"]
    return result


def text_shape(encoder: Any) -> Optional[tuple[int, int, int]]:
    """(tokens per prompt, token width, pooled width) a text encoder gives; None without one."""
    if encoder is None:
        return None
    length = int(getattr(encoder, "max_length", 77))
    if not hasattr(encoder, "null_prompt"):  # padded to the longest prompt: a typical prompt, not the limit
        length = min(length, TYPICAL_PROMPT_TOKENS)
    dim = int(getattr(encoder, "dim", 768))
    return length, dim, int(getattr(encoder, "pooled_dim", dim))
