"""The fault-injection suite: training runs killed at random and at forced moments, NaN gradients, a full
disk, two trainers on one run folder, and generating from a run that is still training.

Every killed run must resume to exactly the run that was never interrupted (weights, EMA, optimizer state
and the logged losses, bit for bit). The kills happen in children of one driver process (tests/faults.py),
so twelve trials cost about as much as one process start. docs/reliability.md lists the promises these
tests hold; benchmarks/fault_soak.py runs the same kinds of trials many more times.
"""

from __future__ import annotations

import errno
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from faults import FORCED, STEPS, TINY, differences, fault_config, final_state, resume_trial
from safetensors.torch import load_file
from trainer_toys import ToyObjective, make_trainer, toy_config

from text2video.errors import CheckpointError, DiskFullError, NonFiniteError, RunLockedError
from text2video.runs import checkpoint as ck
from text2video.runs.checkpoint import list_checkpoints, load_checkpoint, resolve_checkpoint, save_checkpoint
from text2video.train.metrics import read_metrics

DRIVER = Path(__file__).with_name("faults.py")
TRIALS = 12


@pytest.fixture
def one_thread():
    """The killed children train on one thread; the reference and the resumes must too (reductions over
    another thread count may round differently)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_plots(monkeypatch):
    import text2video.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "plot_run_losses", lambda run_dir: None)


def visible_checkpoints_are_complete(run_dir: Path) -> None:
    """No half-written or half-deleted checkpoint is ever visible under its step-N name."""
    from trainer_toys import ToyDenoiser

    root = run_dir / "checkpoints"
    for folder in root.glob("step-*"):
        assert (folder / "state.json").is_file(), folder
        load_checkpoint(folder, model=ToyDenoiser(), ema_model=ToyDenoiser(), restore_rng=False)


def test_runs_killed_at_random_and_forced_moments_resume_bit_for_bit(tmp_path, one_thread, no_plots):
    reference = make_trainer(tmp_path / "reference", fault_config()).train()
    assert reference.step == STEPS
    want = final_state(tmp_path / "reference")
    want_losses = [row["loss"] for row in read_metrics(tmp_path / "reference" / "metrics.csv")]

    proc = subprocess.run(
        [sys.executable, str(DRIVER), "kill-trials", "--out", str(tmp_path / "trials"), "--trials", str(TRIALS), "--seed", "22"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(trials) == TRIALS
    forced = [t for t in trials if t["kind"] in FORCED]
    assert {t["kind"] for t in forced} == set(FORCED) and all(t["killed"] for t in forced)  # each forced kill landed
    assert sum(t["killed"] for t in trials) >= 10

    for trial in trials:
        run = Path(trial["dir"])
        visible_checkpoints_are_complete(run)
        if list_checkpoints(run):  # `latest` (or the fallback) names a complete checkpoint of this run
            assert (resolve_checkpoint("latest", run) / "state.json").is_file()
        resume_trial(run)  # (a run killed before its first checkpoint starts over)
        assert differences(want, final_state(run)) == [], trial
        assert [row["loss"] for row in read_metrics(run / "metrics.csv")] == want_losses, trial
        leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
        assert leftovers == [], (trial, leftovers)
        assert (run / "checkpoints" / "latest").read_text().strip() == f"step-{STEPS:08d}"


# ------------------------------------------------------------------------------------- non-finite numbers


class NanGradient(torch.autograd.Function):
    """Identity forward; a NaN gradient backward: a finite loss whose gradients are not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class NanGradientAt(ToyObjective):
    """The toy objective whose gradient is NaN during the given optimizer steps (1-based, 1 micro-batch each)."""

    def __init__(self, steps):
        super().__init__()
        self.steps = set(steps)

    def loss(self, model, x0, cond, generator=None):
        loss, stats = super().loss(model, x0, cond, generator)
        if len(self.seen) in self.steps:
            loss = NanGradient.apply(loss)
        return loss, stats


