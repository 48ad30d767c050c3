"""``text2video serve``: a web page for generating videos (text to video, image to video, a gallery)."""

from __future__ import annotations

import argparse
import logging
import os

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a web page for generating videos with your models (needs the serve extra)",
        description="Start a local web page (Gradio) to generate videos from prompts, a first frame, first and last "
        "frames, or two videos, with one or more models. Every result is written with its settings before it is shown. "
        'Needs Gradio: pip install "text2video[serve]" (scripts/setup.sh installs it).',
        epilog="example: text2video serve --model text2video-demo/run   (then open http://127.0.0.1:7860)",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="a pipeline folder (text2video export / convert), a run folder (text2video train) or one of its checkpoint folders, "
        "a diffusers pipeline folder, a video-diffusion-pytorch .pt or a Hub id (see docs/pretrained.md); repeat to serve several",
    )
    p.add_argument("--models-dir", default=None, help="serve every pipeline or run folder found directly inside this folder")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--output-dir", "-o", default="outputs/serve", help="where every result is written (default outputs/serve)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--share", action="store_true", help="also make a public gradio.live link (off unless asked)")
    from .model_options import add_lora_args, add_pretrained_args

    add_lora_args(p, "every served model")
    add_pretrained_args(p)  # the loading and memory options, applied to every served model
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves this machine unless --share
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests
    from ..serve import ModelCatalog, Studio
    from ..serve.app import build_app, launch
    from .model_options import lora_specs, pretrained_options

    catalog = ModelCatalog.from_args(
        args.model, args.models_dir, device=args.device, options=pretrained_options(args), loras=lora_specs(args)
    )
    studio = Studio(catalog, args.output_dir)
    print(f"loading {catalog.default} ...", flush=True)
    demo = build_app(studio)
    url, share_url = launch(demo, studio, host=args.host, port=args.port, share=args.share)
    print(f"text2video serve: {url}  (models: {', '.join(catalog.names)}; results in {studio.output_dir})", flush=True)
    if share_url:
        print(f"public link: {share_url}", flush=True)
    print("press Ctrl+C to stop", flush=True)
    try:
        demo.block_thread()
    finally:
        demo.close()
    return 0
