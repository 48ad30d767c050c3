"""The Unet3D-vs-video-diffusion-pytorch benchmark script runs end to end (tiny sizes; no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
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
    # glibc's defaults here: the steady allocator would stay set in the test process
    assert bench.main(args + ["--allocator", "default"]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["frames"] == 2 and result["config"]["size"] == 16
    assert result["machine"]["allocator"] == "default"
    timings = result["timings"]
    assert set(timings) == {"train_b2", "sample_b1", "sample_plain_b1", "optimizer"}
    for entry in timings.values():
        assert entry["wall"]["peer_s"] > 0 and entry["wall"]["ours_s"] > 0
        assert entry["wall"]["ratio"] == pytest.approx(entry["wall"]["ours_s"] / entry["wall"]["peer_s"])
        runs = entry["runs"]
        pairs = sorted(o / p for o, p in zip(runs["ours"]["wall"], runs["peer"]["wall"]))
        assert entry["wall"]["paired_ratio"] == pytest.approx(pairs[len(pairs) // 2])  # one round: its own ratio
        assert set(entry["minor_faults"]) == {"peer", "ours"} and min(entry["minor_faults"].values()) >= 0
    # the same architecture does the same arithmetic: the counted work agrees within a few percent
    for key in ("train_b2", "sample_b1"):
        gflop = timings[key]["gflop"]
        assert gflop["ours"] == pytest.approx(gflop["peer"], rel=0.05)
    assert timings["train_b2"]["gflop"]["ours"] > 2 * timings["sample_b1"]["gflop"]["ours"]  # backward + batch 2


def test_paired_ratio_follows_the_rounds_not_the_medians(bench) -> None:
    # the machine slows down in round 2 for both; the median of each list would pair unrelated rounds
    ours, peer = [1.0, 3.0, 2.5], [2.0, 6.0, 3.0]
    assert bench.paired_ratio(ours, peer) == pytest.approx(0.5)
    assert bench.statistics.median(ours) / bench.statistics.median(peer) == pytest.approx(2.5 / 3.0)


def test_gpu_request_without_a_gpu_is_refused(bench, capsys: pytest.CaptureFixture) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(SystemExit):
        bench.main(["--device", "cuda", "--quick"])
    assert "no CUDA device" in capsys.readouterr().err


KEPT_AFTER_FREE = """
import sys, torch
sys.path.insert(0, {folder!r})
import unet3d_vs_vdp
def resident():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
if {steady}:
    assert unet3d_vs_vdp.steady_allocator()
torch.ones(1024).sum()  # torch's lazy start-up (thread pool, ...) before the baseline
before = resident()
torch.ones(6 * 2**20)  # 24 MiB, written and freed at once
print(resident() - before)
"""


@pytest.mark.parametrize("steady", [True, False])
def test_steady_allocator_keeps_freed_memory(steady: bool) -> None:
    """With it, a freed 24 MiB block stays in the process for the next call to reuse; with glibc's defaults
    the block was mapped on its own and goes back to the kernel when freed."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc and /proc only")
    code = KEPT_AFTER_FREE.format(folder=str(SCRIPT.parent), steady=steady)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    kept_mb = int(run.stdout.split()[-1]) / 2**20
    if steady:
        assert kept_mb > 20
    else:
        assert kept_mb < 8


PARTS_SCRIPT = SCRIPT.parent / "unet3d_parts.py"


@pytest.fixture(scope="module")
def parts(bench):
    spec = importlib.util.spec_from_file_location("unet3d_parts", PARTS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parts_run_pairs_every_part_of_both_models(parts, tmp_path: Path) -> None:
    out = tmp_path / "parts.json"
    args = ["--frames", "2", "--size", "16", "--repeats", "1", "--threads", "1", "--allocator", "default", "--out", str(out)]
    assert parts.main(args) == 0
    result = json.loads(out.read_text())
    rows = result["parts"]
    # four levels: 5 parts each way, less the resampling the outermost levels lack; 4 in the middle; 5 at the ends
    assert len(rows) == 2 * (4 * 5 - 1) + 4 + 5
    assert len({r["ours"] for r in rows}) == len({r["peer"] for r in rows}) == len(rows)
    for row in rows:
        assert row["ours_ms"] > 0 and row["peer_ms"] > 0 and row["ratio"] > 0
        if row["kind"] in ("resnet blocks", "resampling", "first layers"):
            # the same layers do the same arithmetic: a wrong pairing would show here
            assert row["gflop_ours"] == pytest.approx(row["gflop_peer"], rel=0.02), row
    kinds = result["kinds"]
    assert set(kinds) == {r["kind"] for r in rows} | {"total"}
    assert kinds["total"]["ours_ms"] == pytest.approx(sum(r["ours_ms"] for r in rows))
    assert kinds["total"]["peer_ms"] == pytest.approx(sum(r["peer_ms"] for r in rows))
    assert sum(e["share_of_peer"] for k, e in kinds.items() if k != "total") == pytest.approx(1.0)
