"""Tiny real training runs for the end-to-end tests: the tiny-cpu preset shrunk to seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

from text2video.cli import main

#: tiny-cpu shrunk: 2 steps of batch 2 on 4-frame 16x16 clips, an 8-wide Unet3D, 2 sampling steps.
TINY = [
    "train.steps=2",
    "train.batch_size=2",
    "train.log_every=1",
    "train.save_every=0",
    "train.warmup_steps=0",
    "text.cache=false",
    "data.options.n=8",
    "data.size=16",
    "data.num_frames=4",
    "model.dim=8",
    "model.dim_mults=[1, 2]",
    "model.attn_heads=1",
    "model.attn_dim_head=8",
    "sample.steps=2",
]


def train_tiny(run: Path, *overrides: str, config: str = "tiny-cpu", base: list[str] | None = None) -> Path:
    """Train ``config`` with `TINY` (or ``base``) and ``overrides`` into ``run`` through the CLI; return ``run``."""
    args = ["train", "--config", config, *(TINY if base is None else base), *overrides, "--run-dir", str(run), "--no-progress"]
    assert main(args) == 0
    return run
