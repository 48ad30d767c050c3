"""``text2video demo``: train a tiny text-to-video model on synthetic moving shapes and judge it, offline on a CPU.

Steps: make the shapes data (some colour/shape pairs held out of training), train the ``tiny-cpu``
preset with the MiniLM text encoder under a time budget, sample videos for seen and held-out prompts
with the EMA weights, judge them with the prompt-adherence judge, and write a markdown + JSON report.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from .args import non_negative_int, positive_float, positive_int

logger = logging.getLogger(__name__)

#: --quick: a few steps of a very small model, for tests and smoke checks (adherence is not expected).
QUICK_OVERRIDES = [
    "train.steps=4",
    "train.batch_size=4",
    "train.log_every=2",
    "train.save_every=0",
    "train.warmup_steps=1",
    "data.options.n=64",
    "data.size=16",
    "data.num_frames=4",
    "model.dim=8",
    "model.dim_mults=[1, 2]",
    "model.attn_heads=1",
    "model.attn_dim_head=8",
    "sample.steps=2",
]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train a tiny model on synthetic shapes and judge its videos (offline, CPU, about 10 minutes on 2 cores)",
        description=(
            "Offline end-to-end demo: synthetic captioned shapes (some colour/shape pairs held out), the tiny-cpu "
            "preset with the bundled MiniLM text encoder, videos for seen and held-out prompts, the loss curve, and "
            "a report with the prompt-adherence judge's scores. Needs no arguments."
        ),
    )
    p.add_argument("--out", default="text2video-demo", help="output folder (default: ./text2video-demo)")
    p.add_argument("--minutes", type=positive_float, default=15.0, help="time budget of the whole demo in minutes (default 15)")
    p.add_argument("--config", default="tiny-cpu", help="preset or YAML file (default: tiny-cpu)")
    p.add_argument("--seen", type=non_negative_int, default=24, help="number of seen prompts to sample and judge (default 24)")
    p.add_argument("--held-out", type=non_negative_int, default=12, help="number of held-out prompts to sample (default 12, all)")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads for torch (default: all cores, or 1 when the machine is already busy)",
    )
    p.add_argument("--quick", action="store_true", help="a few training steps of a very small model (for tests)")
    p.add_argument(
        "--overwrite", action="store_true", help="run again into an --out folder that holds an earlier demo (its run is deleted)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("overrides", nargs="*", help="config overrides such as train.lr=5e-4")
    p.set_defaults(func=run, intermixed="overrides")


def demo_prompts(seen: int, held_out: int) -> tuple[list[str], list[str]]:
    """Prompts of the grammar, spread over colours, shapes and directions, split by the default holdout."""
    from ..data.vocab import DEFAULT_HOLDOUT, all_factors, is_held_out

    factors = all_factors()
    seen_all = [f.caption() for f in factors if not is_held_out(f, DEFAULT_HOLDOUT)]
    held_all = [f.caption() for f in factors if is_held_out(f, DEFAULT_HOLDOUT)]
    return _spread(seen_all, seen), _spread(held_all, held_out)


def _spread(items: list[str], count: int) -> list[str]:
    if count >= len(items):
        return list(items)
    # a fixed stride that is coprime with 4 directions and 3 shapes walks across all factors
    step = 7 if len(items) % 7 else 5
    return [items[(i * step) % len(items)] for i in range(count)]


def choose_threads(requested: int | None) -> int:
    """``requested``, else every core, or 1 when other processes already keep the cores busy (two
    threads that wait on each other under contention are several times slower than one)."""
    import os

    if requested:
        return requested
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] >= cores
    except OSError:  # pragma: no cover - no load average on this platform
        busy = False
    return 1 if busy else cores


def run(args: argparse.Namespace) -> int:
    import torch

    threads = choose_threads(args.threads)
    torch.set_num_threads(threads)
    logger.info("using %d CPU thread(s) for torch", threads)
    report = run_demo(
        out=Path(args.out),
        minutes=args.minutes,
        config_source=args.config,
        overrides=list(args.overrides),
        seen=args.seen,
        held_out=args.held_out,
        quick=args.quick,
        overwrite=args.overwrite,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        scores = report["adherence"]
        t = report["train"]
        print(f"demo finished in {report['total_seconds'] / 60:.1f} min ({t['steps']} training steps, {t['steps_per_s']} steps/s)")
        for split in ("seen", "held_out"):
            s = scores.get(split, {})
            if s.get("n"):
                print(
                    f"  {split:9s} prompts: colour {s['colour']:.0%}  shape {s['shape']:.0%}  direction {s['direction']:.0%}"
                    f"  all three {s['all_three']:.0%}  (n={s['n']})"
                )
        for key, value in report["files"].items():
            print(f"  {key:14s} {value}")
        print(f"generate in a web page: {report['serve']}")
    return 0


def run_demo(
    out: Path,
    minutes: float = 15.0,
    config_source: str = "tiny-cpu",
    overrides: list[str] | None = None,
    seen: int = 24,
    held_out: int = 12,
    quick: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the whole demo into ``out``; return the report (also written as report.json / report.md). An ``out``
    that holds an earlier demo's run is refused unless ``overwrite``."""
    import torch

    from ..config import load_config
    from ..data import make_dataset
    from ..errors import RunFolderError
    from ..eval.adherence import judge_batch
    from ..io.grid import video_grid
    from ..io.video import tensor_to_frames, write_video
    from ..runs.folder import existing_run
    from ..train.trainer import Trainer

    held = existing_run(out / "run")
    if held and not overwrite:
        raise RunFolderError(f"{out} holds an earlier demo ({held} in {out / 'run'}); pass --overwrite to run it again, or another --out")
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    all_overrides = (QUICK_OVERRIDES if quick else []) + list(overrides or [])
    config = load_config(config_source, all_overrides)
    seen_prompts, held_prompts = demo_prompts(2 if quick else seen, 1 if quick else held_out)
    config.sample.prompts = seen_prompts[:4]
    d = config.data
    dataset = make_dataset(d.kind, num_frames=d.num_frames, size=d.size, split="seen", **d.options)
    examples = out / "data_examples.gif"
    picks = [dataset[i] for i in range(min(8, len(dataset)))]
    write_video(video_grid([tensor_to_frames(p["video"]) for p in picks], [p["text"] for p in picks]), examples, fps=config.sample.fps)

    # the sampling and judging after training take a share of the budget that grows with the prompts
    sample_reserve = 0.0 if quick else min(0.3 * minutes, 0.05 * (len(seen_prompts) + len(held_prompts)) + 0.5)
    config.train.max_minutes = max(0.1, minutes - sample_reserve - (time.perf_counter() - start) / 60)
    run_dir = out / "run"
    trainer = Trainer(config, run_dir, dataset=dataset, overwrite=overwrite)
    logger.info("training %s for up to %.1f minutes (%d steps planned)", config_source, config.train.max_minutes, config.train.steps)
    result = trainer.train()
    train_seconds = time.perf_counter() - start

    verdict_rows = []
    summaries: dict[str, Any] = {}
    grids = {}
    all_videos, all_captions = [], []
    for split, prompts in (("seen", seen_prompts), ("held_out", held_prompts)):
        folder = out / "samples" / split
        folder.mkdir(parents=True, exist_ok=True)
        videos = torch.cat([trainer.generate(prompts[i : i + 12], seed=1000 + i) for i in range(0, len(prompts), 12)])
        frames = tensor_to_frames(videos.cpu())
        for i, (clip, prompt) in enumerate(zip(frames, prompts)):
            name = f"{i:03d}_{prompt.replace(' ', '_')}"
            write_video(clip, folder / f"{name}.gif", fps=config.sample.fps)
            (folder / f"{name}.txt").write_text(prompt + "\n")
        grids[split] = write_video(video_grid(list(frames), prompts, columns=6), out / f"samples_{split}.gif", fps=config.sample.fps)
        all_videos.extend(frames)
        all_captions.extend(prompts)
    summary, verdicts = judge_batch(all_videos, all_captions)
    summaries = summary
    verdict_rows = [v.to_dict() for v in verdicts]
    total_seconds = time.perf_counter() - start

    report = {
        "config": config_source,
        "overrides": all_overrides,
        "quick": quick,
        "train": {
            "steps": result.step,
            "planned_steps": config.train.steps,
            "stopped": result.stopped,
            "seconds": round(train_seconds, 1),
            "steps_per_s": round(result.step / max(train_seconds, 1e-9), 2),
            "threads": torch.get_num_threads(),
            "final_loss": _tail_mean(result.losses),
            "batch_size": config.train.batch_size,
            "video": f"{config.data.num_frames}x{config.data.size}x{config.data.size}",
        },
        "sampling": {"sampler": config.sample.sampler, "steps": config.sample.steps, "guidance_scale": config.sample.guidance_scale},
        "adherence": summaries,
        "total_seconds": round(total_seconds, 1),
        "files": {
            "report": str(out / "report.md"),
            "seen videos": str(out / "samples" / "seen"),
            "held-out videos": str(out / "samples" / "held_out"),
            "seen grid": str(grids["seen"]),
            "held-out grid": str(grids["held_out"]),
            "loss curve": str(run_dir / "loss.png"),
            "training data": str(examples),
            "run folder": str(run_dir),
        },
        "verdicts": verdict_rows,
        "serve": f"text2video serve --model {run_dir}",
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(report))
    return report


