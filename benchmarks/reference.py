"""The reference benchmark: every model family's tiny preset on the same synthetic shapes, under one budget.

Each run trains a family's preset (pixel space, and the latent variant with the tiny VAE where the family
has one) with ``text2video train`` on the same data (the shapes of the presets' ``data`` section: 8 frames of
32x32, some colour/shape pairs held out), the same seed and the same budget, then judges it with
``text2video eval --model RUN``: per-attribute adherence on seen and held-out compositions, plus the
training time, steps/s and the loss curve. ``--digits`` trains the same presets on moving digits instead
and reports the Fréchet distance of their samples to held-out real clips (``DIGITS_PROTOCOL``).

    python benchmarks/reference.py --minutes 10                  # the table of docs/reference.md (a quiet machine)
    python benchmarks/reference.py --steps 1200                  # a step budget: the same work on any machine
    python benchmarks/reference.py --digits --minutes 10         # the Fréchet distances of docs/reference.md
    python benchmarks/reference.py --only stdit-pixel --steps 300 --n 24
    python benchmarks/reference.py --table benchmarks/results/reference-10min.json   # print the markdown table

A minute budget is turned into a step count before each run (a few timed steps of the model at the run's
batch size), so the learning-rate schedule and the presets' early high-noise phase fit the budget;
``train.max_minutes`` stops a run that turns out slower. Runs share one fitted VAE and one latent cache.
Results go to ``benchmarks/results/reference-<budget>.json`` (``--out`` to change it); runs to ``--work``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).parent))
from x0_probe import x0_probe  # noqa: E402  (benchmarks/x0_probe.py, next to this script)

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Entry:
    """One row of the table: a family's preset in pixel or latent space."""

    name: str
    family: str
    space: str  # pixel | latent
    preset: str
    overrides: tuple[str, ...] = ()


#: The latent variant of a pixel preset: the tiny VAE (fitted once, shared by all latent runs), a latent cache.
LATENT = ("latent.vae=tiny", "latent.fit_steps=300", "latent.cache=true")

#: The shapes every run trains on (the demo's: fast, small shapes whose caption fixes where they start), at
#: 6x16x16 pixels for the pixel runs and 8x32x32 pixels (8x8 latents with the tiny VAE) for the latent runs.
SHAPES_OPTIONS = "data.options={n: 4096, seed: 0, speed: [4.0, 5.0], shape_size: [0.25, 0.3]}"
PIXEL_DATA = ("data.kind=shapes", "data.num_frames=6", "data.size=16", SHAPES_OPTIONS)
LATENT_DATA = ("data.kind=shapes", "data.num_frames=8", "data.size=32", SHAPES_OPTIONS)

#: A latent run takes its model's channels and sizes from the VAE (null: filled in by the run).
FILLED = ("model.in_channels=null", "model.out_channels=null")

ENTRIES: tuple[Entry, ...] = (
    Entry("unet3d-pixel", "unet3d", "pixel", "tiny-cpu"),
    Entry("unet3d-latent", "unet3d", "latent", "tiny-cpu", (*LATENT, "model.patch_size=1")),
    Entry(
        "unet3d_condition-pixel",
        "unet3d_condition",
        "pixel",
        "tiny-latent",
        ("latent.vae=null", "latent.fit_steps=0", "latent.cache=false"),
    ),
    Entry("unet3d_condition-latent", "unet3d_condition", "latent", "tiny-latent"),
    Entry("stdit-pixel", "stdit", "pixel", "tiny-stdit", ("model.input_size=[6,16,16]",)),
    Entry("stdit-latent", "stdit", "latent", "tiny-stdit", (*LATENT, *FILLED, "model.input_size=null", "model.patch_size=[1,2,2]")),
    Entry("unet_stic-pixel", "unet_stic", "pixel", "tiny-unet-stic", ("model.sample_size=16", "model.num_frames=6")),
    Entry("unet_stic-latent", "unet_stic", "latent", "tiny-unet-stic", (*LATENT, *FILLED, "model.sample_size=null", "model.num_frames=8")),
    Entry("segdit-pixel", "segdit", "pixel", "tiny-segdit", ("model.sample_size=16",)),
    Entry(
        "segdit-latent",
        "segdit",
        "latent",
        "tiny-segdit",
        (*LATENT, "model.in_channels=null", "model.sample_size=null", "model.patch_size=2"),
    ),
)

