"""The Unet3D-vs-video-diffusion-pytorch benchmark script runs end to end (tiny sizes; no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "unet3d_vs_vdp.py"


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("rotary_embedding_torch")
    pytest.importorskip("einops_exts")
    spec = importlib.util.spec_from_file_location("unet3d_vs_vdp", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_quick_run_writes_every_measurement(bench, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--quick", "--repeats", "1", "--threads", "1", "--frames", "2", "--size", "16", "--no-memory", "--out", str(out)]
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    assert result["config"]["frames"] == 2 and result["config"]["size"] == 16
    timings = result["timings"]
    assert set(timings) == {"train_b2", "sample_b1", "sample_plain_b1", "optimizer"}
    for entry in timings.values():
        assert entry["wall"]["peer_s"] > 0 and entry["wall"]["ours_s"] > 0
        assert entry["wall"]["ratio"] == pytest.approx(entry["wall"]["ours_s"] / entry["wall"]["peer_s"])
    # the same architecture does the same arithmetic: the counted work agrees within a few percent
    for key in ("train_b2", "sample_b1"):
        gflop = timings[key]["gflop"]
        assert gflop["ours"] == pytest.approx(gflop["peer"], rel=0.05)
    assert timings["train_b2"]["gflop"]["ours"] > 2 * timings["sample_b1"]["gflop"]["ours"]  # backward + batch 2


def test_gpu_request_without_a_gpu_is_refused(bench, capsys: pytest.CaptureFixture) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(SystemExit):
        bench.main(["--device", "cuda", "--quick"])
    assert "no CUDA device" in capsys.readouterr().err
