"""``text2video generate``: videos from prompts with a trained run or an exported pipeline folder."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from .args import finite_float, non_negative_float, positive_float, positive_int, resolve_device, seed_int, writable_output

logger = logging.getLogger(__name__)


def add_model_args(p: argparse.ArgumentParser) -> None:
    from .model_options import add_lora_args, add_pretrained_args

    p.add_argument(
        "--model",
        "--model_path",
        dest="model",
        required=True,
        help="a run or checkpoint folder, a pipeline folder (text2video export / convert), a diffusers "
        "TextToVideoSDPipeline / AnimateDiffPipeline / Stable Diffusion folder, a video-diffusion-pytorch .pt (or a folder "
        "of them, text2video-from-scratch's saved_models/: the latest), or a Hugging Face Hub id of one of these (see docs/pretrained.md)",
    )
    p.add_argument(
        "--checkpoint", default="latest", help="with a run folder: latest (default), best (lowest validation loss) or a checkpoint folder"
    )
    p.add_argument("--no-ema", action="store_true", help="with a run folder: use the live weights, not the EMA weights")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)")
    add_lora_args(p)
    add_pretrained_args(p)


def add_sampling_args(p: argparse.ArgumentParser, *, size: bool = True) -> None:
    p.add_argument(
        "--frames", "--num-frames", dest="frames", type=positive_int, default=None, help="frames per video (default: the model's)"
    )
    if size:
        p.add_argument("--size", type=positive_int, default=None, help="height and width in pixels (default: the model's)")
        p.add_argument("--height", type=positive_int, default=None, help="height in pixels (overrides --size)")
        p.add_argument("--width", type=positive_int, default=None, help="width in pixels (overrides --size)")
    p.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--sampler", default=None, help="ddpm, ddim, dpmpp_2m, euler, euler_ancestral, unipc (default: the model's)")
    p.add_argument(
        "--guidance-scale",
        "--cond_scale",
        dest="guidance_scale",
        type=finite_float,
        default=None,
        help="classifier-free guidance scale; 1 turns it off (default: the model's)",
    )
    p.add_argument("--eta", type=non_negative_float, default=None, help="DDIM's noise: 0 deterministic (default), 1 DDPM-like")
    p.add_argument("--negative-prompt", default=None, help="what the videos should not show")
    p.add_argument(
        "--dynamic-threshold",
        type=float,
        default=None,
        metavar="P",
        help="dynamic thresholding of the predicted clean video at percentile P in (0, 1], e.g. 0.9 "
        "(text2video-from-scratch's use_dynamic_thres; default: the model's sample.dynamic_threshold, else plain clipping)",
    )
    p.add_argument(
        "--fps",
        type=positive_float,
        default=None,
        help="frames per second of the videos, also the fps a model with an fps embedding is conditioned on (default: the model's)",
    )
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the first video; video i uses seed + i (default 0)")
    p.add_argument("--format", choices=("gif", "mp4", "webm"), default="gif", help="file format (default gif)")
    p.add_argument("--output-dir", "--output_dir", "-o", dest="output_dir", default="results", help="output folder (default ./results)")
    p.add_argument("--json", action="store_true", help="print the written paths as JSON")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate videos from text prompts",
        description="Generate videos from prompts with a trained run folder or an exported pipeline folder. "
        "text2video-from-scratch's flags --text, --model_path, --output_dir, --batch_size and --cond_scale are accepted.",
        epilog='example: text2video generate "a red circle moving left" --model runs/tiny-cpu --steps 25 --guidance-scale 3',
    )
    p.add_argument("prompts", nargs="*", help="one or more prompts (none for an unconditional model)")
    p.add_argument("--text", action="append", default=[], help="a prompt (text2video-from-scratch's flag; may repeat)")
    p.add_argument("--prompt-file", default=None, help="a text file with one prompt per line")
    p.add_argument(
        "--batch-size",
        "--batch_size",
        "--num-videos",
        dest="batch_size",
        type=positive_int,
        default=1,
        help="videos per prompt (default 1)",
    )
    add_model_args(p)
    add_sampling_args(p)
    p.set_defaults(func=run, intermixed="prompts")


NO_PROMPT = 'no prompt given: pass prompts as arguments, with --text "...", or --prompt-file FILE'


def collect_prompts(args: argparse.Namespace, required: bool = True) -> list[str]:
    """The prompts of the arguments, ``--text`` and ``--prompt-file``; none is an error when ``required``."""
    from ..errors import ConfigError

    prompts = list(args.prompts) + list(args.text)
    if args.prompt_file:
        from ..io.text import read_lines

        path = Path(args.prompt_file)
        if not path.is_file():
            raise ConfigError(f"prompt file {path} does not exist")
        prompts += read_lines(path, "prompt file")
    if not prompts and required:
        raise ConfigError(NO_PROMPT)
    return prompts


def load_for_cli(args: argparse.Namespace, kind: str = "TextToVideoPipeline") -> Any:
    """The pipeline ``kind`` from ``--model`` (any format `text2video.load_pipeline` reads), once the device and
    the output path are known to be usable (a mistake there must not cost a model load and a sampling run)."""
    from .model_options import load_from_args

    resolve_device(getattr(args, "device", None))
    if getattr(args, "output_dir", None) is not None:
        writable_output(args.output_dir, "--output-dir")
    return load_from_args(args, kind)


def report_paths(args: argparse.Namespace, paths: list[Path], prompts: list[str]) -> None:
    if args.json:
        print(json.dumps({"videos": [str(p) for p in paths], "prompts": prompts}, indent=2))
    else:
        for path in paths:
            print(path)


def run(args: argparse.Namespace) -> int:
    prompts = collect_prompts(args, required=False)
    pipe = load_for_cli(args)
    if pipe.text_encoder is None:  # an unconditional model: --batch-size videos, no prompt
        if prompts:
            logger.warning("%s is an unconditional model (no text encoder); the prompts are ignored", args.model)
        prompts = [""]
    elif not prompts:
        from ..errors import ConfigError

        raise ConfigError(NO_PROMPT)
    height = args.height or args.size
    width = args.width or args.size
    out = pipe(
        prompts, num_frames=args.frames, height=height, width=width, steps=args.steps, guidance_scale=args.guidance_scale,
        negative_prompt=args.negative_prompt, seed=args.seed, sampler=args.sampler, num_videos_per_prompt=args.batch_size,
        eta=args.eta, fps=args.fps, dynamic_threshold=args.dynamic_threshold,
    )  # fmt: skip
    paths = out.save(args.output_dir, fmt=args.format)
    report_paths(args, paths, out.prompts)
    return 0
