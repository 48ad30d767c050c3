"""Soak test of the training run's crash safety: many training runs killed with SIGKILL, each resumed and
compared bit for bit with a run that was never interrupted.

Two modes:

* ``--mode toy`` (default): the fault-injection suite's toy runs (tests/faults.py), forked from one driver
  process, killed at forced moments of the checkpoint code (the write, the rename, the ``latest`` update,
  the pruning, a training step) and at seeded random moments; ``--trials`` of them (default 200).
* ``--mode cli``: the real ``text2video train`` command on a small tiny-cpu run, as separate processes,
  killed at random moments and continued with ``--resume latest`` (``--overwrite`` when no checkpoint was
  written yet); ``--trials`` of them (default 20). Slow: two process starts per trial.

Prints one line per trial and a summary, and writes ``benchmarks/results/fault_soak-<mode>.json``. The
results are summarised in docs/reliability.md.

    python benchmarks/fault_soak.py --mode toy --trials 200
    python benchmarks/fault_soak.py --mode cli --trials 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

RESULTS = ROOT / "benchmarks" / "results"


def soak_toy(trials: int, seed: int, work: Path) -> list[dict]:
    import torch
    from faults import differences, fault_config, final_state, quiet_plots, resume_trial
    from trainer_toys import make_trainer

    from text2video.runs.checkpoint import list_checkpoints
    from text2video.train.metrics import read_metrics

    torch.set_num_threads(1)
    quiet_plots()
    make_trainer(work / "reference", fault_config()).train()
    want = final_state(work / "reference")
    want_losses = [r["loss"] for r in read_metrics(work / "reference" / "metrics.csv")]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "faults.py"), "kill-trials", "--out", str(work / "trials"), "--trials", str(trials),
         "--seed", str(seed)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    results = []
    for line in proc.stdout.splitlines():
        trial = json.loads(line)
        run = Path(trial["dir"])
        trial["checkpoints_before_resume"] = len(list_checkpoints(run))
        try:
            resume_trial(run)
            diff = differences(want, final_state(run))
            losses_equal = [r["loss"] for r in read_metrics(run / "metrics.csv")] == want_losses
            trial["identical"] = not diff and losses_equal
            trial["differences"] = diff[:5] + ([] if losses_equal else ["metrics.csv losses"])
        except Exception as exc:  # noqa: BLE001 - a failed resume is a result
            trial["identical"] = False
            trial["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps({k: trial[k] for k in ("kind", "k", "delay", "killed", "checkpoints_before_resume", "identical")}), flush=True)
        shutil.rmtree(run)
        results.append(trial)
    return results


def cli_overrides() -> list[str]:
    """The fault suite's small tiny-cpu run, 30 steps with a checkpoint every 3 (2 kept)."""
    from faults import TINY

    return [*TINY, "data.options.n=32", "train.steps=30", "train.save_every=3", "train.keep_checkpoints=2", "train.warmup_steps=2"]


def _train_cli(run: Path, extra: list[str], kill_after: float | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "text2video.cli",
        "train",
        "--config",
        "tiny-cpu",
        *cli_overrides(),
        "--run-dir",
        str(run),
        "--no-progress",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen([*cmd, *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = False
    first_checkpoint = None
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            killed = True
    else:  # the uninterrupted run: when does its first checkpoint appear (the start-up before it is mostly imports)
        while proc.poll() is None:
            if first_checkpoint is None and any((run / "checkpoints").glob("step-*")):
                first_checkpoint = time.perf_counter() - start
            time.sleep(0.02)
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "first_checkpoint": first_checkpoint or seconds,
        "code": proc.returncode,
        "killed": killed,
        "stderr": err[-2000:],
    }


def soak_cli(trials: int, seed: int, work: Path) -> list[dict]:
    from faults import differences, final_state

    from text2video.runs.checkpoint import list_checkpoints

    reference = _train_cli(work / "reference", [])
    if reference["code"] != 0:
        raise SystemExit(reference["stderr"])
    want = final_state(work / "reference")
    rng = random.Random(seed)
    results = []
    for i in range(trials):
        run = work / f"trial-{i:03d}"
        # a quarter of the kills anywhere (start-up included), the rest while it trains and checkpoints
        low = 0.0 if rng.random() < 0.25 else 0.9 * reference["first_checkpoint"]
        delay = rng.uniform(low, reference["seconds"])
        first = _train_cli(run, [], kill_after=delay)
        had = bool(list_checkpoints(run))
        second = _train_cli(run, ["--resume", "latest"] if had else ["--overwrite"])
        trial = {"delay": round(delay, 3), "killed": first["killed"], "checkpoints_before_resume": len(list_checkpoints(run)) if had else 0}
        if second["code"] != 0:
            trial.update(identical=False, error=second["stderr"].strip().splitlines()[-1:])
        else:
            diff = differences(want, final_state(run))
            trial.update(identical=not diff, differences=diff[:5])
        print(json.dumps(trial), flush=True)
        shutil.rmtree(run)
        results.append(trial)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("toy", "cli"), default="toy")
    parser.add_argument("--trials", type=int, default=None, help="default: 200 (toy), 20 (cli)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/fault_soak-MODE.json)")
    args = parser.parse_args(argv)
    trials = args.trials or (200 if args.mode == "toy" else 20)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fault-soak-") as tmp:
        work = Path(tmp)
        results = soak_toy(trials, args.seed, work) if args.mode == "toy" else soak_cli(trials, args.seed, work)
    summary = {
        "mode": args.mode,
        "trials": len(results),
        "killed": sum(bool(r["killed"]) for r in results),
        "killed_before_first_checkpoint": sum(bool(r["killed"]) and r["checkpoints_before_resume"] == 0 for r in results),
        "identical_after_resume": sum(bool(r["identical"]) for r in results),
        "by_kind": {},
        "seconds": round(time.perf_counter() - start, 1),
        "seed": args.seed,
    }
    for r in results:
        kind = r.get("kind", "random")
        entry = summary["by_kind"].setdefault(kind, {"trials": 0, "identical": 0})
        entry["trials"] += 1
        entry["identical"] += bool(r["identical"])
    out = args.out or RESULTS / f"fault_soak-{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "trials": results}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0 if summary["identical_after_resume"] == summary["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
