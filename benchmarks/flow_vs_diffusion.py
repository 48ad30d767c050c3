"""Rectified flow against the diffusion objective on the CPU demo data, side by side in one run.

Both runs train the ``tiny-cpu`` preset (the demo's model, data, optimiser and timestep bias) for the same
fixed number of steps from the same seed on the demo's seen split; the only difference is
``diffusion.objective`` (``diffusion``: the preset's v-prediction on a cosine chain; ``flow``: rectified
flow with the same bias toward the noisy end). Each trained run is then judged by ``text2video eval``
(the shapes judge: colour, shape, direction) at each number of sampling steps and each sampler, with the
same prompts and seeds. The machine's load (1-minute load average) is recorded before, between and after.
With ``--parallel`` the two trainings run at the same time (two processes), as do the two evals of each
setting, so both objectives see the same load; ``--reuse`` judges runs already trained into ``--out``
(each holds the record of its training, ``benchmark_train.json``).

Run:   .venv/bin/python benchmarks/flow_vs_diffusion.py [--steps 1000] [--n 48] [--sampling-steps 10 25 50]
       [--samplers ddim unipc] [--parallel] [--reuse] [--out /tmp/flow-bench]
       [--json benchmarks/results/flow_vs_diffusion.json]
Smoke: .venv/bin/python benchmarks/flow_vs_diffusion.py --quick --out /tmp/flow-bench-quick --json /tmp/quick.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
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
    record = {
        "steps": result.step,
        "seconds": round(seconds, 1),
        "steps_per_s": round(result.step / seconds, 2),
        "final_loss": round(sum(tail) / len(tail), 5) if tail else None,
        "load_before": before,
        "load_after": load(),
    }
    (run_dir / TRAIN_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


TRAIN_RECORD = "benchmark_train.json"


def trained(run_dir: Path) -> dict[str, Any]:
    """The record `train` left in ``run_dir`` (for ``--reuse``); for a run trained without one (an older
    version of this script), the step of its latest checkpoint and nothing measured."""
    path = run_dir / TRAIN_RECORD
    if path.is_file():
        return json.loads(path.read_text())
    latest = run_dir / "checkpoints" / "latest"
    if not latest.is_file():
        raise SystemExit(f"--reuse: {run_dir} holds no trained run ({TRAIN_RECORD} or checkpoints/latest); train it first")
    state = json.loads((run_dir / "checkpoints" / latest.read_text().strip() / "state.json").read_text())
    return {"steps": state["step"], "note": f"trained earlier without {TRAIN_RECORD}: timings not recorded"}


def evaluate(runs: dict[str, Path], steps: int, sampler: str, n: int, out: Path, parallel: bool, threads: int) -> dict[str, dict[str, Any]]:
    """``text2video eval --model RUN`` of each run at ``steps`` sampling steps with ``sampler``: the judge's
    scores, per objective (the runs' evals at the same time with ``parallel``)."""
    started: dict[str, tuple[float, subprocess.Popen]] = {}
    results: dict[str, dict[str, Any]] = {}

    def finish(objective: str) -> None:
        start, process = started.pop(objective)
        stdout, stderr = process.communicate()
        if process.returncode:
            raise SystemExit(f"eval of {objective} failed ({process.returncode}): {stderr[-2000:]}")
        scores = json.loads(stdout[stdout.index("{") :])["adherence"]
        results[objective] = {
            "seconds": round(time.perf_counter() - start, 1),
            **{k: scores[k] for k in ("all", "seen", "held_out") if k in scores},
            "load": load(),
        }

    for objective, run_dir in runs.items():
        command = [sys.executable, "-m", "text2video.cli", "eval", "--model", str(run_dir), "--n", str(n), "--steps", str(steps),
                   "--sampler", sampler, "--no-fvd", "--json", "--out", str(out / f"{objective}-{sampler}-{steps}")]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        started[objective] = (time.perf_counter(), process)
        if not parallel:
            finish(objective)
    for objective in list(started):
        finish(objective)
    return results


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
    parser.add_argument(
        "--parallel", action="store_true", help="train the two objectives, and judge each setting's two runs, at the same time"
    )
    parser.add_argument(
        "--reuse", "--skip-train", dest="skip_train", action="store_true", help="judge the runs already trained into --out (no training)"
    )
    args = parser.parse_args()

    from text2video.commands.demo import choose_threads

    threads = choose_threads(args.threads)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "threads": threads, "python": platform.python_version(), "load_at_start": load()},
        "protocol": {
            "preset": "tiny-cpu",
            "training_steps": args.steps,
            "quick": args.quick,
            "parallel": args.parallel,
            "judge": "text2video eval --model RUN --n N --steps S --sampler X --no-fvd (shapes judge, seed 0)",
            "n": args.n,
        },
        "train": {},
        "adherence": {},
    }
    start = time.perf_counter()
    runs = {objective: args.out / objective for objective in OBJECTIVES}
    if args.skip_train:
        report["train"] = {objective: trained(run_dir) for objective, run_dir in runs.items()}
    elif args.parallel:
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(len(runs), mp_context=spawn) as pool:
            jobs = {o: pool.submit(train, o, args.steps, run_dir, threads, args.quick) for o, run_dir in runs.items()}
            report["train"] = {objective: job.result() for objective, job in jobs.items()}
    else:
        report["train"] = {objective: train(objective, args.steps, run_dir, threads, args.quick) for objective, run_dir in runs.items()}
    for objective, record in report["train"].items():
        print(objective, record, flush=True)
        if record["steps"] != report["train"][OBJECTIVES[0]]["steps"]:
            raise SystemExit(f"the runs in {args.out} trained different numbers of steps: {report['train']}")
    report["protocol"]["training_steps"] = report["train"][OBJECTIVES[0]]["steps"]
    for sampler in args.samplers:
        for steps in args.sampling_steps:
            for objective, scores in evaluate(runs, steps, sampler, args.n, args.out / "eval", args.parallel, threads).items():
                key = f"{objective}/{sampler}/{steps}"
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
