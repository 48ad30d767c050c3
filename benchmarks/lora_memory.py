"""Memory and time of a LoRA training step against a full one, on the same model and batch.

Each mode runs in a fresh process: build the model (``--preset``, a shipped config), the objective's loss on
a random batch, backward and AdamW, ``--steps`` times. Reported: trainable parameters, the optimizer's
state, the process's peak resident memory above what it held once the model was built (the step's own
memory: activations, gradients, optimizer state), and seconds per step.

Run:  .venv/bin/python benchmarks/lora_memory.py [--preset tiny-stdit] [--set model.preset=STDiT-B/2] [--rank 8] [--steps 5] [--batch 4]
      [--json benchmarks/results/lora_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def current_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(mode: str, preset: str, rank: int, steps: int, batch: int, overrides: list[str]) -> dict[str, Any]:
    import torch

    from text2video.config import load_config, objective_config
    from text2video.diffusion.conditioning import Conditioning
    from text2video.diffusion.objectives import make_objective
    from text2video.models.lora import LoraSettings, add_lora, describe
    from text2video.runs.build import build_configured_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = load_config(preset, overrides)
    text_dim = 384
    model = build_configured_model(config, text_dim)
    if mode == "lora":
        add_lora(model, LoraSettings(rank=rank))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    objective = make_objective(objective_config(config))
    d = config.data
    channels = int(config.model.kwargs.get("channels", 3) or 3)
    x0 = torch.rand(batch, channels, d.num_frames, d.size, d.size) * 2 - 1
    cond = Conditioning(
        text_tokens=torch.randn(batch, 8, text_dim),
        text_mask=torch.ones(batch, 8, dtype=torch.bool),
        text_pooled=torch.randn(batch, text_dim),
    )
    base = current_mb()
    times = []
    for step in range(steps):
        start = time.perf_counter()
        loss, _ = objective.loss(model, x0, cond, generator=torch.Generator().manual_seed(step))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    state_bytes = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    out = {
        "mode": mode,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in params),
        "optimizer_state_mb": round(state_bytes / 2**20, 2),
        "model_built_mb": round(base, 1),
        "peak_above_model_mb": round(peak_mb() - base, 1),
        "seconds_per_step": round(sorted(times[1:] or times)[len(times[1:] or times) // 2], 3),
    }
    if mode == "lora":
        out["adapter_mb"] = round(describe(model)["bytes"] / 2**20, 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny-stdit")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. model.preset=STDiT-B/2")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/lora_memory.json"))
    parser.add_argument("--mode", choices=("full", "lora"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # one measurement, in this fresh process
        print(json.dumps(measure(args.mode, args.preset, args.rank, args.steps, args.batch, args.set)))
        return 0
    results = {}
    for mode in ("full", "lora"):
        command = [sys.executable, __file__, "--mode", mode, "--preset", args.preset, "--rank", str(args.rank),
                   "--steps", str(args.steps), "--batch", str(args.batch), "--set", *args.set]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        print(mode, results[mode], flush=True)
    report = {
        "protocol": {
            "preset": args.preset,
            "overrides": args.set,
            "rank": args.rank,
            "steps": args.steps,
            "batch": args.batch,
            "threads": 1,
        },
        "load_average": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
