"""Import a ``Unet3D`` trained with lucidrains' video-diffusion-pytorch (or the text2video-from-scratch
tutorial, which shares its layout) into text2video's `Unet3D`.

Accepted inputs: a ``Unet3D`` state dict, a ``GaussianDiffusion`` state dict (parameters under
``denoise_fn.``), or the trainer checkpoint those projects save (``{"step", "model", "ema", ...}``).
The config is inferred from the weights' shapes. Files are read with ``torch.load(weights_only=True)``
or as safetensors.
"""

from __future__ import annotations

import logging
import re
import types
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ...errors import CheckpointError, ModelError

logger = logging.getLogger(__name__)

PREFIX = "denoise_fn."

#: (pattern on the source key, replacement) applied in order; the first match wins.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^time_rel_pos_bias\.relative_attention_bias\.", "rel_pos_bias.embedding."),
    (r"^init_temporal_attn\.fn\.norm\.gamma$", "init_temporal_attn.norm.weight"),
    (r"^init_temporal_attn\.fn\.fn\.fn\.", "init_temporal_attn."),
    (r"^time_mlp\.1\.", "time_mlp.0."),
    (r"^time_mlp\.3\.", "time_mlp.2."),
    (r"^(downs|ups)\.(\d+)\.0\.", r"\1.\2.res1."),
    (r"^(downs|ups)\.(\d+)\.1\.", r"\1.\2.res2."),
    (r"^(downs|ups)\.(\d+)\.2\.fn\.norm\.gamma$", r"\1.\2.spatial_attn.norm.weight"),
    (r"^(downs|ups)\.(\d+)\.2\.fn\.fn\.", r"\1.\2.spatial_attn."),
    (r"^(downs|ups)\.(\d+)\.3\.fn\.norm\.gamma$", r"\1.\2.temporal_attn.norm.weight"),
    (r"^(downs|ups)\.(\d+)\.3\.fn\.fn\.fn\.", r"\1.\2.temporal_attn."),
    (r"^(downs|ups)\.(\d+)\.4\.", r"\1.\2.sample."),
    (r"^mid_block1\.", "mid.res1."),
    (r"^mid_block2\.", "mid.res2."),
    (r"^mid_(spatial|temporal)_attn\.fn\.norm\.gamma$", r"mid.\1_attn.norm.weight"),
    (r"^mid_(spatial|temporal)_attn\.fn\.fn\.fn\.", r"mid.\1_attn."),
    (r"^final_conv\.0\.", "final_block."),
    (r"^final_conv\.1\.", "final_conv."),
)
#: Inside a ResNet block.
_BLOCK_RENAMES: tuple[tuple[str, str], ...] = (
    (r"\.mlp\.1\.", ".mlp."),
    (r"\.norm\.gamma$", ".norm.weight"),
)


def rename_key(key: str) -> Optional[str]:
    """Our parameter name for a video-diffusion-pytorch ``Unet3D`` key; None for keys we drop."""
    if key.endswith("rotary_emb.freqs"):
        return None  # fixed frequencies, recomputed by the model
    for pattern, repl in _RENAMES:
        new, n = re.subn(pattern, repl, key)
        if n:
            key = new
            break
    for pattern, repl in _BLOCK_RENAMES:
        key = re.sub(pattern, repl, key)
    return key


# ----------------------------------------------------------------------------------------------
# reading


def _load_file(src: Path) -> Any:
    if not src.is_file():
        raise CheckpointError(f"{src} does not exist or is not a file; pass a .pt/.pth/.safetensors checkpoint")
    if src.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(src))
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files
        raise CheckpointError(
            f"cannot read {src} as a weights-only PyTorch checkpoint ({str(exc).strip().splitlines()[0][:200]}); "
            "re-save its state dict with torch.save"
        ) from exc