#: The moving-digits data of ``--digits`` (replaces each preset's data section) and the Fréchet protocol.
DIGITS_DATA = ("data.kind=digits", "data.num_frames=8", "data.size=32", "data.options={n: 4096, seed: 0, num_digits: 1}")
DIGITS_PROMPTS = 'sample.prompts=["the digit 3 bouncing", "the digit 7 bouncing"]'
DIGITS_PROTOCOL = {
    "clips": 128,  # generated and real
    "frames": 8,
    "size": 32,
    "real": "DigitsDataset(n=128, num_frames=8, size=32, seed=1, num_digits=1): clips the runs never saw (training uses seed 0)",
    "prompts": "the captions of those real clips, one generated clip each (seed 0 + index)",
    "feature_network": "random-conv3d(seed=0, 64px): text2video.eval.metrics.RandomConvExtractor(dims=3, seed=0, resolution=64), "
    "384 features; its weights are drawn from torch.Generator().manual_seed(0) (fixed for a torch version: 2.13.0)",
    "also": "FID per frame with random-conv2d(seed=0, 64px)",
    "comparable_with_published": False,
}


# ------------------------------------------------------------------------------------------- helpers


def entry_overrides(entry: Entry, digits: bool = False) -> list[str]:
    """The shared data (shapes or digits) of the entry's space, then the entry's own overrides."""
    data = DIGITS_DATA if digits else (LATENT_DATA if entry.space == "latent" else PIXEL_DATA)
    return [*data, *entry.overrides]


def machine() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "load": os.getloadavg()}


def git_commit() -> Optional[str]:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    except OSError:
        return None
    return done.stdout.strip() or None


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "text2video.cli", *args]


def run_command(command: list[str], threads: int, log: Path) -> float:
    """Run a CLI command with ``threads`` torch threads, its output to ``log``; return its wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    with open(log, "a") as handle:
        handle.write("$ " + shlex.join(command) + "\n")
        handle.flush()
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"command failed ({done.returncode}), see {log}: {shlex.join(command)}")
    return time.perf_counter() - start


def seconds_per_step(preset: str, overrides: list[str], threads: int, steps: int = 3) -> float:
    """Time ``steps`` training steps (forward, backward, AdamW) of the run's model at its batch and data shape."""
    import torch

    from text2video.config import load_config, objective_config
    from text2video.diffusion.conditioning import Conditioning
    from text2video.diffusion.objective import DiffusionObjective
    from text2video.runs.build import build_configured_model

    torch.set_num_threads(threads)
    config = load_config(preset, overrides)
    shape = (config.train.batch_size, 3, config.data.num_frames, config.data.size, config.data.size)
    vae = None
    if config.latent.vae:
        from text2video.latent import VideoVAE

        vae = VideoVAE.tiny()
        shape = vae.latent_shape(shape)
    torch.manual_seed(0)
    model = build_configured_model(config, 384, vae=vae)
    from text2video.backends import cpu as cpu_backend

    cpu_backend.install(model)
    objective = DiffusionObjective(objective_config(config))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b = shape[0]
    cond = Conditioning(text_tokens=torch.randn(b, 8, 384), text_mask=torch.ones(b, 8, dtype=torch.bool), text_pooled=torch.randn(b, 384))
    x = torch.randn(shape)
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        loss, _ = objective.loss(model, x, cond)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i:  # the first step warms caches up
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def budget_overrides(preset: str, overrides: list[str], steps: int) -> list[str]:
    """``train.steps`` and, for a preset with an early high-noise phase, that phase scaled to the same share."""
    from text2video.config import load_config

    config = load_config(preset, overrides)
    out = [f"train.steps={steps}"]
    bias_steps = config.diffusion.kwargs.get("timestep_bias_steps")
    if bias_steps is not None:
        share = bias_steps / max(1, config.train.steps)
        out.append(f"diffusion.timestep_bias_steps={max(1, round(share * steps))}")
    warmup = config.train.warmup_steps
    if warmup and warmup > steps // 4:
        out.append(f"train.warmup_steps={max(1, steps // 4)}")
    return out


def loss_curve(metrics_csv: Path, points: int = 20) -> list[list[float]]:
    """``points`` (step, mean loss of the steps since the previous point) pairs over the run."""
    from text2video.train.metrics import read_metrics

    rows = [r for r in read_metrics(metrics_csv) if math.isfinite(r["loss"])]
    if not rows:
        return []
    size = max(1, math.ceil(len(rows) / points))
    return [
        [int(rows[min(i + size, len(rows)) - 1]["step"]), round(sum(r["loss"] for r in rows[i : i + size]) / len(rows[i : i + size]), 5)]
        for i in range(0, len(rows), size)
    ]


