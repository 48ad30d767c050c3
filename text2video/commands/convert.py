"""``text2video convert``: import another project's model as a text2video pipeline folder."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

#: what names a checkpoint file (anything else may be a folder or a Hub id)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from text2video.models.convert import CONVERTERS

    p = sub.add_parser(
        "convert",
        help="convert another project's model into a text2video pipeline folder",
        description="Convert a model written by another project. A whole model (a diffusers TextToVideoSDPipeline or "
        "AnimateDiffPipeline folder, a Stable Diffusion folder with motion weights, a video-diffusion-pytorch .pt with "
        "--text-encoder, or a Hub id of one) becomes a pipeline folder that `text2video generate --model OUT` runs; "
        "a bare denoiser becomes a model folder (for train.init_from).",
        epilog="example: text2video convert --from diffusers-unet3d ali-vilab/text-to-video-ms-1.7b --out models/modelscope",
    )
    p.add_argument("--from", dest="source", required=True, choices=sorted(CONVERTERS), help="the project that wrote the model")
    p.add_argument("input", metavar="IN", help="pipeline folder, UNet folder, checkpoint file (.pt/.pth/.ckpt/.safetensors) or Hub id")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--motion-adapter",
        default=None,
        metavar="DIR_OR_CKPT",
        help="--from animatediff: AnimateDiff motion weights (MotionAdapter folder, Hub id or original .ckpt)",
    )
    p.add_argument(
        "--text-encoder",
        default=None,
        metavar="DIR",
        help="--from video-diffusion-pytorch: the BERT folder the checkpoint was trained with (copied into OUT)",
    )
    ema = p.add_mutually_exclusive_group()
    ema.add_argument("--ema", dest="use_ema", action="store_const", const=True, default=None, help="take the EMA weights")
    ema.add_argument("--no-ema", dest="use_ema", action="store_const", const=False, help="take the trained (non-EMA) weights")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from text2video.models.convert import reading_errors
    from text2video.pipelines.pretrained.convert import convert_model

    from .args import readable_file, writable_folder

    if Path(args.input).suffix.lower() in CHECKPOINT_SUFFIXES or Path(args.input).is_file():  # a file (else a folder or Hub id)
        readable_file(args.input, "checkpoint")
    writable_folder(args.out, "--out")
    with reading_errors(args.input, args.source):
        report = convert_model(args.source, args.input, args.out, motion_adapter=args.motion_adapter,
                               text_encoder=args.text_encoder, use_ema=args.use_ema)  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        if report.get("pipeline"):
            print(f"wrote the pipeline folder {report['output']} ({', '.join(report['parts'])}); "
                  f"{report['parameters']:,} parameters in the denoiser")  # fmt: skip
            print(f'run it: text2video generate "a prompt" --model {report["output"]}')
        else:
            config = ", ".join(f"{k}={v}" for k, v in report.get("config", {}).items())
            print(f"wrote {report.get('output', args.out)} ({report.get('weights', 'weights')}); config: {config}")
        for note in report.get("notes", []):
            print(f"note: {note}")
    return 0
