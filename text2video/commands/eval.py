"""``text2video eval``: judge videos against the shapes grammar and compare them with real videos.

* ``text2video eval --videos DIR`` judges a folder of GIF/MP4 files with same-stem ``.txt`` captions.
* ``text2video eval --model DIR --n N`` generates for shapes prompts (seen and held-out combinations),
  saves them under ``OUT/samples`` (so ``--videos`` can re-judge them) and judges them.

Either way, ``--data shapes|DIR`` names the real videos for FVD and per-frame FID (``--no-fvd`` skips
them), and a JSON file, a markdown report with plots and a short table are written.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .args import finite_float, positive_int, resolve_device, seed_int, writable_folder

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="judge prompt adherence (shapes), FVD/FID, CLIP similarity; write a report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", type=Path, help="folder of GIF/MP4 videos with same-stem .txt captions")
    src.add_argument(
        "--model",
        type=Path,
        help="model to generate from: a pipeline, run or checkpoint folder, a diffusers "
        "pipeline folder, a video-diffusion-pytorch .pt or a Hub id (as `generate --model`)",
    )
    p.add_argument("--data", default="shapes", help="real videos for FVD/FID: 'shapes' (rendered) or a folder (default shapes)")
    p.add_argument(
        "--n",
        type=positive_int,
        default=None,
        help="--model: videos to generate, half seen and half held-out (default 32); --videos: judge the first N",
    )
    p.add_argument("--frames", type=positive_int, default=None, help="frames per video (default: the pipeline's / the videos')")
    p.add_argument("--size", type=positive_int, default=None, help="frame size (default: the pipeline's / the videos')")
    p.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: the pipeline's)")
    p.add_argument("--guidance-scale", type=finite_float, default=None, help="classifier-free guidance scale")
    p.add_argument("--sampler", default=None, help="ddpm, ddim, dpmpp_2m, euler, euler_ancestral, unipc (default: the pipeline's)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of prompts, samples and reference videos (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="videos per generation batch (default 8)")
    p.add_argument(
        "--holdout",
        action="append",
        metavar="RULE",
        help="held-out combination, e.g. 'blue triangle' (repeatable; default: the grammar's defaults)",
    )
    p.add_argument("--i3d", type=Path, default=None, help="local I3D TorchScript file for FVD comparable with published numbers")
    p.add_argument("--inception", type=Path, default=None, help="local Inception TorchScript file for FID")
    p.add_argument("--clip", type=Path, default=None, help="local CLIP folder: also report CLIP similarity")
    p.add_argument("--no-fvd", action="store_true", help="skip FVD and FID")
    p.add_argument("--device", default=None, help="device for generation and features (default: cuda if available)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: eval-report next to --videos / in --model)")
    p.add_argument("--json", action="store_true", help="print the JSON summary instead of the table")
    from .model_options import add_lora_args, add_pretrained_args

    add_lora_args(p)
    add_pretrained_args(p)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------------------- sources


def _holdout(args: argparse.Namespace) -> tuple:
    from text2video.data.vocab import DEFAULT_HOLDOUT, HoldoutRule
    from text2video.errors import ConfigError

    if not args.holdout:
        return DEFAULT_HOLDOUT
    try:
        return tuple(HoldoutRule.parse(r) for r in args.holdout)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def shapes_prompts(n: int, seed: int, holdout: tuple) -> list[str]:
    """``n`` shapes captions, half from held-out and half from seen combinations, in a seeded order."""
    import numpy as np

    from text2video.data.vocab import all_factors, is_held_out

    rng = np.random.default_rng([seed, 7])
    seen = [f for f in all_factors() if not is_held_out(f, holdout)]
    held = [f for f in all_factors() if is_held_out(f, holdout)]
    n_held = n // 2 if held else 0
    picks = []
    for pool, count in ((seen, n - n_held), (held, n_held)):
        order = rng.permutation(len(pool))
        picks += [pool[order[i % len(pool)]].caption() for i in range(count)]
    return picks


def _generate(args: argparse.Namespace, prompts: list[str], device: str, out_dir: Path) -> tuple[list[Any], float]:
    """Generate one video per prompt; also saved as OUT/samples/NNNN.gif + .txt."""
    import torch
    from tqdm import tqdm

    from text2video.io.video import write_video
    from text2video.pipelines import load_pipeline

    from .model_options import lora_specs, pretrained_options

    pipe = load_pipeline(str(args.model), device=device, lora=lora_specs(args), **pretrained_options(args))
    samples_dir = out_dir / "samples"
    samples_dir.mkdir(parents=True, exist_ok=True)
    videos: list[torch.Tensor] = []
    fps = 8.0
    options = {
        k: v
        for k, v in dict(
            num_frames=args.frames,
            height=args.size,
            width=args.size,
            steps=args.steps,
            guidance_scale=args.guidance_scale,
            sampler=args.sampler,
        ).items()
        if v is not None
    }
    bar = tqdm(total=len(prompts), desc="generating", unit="video")
    for start in range(0, len(prompts), args.batch_size):
        batch = prompts[start : start + args.batch_size]
        out = pipe(batch, seed=args.seed + start, progress=False, **options)
        tensor = out.videos if hasattr(out, "videos") else out
        fps = float(getattr(out, "fps", fps))
        for k, video in enumerate(tensor.detach().float().cpu()):
            index = start + k
            write_video(video, samples_dir / f"{index:04d}.gif", fps=fps)
            (samples_dir / f"{index:04d}.txt").write_text(prompts[index] + "\n", encoding="utf-8")
            videos.append(video)
        bar.update(len(batch))
    bar.close()
    return videos, fps


def _read_folder(folder: Path, limit: int | None = None) -> tuple[list[Path], list[str], list[Any]]:
    """Paths, captions and (C, T, H, W) tensors of the first ``limit`` videos of a captioned folder
    (unreadable videos skipped and logged)."""
    from text2video.errors import VideoReadError
    from text2video.eval.adherence import find_captioned_videos
    from text2video.io.video import frames_to_tensor, read_video

    paths, captions, videos = [], [], []
    for path, caption in find_captioned_videos(folder)[:limit]:
        try:
            frames, _ = read_video(path)
        except VideoReadError as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        paths.append(path)
        captions.append(caption)
        videos.append(frames_to_tensor(frames))
    return paths, captions, videos


def _uniform_batch(videos: list[Any], frames: int | None):
    """A (N, C, T, H, W) batch cut to a common length, or None when sizes differ."""
    import torch

    sizes = {tuple(v.shape[-2:]) for v in videos}
    if len(sizes) != 1:
        log.warning("videos of different sizes %s: FVD/FID skipped (regenerate at one --size)", sorted(sizes))
        return None
    length = min(v.shape[1] for v in videos)
    if frames:
        length = min(length, frames)
    return torch.stack([v[:, :length] for v in videos])


def _real_videos(data: str, n: int, frames: int, size: tuple[int, int], seed: int, holdout: tuple):
    """Reference videos: rendered shapes (all combinations) or the first clips of a folder."""
    import torch

    from text2video.errors import DataError

    if data == "shapes":
        from text2video.data.synthetic import ShapesDataset

        if size[0] != size[1]:
            raise DataError(f"shapes reference videos are square; generated videos are {size[0]}x{size[1]}")
        ds = ShapesDataset(n=n, num_frames=frames, size=size[0], seed=seed + 1, holdout=holdout, split="all")
        return torch.stack([ds[i]["video"] for i in range(n)])
    from text2video.data.folder import FolderVideoDataset

    ds = FolderVideoDataset(Path(data), num_frames=frames, size=size, random_clip=False)
    count = min(n, len(ds))
    if count < 2:
        raise DataError(f"reference folder {data} has {len(ds)} readable videos; FVD needs at least 2")
    return torch.stack([ds[i]["video"] for i in range(count)])


# ------------------------------------------------------------------------------------------ run


def run(args: argparse.Namespace) -> int:

    from text2video.errors import ConfigError
    from text2video.eval.adherence import JudgeSettings, judge_video, summarize
    from text2video.eval.report import format_table, write_report
    from text2video.io.video import tensor_to_frames

    if args.n is not None and args.n < 2:
        raise ConfigError(f"--n {args.n}: evaluate at least 2 videos")
    device = resolve_device(args.device)
    holdout = _holdout(args)
    if args.videos is not None:
        out_dir = args.out or args.videos.parent / f"{args.videos.name}-eval"
        writable_folder(out_dir, "report folder")
        paths, captions, videos = _read_folder(args.videos, args.n)
        if not videos:
            from text2video.errors import DataError

            raise DataError(f"no readable captioned video in {args.videos}; see the warnings above")
        fps = None
        source = {"videos": str(args.videos)}
    else:
        out_dir = args.out or (args.model / "eval-report" if args.model.is_dir() else Path("eval-report") / args.model.stem)
        writable_folder(out_dir, "report folder")
        captions = shapes_prompts(args.n or 32, args.seed, holdout)
        videos, fps = _generate(args, captions, device, out_dir)
        paths = [out_dir / "samples" / f"{i:04d}.gif" for i in range(len(videos))]
        source = {"model": str(args.model), "samples": str(out_dir / "samples")}

    from tqdm import tqdm

    settings = JudgeSettings()
    verdicts = []
    for path, video, caption in tqdm(list(zip(paths, videos, captions)), desc="judging", unit="video"):
        verdict = judge_video(video, caption, holdout, settings)
        verdict.details["path"] = str(path)
        verdicts.append(verdict)
    result: dict[str, Any] = {
        "source": source,
        "adherence": summarize(verdicts),
        "judge": {"settings": asdict(settings), "holdout": [asdict(r) for r in holdout]},
        "protocol": {
            "videos": len(videos),
            "seed": args.seed,
            "frames": sorted({int(v.shape[1]) for v in videos}),
            "size": sorted({f"{v.shape[-2]}x{v.shape[-1]}" for v in videos}),
            **({"steps": args.steps, "sampler": args.sampler, "guidance_scale": args.guidance_scale, "fps": fps} if args.model else {}),
        },
        "items": [v.to_dict() for v in verdicts],
    }

    if not args.no_fvd:
        result["distribution"] = _distribution(args, videos, holdout, device)
    if args.clip is not None:
        from text2video.eval.metrics import clip_similarity

        batch = _uniform_batch(videos, args.frames)
        if batch is not None:
            sims = clip_similarity(batch, captions, args.clip, device=device)
            result["clip_similarity"] = {"mean": sum(sims) / len(sims), "n": len(sims), "frames_per_video": 4, "model": str(args.clip)}

    picks = list(range(0, len(videos), max(1, len(videos) // 8)))[:8]
    write_report(
        result,
        out_dir,
        [tensor_to_frames(videos[i]) for i in picks],
        [("[ok] " if verdicts[i].all_ok else "[x] ") + captions[i] for i in picks],
    )
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "items"}, indent=2))
    else:
        print(format_table(result))
        print(f"report: {out_dir / 'eval.md'}")
    return 0


def _distribution(args: argparse.Namespace, videos: list[Any], holdout: tuple, device: str) -> dict[str, Any]:
    from text2video.eval.metrics import fid_frames, fvd, image_extractor, video_extractor

    fake = _uniform_batch(videos, args.frames)
    if fake is None or len(fake) < 2:
        return {}
    _, _, frames, h, w = fake.shape
    real = _real_videos(args.data, len(fake), frames, (h, w), args.seed, holdout)
    out: dict[str, Any] = {}
    fvd_value, fvd_protocol = fvd(real, fake, video_extractor(args.i3d, device), seed=args.seed)
    out["FVD"] = {"value": fvd_value, "protocol": {**fvd_protocol.to_dict(), "reference": args.data}}
    fid_value, fid_protocol = fid_frames(real, fake, image_extractor(args.inception, device), seed=args.seed)
    out["FID (per frame)"] = {"value": fid_value, "protocol": {**fid_protocol.to_dict(), "reference": args.data}}
    return out