def training_seconds(metrics_csv: Path) -> float:
    """Seconds of the training loop, from the logged steps/s of each logging interval."""
    from text2video.train.metrics import read_metrics

    rows = read_metrics(metrics_csv)
    total, previous = 0.0, 0
    for row in rows:
        rate = row.get("steps_per_s", float("nan"))
        if math.isfinite(rate) and rate > 0:
            total += (row["step"] - previous) / rate
            previous = int(row["step"])
    return total


# ----------------------------------------------------------------------------------------------- runs


@dataclass
class Budget:
    minutes: Optional[float] = None
    steps: Optional[int] = None

    @property
    def label(self) -> str:
        return f"{self.minutes:g}min" if self.minutes is not None else f"{self.steps}steps"


@dataclass
class Plan:
    work: Path
    budget: Budget
    threads: int
    seed: int
    n: int
    digits: bool
    eval_steps: Optional[int] = None
    extra: list[str] = field(default_factory=list)  # --set overrides, after each preset's own
    shared: dict[str, str] = field(default_factory=dict)  # the fitted VAE and the latent cache, once made


def run_entry(entry: Entry, plan: Plan) -> dict[str, Any]:
    run_dir = plan.work / entry.name
    log = plan.work / f"{entry.name}.log"
    overrides = [
        *entry_overrides(entry, plan.digits),
        f"train.seed={plan.seed}",
        "train.save_every=0",
        "train.sample_every=0",
        "train.log_every=10",
    ]
    if plan.digits:
        overrides.append(DIGITS_PROMPTS)
    overrides += plan.extra
    if entry.space == "latent":
        if "vae" in plan.shared:  # reuse the VAE the first latent run fitted, and its latent cache
            overrides += [f"latent.vae={plan.shared['vae']}", "latent.fit_steps=0"]
        overrides.append(f"latent.cache_dir={plan.work / 'latent_cache'}")
    record: dict[str, Any] = {"name": entry.name, "family": entry.family, "space": entry.space, "preset": entry.preset}
    load_before = os.getloadavg()[0]
    if plan.budget.steps is not None:
        steps = plan.budget.steps
    else:
        per_step = seconds_per_step(entry.preset, overrides, plan.threads)
        steps = max(10, int(plan.budget.minutes * 60 / per_step * 0.95))
        record["calibrated_seconds_per_step"] = round(per_step, 4)
        overrides.append(f"train.max_minutes={plan.budget.minutes}")
    overrides += budget_overrides(entry.preset, overrides, steps)
    record["overrides"] = overrides
    train = cli("train", "--config", entry.preset, *overrides, "--run-dir", str(run_dir), "--no-progress")
    record["train_command"] = shlex.join(["text2video", *train[3:]])
    wall = run_command(train, plan.threads, log)
    if entry.space == "latent" and "vae" not in plan.shared:
        plan.shared["vae"] = str(run_dir / "vae")
    metrics = run_dir / "metrics.csv"
    train_s = training_seconds(metrics)
    from text2video.train.metrics import read_metrics

    rows = read_metrics(metrics)
    done = int(rows[-1]["step"]) if rows else 0
    record.update(
        planned_steps=steps,
        steps=done,
        train_seconds=round(train_s, 1),
        wall_seconds=round(wall, 1),  # with text encoding, VAE fit and latent cache
        steps_per_s=round(done / train_s, 3) if train_s else None,
        loss_curve=loss_curve(metrics),
        loss_png=str(run_dir / "loss.png"),
    )
    if plan.digits:
        record.update(evaluate_digits(run_dir, plan, log))
    else:
        record.update(evaluate_shapes(run_dir, plan, log))
        record["x0_probe"] = x0_probe(run_dir, plan.threads)
    record["load"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return record


def evaluate_shapes(run_dir: Path, plan: Plan, log: Path) -> dict[str, Any]:
    out = run_dir / "eval"
    command = cli("eval", "--model", str(run_dir), "--n", str(plan.n), "--seed", str(plan.seed), "--no-fvd", "--out", str(out), "--json")
    if plan.eval_steps:
        command += ["--steps", str(plan.eval_steps)]
    seconds = run_command(command, plan.threads, log)
    result = json.loads((out / "eval.json").read_text())
    keys = ("n", "colour", "shape", "direction", "all_three", "abstained")
    adherence = {split: {k: result["adherence"][split].get(k) for k in keys} for split in ("seen", "held_out")}
    return {"eval_command": shlex.join(["text2video", *command[3:]]), "eval_seconds": round(seconds, 1), "adherence": adherence}


def evaluate_digits(run_dir: Path, plan: Plan, log: Path) -> dict[str, Any]:
    """Generate ``DIGITS_PROTOCOL['clips']`` clips for the captions of held-out real clips, then ``text2video eval``
    computes their Fréchet distances to those real clips."""
    import torch

    from text2video.data.synthetic import DigitsDataset
    from text2video.io.video import write_video
    from text2video.pipelines import load_pipeline

    p = DIGITS_PROTOCOL
    real_dir = plan.work / "digits_real"
    real = DigitsDataset(n=p["clips"], num_frames=p["frames"], size=p["size"], seed=1, num_digits=1)
    captions = [real.render(i).text for i in range(len(real))]
    if not real_dir.is_dir():
        for i in range(len(real)):
            write_video(real.render(i).frames, real_dir / f"{i:04d}.gif", fps=8)
            (real_dir / f"{i:04d}.txt").write_text(captions[i] + "\n")
    torch.set_num_threads(plan.threads)
    pipe = load_pipeline(run_dir)
    samples = run_dir / "digits_samples"
    start = time.perf_counter()
    for first in range(0, len(captions), 16):
        batch = captions[first : first + 16]
        extra = {"steps": plan.eval_steps} if plan.eval_steps else {}
        videos = pipe(
            batch, seed=plan.seed + first, progress=False, num_frames=p["frames"], height=p["size"], width=p["size"], **extra
        ).videos
        for k, video in enumerate(videos.float().cpu()):
            write_video(video, samples / f"{first + k:04d}.gif", fps=8)
            (samples / f"{first + k:04d}.txt").write_text(batch[k] + "\n")
    generate_s = time.perf_counter() - start
    out = run_dir / "digits_eval"
    command = cli("eval", "--videos", str(samples), "--data", str(real_dir), "--seed", "0", "--out", str(out), "--json")
    seconds = run_command(command, plan.threads, log)
    result = json.loads((out / "eval.json").read_text())
    dist = result.get("distribution", {})
    return {
        "generate_seconds": round(generate_s, 1),
        "eval_command": shlex.join(["text2video", *command[3:]]),
        "eval_seconds": round(seconds, 1),
        "FVD_random_conv3d": dist.get("FVD", {}).get("value"),
        "FID_per_frame_random_conv2d": dist.get("FID (per frame)", {}).get("value"),
        "fvd_protocol": dist.get("FVD", {}).get("protocol"),
    }


def real_vs_real(plan: Plan) -> dict[str, Any]:
    """The floor of the digits protocol: two disjoint sets of real clips (seeds 1 and 2) against each other."""
    import numpy as np

    from text2video.data.synthetic import DigitsDataset
    from text2video.eval.metrics import fvd, video_extractor

    p = DIGITS_PROTOCOL
    a = DigitsDataset(n=p["clips"], num_frames=p["frames"], size=p["size"], seed=1, num_digits=1)
    b = DigitsDataset(n=p["clips"], num_frames=p["frames"], size=p["size"], seed=2, num_digits=1)
    import torch

    va = torch.stack([a[i]["video"] for i in range(len(a))])
    vb = torch.stack([b[i]["video"] for i in range(len(b))])
    value, _ = fvd(va, vb, video_extractor(None), seed=0)
    noise = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, size=tuple(va.shape)).astype("float32"))
    noise_value, _ = fvd(va, noise, video_extractor(None), seed=0)
    return {"real_vs_real": value, "real_vs_uniform_noise": noise_value}