def test_a_nan_gradient_with_a_finite_loss_skips_the_step(tmp_path, no_plots):
    # steps 5..8 all get NaN gradients: with keep_checkpoints=2 the saves at 6 and 8 fall in the streak
    config = toy_config(steps=10, save_every=2, keep_checkpoints=2, max_grad_norm=1.0)
    trainer = make_trainer(tmp_path, config, objective=NanGradientAt({5, 6, 7, 8}))
    before = {}
    real_step = trainer._optimizer_step

    def step(data_iter):
        if trainer.step + 1 == 5:
            before.update({k: v.clone() for k, v in trainer.unwrapped.state_dict().items()})
        out = real_step(data_iter)
        if trainer.step == 5:  # the skipped step left weights and EMA as they were
            after = trainer.unwrapped.state_dict()
            assert all(torch.equal(before[k], after[k]) for k in before)
        return out

    trainer._optimizer_step = step
    result = trainer.train()
    assert [math.isnan(x) for x in result.losses] == [i in (5, 6, 7, 8) for i in range(1, 11)]
    assert trainer.nonfinite_total == 4
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [math.isfinite(r["grad_norm"]) for r in rows] == [i not in (5, 6, 7, 8) for i in range(1, 11)]
    for path in list_checkpoints(tmp_path):
        assert ck.is_finite_checkpoint(path)
        for name in ("model.safetensors", "ema.safetensors"):
            assert all(torch.isfinite(t).all() for t in load_file(str(path / name)).values())


def test_a_huge_learning_rate_never_saves_a_non_finite_checkpoint(tmp_path, no_plots):
    # the reproduction: train.lr=1e6 with frequent saves
    config = toy_config(steps=12, lr=1e6, warmup_steps=0, save_every=2, keep_checkpoints=2, max_nonfinite=50)
    make_trainer(tmp_path, config).train()
    assert list_checkpoints(tmp_path)
    for path in list_checkpoints(tmp_path):
        weights = load_file(str(path / "model.safetensors"))
        assert all(torch.isfinite(t).all() for t in weights.values())


def test_non_finite_weights_are_never_saved_and_the_newest_finite_checkpoint_is_never_pruned(tmp_path):
    from safetensors.torch import save_file

    model = torch.nn.Linear(3, 2)
    good = save_checkpoint(tmp_path, 1, model=model, keep=1)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"\(model.weight\).*step-00000001, is kept"):
        save_checkpoint(tmp_path, 2, model=model, keep=1)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-00000001"]
    # checkpoints written before the check (NaN weights on disk, no "finite" record) are newer than the good
    # one: pruning down to one keeps the newest and the newest finite checkpoint
    for step in (2, 3):
        bad = tmp_path / "checkpoints" / f"step-{step:08d}"
        shutil.copytree(good, bad)
        save_file({"weight": torch.full((2, 3), float("nan")), "bias": torch.zeros(2)}, str(bad / "model.safetensors"))
        state = json.loads((bad / "state.json").read_text())
        del state["finite"]
        (bad / "state.json").write_text(json.dumps({**state, "step": step}))
    assert not ck.is_finite_checkpoint(bad) and ck.newest_finite(tmp_path) == good
    ck._prune(tmp_path, keep=1, protect=bad)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001", "step-00000003"]


# ------------------------------------------------------------------------------------------- disk full


def test_disk_full_while_checkpointing_is_one_line_naming_folder_space_and_previous(tmp_path, monkeypatch):
    model = torch.nn.Linear(64, 64)
    first = save_checkpoint(tmp_path, 1, model=model, optimizer=torch.optim.AdamW(model.parameters()))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "save_model", full)  # an injected ENOSPC in the middle of the write
    with pytest.raises(DiskFullError) as err:
        save_checkpoint(tmp_path, 2, model=model)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "checkpoints") in message
    assert "needs about" in message and f"previous checkpoint {first} is intact" in message
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")] == []  # nothing torn left
    monkeypatch.undo()
    # not enough free space: refused before a byte is written
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskFullError, match="0.0 MB are free"):
        save_checkpoint(tmp_path, 3, model=model)
    monkeypatch.undo()
    assert resolve_checkpoint("latest", tmp_path) == first


TMPFS_SCRIPT = """
import json, shutil, sys, torch
from text2video.errors import DiskFullError
from text2video.runs import checkpoint as ck
run = sys.argv[1]
model = torch.nn.Linear(256, 256)  # 257 KB of weights, with the 1 MB margin of the free-space check
first = ck.save_checkpoint(run, 1, model=model)
out = {"first": str(first)}
try:  # the free-space check passes (it is told there is room); the write itself meets the full disk
    real = ck.shutil.disk_usage
    ck.shutil.disk_usage = lambda path: shutil._ntuple_diskusage(1 << 40, 0, 1 << 40)
    ck.save_checkpoint(run, 2, model=torch.nn.Linear(1024, 1024))  # 4 MB
    out["error"] = None
except DiskFullError as exc:
    out["error"] = str(exc)
ck.shutil.disk_usage = real
out["left"] = sorted(p.name for p in (ck.checkpoints_dir(run)).iterdir())
out["latest"] = str(ck.resolve_checkpoint("latest", run))
print(json.dumps(out))
"""


