"""Data-loading throughput: clips per second from a GIF folder and an MP4 folder (and the on-the-fly
shapes set), with 0 and 2 DataLoader workers.

    python benchmarks/data_loading.py                      # defaults below, JSON to benchmarks/results/
    python benchmarks/data_loading.py --n 32 --video-frames 16 --size 64 --workers 0 2

The folders are written first (synthetic shapes at ``--size`` px, ``--video-frames`` frames each);
each measurement reads ``--epochs`` passes over the folder after one warm-up batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from text2video.data import FolderVideoDataset, ShapesDataset
from text2video.io.video import write_video

RESULTS = Path(__file__).parent / "results"


def make_folder(root: Path, suffix: str, n: int, frames: int, size: int) -> Path:
    folder = root / suffix.lstrip(".")
    source = ShapesDataset(n=n, num_frames=frames, size=size, seed=0, holdout=(), split="all", background="noise")
    for index in range(n):
        sample = source.render(index)
        write_video(sample.frames, folder / f"v{index:05d}{suffix}", fps=8)
        (folder / f"v{index:05d}.txt").write_text(sample.text)
    return folder


def clips_per_second(dataset: torch.utils.data.Dataset, workers: int, batch_size: int, epochs: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0, drop_last=False)
    next(iter(loader))  # warm-up: worker start, first decode
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            count += batch["video"].shape[0]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="videos per folder")
    parser.add_argument("--video-frames", type=int, default=32, help="frames per stored video")
    parser.add_argument("--size", type=int, default=128, help="stored frame size")
    parser.add_argument("--clip-frames", type=int, default=16, help="frames per loaded clip")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--out-size", type=int, default=64, help="frame size after resize/crop")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "data_loading.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {s: make_folder(Path(tmp), s, args.n, args.video_frames, args.size) for s in (".gif", ".mp4")}
        for suffix, folder in folders.items():
            dataset = FolderVideoDataset(folder, num_frames=args.clip_frames, stride=args.stride, size=args.out_size)
            for workers in args.workers:
                rate = clips_per_second(dataset, workers, args.batch_size, args.epochs)
                rows.append({"source": suffix.lstrip("."), "workers": workers, "clips_per_s": round(rate, 2)})
                print(f"{suffix.lstrip('.'):>6}  workers={workers}  {rate:8.1f} clips/s")
        shapes = ShapesDataset(n=args.n, num_frames=args.clip_frames, size=args.out_size, seed=0)
        for workers in args.workers:
            rate = clips_per_second(shapes, workers, args.batch_size, args.epochs)
            rows.append({"source": "shapes (on the fly)", "workers": workers, "clips_per_s": round(rate, 2)})
            print(f"shapes  workers={workers}  {rate:8.1f} clips/s")
    result = {
        "benchmark": "data_loading",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
