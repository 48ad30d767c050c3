"""Rectified flow against the diffusion objective on the CPU demo data, side by side in one run.

Both runs train the ``tiny-cpu`` preset (the demo's model, data, optimiser and timestep bias) for the same
fixed number of steps from the same seed on the demo's seen split; the only difference is
``diffusion.objective`` (``diffusion``: the preset's v-prediction on a cosine chain; ``flow``: rectified
flow with the same bias toward the noisy end). Each trained run is then judged by ``text2video eval``
(the shapes judge: colour, shape, direction) at each number of sampling steps and each sampler, with the
same prompts and seeds. The machine's load (1-minute load average) is recorded before, between and after.

Run:   .venv/bin/python benchmarks/flow_vs_diffusion.py [--steps 1000] [--n 48] [--sampling-steps 10 25 50]
       [--samplers ddim unipc] [--out /tmp/flow-bench] [--json benchmarks/results/flow_vs_diffusion.json]
Smoke: .venv/bin/python benchmarks/flow_vs_diffusion.py --quick --out /tmp/flow-bench-quick --json /tmp/quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

OBJECTIVES = ("diffusion", "flow")
#: --quick: a few steps of a very small model, to check the script end to end.
QUICK = ["train.steps=4", "train.batch_size=4", "data.options.n=64", "model.dim=8", "model.attn_heads=1", "model.attn_dim_head=8"]


def load() -> float:
    return round(os.getloadavg()[0], 2)


def train(objective: str, steps: int, run_dir: Path, threads: int, quick: bool) -> dict[str, Any]:
    """Train tiny-cpu with ``diffusion.objective=objective`` for ``steps`` steps into ``run_dir``."""
    import torch

    from text2video.config import load_config
    from text2video.data import make_dataset
    from text2video.train.trainer import Trainer

    torch.set_num_threads(threads)
    overrides = [f"diffusion.objective={objective}", f"train.steps={steps}", "train.save_every=0", "train.sample_every=0"]
    config = load_config("tiny-cpu", overrides + (QUICK if quick else []))
    d = config.data
    dataset = make_dataset(d.kind, num_frames=d.num_frames, size=d.size, split="seen", **d.options)
    before = load()
    start = time.perf_counter()
    result = Trainer(config, run_dir, dataset=dataset, progress=False).train()
    seconds = time.perf_counter() - start
    tail = [x for x in result.losses[-50:] if x == x]
    return {
        "steps": result.step,
        "seconds": round(seconds, 1),
        "steps_per_s": round(result.step / seconds, 2),
        "final_loss": round(sum(tail) / len(tail), 5) if tail else None,
        "load_before": before,
        "load_after": load(),
    }


def evaluate(run_dir: Path, steps: int, sampler: str, n: int, out: Path) -> dict[str, Any]:
    """``text2video eval --model RUN`` at ``steps`` sampling steps with ``sampler``: the judge's scores."""
    command = [sys.executable, "-m", "text2video.cli", "eval", "--model", str(run_dir), "--n", str(n), "--steps", str(steps),
               "--sampler", sampler, "--no-fvd", "--json", "--out", str(out)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"eval failed ({done.returncode}): {done.stderr[-2000:]}")
    text = done.stdout
    result = json.loads(text[text.index("{") :])
    scores = result["adherence"]
    return {"seconds": round(time.perf_counter() - start, 1), **{k: scores[k] for k in ("all", "seen", "held_out") if k in scores}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="training steps of each run (default 1000)")
    parser.add_argument("--n", type=int, default=48, help="videos judged per setting, half seen, half held-out (default 48)")
    parser.add_argument("--sampling-steps", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--samplers", nargs="+", default=["ddim", "unipc"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as the demo chooses)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/flow-bench"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/flow_vs_diffusion.json"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    from text2video.commands.demo import choose_threads

    threads = choose_threads(args.threads)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "threads": threads, "python": platform.python_version(), "load_at_start": load()},
        "protocol": {
            "preset": "tiny-cpu",
            "training_steps": args.steps,
            "quick": args.quick,
            "judge": "text2video eval --model RUN --n N --steps S --sampler X --no-fvd (shapes judge, seed 0)",
            "n": args.n,
        },
        "train": {},
        "adherence": {},
    }
    start = time.perf_counter()
    for objective in OBJECTIVES:
        run_dir = args.out / objective
        report["train"][objective] = train(objective, args.steps, run_dir, threads, args.quick)
        print(objective, report["train"][objective], flush=True)
    for sampler in args.samplers:
        for steps in args.sampling_steps:
            for objective in OBJECTIVES:
                key = f"{objective}/{sampler}/{steps}"
                scores = evaluate(args.out / objective, steps, sampler, args.n, args.out / "eval" / key.replace("/", "-"))
                scores["load"] = load()
                report["adherence"][key] = scores
                all_ = scores["all"]
                print(key, {k: all_[k] for k in ("colour", "shape", "direction", "all_three")}, flush=True)
    report["machine"]["load_at_end"] = load()
    report["seconds"] = round(time.perf_counter() - start, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