def test_disk_full_on_a_small_tmpfs(tmp_path):
    """A real full disk where a tmpfs can be mounted (a user namespace, or root); the injected ENOSPC test above
    covers the rest."""
    mount = tmp_path / "small"
    mount.mkdir()
    run = mount / "run"
    cmd = f"mount -t tmpfs -o size=2m tmpfs {mount} && exec {sys.executable} -c '{TMPFS_SCRIPT}' {run}"
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here to mount a tmpfs")
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {mount}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.decode().strip()}")
    proc = subprocess.run(["unshare", "-Urm", "sh", "-c", cmd], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["error"] is not None and "no space left" in out["error"] and "\n" not in out["error"]
    assert f"previous checkpoint {out['first']} is intact" in out["error"]
    assert out["left"] == ["latest", "step-00000001"] and out["latest"] == out["first"]


# -------------------------------------------------------------------- a second process, generate while training


def wait_ready(proc: subprocess.Popen, timeout: float = 240) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("ready"):
                return int(line.split()[1])
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise AssertionError(f"the training process did not start: {proc.stderr.read()[-3000:]}")


def test_a_second_trainer_is_refused_generate_reads_while_training_and_a_killed_run_resumes(tmp_path, capsys):
    from text2video.cli import main
    from text2video.pipelines import load_pipeline
    from text2video.text import load_text_encoder

    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), "serve-run", "--run", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        pid = wait_ready(proc)
        assert pid == proc.pid
        # a second trainer: refused at once, naming the process that holds the folder
        for extra in ([], ["--resume", "latest"]):
            code = main(["train", "--config", "tiny-cpu", *TINY, "train.steps=2", "--run-dir", str(run), "--no-progress", *extra])
            err = capsys.readouterr().err
            assert code == 2 and f"PID {pid}" in err.strip().splitlines()[-1] and "Traceback" not in err, err
        with pytest.raises(RunLockedError, match=f"PID {pid}"):
            make_trainer(run, toy_config())
        # generating while it writes a checkpoint every step and prunes the one before
        encoder = load_text_encoder("default")
        seen = set()
        for _ in range(12):
            pipe = load_pipeline(run, text_encoder=encoder)
            out = pipe("a red circle moving left", steps=1, seed=0, progress=False)
            assert torch.isfinite(out.videos).all()
            seen.add(resolve_checkpoint("latest", run).name)
        assert len(seen) > 1  # the run went on while it was read
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    # killed with SIGKILL: its lock went with it; the run continues from its newest checkpoint
    newest = resolve_checkpoint("latest", run)
    step = json.loads((newest / "state.json").read_text())["step"]
    args = ["train", "--config", "tiny-cpu", *TINY, f"train.steps={step + 1}", "--run-dir", str(run), "--no-progress"]
    assert main([*args, "--resume", "latest"]) == 0
    assert json.loads((resolve_checkpoint("latest", run) / "state.json").read_text())["step"] == step + 1


def test_reading_a_checkpoint_holds_off_pruning_and_missing_or_corrupt_files_name_the_previous(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path, 1, model=model, keep=1)
    with ck.open_checkpoint("latest", tmp_path) as path:
        save_checkpoint(tmp_path, 2, model=model, keep=1)  # would prune step 1: it is being read
        assert path.name == "step-00000001" and (path / "model.safetensors").is_file()
        load_checkpoint(path, model=torch.nn.Linear(3, 2), restore_rng=False)
    save_checkpoint(tmp_path, 3, model=model, keep=1)  # now it goes
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003"]
    save_checkpoint(tmp_path, 4, model=model, keep=2)
    newest = tmp_path / "checkpoints" / "step-00000004"
    (newest / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing \(deleted or never written\).*previous intact checkpoint is .*step-00000003"):
        load_checkpoint(newest, model=torch.nn.Linear(3, 2), restore_rng=False)
    (newest / "model.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match=r"corrupt.*previous intact checkpoint is .*step-00000003"):
        load_checkpoint(newest, model=torch.nn.Linear(3, 2), restore_rng=False)
    (newest / "rng.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        ck._torch_load(newest / "rng.pt")


def test_sighup_saves_a_checkpoint_like_sigint(tmp_path, no_plots):
    class HangUpAt(ToyObjective):
        def loss(self, model, x0, cond, generator=None):
            if len(self.seen) == 3:
                os.kill(os.getpid(), signal.SIGHUP)  # the terminal went away
            return super().loss(model, x0, cond, generator)

    result = make_trainer(tmp_path, toy_config(steps=10, save_every=0), objective=HangUpAt()).train()
    assert result.stopped == "interrupted" and result.step == 4
    assert list_checkpoints(tmp_path)[-1].name == "step-00000004"
