"""Every mistake a user can make on the command line gets one line naming the thing and the fix, never a
traceback, and before anything is loaded or allocated."""

from __future__ import annotations

import codecs
import json
import os

import pytest
import torch

from text2video.cli import main
from text2video.config import load_config
from text2video.errors import ConfigError, DataError


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of ``text2video ARGS`` (argparse's own exits included)."""
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err.strip().splitlines()[-1] if err.strip() else ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "x", "--model", "m", "--size", "0"], "--size: must be a positive integer, got '0'"),
        (["generate", "x", "--model", "m", "--frames", "-1"], "--frames/--num-frames: must be a positive integer"),
        (["generate", "x", "--model", "m", "--height", "abc"], "--height: expected an integer, got 'abc'"),
        (["generate", "x", "--model", "m", "--steps", "0"], "--steps: must be a positive integer"),
        (["generate", "x", "--model", "m", "--seed", "-1"], "--seed: must be an integer from 0 to 2**63 - 1"),
        (["generate", "x", "--model", "m", "--guidance-scale", "nan"], "must be a finite number, got 'nan'"),
        (["generate", "x", "--model", "m", "--guidance-scale", "inf"], "must be a finite number, got 'inf'"),
        (["generate", "x", "--model", "m", "--eta", "nan"], "--eta: must be a finite number"),
        (["generate", "x", "--model", "m", "--batch-size", "0"], "must be a positive integer"),
        (["data", "synth", "--out", "o", "--n", "0"], "--n: must be a positive integer"),
        (["data", "synth", "--out", "o", "--fps", "0"], "--fps: must be a positive number"),
        (["interpolate", "--model", "m", "--strength", "2"], "--strength: must be between 0 and 1"),
        (["eval", "--videos", "v", "--seed", "-5"], "--seed: must be an integer from 0"),
        (["train", "--print-config", "--run-dir", "r", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_numbers_are_refused_by_the_parser(args, message, capsys):
    code, line = run_cli(args, capsys)
    assert code == 2 and message in line, line


def test_unusable_devices_and_outputs_are_refused_before_the_model_loads(tmp_path, capsys):
    model = tmp_path / "no-model-needed"  # the checks come first: the folder does not even exist
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [
        (["--device", "foo"], "--device 'foo' is not a device"),
        (["--device", "cpu", "--output-dir", str(blocker / "sub")], "--output-dir folder"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "no CUDA GPU is usable on this machine; use --device cpu"))
    for extra, message in cases:
        code, line = run_cli(["generate", "a circle", "--model", str(model), *extra], capsys)
        assert code == 2 and message in line, line
    code, line = run_cli(["export", str(model), "--out", str(blocker / "out")], capsys)
    assert code == 2 and "--out" in line and "not writable" in line


def test_train_refuses_bad_settings_and_folders_before_building(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    base = ["train", "--config", "tiny-cpu", "--no-progress"]
    cases = [
        (["model.dim=abc", "--run-dir", str(tmp_path / "r1")], "model.dim: expected an integer, got 'abc' (Unet3D takes dim: int)"),
        (["train.lr=.inf", "--run-dir", str(tmp_path / "r2")], "train.lr = inf is not a finite number"),
        (["train.lr=-1", "--run-dir", str(tmp_path / "r3")], "train.lr = -1.0 must be positive"),
        (["data.size=100000", "--run-dir", str(tmp_path / "r4")], "data.size, data.num_frames or train.batch_size"),
        (["--run-dir", str(blocker / "run")], "choose another --run-dir"),
        (["--resume", "latest", "--overwrite", "--run-dir", str(tmp_path / "r5")], "give one of them"),
    ]
    for extra, message in cases:
        code, line = run_cli([*base, *extra], capsys)
        assert code == 2 and message in line, line
    assert not (tmp_path / "r4" / "checkpoints").exists()


def test_impossible_model_sizes_are_named(tmp_path, capsys):
    from text2video.errors import ModelError
    from text2video.runs.build import build_configured_model

    for override, message in (
        ("model.dim=0", "layers without weights"),
        ("model.attn_heads=0", "layers without weights"),
        ("model.dim=-8", "negative dimension"),
        ("model.dim=100000", r"parameters \(.* GB of float32 weights\), more than this machine's"),
    ):
        with pytest.raises(ModelError, match=message):
            build_configured_model(load_config("tiny-cpu", [override]), 384)


def test_overrides_may_come_anywhere_on_the_command_line(capsys):
    args = ["train", "model.dim=16", "--config", "tiny-cpu", "train.steps=7", "--run-dir", "r", "--print-config", "train.lr=0.003"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "dim: 16" in printed and "steps: 7" in printed and "lr: 0.003" in printed


def test_prompts_may_come_anywhere_too():
    from text2video.cli import build_parser, parse_args

    args = parse_args(build_parser(), ["generate", "first", "--model", "m", "second", "--steps", "2", "third"])
    assert args.prompts == ["first", "second", "third"] and args.steps == 2


# ---------------------------------------------------------------------------------------- text files


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32"])
def test_prompt_files_in_the_usual_unicode_encodings_are_read(tmp_path, encoding):
    from argparse import Namespace

    from text2video.commands.generate import collect_prompts

    path = tmp_path / "prompts.txt"
    path.write_bytes("a red circle moving left\n\nun cercle rouge à gauche\n".encode(encoding))
    args = Namespace(prompts=[], text=[], prompt_file=str(path))
    assert collect_prompts(args) == ["a red circle moving left", "un cercle rouge à gauche"]


def test_text_in_another_encoding_is_refused_naming_file_and_line(tmp_path, capsys):
    from text2video.data.csv import read_manifest
    from text2video.data.folder import read_captions
    from text2video.eval.adherence import find_captioned_videos

    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("fine\nstill fine\ncaf\xe9 au lait\n".encode("latin-1"))
    code, line = run_cli(["generate", "--prompt-file", str(prompts), "--model", "m"], capsys)
    assert code == 2 and f"prompt file {prompts}, line 3, column 4: byte 0xe9 is not UTF-8" in line
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    (tmp_path / "clip.txt").write_bytes("caf\xe9".encode("cp1252"))
    with pytest.raises(DataError, match=r"caption file .*clip.txt, line 1"):
        read_captions(tmp_path / "clip.gif")
    with pytest.raises(DataError, match=r"clip.txt, line 1"):
        find_captioned_videos(tmp_path)
    manifest = tmp_path / "list.csv"
    manifest.write_bytes(codecs.BOM_UTF16_LE + "path,text\nclip.gif,a caption\n".encode("utf-16-le"))
    assert [e.captions for e in read_manifest(manifest)] == [("a caption",)]
    manifest.write_bytes(b"path,text\nclip.gif,\xff\xfe broken\n")
    with pytest.raises(DataError, match="line 2"):
        read_manifest(manifest)
    config = tmp_path / "config.yaml"
    config.write_bytes("train:\n  steps: 5\n".encode("utf-16"))
    assert load_config(config).train.steps == 5
    config.write_bytes(b"train:\n  steps: 5 # \xe9t\xe9\n")
    with pytest.raises(DataError, match="config file .*config.yaml, line 2"):
        load_config(config)


def test_data_inspect_writes_nothing_unless_asked(tmp_path, capsys):
    import numpy as np

    from text2video.io.video import write_video

    folder = tmp_path / "clips"
    write_video(np.zeros((4, 16, 16, 3), dtype=np.uint8), folder / "a.gif", fps=8)
    (folder / "a.txt").write_text("a caption\n")
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    os.chmod(folder, 0o555)  # a read-only data folder, as a shared dataset is
    try:
        assert main(["data", "inspect", str(folder)]) == 0
        assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
        sheet = tmp_path / "sheet.png"
        capsys.readouterr()
        assert main(["data", "inspect", str(folder), "--json", "--sheet", str(sheet)]) == 0
        assert json.loads(capsys.readouterr().out)["contact_sheet"] == str(sheet)
    finally:
        os.chmod(folder, 0o755)
    assert sheet.is_file() and {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


def test_unreadable_converter_inputs_are_one_line(tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    torn = tmp_path / "torn.safetensors"
    torn.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    for src, message in (
        (tmp_path / "missing.pt", "does not exist"),
        (text, "cannot read"),
        (torn, "cannot read"),
        (tmp_path, "is not a file"),
    ):
        code, line = run_cli(["convert", "--from", "video-diffusion-pytorch", str(src), "--out", str(tmp_path / "out")], capsys)
        assert code == 2 and message in line and str(src.name) in line, line


def test_numbers_in_a_config_are_finite_and_in_range():
    for override, message in (
        ("train.lr=.nan", "train.lr = nan is not a finite number"),
        ("train.max_grad_norm=0", "must be positive, or null"),
        ("train.betas=[0.9, 1.0]", r"train.betas\[1\] = 1.0 must be in \[0, 1\)"),
        ("train.weight_decay=-0.1", "must not be negative"),
        ("diffusion.timestep_bias_multiplier=.inf", "not a finite number"),
        ("data.options.speed=[1, .inf]", r"data.options.speed\[1\] = inf"),
        ("model.dim_mults=[1, x]", r"model.dim_mults\[1\]: expected an integer, got 'x' \(Unet3D takes dim_mults: Sequence\[int\]\)"),
        ("sample.size=0", "sample.size = 0 must be at least 1"),
        ("sample.fps=-8", "sample.fps = -8.0 must be positive"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config("tiny-cpu", [override])
