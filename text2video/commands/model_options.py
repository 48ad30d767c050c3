"""Options shared by every command that takes ``--model``: what the pretrained formats need (a motion
adapter, a text encoder, CLIP skip), the memory options (dtype, VAE slices and tiles, CPU offload) and the
LoRA adapters to merge (``--lora``), which combine with all of them."""

from __future__ import annotations

import argparse
from typing import Any

from .args import non_negative_int, positive_int, resolve_device


def add_pretrained_args(p: argparse.ArgumentParser) -> None:
    """``--motion-adapter``, ``--text-encoder``, ``--clip-skip``, ``--dtype``, ``--vae-frames``,
    ``--vae-tiling``, ``--offload``, ``--revision``."""
    g = p.add_argument_group("pretrained models and memory")
    g.add_argument(
        "--motion-adapter",
        default=None,
        metavar="DIR_OR_CKPT",
        help="with a Stable Diffusion 1.5 folder: AnimateDiff motion weights (a MotionAdapter folder or Hub id, "
        "or an original mm_sd_v15*.ckpt)",
    )
    g.add_argument(
        "--text-encoder",
        default=None,
        metavar="DIR",
        help="with a video-diffusion-pytorch .pt: the BERT folder it was trained with (its width must be the "
        "checkpoint's cond_dim); with other models: replace the text encoder",
    )
    g.add_argument(
        "--clip-skip", type=non_negative_int, default=None, help="with a diffusers folder: use the CLIP layer this many from the end"
    )
    g.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "float16", "bfloat16"),
        help="sample in this precision (default float32; float16/bfloat16 halve the memory on a GPU)",
    )
    g.add_argument(
        "--vae-frames",
        type=positive_int,
        default=None,
        metavar="N",
        help="frames the VAE decodes per call (default 8; lower it to save memory; the result is the same)",
    )
    g.add_argument(
        "--vae-tiling", action="store_true", help="decode large frames in overlapping tiles (saves memory, changes pixels slightly)"
    )
    g.add_argument(
        "--offload",
        default="off",
        choices=("off", "on", "auto"),
        help="model CPU offload on CUDA: only the running part on the GPU (auto: when one sample does not fit)",
    )
    g.add_argument("--revision", default=None, help="with a Hub id: a branch, tag or commit (default main)")


def add_lora_args(p: argparse.ArgumentParser, what: str = "the model") -> None:
    """``--lora PATH[:SCALE]`` (repeatable)."""
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="PATH[:SCALE]",
        help=f"a LoRA adapter (a .safetensors file, its folder, or a LoRA run folder) merged into {what} at SCALE "
        "(default 1) before --dtype / --offload apply; may repeat",
    )


def lora_specs(args: argparse.Namespace) -> list[str]:
    """The ``--lora`` values given (none when the command has no such option)."""
    return list(getattr(args, "lora", None) or [])


def pretrained_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of `text2video.load_pipeline` from the parsed options."""
    options: dict[str, Any] = {
        "motion_adapter": getattr(args, "motion_adapter", None),
        "text_encoder": getattr(args, "text_encoder", None),
        "clip_skip": getattr(args, "clip_skip", None),
        "dtype": getattr(args, "dtype", None),
        "vae_frames": getattr(args, "vae_frames", None),
        "vae_tiling": bool(getattr(args, "vae_tiling", False)),
        "offload": getattr(args, "offload", "off") or "off",
        "revision": getattr(args, "revision", None),
    }
    if getattr(args, "no_ema", False):
        options["use_ema"] = False
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint is not None:
        options["checkpoint"] = checkpoint
    return options


def default_device(requested: Any = None) -> str:
    """``--device``: the best available when not given; one this machine does not have is refused."""
    return resolve_device(str(requested) if requested else None)


def load_from_args(args: argparse.Namespace, kind: str = "TextToVideoPipeline") -> Any:
    """The pipeline ``kind`` of ``--model`` with the options of `add_pretrained_args`."""
    from ..pipelines import load_pipeline

    device = default_device(getattr(args, "device", None))
    return load_pipeline(str(args.model), kind, device=device, lora=lora_specs(args), **pretrained_options(args))