# ---------------------------------------------------------------------------------------------- table


def markdown_table(result: dict[str, Any]) -> str:
    """The markdown table of a results file (shapes: adherence; digits: Fréchet distances)."""
    rows = result["runs"]
    if result.get("digits"):
        lines = [
            "| family | space | steps | steps/s | train min | FVD (random-conv3d) | FID per frame (random-conv2d) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['family']} | {r['space']} | failed: {r['error']} | | | | |")
                continue
            lines.append(
                f"| {r['family']} | {r['space']} | {r['steps']} | {r['steps_per_s']} | {r['train_seconds'] / 60:.1f} | "
                f"{_num(r.get('FVD_random_conv3d'))} | {_num(r.get('FID_per_frame_random_conv2d'))} |"
            )
        return "\n".join(lines)
    lines = [
        "| family | space | steps | steps/s | train min | seen: colour / shape / direction / all | "
        "held-out: colour / shape / direction / all | final loss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | {r['space']} | failed: {r['error']} | | | | | |")
            continue
        cells = []
        for split in ("seen", "held_out"):
            s = r["adherence"][split]
            cells.append(" / ".join(f"{100 * s[k]:.0f}" for k in ("colour", "shape", "direction", "all_three")) + f" (n={s['n']})")
        final = r["loss_curve"][-1][1] if r["loss_curve"] else float("nan")
        lines.append(
            f"| {r['family']} | {r['space']} | {r['steps']} | {r['steps_per_s']} | {r['train_seconds'] / 60:.1f} | "
            f"{cells[0]} | {cells[1]} | {final:.4f} |"
        )
    return "\n".join(lines)


