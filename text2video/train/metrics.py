"""A run's training metrics: ``metrics.csv`` and TensorBoard while training, a loss curve after it."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Optional

import torch

METRIC_FIELDS = ("step", "loss", "lr", "grad_norm", "steps_per_s", "samples_per_s", "memory_mb", "nonfinite", "val_loss")


def memory_mb(device: torch.device) -> float:
    """Peak memory of this process: allocated on a GPU, resident on the CPU (NaN where unknown)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except ImportError:  # pragma: no cover - Windows
        return float("nan")


class MetricsLog:
    """Rows of ``run_dir/metrics.csv`` (a resumed run drops the rows past its step) and TensorBoard scalars."""

    def __init__(self, run_dir: Path, step: int, flush_every: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.flush_every = flush_every
        path = run_dir / "metrics.csv"
        rows = []
        if path.is_file():
            with open(path, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= step]
        self._file = open(path, "w", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=METRIC_FIELDS)
        self._csv.writeheader()
        self._csv.writerows(rows)
        self._file.flush()
        self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step + 1 if step else None)

    def write(self, row: dict[str, Any]) -> None:
        self._csv.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
        if row["step"] % self.flush_every == 0:
            self._file.flush()
        for key, value in row.items():
            if key != "step" and value is not None and not (isinstance(value, float) and math.isnan(value)):
                self._tb.add_scalar(f"train/{key}", value, row["step"])

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a run's ``metrics.csv`` as floats (empty cells become NaN)."""
    with open(path, newline="") as handle:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()} for row in csv.DictReader(handle)]


def plot_loss_curve(metrics_csv: str | Path, out: str | Path) -> Path:
    """A PNG of the loss per step, its running mean and the validation loss (where logged)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    rows = [r for r in read_metrics(metrics_csv) if math.isfinite(r["loss"])]
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if rows:
        steps = [r["step"] for r in rows]
        losses = [r["loss"] for r in rows]
        ax.plot(steps, losses, lw=0.6, alpha=0.4, label="loss")
        window = max(1, len(losses) // 50)
        smooth = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1]) for i in range(len(losses))]
        ax.plot(steps, smooth, lw=1.5, label=f"mean of {window}")
        val = [(r["step"], r["val_loss"]) for r in rows if math.isfinite(r.get("val_loss", float("nan")))]
        if val:
            ax.plot(*zip(*val), "o-", ms=3, lw=1.0, label="validation")
        ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    return out


def plot_run_losses(run_dir: Path) -> Optional[Path]:
    """``run_dir/loss.png`` from its ``metrics.csv`` (None when there is none yet)."""
    path = run_dir / "metrics.csv"
    return plot_loss_curve(path, run_dir / "loss.png") if path.is_file() else None
