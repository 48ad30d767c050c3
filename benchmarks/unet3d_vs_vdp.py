"""text2video's Unet3D against video-diffusion-pytorch 0.7.0's, side by side, in one process.

Seed 001's default configuration: dim 64, dim_mults (1, 2, 4, 8), 3 x 5 x 32 x 32 videos, a 768-d
text condition. Both models hold the same weights (ours converted from the peer's). Measured, with the
two models alternating so that machine load hits both alike:

* a training step (forward, MSE loss, backward, optimizer step) at batch 2 and batch 8, each model
  with the optimizer its own trainer uses (the peer: Adam; ours: fused AdamW);
* the optimizer step alone (on fixed gradients), so the model's share of a training step can be read;
* a sampling step (one no-grad denoiser call) at batch 1, ours as inside its sampling loop (within
  ``frozen_weights``: the convolution weights are reordered for oneDNN and the rotated attention
  projections built once per sampling run, by the first call, which is the untimed warm-up), and
  ours without it (``sample_plain_b1``);
* the peak resident memory of a training step at batch 2, each model in a fresh subprocess
  (``VmHWM`` minus the resident size after imports);
* the floating-point work of the training and sampling calls (``torch.utils.flop_counter``), and the
  rate each model achieves on it.

Run:  python benchmarks/unet3d_vs_vdp.py [--quick] [--repeats N] [--threads N]
Writes benchmarks/results/unet3d_vs_vdp[-quick].json and prints medians and ratios (ours / peer) of wall
and process CPU time.
video-diffusion-pytorch imports torchvision at import time; a stub stands in for it during that import.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import platform
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Callable

import torch

from text2video.nn.frozen_weights import frozen_weights

CONFIG = dict(dim=64, cond_dim=768, dim_mults=(1, 2, 4, 8))
FRAMES, SIZE = 5, 32
def import_peer() -> types.ModuleType:
    """video-diffusion-pytorch's model module (torchvision stubbed only while it imports)."""
    from text2video.models.convert.video_diffusion_pytorch import import_original_package

    return import_original_package()


def build(which: str, peer_state: dict | None = None) -> torch.nn.Module:
    if which == "peer":
        return import_peer().Unet3D(**CONFIG)
    from text2video.models.convert.video_diffusion_pytorch import convert_state_dict
    from text2video.models.unet3d import Unet3D

    model = Unet3D(**CONFIG)
    if peer_state is not None:
        model.load_state_dict(convert_state_dict(peer_state, model.state_dict()))
    return model


def inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, FRAMES, SIZE, SIZE, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    cond = torch.randn(batch, CONFIG["cond_dim"], generator=g)
    return x, t, cond


