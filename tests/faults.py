"""Fault injection for training runs: a driver process that starts training runs and kills them.

``python tests/faults.py kill-trials --out DIR --trials N --seed S`` runs N toy training runs (the
`trainer_toys` stand-ins, so a step takes milliseconds), each in a child forked from this process (torch
is imported once, no parallel region has run before the fork), and kills each child with SIGKILL: either
at a seeded random moment, or from inside the child at a forced moment of the checkpoint code
(`FORCED`). It prints one JSON line per trial. The tests then resume every run and compare it with an
uninterrupted one bit for bit (tests/test_fault_injection.py); benchmarks/fault_soak.py runs many more.

``python tests/faults.py serve-run --run DIR`` trains the real tiny-cpu config, writing a checkpoint every
step and keeping one, until it is killed; it prints ``ready PID`` once the first checkpoint exists (for
the tests of a second trainer and of generating from a run that is still training).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

#: moments a child kills itself at, inside the checkpoint code (see `_arm`)
FORCED = ("write", "rename", "latest", "prune", "step")
STEPS = 12
SAVE_EVERY = 2

#: the real tiny-cpu preset made smaller (tests/test_train_cli.py adds its steps)
TINY = [
    "train.batch_size=4",
    "train.log_every=1",
    "train.warmup_steps=1",
    "data.options.n=16",
    "data.size=16",
    "data.num_frames=4",
    "model.dim=8",
    "model.dim_mults=[1, 2]",
    "model.attn_heads=1",
    "model.attn_dim_head=8",
    "sample.steps=2",
    "sample.prompts=[a red circle moving left]",
]


def fault_config(**train):
    """The toy run of every kill trial: cosine LR, accumulation, EMA, several epochs and checkpoints, keep 2."""
    from trainer_toys import toy_config

    settings = dict(
        steps=STEPS, grad_accum=2, lr_schedule="cosine", warmup_steps=2, save_every=SAVE_EVERY, keep_checkpoints=2, ema_decay=0.9
    )
    settings.update(train)
    return toy_config(**settings)


class DyingObjective:
    """The toy objective, killing its process at micro-batch ``at`` (1-based)."""

    def __init__(self, at: int) -> None:
        from trainer_toys import ToyObjective

        self.inner = ToyObjective()
        self.at = at
        self.calls = 0

    def loss(self, model, x0, cond, generator=None):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.loss(model, x0, cond, generator)


def _arm(kind: str, k: int) -> None:
    """Make this process SIGKILL itself the ``k``-th time the checkpoint code reaches the moment ``kind``."""
    from text2video.runs import checkpoint as ck

    count = [0]

    def hit() -> bool:
        count[0] += 1
        return count[0] == k

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if kind == "write":  # inside a checkpoint write: the model file is in the temporary folder, the rest is not
        real_save = ck.save_model

        def save_model(model, path, *args, **kwargs):
            real_save(model, path, *args, **kwargs)
            if Path(path).name == "model.safetensors" and hit():
                die()

        ck.save_model = save_model
    elif kind == "rename":  # the new checkpoint is in place, `latest` still names the previous one
        real_latest = ck._write_latest

        def write_latest(root, name):
            if hit():
                die()
            real_latest(root, name)

        ck._write_latest = write_latest
    elif kind == "latest":  # the new `latest` is written to its temporary file, not yet renamed over the old
        real_fsync = ck._fsync_file

        def fsync_file(path):
            real_fsync(path)
            if Path(path).name.startswith(".latest.tmp") and hit():
                die()

        ck._fsync_file = fsync_file
    elif kind == "prune":  # an old checkpoint renamed out of sight and half deleted
        real_rmtree = shutil.rmtree

        def rmtree(path, *args, **kwargs):
            path = Path(path)
            if path.name.startswith(".del-") and hit():
                for child in sorted(path.iterdir())[:3]:
                    child.unlink()
                die()
            real_rmtree(path, *args, **kwargs)

        shutil.rmtree = rmtree
    elif kind != "step" and kind != "none" and kind != "random":
        raise ValueError(f"unknown moment {kind!r}")


def quiet_plots() -> None:
    """No loss-curve PNG at each checkpoint (matplotlib takes longer than a toy step; nothing here reads it)."""
    import text2video.train.trainer as trainer_module

    trainer_module.plot_run_losses = lambda run_dir: None


def warm_up() -> None:
    """Import what a toy run needs once, in the parent, so that forked children start at once. No tensor
    operation runs here (OpenMP must not be started before a fork)."""
    import accelerate  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401
    import trainer_toys  # noqa: F401

    import text2video.train.trainer  # noqa: F401

    fault_config()  # imports the model modules the config check reads


def _child(run_dir: Path, kind: str, k: int) -> None:
    """Train the toy run into ``run_dir`` (in a forked child), armed to die at ``kind`` / ``k``."""
    import torch
    from trainer_toys import make_trainer

    torch.set_num_threads(1)
    quiet_plots()
    _arm(kind, k)
    objective = DyingObjective(k) if kind == "step" else None
    kwargs = {"objective": objective} if objective is not None else {}
    make_trainer(run_dir, fault_config(), **kwargs).train()


def run_child(run_dir: Path, kind: str, k: int, delay: float | None) -> dict:
    """Fork a child training into ``run_dir``; SIGKILL it after ``delay`` seconds (None: let it run or kill
    itself). Returns what happened."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            _child(run_dir, kind, k)
        except BaseException:  # noqa: BLE001 - reported through the exit status
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    if delay is not None:
        deadline = start + delay
        while time.perf_counter() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.002)
        else:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
    else:
        _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    exit_code = None if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return {
        "dir": str(run_dir),
        "kind": kind,
        "k": k,
        "delay": delay,
        "killed": killed,
        "exit_code": exit_code,
        "seconds": round(time.perf_counter() - start, 3),
    }