def _num(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else "-"


# ----------------------------------------------------------------------------------------------- main


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="training minutes per run (default 10)")
    budget.add_argument("--steps", type=int, help="training steps per run instead of minutes")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"runs to do (default all): {' '.join(e.name for e in ENTRIES)}")
    parser.add_argument("--digits", action="store_true", help="train on moving digits and report Fréchet distances instead")
    parser.add_argument("--n", type=int, default=48, help="videos text2video eval generates per run, half held-out (default 48)")
    parser.add_argument("--eval-steps", type=int, default=None, help="sampling steps of the evaluation (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides for every run (a recipe to compare)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    parser.add_argument("--work", type=Path, default=None, help="folder of the runs (default: /tmp/text2video-reference-<budget>)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default: benchmarks/results/reference-<budget>.json)")
    parser.add_argument(
        "--vae", type=Path, default=None, help="a fitted VAE folder for the latent runs (default: the first latent run fits one)"
    )
    parser.add_argument("--table", type=Path, default=None, help="print the markdown table of a results JSON and exit")
    args = parser.parse_args(argv)
    if args.table is not None:
        print(markdown_table(json.loads(args.table.read_text())))
        return 0
    budget = Budget(steps=args.steps) if args.steps is not None else Budget(minutes=args.minutes if args.minutes is not None else 10.0)
    suffix = ("digits-" if args.digits else "") + budget.label
    work = args.work or Path(f"/tmp/text2video-reference-{suffix}")
    work.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"reference-{suffix}.json"
    names = {e.name for e in ENTRIES}
    unknown = sorted(set(args.only or ()) - names)
    if unknown:
        parser.error(f"unknown run(s) {unknown}; choose from {sorted(names)}")
    entries = [e for e in ENTRIES if not args.only or e.name in args.only]
    plan = Plan(
        work=work,
        budget=budget,
        threads=args.threads,
        seed=args.seed,
        n=args.n,
        digits=args.digits,
        eval_steps=args.eval_steps,
        extra=list(args.set),
    )
    if args.vae is not None:
        plan.shared["vae"] = str(args.vae)
    result: dict[str, Any] = {
        "benchmark": "reference",
        "data": "moving digits" if args.digits else "shapes",
        "digits": args.digits,
        "budget": {"minutes": budget.minutes, "steps": budget.steps},
        "seed": args.seed,
        "set": list(args.set),
        "commit": git_commit(),
        "threads": args.threads,
        "machine": machine(),
        "command": shlex.join(["python", "benchmarks/reference.py", *(argv if argv is not None else sys.argv[1:])]),
        "runs": [],
    }
    if args.digits:
        result["protocol"] = {**DIGITS_PROTOCOL, **real_vs_real(plan)}
    for entry in entries:
        print(f"[reference] {entry.name}: training ({budget.label})", flush=True)
        try:
            record = run_entry(entry, plan)
        except RuntimeError as exc:  # one failed run is a row of the table, not the end of the benchmark
            record = {"name": entry.name, "family": entry.family, "space": entry.space, "preset": entry.preset, "error": str(exc)}
        result["runs"].append(record)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(markdown_table({**result, "runs": [record]}).splitlines()[-1], flush=True)
    result["machine"]["load_end"] = os.getloadavg()
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
