import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from trainer_toys import ToyObjective, make_trainer, toy_config

from text2video.errors import CheckpointError, RunFolderError, RunLockedError
from text2video.runs.checkpoint import (
    capture_rng_state,
    clean_leftovers,
    list_checkpoints,
    load_checkpoint,
    read_state,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from text2video.runs.lock import RunLock
from text2video.train.metrics import read_metrics


class SignalAt(ToyObjective):
    """Sends SIGTERM to this process during micro-batch number ``at`` (1-based)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def loss(self, model, x0, cond, generator=None):
        if len(self.seen) + 1 == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().loss(model, x0, cond, generator)


def resume_config():
    # cosine LR, accumulation and 2.5 epochs: the scheduler, optimizer and data position all matter
    return toy_config(steps=8, grad_accum=2, lr_schedule="cosine", warmup_steps=2, save_every=0, ema_decay=0.9)


def test_stopped_and_resumed_run_repeats_the_uninterrupted_losses_bit_for_bit(tmp_path):
    full = make_trainer(tmp_path / "full", resume_config()).train()
    assert len(full.losses) == 8

    first = make_trainer(tmp_path / "split", resume_config(), objective=SignalAt(7)).train()
    assert first.stopped == "interrupted" and first.step == 4  # micro-batch 7 is in step 4
    assert first.losses == full.losses[:4]

    torch.manual_seed(1234)  # a different init and global RNG: the checkpoint must override both
    second_trainer = make_trainer(tmp_path / "split", resume_config())
    second = second_trainer.train(resume="latest")
    assert second.step == 8
    assert second.losses == full.losses[4:]
    split_rows = read_metrics(tmp_path / "split" / "metrics.csv")
    assert [r["loss"] for r in split_rows] == full.losses  # the log is continuous across the resume
    a = torch.load(list_checkpoints(tmp_path / "full")[-1] / "optimizer.pt", weights_only=True)
    b = torch.load(list_checkpoints(tmp_path / "split")[-1] / "optimizer.pt", weights_only=True)
    for k, v in a["state"].items():
        assert torch.equal(v["exp_avg"], b["state"][k]["exp_avg"])


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = capture_rng_state()
    want = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want


def test_keeps_only_the_last_n_and_latest_points_to_the_newest(tmp_path):
    model = torch.nn.Linear(3, 2)
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model=model, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000004"]
    assert resolve_checkpoint("latest", tmp_path).name == "step-00000004"
    assert resolve_checkpoint(tmp_path).name == "step-00000004"


def test_stale_latest_pointer_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path, 1, model=model)
    (tmp_path / "checkpoints" / "latest").write_text("step-00000099\n")
    assert resolve_checkpoint("latest", tmp_path).name == "step-00000001"


def test_missing_checkpoint_and_wrong_model_are_clear_errors(tmp_path):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        resolve_checkpoint("latest", tmp_path / "empty")
    with pytest.raises(CheckpointError, match="neither a checkpoint folder"):
        resolve_checkpoint(tmp_path / "elsewhere")
    path = save_checkpoint(tmp_path / "run", 1, model=torch.nn.Linear(3, 2))
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_checkpoint(path, model=torch.nn.Linear(4, 2))


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from text2video.runs import checkpoint

    run = sys.argv[1]
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    checkpoint.save_checkpoint(run, 1, model=model, optimizer=opt, state={"tag": "first"})
    with torch.no_grad():
        model.weight.add_(1.0)
    real_save = torch.save

    def dying_save(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        if str(path).endswith("optimizer.pt"):
            os.kill(os.getpid(), signal.SIGKILL)  # the process dies with the checkpoint half written

    torch.save = dying_save
    checkpoint.save_checkpoint(run, 2, model=model, optimizer=opt, state={"tag": "second"})
    """
)


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(run)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = [p.name for p in (run / "checkpoints").iterdir()]
    assert any(name.startswith(".tmp-step-00000002") for name in leftovers)  # the torn write is there...
    path = resolve_checkpoint("latest", run)
    assert path.name == "step-00000001"  # ...but latest still names the complete one
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    expected = model.weight.detach().clone()
    fresh = torch.nn.Linear(4, 4)
    fresh_opt = torch.optim.AdamW(fresh.parameters())
    state = load_checkpoint(path, model=fresh, optimizer=fresh_opt, restore_rng=False)
    assert state["tag"] == "first"
    assert torch.equal(fresh.weight, expected)
    assert fresh_opt.state_dict()["state"][0]["step"] == 1
    # the next successful save removes the torn folder
    save_checkpoint(run, 3, model=fresh)
    assert not any(p.name.startswith(".tmp") for p in (run / "checkpoints").iterdir())