def plan_trials(trials: int, seed: int, duration: float) -> list[tuple[str, int, float | None]]:
    """``trials`` moments: each `FORCED` kind in turn (the checkpoint write, the rename, the `latest` update,
    the pruning, a training step) with a seeded random occurrence, then seeded random times within ``duration``."""
    rng = random.Random(seed)
    saves = STEPS // SAVE_EVERY
    plan: list[tuple[str, int, float | None]] = []
    forced = min(trials, max(len(FORCED), trials * 2 // 5))  # every kind once; in long soaks 40% forced
    for i in range(forced):
        kind = FORCED[i % len(FORCED)]
        k = {
            "write": rng.randint(1, saves),
            "rename": rng.randint(1, saves),
            "latest": rng.randint(1, saves),
            "prune": rng.randint(1, saves - 2),  # pruning starts at the third save (keep 2)
            "step": rng.randint(1, STEPS * 2),  # micro-batches: 2 per step
        }[kind]
        plan.append((kind, k, None))
    while len(plan) < trials:
        plan.append(("random", 0, rng.uniform(0.0, duration)))
    return plan


def kill_trials(out: Path, trials: int, seed: int) -> list[dict]:
    """Run the trials of `plan_trials` under ``out`` (one folder each); a first uninterrupted run times them."""
    out.mkdir(parents=True, exist_ok=True)
    calibration = run_child(out / "calibration", "none", 0, None)
    if calibration["exit_code"] != 0:
        raise SystemExit(f"the uninterrupted toy run failed: {calibration}")
    shutil.rmtree(out / "calibration")
    results = []
    for i, (kind, k, delay) in enumerate(plan_trials(trials, seed, calibration["seconds"])):
        run_dir = out / f"trial-{i:03d}"
        result = run_child(run_dir, kind, k, delay)
        for _ in range(3):  # a run faster than the calibration finished before its random moment: earlier, again
            if result["killed"] or delay is None:
                break
            shutil.rmtree(run_dir)
            delay *= 0.5
            result = run_child(run_dir, kind, k, delay)
        results.append(result)
    return results


def serve_run(run_dir: Path) -> None:
    """Train the tiny-cpu run into ``run_dir`` with a checkpoint every step (keeping one) until killed."""
    import torch

    from text2video.config import load_config
    from text2video.runs import checkpoint as ck
    from text2video.train.trainer import Trainer

    torch.set_num_threads(1)
    quiet_plots()
    config = load_config("tiny-cpu", [*TINY, "train.steps=100000", "train.save_every=1", "train.keep_checkpoints=1"])
    real_save = ck.save_checkpoint
    announced = [False]

    def save_checkpoint(*args, **kwargs):
        path = real_save(*args, **kwargs)
        if not announced[0]:
            announced[0] = True
            print(f"ready {os.getpid()}", flush=True)
        return path

    import text2video.train.trainer as trainer_module

    trainer_module.save_checkpoint = save_checkpoint
    Trainer(config, run_dir, progress=False).train()


def final_state(run_dir: Path) -> dict:
    """The tensors of a run's newest checkpoint: model, EMA and the optimizer's moments."""
    import torch
    from safetensors.torch import load_file

    from text2video.runs.checkpoint import list_checkpoints

    newest = list_checkpoints(run_dir)[-1]
    optimizer = torch.load(newest / "optimizer.pt", weights_only=True)
    moments = {f"{k}.{m}": v[m] for k, v in optimizer["state"].items() for m in ("exp_avg", "exp_avg_sq")}
    return {"model": load_file(str(newest / "model.safetensors")), "ema": load_file(str(newest / "ema.safetensors")), "optimizer": moments}


def differences(a: dict, b: dict) -> list[str]:
    """The tensors of two `final_state` results that are not bit for bit equal."""
    import torch

    out = []
    for part in a:
        if a[part].keys() != b[part].keys():
            out.append(f"{part}: other keys")
            continue
        out += [f"{part}.{key}" for key in a[part] if not torch.equal(a[part][key], b[part][key])]
    return out


def resume_trial(run_dir: Path) -> None:
    """Continue a killed toy run to its end: from its latest checkpoint, or afresh (--overwrite) without one."""
    from trainer_toys import make_trainer

    from text2video.runs.checkpoint import list_checkpoints

    had_checkpoint = bool(list_checkpoints(run_dir))
    make_trainer(run_dir, fault_config(), overwrite=not had_checkpoint).train(resume="latest" if had_checkpoint else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    k = sub.add_parser("kill-trials")
    k.add_argument("--out", type=Path, required=True)
    k.add_argument("--trials", type=int, default=12)
    k.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("serve-run")
    s.add_argument("--run", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("TEXT2VIDEO_CPU_KERNELS", "0")  # the toy model has no fused layers; skip the library
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "kill-trials":
        warm_up()
        for result in kill_trials(args.out, args.trials, args.seed):
            print(json.dumps(result), flush=True)
    else:
        serve_run(args.run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