def select_state_dict(obj: Any, *, use_ema: Optional[bool] = None) -> tuple[dict[str, torch.Tensor], str]:
    """The ``Unet3D`` parameters of a loaded checkpoint and which part they came from.

    ``use_ema``: True takes ``ema`` (error if absent), False takes ``model``, None takes ``ema`` when
    the checkpoint has one (it is what the original project samples with), else ``model``.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a state dict or a trainer checkpoint (a dict), got {type(obj).__name__}")
    part = "state_dict"
    if "model" in obj or "ema" in obj:
        if use_ema is True and "ema" not in obj:
            raise CheckpointError(f"the checkpoint has no 'ema' entry (keys: {sorted(obj)}); convert without --ema")
        if use_ema is False and "model" not in obj:
            raise CheckpointError(f"the checkpoint has no 'model' entry (keys: {sorted(obj)}); convert with --ema")
        part = "ema" if (use_ema is not False and "ema" in obj) else "model"
        obj = obj[part]
    elif use_ema:
        raise CheckpointError("--ema asks for the EMA weights, but the file is a plain state dict without 'ema'")
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"the {part!r} entry of the checkpoint is not a state dict of tensors")
    state = dict(obj)
    if any(k.startswith(PREFIX) for k in state):
        state = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    if "init_conv.weight" not in state:
        raise CheckpointError(
            f"this is not a video-diffusion-pytorch Unet3D checkpoint: no 'init_conv.weight' (first keys: {sorted(state)[:5]})"
        )
    return state, part


# ----------------------------------------------------------------------------------------------
# config inference


def infer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Our `Unet3D` config from the shapes of a video-diffusion-pytorch ``Unet3D`` state dict."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"the checkpoint lacks {key!r}; it is not a complete video-diffusion-pytorch Unet3D")
        return tuple(state[key].shape)

    init_dim, channels, _, k, _ = shape("init_conv.weight")
    time_dim, dim = shape("time_mlp.1.weight")
    heads = shape("time_rel_pos_bias.relative_attention_bias.weight")[1]
    qkv = shape("init_temporal_attn.fn.fn.fn.to_qkv.weight")[0]
    levels = sorted({int(m.group(1)) for key in state if (m := re.match(r"^downs\.(\d+)\.0\.block1\.proj\.weight$", key))})
    if not levels:
        raise CheckpointError("the checkpoint has no down-sampling levels (downs.0...)")
    dim_mults = []
    for i in levels:
        out = shape(f"downs.{i}.0.block1.proj.weight")[0]
        if out % dim:
            raise CheckpointError(f"level {i} has {out} channels, not a multiple of dim {dim}")
        dim_mults.append(out // dim)
    linear = "downs.0.2.fn.fn.to_qkv.weight" in state
    spatial_dim_head = shape("mid_spatial_attn.fn.fn.fn.to_qkv.weight")[0] // (3 * heads)
    if linear and shape("downs.0.2.fn.fn.to_qkv.weight")[0] // (3 * heads) != spatial_dim_head:
        raise CheckpointError("the checkpoint's linear and full spatial attentions have different head sizes")
    cond_dim = shape("null_cond_emb")[1] if "null_cond_emb" in state else None
    block_norm = "layer" if "downs.0.0.block1.norm.bias" in state else "rms"
    return dict(
        dim=dim,
        cond_dim=cond_dim,
        out_dim=shape("final_conv.1.weight")[0],
        dim_mults=dim_mults,
        channels=channels,
        attn_heads=heads,
        attn_dim_head=qkv // (3 * heads),
        init_dim=init_dim,
        init_kernel_size=k,
        use_sparse_linear_attn=linear,
        spatial_attn_dim_head=spatial_dim_head,
        block_norm=block_norm,
    )


def convert_state_dict(state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and reshape (drop the singleton time axis of kernels) into ``model_state``'s layout."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = rename_key(key)
        if new is None:
            continue
        if new not in model_state:
            raise CheckpointError(f"cannot place checkpoint key {key!r} (as {new!r}) in the text2video Unet3D")
        target = model_state[new]
        if value.numel() != target.numel():
            raise CheckpointError(f"{key!r} has shape {tuple(value.shape)}, the model expects {tuple(target.shape)}")
        out[new] = value.reshape(target.shape).to(target.dtype)
    missing = sorted(set(model_state) - set(out))
    if missing:
        raise CheckpointError(f"the checkpoint lacks parameters the model needs: {missing[:8]}")
    return out


def convert(src: Path, out: Path, *, use_ema: Optional[bool] = None, **opts: Any) -> dict[str, Any]:
    """Convert ``src`` into a `Unet3D` folder ``out`` (``save_pretrained``); returns a report.

    ``opts`` may override config keys that the weights do not determine (``gradient_checkpointing``).
    """
    from ..unet3d import Unet3D

    state, part = select_state_dict(_load_file(Path(src)), use_ema=use_ema)
    config = infer_config(state)
    unknown = set(opts) - {"gradient_checkpointing"}
    if unknown:
        raise ModelError(f"unknown option(s) for the video-diffusion-pytorch importer: {sorted(unknown)}")
    config.update(opts)
    model = Unet3D(**config)
    model.load_state_dict(convert_state_dict(state, model.state_dict()))
    notes = []
    if config["block_norm"] == "layer":
        notes.append(
            "the checkpoint's blocks use nn.LayerNorm (the tutorial's norm over the last axis); "
            "they were mapped to a layer norm over channels, so outputs differ from the original"
        )
    for note in notes:
        logger.warning(note)
    out = Path(out)
    model.save_pretrained(str(out))
    report = {
        "source": "video-diffusion-pytorch",
        "input": str(src),
        "output": str(out),
        "weights": part,
        "config": config,
        "parameters": sum(p.numel() for p in model.parameters()),
        "notes": notes,
    }
    logger.info("converted %s (%s weights) to %s", src, part, out)
    return report


_TORCHVISION_STUBS = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.utils")


def import_original_package() -> types.ModuleType:
    """video-diffusion-pytorch's model module, for side-by-side checks against the original.

    The package imports torchvision at import time only for its data loader, and torchvision has no CPU
    build here: empty stand-in modules are put in ``sys.modules`` while it imports, then removed.
    """
    import importlib
    import importlib.machinery
    import sys
    import types

    import diffusers  # noqa: F401  (imported first: its availability checks must not see the stubs)

    stubs = {name: types.ModuleType(name) for name in _TORCHVISION_STUBS}
    for name, module in stubs.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    stubs["torchvision"].transforms = stubs["torchvision.transforms"]
    stubs["torchvision"].utils = stubs["torchvision.utils"]
    stubs["torchvision.transforms"].functional = stubs["torchvision.transforms.functional"]
    stubs["torchvision.transforms"].ToTensor = lambda: None  # a default argument evaluated at import
    saved = {name: sys.modules.get(name) for name in _TORCHVISION_STUBS}
    sys.modules.update(stubs)
    try:
        return importlib.import_module("video_diffusion_pytorch.video_diffusion_pytorch")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
