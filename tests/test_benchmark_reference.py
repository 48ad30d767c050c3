"""benchmarks/reference.py: its runs are valid configs, its budget arithmetic, its table, one end-to-end run (tiny)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reference.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("reference_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_every_run_is_a_config_that_builds_on_the_shared_data(bench):
    import torch

    from text2video.config import load_config
    from text2video.latent import VideoVAE
    from text2video.runs.build import build_configured_model

    families = {e.family for e in bench.ENTRIES}
    assert families == {"unet3d", "unet3d_condition", "stdit", "unet_stic", "segdit"}
    assert {(e.family, e.space) for e in bench.ENTRIES} == {(f, s) for f in families for s in ("pixel", "latent")}
    data = {"pixel": set(), "latent": set()}
    for entry in bench.ENTRIES:
        config = load_config(entry.preset, bench.entry_overrides(entry))
        assert (config.latent.vae is not None) == (entry.space == "latent"), entry.name
        data[entry.space].add((config.data.kind, config.data.num_frames, config.data.size, json.dumps(config.data.options, sort_keys=True)))
        vae = VideoVAE.tiny() if config.latent.vae else None
        with torch.device("meta"):
            build_configured_model(config, 384, vae=vae)
    # every family trains on the same clips: 6x16x16 pixels, or 8x32x32 pixels (8x8 latents) with the same options
    ((pixel,),), ((latent,),) = [data["pixel"]], [data["latent"]]
    assert pixel[:3] == ("shapes", 6, 16) and latent[:3] == ("shapes", 8, 32) and pixel[3] == latent[3]


def test_budget_scales_the_early_high_noise_phase_and_the_warmup(bench):
    from text2video.config import load_config

    config = load_config("tiny-cpu")
    share = config.diffusion.kwargs["timestep_bias_steps"] / config.train.steps
    out = bench.budget_overrides("tiny-cpu", [], 100)
    assert out[0] == "train.steps=100"
    assert f"diffusion.timestep_bias_steps={round(share * 100)}" in out
    assert "train.warmup_steps=25" in bench.budget_overrides("tiny-cpu", [], 100) or config.train.warmup_steps <= 25


def test_loss_curve_and_training_seconds_from_metrics(bench, tmp_path):
    rows = ["step,loss,lr,grad_norm,steps_per_s,samples_per_s,memory_mb,nonfinite"]
    for step in range(1, 41):
        rate = "2.0" if step % 10 == 0 else ""
        rows.append(f"{step},{1.0 / step},0.001,1.0,{rate},,,0")
    path = tmp_path / "metrics.csv"
    path.write_text("\n".join(rows) + "\n")
    curve = bench.loss_curve(path, points=4)
    assert [p[0] for p in curve] == [10, 20, 30, 40]
    assert curve[0][1] == pytest.approx(sum(1.0 / s for s in range(1, 11)) / 10, abs=1e-5)
    assert bench.training_seconds(path) == pytest.approx(40 / 2.0)


def test_table_rows(bench):
    record = {
        "family": "stdit",
        "space": "pixel",
        "steps": 120,
        "steps_per_s": 1.5,
        "train_seconds": 80.0,
        "loss_curve": [[120, 0.0712]],
        "adherence": {
            s: {"n": 4, "colour": 1.0, "shape": 0.5, "direction": 0.25, "all_three": 0.25, "abstained": 0.0} for s in ("seen", "held_out")
        },
    }
    table = bench.markdown_table({"runs": [record, {"family": "segdit", "space": "latent", "error": "boom"}]})
    assert "| stdit | pixel | 120 | 1.5 | 1.3 | 100 / 50 / 25 / 25 (n=4) | 100 / 50 / 25 / 25 (n=4) | 0.0712 |" in table
    assert "| segdit | latent | failed: boom |" in table
    digits = bench.markdown_table({"digits": True, "runs": [{**record, "FVD_random_conv3d": 12.34, "FID_per_frame_random_conv2d": None}]})
    assert "| stdit | pixel | 120 | 1.5 | 1.3 | 12.3 | - |" in digits


def test_one_tiny_run_end_to_end(bench, tmp_path):
    """Two training steps of SegDiT, then text2video eval on two videos: the JSON has every field the table needs."""
    out = tmp_path / "result.json"
    args = ["--only", "segdit-pixel", "--steps", "2", "--n", "2", "--eval-steps", "1", "--threads", "1"]
    assert bench.main([*args, "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (run,) = result["runs"]
    assert "error" not in run, run.get("error")
    assert run["steps"] == 2 and run["planned_steps"] == 2
    assert run["train_command"].startswith("text2video train --config tiny-segdit")
    assert run["adherence"]["seen"]["n"] + run["adherence"]["held_out"]["n"] == 2
    assert run["loss_curve"] and (tmp_path / "work" / "segdit-pixel" / "loss.png").is_file()
