"""The fused-kernel A/B benchmark script runs end to end (tiny model, one round; no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from text2video.backends.cpu import kernels as cpu_kernels

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cpu_kernels_ab.py"


def test_tiny_run_reports_every_configuration() -> None:
    if cpu_kernels.load() is None:
        pytest.skip("no C compiler here: the kernels cannot be built")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--rounds", "1", "--batch", "2", "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("tiny-cpu model, batch 2, 1 threads, 1 rounds")
    names = [line.split("fastest")[0].strip() for line in lines[1:]]
    assert names == ["all kernels", "no kernels", "without attention", "without norm", "without conv", "without winograd"]
    assert "median / no kernels 1.00" in lines[2]  # the baseline row is its own reference


def test_against_another_kernel_source_adds_its_row_and_ratio(tmp_path: Path) -> None:
    if cpu_kernels.load() is None:
        pytest.skip("no C compiler here: the kernels cannot be built")
    other = tmp_path / "same_kernels.c"
    other.write_text(cpu_kernels.SOURCE.read_text())
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--rounds", "1", "--batch", "2", "--threads", "1", "--against", str(other)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2].startswith("other: same_kernels.c")
    assert lines[-1].startswith("all kernels / same_kernels.c: median of the rounds' ratios")
    assert float(lines[-1].split()[-1]) > 0