def optimizer_for(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer each project's own trainer builds: the peer's ``Trainer`` uses ``torch.optim.Adam``
    with its defaults; ours uses `make_adamw` (fused AdamW)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if type(model).__module__.startswith("text2video."):
        from text2video.train.trainer import make_adamw

        return make_adamw(params, lr=1e-4)
    return torch.optim.Adam(params, lr=1e-4)


def optimizer_step_fn(model: torch.nn.Module, batch: int) -> Callable[[], None]:
    """The optimizer update alone, on fixed random gradients."""
    opt = optimizer_for(model)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3

    def step() -> None:
        opt.step()

    return step


def train_step_fn(model: torch.nn.Module, batch: int) -> Callable[[], None]:
    opt = optimizer_for(model)
    x, t, cond = inputs(batch)
    target = torch.randn_like(x)
    model.train()

    def step() -> None:
        loss = torch.nn.functional.mse_loss(model(x, t, cond=cond), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sample_step_fn(model: torch.nn.Module, batch: int) -> Callable[[], None]:
    x, t, cond = inputs(batch)

    def step() -> None:
        model.eval()
        with torch.no_grad():
            model(x, t, cond=cond)

    return step


def counted_gflop(model: torch.nn.Module, kind: str, batch: int) -> float:
    """Floating-point work of one forward (sample) or forward + backward (train) call, in GFLOP
    (``torch.utils.flop_counter``: matrix products and convolutions, inside custom autograd functions too)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, t, cond = inputs(batch)
    counter = FlopCounterMode(display=False)
    if kind == "train":
        model.train()
        with counter:
            model(x, t, cond=cond).square().mean().backward()
        model.zero_grad(set_to_none=True)
    else:
        model.eval()
        with torch.no_grad(), counter:
            model(x, t, cond=cond)
    return counter.get_total_flops() / 1e9


def alternate(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Warm each up once, then time them in turn ``repeats`` times: wall and process CPU seconds.

    On a shared machine the CPU time (with ``--threads 1``) is the steadier figure: it leaves out the
    time other processes hold the cores.
    """
    for fn in steps.values():
        fn()
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


def _status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _memory_child(which: str, batch: int, threads: int, queue: mp.Queue) -> None:
    torch.set_num_threads(threads)
    model = build("peer") if which == "peer" else None
    if which == "ours":
        import text2video.models.unet3d  # noqa: F401  (imports before the baseline, as for the peer)
    base = _status_bytes("VmRSS")
    model = model or build(which)
    step = train_step_fn(model, batch)
    step()
    step()
    peak = _status_bytes("VmHWM")  # this process's own high-water mark (ru_maxrss inherits the parent's)
    queue.put({"peak_rss_mb": peak / 2**20, "peak_above_imports_mb": (peak - base) / 2**20})


def peak_memory(which: str, batch: int, threads: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child, args=(which, batch, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 2 training and sampling only, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per model and measurement (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/unet3d_vs_vdp[-quick].json)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    peer = build("peer")
    ours = build("ours", peer.state_dict())
    measurements = [("train", 2)] + ([] if args.quick else [("train", 8)]) + [("sample", 1), ("sample_plain", 1), ("optimizer", 0)]
    results: dict = {
        "config": {**CONFIG, "frames": FRAMES, "size": SIZE},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads, "processor": platform.processor() or platform.machine()},
        "repeats": repeats,
        "timings": {},
    }
    for kind, batch in measurements:
        make = {"train": train_step_fn, "sample": sample_step_fn, "sample_plain": sample_step_fn, "optimizer": optimizer_step_fn}[kind]
        with frozen_weights(ours) if kind == "sample" else contextlib.nullcontext():
            times = alternate({"peer": make(peer, batch), "ours": make(ours, batch)}, repeats)
        if kind == "optimizer":
            for m in (peer, ours):
                m.zero_grad(set_to_none=True)
        entry = {"runs": times}
        for clock in ("wall", "cpu"):
            med = {name: statistics.median(v[clock]) for name, v in times.items()}
            entry[clock] = {"peer_s": med["peer"], "ours_s": med["ours"], "ratio": med["ours"] / med["peer"]}
        key = f"{kind}_b{batch}" if batch else kind
        if kind in ("train", "sample"):
            gflop = {name: counted_gflop(m, kind, batch) for name, m in (("peer", peer), ("ours", ours))}
            entry["gflop"] = gflop
            entry["gflops_achieved"] = {name: gflop[name] / entry["wall"][f"{name}_s"] for name in gflop}
        results["timings"][key] = entry
        w, c = entry["wall"], entry["cpu"]
        print(
            f"{key:10s} wall: peer {w['peer_s']:7.3f} s  ours {w['ours_s']:7.3f} s  ours/peer {w['ratio']:.2f}   "
            f"cpu: peer {c['peer_s']:7.3f} s  ours {c['ours_s']:7.3f} s  ours/peer {c['ratio']:.2f}",
            flush=True,
        )
        if "gflop" in entry:
            g, r = entry["gflop"], entry["gflops_achieved"]
            print(f"{'':10s} work: peer {g['peer']:.1f} GFLOP ({r['peer']:.0f} GFLOP/s)  ours {g['ours']:.1f} GFLOP ({r['ours']:.0f} GFLOP/s)")
    if not args.no_memory:
        mem = {which: peak_memory(which, 2, args.threads) for which in ("peer", "ours")}
        ratio = mem["ours"]["peak_above_imports_mb"] / mem["peer"]["peak_above_imports_mb"]
        results["memory_train_b2"] = {**mem, "ratio": ratio}
        print(
            f"memory     peer {mem['peer']['peak_above_imports_mb']:7.0f} MB  ours {mem['ours']['peak_above_imports_mb']:7.0f} MB  "
            f"ours/peer {ratio:.2f}  (peak RSS {mem['peer']['peak_rss_mb']:.0f} / {mem['ours']['peak_rss_mb']:.0f} MB)"
        )
    out = args.out or Path(__file__).parent / "results" / f"unet3d_vs_vdp{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