# ------------------------------------------------------------------------------- run folders and leftovers


def test_crash_leftovers_are_cleaned_at_the_next_start_and_latest_names_only_this_runs_checkpoints(tmp_path):
    run = tmp_path / "run"
    first = make_trainer(run, toy_config(steps=4, save_every=2))
    first.train()
    root = run / "checkpoints"
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert read_state(root / "step-00000004")["run_id"] == run_id
    # what killed processes leave: a torn write, a temporary latest, a half-deleted checkpoint (old and new style)
    (root / ".tmp-step-00000006-999999").mkdir()
    (root / ".tmp-step-00000006-999999" / "model.safetensors").write_bytes(b"torn")
    (root / ".latest.tmp-999999").write_text("step-00000006\n")
    (root / ".del-step-00000002-999999").mkdir()
    (root / "step-00000003").mkdir()
    (root / "step-00000003" / "optimizer.pt").write_bytes(b"half deleted")
    # a checkpoint of another run (its id differs) with a higher step, and a latest pointing outside the folder
    foreign = root / "step-00000009"
    shutil.copytree(root / "step-00000004", foreign)
    (foreign / "state.json").write_text(json.dumps({**read_state(foreign), "run_id": "someone-else", "step": 9}))
    (root / "latest").write_text("../../elsewhere/step-00000001\n")
    assert resolve_checkpoint("latest", run).name == "step-00000004"  # neither the foreign one nor the outside path
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002", "step-00000004"]

    removed = clean_leftovers(run)
    assert {".tmp-step-00000006-999999", ".latest.tmp-999999", ".del-step-00000002-999999", "step-00000003"} <= set(removed)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000002", "step-00000004", "step-00000009"]
    assert (root / "latest").read_text().strip() == "step-00000004"
    # the trainer cleans up by itself when it starts again
    (root / ".tmp-step-00000008-999999").mkdir()
    make_trainer(run, toy_config(steps=6, save_every=2)).train(resume="latest")
    assert not any(p.name.startswith(".") for p in root.iterdir())
    assert resolve_checkpoint("latest", run).name == "step-00000006"


def test_training_afresh_into_an_existing_run_is_refused_naming_resume_and_overwrite(tmp_path):
    run = tmp_path / "run"
    make_trainer(run, toy_config(steps=4, save_every=2)).train()
    config_before = (run / "config.yaml").read_text()
    metrics_before = (run / "metrics.csv").read_text()
    with pytest.raises(RunFolderError, match=r"already holds a run \(2 checkpoints, newest step-00000004.*--resume latest.*--overwrite"):
        make_trainer(run, toy_config(steps=2, lr=1e-3)).train()
    assert (run / "config.yaml").read_text() == config_before and (run / "metrics.csv").read_text() == metrics_before
    old_id = json.loads((run / "run.json").read_text())["run_id"]
    (run / "my-notes.txt").write_text("mine")
    result = make_trainer(run, toy_config(steps=2, lr=1e-3, save_every=2), overwrite=True).train()
    assert result.step == 2 and [p.name for p in list_checkpoints(run)] == ["step-00000002"]
    assert json.loads((run / "run.json").read_text())["run_id"] != old_id
    assert len(read_metrics(run / "metrics.csv")) == 2 and (run / "my-notes.txt").read_text() == "mine"
    # a run that died before its first checkpoint: only --overwrite (there is nothing to resume)
    (run / "checkpoints" / "step-00000002" / "state.json").unlink()
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(RunFolderError, match="saved no checkpoint.*--overwrite"):
        make_trainer(run, toy_config(steps=2)).train()


def test_one_process_per_run_folder_and_a_dead_holder_does_not_block(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from text2video.runs.lock import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
         "print('locked', flush=True); time.sleep(600)", str(run)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"in use by another training process \(PID {holder.pid} on "):
            RunLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid  # the stale record is still there...
    with RunLock(run) as lock:  # ...but a killed holder's lock is gone with it
        assert lock.held and json.loads((run / ".lock").read_text())["pid"] == os.getpid()
        with RunLock(run):  # re-entrant within one process
            pass
        assert lock.held
