"""benchmarks/gpu_check.py's dry run: the device check's code runs on the CPU at tiny sizes, so that it
cannot rot between the rare sessions that have a GPU."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(gpu_check, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_check") / "dry.json"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_every_measurement_ran_without_error(gpu_check, dry_run):
    failed = {k: v.get("error") or v.get("skipped") for k, v in dry_run.items() if isinstance(v, dict) and ("error" in v or "skipped" in v)}
    assert not failed
    expected = {f"family:{f.name}" for f in gpu_check.FAMILIES} | {"env", "compile:stdit", "pretrained:sd_vae_decode"}
    expected |= {"peer:stdit_xl_vs_open_sora", "peer:unet3d_condition_vs_diffusers_modelscope", "peer:unet3d_vs_vdp_2x16"}
    expected |= {"peer:unet3d_condition_vs_diffusers_animatediff", "pretrained:modelscope_zeroscope_unet", "pretrained:animatediff_unet"}
    assert expected <= set(dry_run)
    assert dry_run["env"]["dry_run"] is True


def test_families_train_and_sample(gpu_check, dry_run):
    for family in gpu_check.FAMILIES:
        r = dry_run[f"family:{family.name}"]
        assert r["loss_finite"] and all(math.isfinite(x) and x > 0 for x in r["losses"])
        assert r["steps_per_s"] > 0 and r["train_tflop_per_step"] >= 0
        assert r["sample"]["finite"] and r["sample"]["ok"], r["sample"]
        assert len(r["shape"]) == 4 and r["batch"] == 2
        # every family attends with scaled_dot_product_attention somewhere in a training step
        assert sum(r["sdpa_backends"].values()) > 0, family.name


def test_peers_hold_the_same_weights(dry_run):
    for key in ("peer:unet3d_condition_vs_diffusers_modelscope", "peer:unet3d_condition_vs_diffusers_animatediff"):
        r = dry_run[key]
        # same weights, same input: the outputs differ by bf16 rounding only
        assert r["bf16_max_abs_difference"] < 0.25 * max(r["output_mean_abs"], 1e-3) + 0.05, r
        assert r["train_step_s"]["ours/diffusers"] > 0 and r["sample_step_s"]["ours/diffusers"] > 0
    vdp = dry_run["peer:unet3d_vs_vdp_2x16"]["ratios"]
    assert {"train_b2", "sample_b1"} <= set(vdp)


def test_only_filters_measurements(gpu_check, tmp_path):
    out = tmp_path / "only.json"
    assert gpu_check.main(["--dry-run", "--only", "family:segdit", "--sections", "families", "--out", str(out)]) == 0
    keys = {k for k, v in json.loads(out.read_text()).items() if isinstance(v, dict)}
    assert keys == {"family:segdit"}


def test_table_reports_each_family(gpu_check, dry_run):
    text = gpu_check.table(dry_run)
    for family in gpu_check.FAMILIES:
        assert f"| {family.name} (" in text