def _tail_mean(losses: list[float], n: int = 50) -> float | None:
    tail = [x for x in losses[-n:] if x == x]
    return round(sum(tail) / len(tail), 5) if tail else None


def _markdown(report: dict[str, Any]) -> str:
    t = report["train"]
    lines = [
        "# text2video demo",
        "",
        f"Preset `{report['config']}`: {t['steps']} training steps ({t['stopped']}) of batch {t['batch_size']} on "
        f"{t['video']} (frames x pixels) videos in {t['seconds'] / 60:.1f} min ({t['steps_per_s']} steps/s, "
        f"{t['threads']} thread(s)); whole demo {report['total_seconds'] / 60:.1f} min.",
        f"Final loss (mean of the last steps): {t['final_loss']}. Sampling: {report['sampling']['sampler']}, "
        f"{report['sampling']['steps']} steps, guidance {report['sampling']['guidance_scale']}.",
        "",
        "## Prompt adherence (shapes judge)",
        "",
        "| prompts | n | colour | shape | direction | all three | consistency |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for split in ("seen", "held_out"):
        s = report["adherence"].get(split, {})
        if s.get("n"):
            lines.append(
                f"| {split.replace('_', '-')} | {s['n']} | {s['colour']:.0%} | {s['shape']:.0%} | {s['direction']:.0%} | "
                f"{s['all_three']:.0%} | {s['consistency']:.2f} |"
            )
    lines += ["", "## Files", ""]
    lines += [f"- {key}: `{value}`" for key, value in report["files"].items()]
    lines += ["", f"Generate more videos with this model in a web page: `{report['serve']}`"]
    lines += [
        "",
        "## Verdicts",
        "",
        "| caption | held out | read as | colour | shape | direction |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for v in report["verdicts"]:
        p = v["predicted"]
        read = " ".join(str(p.get(k) or "?") for k in ("colour", "shape", "direction"))
        mark = lambda ok: "yes" if ok else "no"  # noqa: E731
        lines.append(
            f"| {v['caption']} | {mark(v['held_out'])} | {read} | {mark(v['colour_ok'])} | {mark(v['shape_ok'])} | {mark(v['direction_ok'])} |"
        )
    return "\n".join(lines) + "\n"
