"""``text2video interpolate``: in-between frames of two images, or a blend between two videos."""

from __future__ import annotations

import argparse

from .args import positive_int, unit_float
from .generate import add_model_args, add_sampling_args, report_paths


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "interpolate",
        help="fill the frames between two images, or interpolate between two videos",
        description="With --first and --last: a video that starts at the first image and ends at the last (kept exactly). "
        "With --video1 and --video2 (DiffusionPlayground's interpolate): --num-interp videos going from one clip to the other.",
        epilog="example: text2video interpolate --first a.png --last b.png --model runs/tiny-cpu --frames 8",
    )
    p.add_argument("--first", help="first frame (image)")
    p.add_argument("--last", help="last frame (image)")
    p.add_argument("--video1", help="first clip")
    p.add_argument("--video2", help="second clip (same size and length as --video1)")
    p.add_argument("--num-interp", type=positive_int, default=8, help="with --video1/--video2: videos along the way (default 8)")
    p.add_argument("--strength", type=unit_float, default=0.7, help="with --video1/--video2: how far both are noised (default 0.7)")
    p.add_argument("--prompt", default="", help="optional prompt")
    add_model_args(p)
    add_sampling_args(p, size=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..io.video import frames_to_tensor, read_video
    from .generate import load_for_cli

    pipe = load_for_cli(args, kind="InterpolationPipeline")
    channels = pipe.defaults.channels
    if args.first and args.last:
        first, _ = read_video(args.first, channels=channels)
        last, _ = read_video(args.last, channels=channels)
        out = pipe.infill(first[:1], last[:1], num_frames=args.frames, prompt=args.prompt, steps=args.steps,
                          guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt, seed=args.seed, sampler=args.sampler,
                          fps=args.fps, dynamic_threshold=args.dynamic_threshold)  # fmt: skip
    elif args.video1 and args.video2:
        v1 = frames_to_tensor(read_video(args.video1, channels=channels)[0])
        v2 = frames_to_tensor(read_video(args.video2, channels=channels)[0])
        out = pipe.interpolate(v1, v2, num_steps=args.steps, num_interp_frames=args.num_interp, prompt=args.prompt or None,
                               strength=args.strength, sampler=args.sampler, guidance_scale=args.guidance_scale, seed=args.seed,
                               fps=args.fps, dynamic_threshold=args.dynamic_threshold)  # fmt: skip
    else:
        raise ConfigError("give --first and --last (two images), or --video1 and --video2 (two clips)")
    paths = out.save(args.output_dir, fmt=args.format)
    report_paths(args, paths, out.prompts)
    return 0
