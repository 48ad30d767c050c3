"""The train / export / generate / demo commands end to end on a tiny real config (CPU, offline)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from faults import TINY as SMALL

from text2video.cli import main

TINY = ["train.steps=3", "train.save_every=0", *SMALL]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--config", "tiny-cpu", *TINY, "--run-dir", str(run), "--no-progress"]) == 0
    return run


def test_train_writes_a_run_folder(trained_run):
    from text2video.runs.checkpoint import list_checkpoints, read_state

    assert (trained_run / "config.yaml").is_file()
    assert (trained_run / "metrics.csv").read_text().count("\n") == 4  # header + 3 steps
    assert (trained_run / "loss.png").is_file()
    assert read_state(list_checkpoints(trained_run)[-1])["step"] == 3


def test_resume_latest_continues_to_more_steps(trained_run, tmp_path):
    run = tmp_path / "again"
    shutil.copytree(trained_run, run)
    assert (
        main(["train", "--config", str(run / "config.yaml"), "train.steps=4", "--run-dir", str(run), "--resume", "latest", "--no-progress"])
        == 0
    )
    from text2video.runs.checkpoint import list_checkpoints, read_state

    assert read_state(list_checkpoints(run)[-1])["step"] == 4


def test_print_config_applies_overrides(capsys):
    assert main(["train", "--config", "tiny-cpu", "train.lr=0.123", "--print-config"]) == 0
    assert "lr: 0.123" in capsys.readouterr().out


def test_bad_override_is_a_clear_error(capsys):
    assert main(["train", "--config", "tiny-cpu", "train.stepz=3", "--print-config"]) == 2
    assert "Did you mean 'train.steps'" in capsys.readouterr().err


def test_generate_from_run_and_from_exported_pipeline(trained_run, tmp_path, capsys):
    out_run = tmp_path / "from_run"
    assert (
        main(
            [
                "generate",
                "a blue square moving up",
                "--model",
                str(trained_run),
                "--steps",
                "2",
                "--guidance-scale",
                "2.0",
                "--output-dir",
                str(out_run),
                "--json",
            ]
        )
        == 0
    )
    written = json.loads(capsys.readouterr().out)["videos"]
    assert len(written) == 1 and written[0].endswith(".gif")
    from text2video.io.video import read_video

    frames, _ = read_video(written[0])
    assert frames.shape == (4, 16, 16, 3)

    export = tmp_path / "pipe"
    assert main(["export", str(trained_run), "--out", str(export)]) == 0
    assert (export / "pipeline.json").is_file()
    out_pipe = tmp_path / "from_pipe"
    # text2video-from-scratch's flags
    assert (
        main(
            [
                "generate",
                "--text",
                "a blue square moving up",
                "--model_path",
                str(export),
                "--steps",
                "2",
                "--output_dir",
                str(out_pipe),
                "--batch_size",
                "2",
                "--cond_scale",
                "2.0",
            ]
        )
        == 0
    )
    assert len(list(out_pipe.glob("*.gif"))) == 2
    # the exported EMA weights give the same video as the run's EMA weights, same seed
    again, _ = read_video(sorted(out_pipe.glob("*.gif"))[0])
    assert (again == frames).all()


def test_generate_reads_a_pt_file_weights_only(tmp_path, capsys):
    # a .pt file is read as a video-diffusion-pytorch checkpoint, never unpickled: a bad one is a clear error
    pt = tmp_path / "model-10.pt"
    pt.write_bytes(b"x")
    assert main(["generate", "x", "--model", str(pt)]) == 2
    assert "weights-only" in capsys.readouterr().err


def test_demo_quick_writes_videos_report_and_scores(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train"]["steps"] == 4
    assert len(list((out / "samples" / "seen").glob("*.gif"))) == 2
    assert len(list((out / "samples" / "held_out").glob("*.txt"))) == 1
    assert (out / "report.md").read_text().startswith("# text2video demo")
    assert report["serve"] == f"text2video serve --model {out / 'run'}"  # the command that serves the demo's model
    assert report["serve"] in (out / "report.md").read_text()
    assert {"seen", "held_out"} <= set(report["adherence"])
    assert report["adherence"]["seen"]["n"] == 2 and report["adherence"]["held_out"]["n"] == 1
    # running it again into the same folder is refused (its run would be overwritten) unless asked
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_accelerate_launch_on_cpu(tmp_path):
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # on a machine without GPUs, accelerate's --multi_gpu launcher (torchrun) starts CPU processes on gloo
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu", "-m", "text2video.cli", "train", "--config", "tiny-cpu",
           *TINY, "train.steps=2", "--run-dir", str(run), "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from text2video.runs.checkpoint import list_checkpoints, read_state

    state = read_state(list_checkpoints(run)[-1])
    assert state["world_size"] == 2 and state["step"] == 2
    # the global batch of 4 is two shards of 2: two steps consume 2 global batches = 8 items
    assert state["consumed_batches"] == 2 and state["index_in_epoch"] == 8
    assert (run / "metrics.csv").read_text().count("\n") == 3  # one writer only: header + 2 rows


def test_load_pipeline_accepts_a_run_folder(trained_run):
    import text2video as t2v

    pipe = t2v.load_pipeline(trained_run)
    out = pipe("a green circle moving down", steps=2, seed=0, progress=False)
    assert tuple(out.videos.shape) == (1, 3, 4, 16, 16)


def test_one_loader_for_a_run_a_checkpoint_and_a_pipeline_folder(trained_run, tmp_path):
    """A checkpoint folder loads its own weights; checkpoint/use_ema refuse a pipeline folder; files and
    missing folders are clear errors."""
    import text2video as t2v
    from text2video.errors import CheckpointError, ConfigError
    from text2video.pipelines.from_run import export_run
    from text2video.runs.checkpoint import list_checkpoints

    first = list_checkpoints(trained_run)[0]
    by_folder = t2v.load_pipeline(first, use_ema=False)
    by_run = t2v.load_pipeline(trained_run, checkpoint=first, use_ema=False)
    for a, b in zip(by_folder.model.state_dict().values(), by_run.model.state_dict().values()):
        assert torch.equal(a, b)
    ema = t2v.load_pipeline(first)  # the checkpoint's EMA weights, not its live ones
    assert any(not torch.equal(a, b) for a, b in zip(by_folder.model.state_dict().values(), ema.model.state_dict().values()))
    pipe_dir = export_run(trained_run, tmp_path / "pipe")
    assert t2v.load_pipeline(pipe_dir).defaults.num_frames == 4
    with pytest.raises(ConfigError, match="run folders only"):
        t2v.load_pipeline(pipe_dir, use_ema=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        t2v.load_pipeline(tmp_path / "nothing")
    (tmp_path / "model.txt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is a .txt file"):
        t2v.load_pipeline(tmp_path / "model.txt")
    (tmp_path / "model.pt").write_bytes(b"x")  # a .pt is read (weights only) as a video-diffusion-pytorch checkpoint
    with pytest.raises(CheckpointError, match="weights-only"):
        t2v.load_pipeline(tmp_path / "model.pt")


def test_demo_prompts_are_distinct_and_split_by_the_holdout():
    from text2video.commands.demo import demo_prompts
    from text2video.data.vocab import is_held_out, parse_caption

    seen, held = demo_prompts(24, 12)
    assert len(set(seen)) == 24 and len(set(held)) == 12
    assert not any(is_held_out(parse_caption(p)) for p in seen)
    assert all(is_held_out(parse_caption(p)) for p in held)
    # the seen prompts cover every colour, shape and direction
    factors = [parse_caption(p) for p in seen]
    assert len({f.colour for f in factors}) == 8 and len({f.shape for f in factors}) == 3
    assert len({f.direction for f in factors}) == 4


def test_training_again_into_a_run_is_refused_unless_resumed_or_overwritten(trained_run, tmp_path, capsys):
    from text2video.runs.checkpoint import list_checkpoints

    run = tmp_path / "again"
    shutil.copytree(trained_run, run)
    before = {p.name: p.read_bytes() for p in (run / "config.yaml", run / "metrics.csv")}
    args = ["train", "--config", "tiny-cpu", *TINY, "--run-dir", str(run), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--resume latest" in err and "--overwrite" in err and "already holds a run" in err
    assert {p.name: p.read_bytes() for p in (run / "config.yaml", run / "metrics.csv")} == before  # nothing touched
    assert main([*args[:-1], "train.steps=2", "--no-progress", "--overwrite"]) == 0
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002"]
    assert (run / "metrics.csv").read_text().count("\n") == 3  # header + the new run's 2 steps


def test_generate_refuses_sizes_that_cannot_fit_before_allocating(trained_run, tmp_path, capsys):
    base = ["generate", "a red circle", "--model", str(trained_run), "--steps", "1", "-o", str(tmp_path / "out")]
    assert main([*base, "--size", "100000"]) == 2
    err = capsys.readouterr().err.strip()
    assert "need at least" in err and "lower the size, the frames or the batch" in err and "Traceback" not in err
    assert main([*base, "--size", "15"]) == 2
    assert "divisible by 2" in capsys.readouterr().err
    assert not any((tmp_path / "out").iterdir())
