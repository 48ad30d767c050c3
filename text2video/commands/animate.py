"""``text2video animate``: a video that starts from a given image (image to video)."""

from __future__ import annotations

import argparse

from .args import positive_int
from .generate import add_model_args, add_sampling_args, report_paths


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "animate",
        help="animate an image (or continue a clip) into a video",
        description="Image to video: the first frame of every video is IMAGE (or the first k frames are the frames of a "
        "given clip), the rest is generated under the prompt. Works best with models trained with frame masks "
        "(diffusion.frame_mask_prob > 0). Make a PNG of a video's first frame with "
        "`python -c \"import text2video as t2v; t2v.write_video(t2v.read_video('clip.gif')[0][:1], 'first.png')\"`.",
        epilog='example: text2video animate first.png --prompt "a red circle moving left" --model runs/tiny-cpu',
    )
    p.add_argument("image", help="an image (PNG/JPEG) or a short clip whose frames are kept")
    p.add_argument("--prompt", default="", help="what should happen")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=positive_int, default=1, help="videos (default 1)")
    add_model_args(p)
    add_sampling_args(p, size=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io.video import read_video
    from .generate import load_for_cli

    pipe = load_for_cli(args, kind="ImageToVideoPipeline")
    frames, _ = read_video(args.image, channels=pipe.defaults.channels)  # a grayscale or RGBA model takes its own channels
    out = pipe(
        frames, args.prompt, num_frames=args.frames, steps=args.steps, guidance_scale=args.guidance_scale,
        negative_prompt=args.negative_prompt, seed=args.seed, sampler=args.sampler, num_videos_per_prompt=args.batch_size,
        fps=args.fps, dynamic_threshold=args.dynamic_threshold,
    )  # fmt: skip
    paths = out.save(args.output_dir, fmt=args.format)
    report_paths(args, paths, out.prompts)
    return 0
