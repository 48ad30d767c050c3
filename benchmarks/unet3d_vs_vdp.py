"""text2video's Unet3D against video-diffusion-pytorch 0.7.0's, side by side, in one process.

text2video-from-scratch's default configuration: dim 64, dim_mults (1, 2, 4, 8), 3 x 5 x 32 x 32 videos, a 768-d
text condition. Both models hold the same weights (ours converted from the peer's). Measured, with the
two models alternating so that machine load hits both alike:

* a training step (forward, MSE loss, backward, optimizer step) at batch 2 and batch 8, each model
  with the optimizer its own trainer uses (the peer: Adam; ours: fused AdamW);
* the optimizer step alone (on fixed gradients), so the model's share of a training step can be read;
* a sampling step (one no-grad denoiser call) at batch 1, ours as inside its sampling loop (within
  ``text2video.backends.cpu.sampling``, as our pipelines run it: the convolution weights are reordered for oneDNN and the rotated attention
  projections built once per sampling run, by the first call, which is the untimed warm-up), and
  ours without it (``sample_plain_b1``);
* the peak memory of a training step at batch 2: on CPU the resident memory, each model in a fresh
  subprocess (``VmHWM`` minus the resident size after imports); on a GPU the peak allocated by torch
  above what was allocated before the step (both models resident; timings there wait for the device);
* the floating-point work of the training and sampling calls (``torch.utils.flop_counter``, every
  convolution counted by the direct method: ours computes some by Winograd's, with fewer multiplications),
  and the rate each model achieves on that nominal work;
* the minor page faults of each timed call (median), to show that neither model pays for fresh memory.

Each model alone in its own process reaches a steady state within a few steps in which glibc's heap
serves every allocation from memory it already holds. Two models alternating in one process disturb
each other's heap: glibc gives freed memory back to the kernel and takes it again, and every call then
faults in fresh pages (measured at batch 2: about 125k faults per peer step, 10k-37k per step of ours).
So the timing process first tells glibc to keep what it frees and to serve blocks up to 32 MiB from its
heap (``--allocator steady``, the default), which gives both models their single-process steady state
(a few faults per step at batch 2). ``--allocator default`` leaves glibc as it is.
The memory rows run each model in a fresh process with glibc's defaults.

Run:  python benchmarks/unet3d_vs_vdp.py [--quick] [--repeats N] [--threads N]
      python benchmarks/unet3d_vs_vdp.py --device cuda --dtype bfloat16 --frames 16 --size 64 --out ...   (a GPU)
Writes benchmarks/results/unet3d_vs_vdp[-quick].json and prints medians and ratios (ours / peer) of wall
and process CPU time: the ratio of the medians, and the median of the round-by-round ratios ("paired").
video-diffusion-pytorch imports torchvision at import time; a stub stands in for it during that import.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import dataclasses
import json
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Callable, Optional

import torch

from text2video.backends import cpu as cpu_backend

CONFIG = dict(dim=64, cond_dim=768, dim_mults=(1, 2, 4, 8))
FRAMES, SIZE = 5, 32


@dataclasses.dataclass(frozen=True)
class Setup:
    """Where and at what size both models run: text2video-from-scratch's CPU case by default; on a GPU, e.g. 16 x 64 x 64 in bf16."""

    device: torch.device = torch.device("cpu")
    amp_dtype: Optional[torch.dtype] = None  # autocast dtype (None: float32)
    frames: int = FRAMES
    size: int = SIZE

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def sync(self) -> None:
        """Wait for queued device work, so that a wall-clock reading covers it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


CPU = Setup()


def import_peer() -> types.ModuleType:
    """video-diffusion-pytorch's model module (torchvision stubbed only while it imports)."""
    from text2video.models.convert.video_diffusion_pytorch import import_original_package

    return import_original_package()


def build(which: str, peer_state: dict | None = None, device: torch.device = CPU.device) -> torch.nn.Module:
    """The peer's model, or ours (with the peer's weights when given) with the CPU backend installed on CPU, as
    our trainer and pipelines run it (``TEXT2VIDEO_CPU_BACKEND=0``: the plain PyTorch model)."""
    if which == "peer":
        return import_peer().Unet3D(**CONFIG).to(device)
    from text2video.models.convert.video_diffusion_pytorch import convert_state_dict
    from text2video.models.unet3d import Unet3D

    model = Unet3D(**CONFIG)
    if peer_state is not None:
        model.load_state_dict(convert_state_dict(peer_state, model.state_dict()))
    model.to(device)
    return cpu_backend.install(model) if device.type == "cpu" else model


def inputs(batch: int, seed: int = 0, setup: Setup = CPU) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, setup.frames, setup.size, setup.size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    cond = torch.randn(batch, CONFIG["cond_dim"], generator=g)
    return x.to(setup.device), t.to(setup.device), cond.to(setup.device)


def optimizer_for(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer each project's own trainer builds: the peer's ``Trainer`` uses ``torch.optim.Adam``
    with its defaults; ours uses `make_adamw` (fused AdamW)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if type(model).__module__.startswith("text2video."):
        from text2video.train.trainer import make_adamw

        return make_adamw(params, lr=1e-4)
    return torch.optim.Adam(params, lr=1e-4)


def optimizer_step_fn(model: torch.nn.Module, batch: int, setup: Setup = CPU) -> Callable[[], None]:
    """The optimizer update alone, on fixed random gradients."""
    opt = optimizer_for(model)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3

    def step() -> None:
        opt.step()

    return step


def train_step_fn(model: torch.nn.Module, batch: int, setup: Setup = CPU) -> Callable[[], None]:
    opt = optimizer_for(model)
    x, t, cond = inputs(batch, setup=setup)
    target = torch.randn_like(x)
    model.train()

    def step() -> None:
        with setup.autocast():
            loss = torch.nn.functional.mse_loss(model(x, t, cond=cond).float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sample_step_fn(model: torch.nn.Module, batch: int, setup: Setup = CPU) -> Callable[[], None]:
    x, t, cond = inputs(batch, setup=setup)

    def step() -> None:
        model.eval()
        with torch.no_grad(), setup.autocast():
            model(x, t, cond=cond)

    return step


def counted_gflop(model: torch.nn.Module, kind: str, batch: int, setup: Setup = CPU) -> float:
    """Floating-point work of one forward (sample) or forward + backward (train) call, in GFLOP
    (``torch.utils.flop_counter``: matrix products and convolutions, inside custom autograd functions too).

    Counted with the direct method for every convolution (Winograd off), so that both models' figures are
    the same nominal work and the rates derived from them are comparable (ours does less arithmetic).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from text2video.backends.cpu import winograd_conv

    x, t, cond = inputs(batch, setup=setup)
    counter = FlopCounterMode(display=False)
    if kind == "train":
        model.train()
        with counter, winograd_conv.disabled():
            with setup.autocast():
                loss = model(x, t, cond=cond).float().square().mean()
            loss.backward()
        model.zero_grad(set_to_none=True)
    else:
        model.eval()
        with torch.no_grad(), setup.autocast(), counter:
            model(x, t, cond=cond)
    return counter.get_total_flops() / 1e9


# glibc mallopt parameters (malloc.h); 32 MiB is the largest mmap threshold glibc accepts on 64-bit
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_HEAP_BLOCK_LIMIT = 32 * 2**20


def steady_allocator() -> bool:
    """Make glibc serve blocks up to 32 MiB from its heap and never give freed heap memory back to the
    kernel, so that a repeated call finds its memory already mapped. Returns False where the C library
    is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)) and bool(mallopt(_M_MMAP_THRESHOLD, _HEAP_BLOCK_LIMIT))


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def alternate(steps: dict[str, Callable[[], None]], repeats: int, setup: Setup = CPU) -> dict[str, dict[str, list[float]]]:
    """Warm each up once, then time them in turn ``repeats`` times: wall and process CPU seconds.

    On a shared machine the CPU time (with ``--threads 1``) is the steadier figure: it leaves out the
    time other processes hold the cores.
    """
    for fn in steps.values():
        fn()
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": [], "faults": []} for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            setup.sync()
            faults, wall, cpu = _minor_faults(), time.perf_counter(), time.process_time()
            fn()
            setup.sync()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
            times[name]["faults"].append(_minor_faults() - faults)
    return times


def paired_ratio(ours: list[float], peer: list[float]) -> float:
    """Median over rounds of ours / peer, each round's two calls made one after the other: steadier than the
    ratio of the medians when the machine's speed drifts during the run."""
    return statistics.median(a / b for a, b in zip(ours, peer))


def _status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _memory_child(which: str, batch: int, threads: int, setup: Setup, queue: mp.Queue) -> None:
    torch.set_num_threads(threads)
    # import each model's code before the baseline, and build the model after it, so that both
    # figures hold the weights, gradients, optimizer state and activations, and no imports
    if which == "peer":
        import_peer()
    else:
        import text2video.models.convert.video_diffusion_pytorch  # noqa: F401
        import text2video.models.unet3d  # noqa: F401
        import text2video.train.trainer  # noqa: F401
    base = _status_bytes("VmRSS")
    model = build(which)
    step = train_step_fn(model, batch, setup)
    step()
    step()
    peak = _status_bytes("VmHWM")  # this process's own high-water mark (ru_maxrss inherits the parent's)
    queue.put({"peak_rss_mb": peak / 2**20, "peak_above_imports_mb": (peak - base) / 2**20})


def peak_cuda_memory(model: torch.nn.Module, batch: int, setup: Setup) -> dict[str, float]:
    """Peak allocated GPU memory of two training steps, above what was allocated before them."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(setup.device)
    base = torch.cuda.memory_allocated(setup.device)
    step = train_step_fn(model, batch, setup)
    step()
    step()
    setup.sync()
    peak = torch.cuda.max_memory_allocated(setup.device)
    model.zero_grad(set_to_none=True)
    return {"peak_rss_mb": peak / 2**20, "peak_above_imports_mb": (peak - base) / 2**20}


def peak_memory(which: str, batch: int, threads: int, setup: Setup = CPU) -> dict[str, float]:
    """Peak resident memory of two CPU training steps, in a fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child, args=(which, batch, threads, setup, queue))
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
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda[:N] (a GPU: e.g. --device cuda --dtype bfloat16 --frames 16 --size 64)"
    )
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32", help="autocast dtype of both models")
    parser.add_argument("--frames", type=int, default=FRAMES, help=f"frames per video (default {FRAMES}, text2video-from-scratch)")
    parser.add_argument("--size", type=int, default=SIZE, help=f"height and width (default {SIZE}, text2video-from-scratch)")
    parser.add_argument(
        "--allocator",
        choices=("steady", "default"),
        default="steady",
        help="steady: glibc keeps freed memory, as each model's own process does after a few steps (default); default: glibc as it is",
    )
    args = parser.parse_args(argv)
    allocator = args.allocator
    if allocator == "steady" and not steady_allocator():
        print("the C library is not glibc: timing with its default allocator", file=sys.stderr)
        allocator = "default"
    repeats = args.repeats or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device is visible to torch here; use --device cpu")
    setup = Setup(device, None if args.dtype == "float32" else getattr(torch, args.dtype), args.frames, args.size)

    peer = build("peer", device=device)
    ours = build("ours", peer.state_dict(), device)
    measurements = [("train", 2)] + ([] if args.quick else [("train", 8)]) + [("sample", 1), ("sample_plain", 1), ("optimizer", 0)]
    results: dict = {
        "config": {**CONFIG, "frames": setup.frames, "size": setup.size, "dtype": args.dtype},
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": args.threads,
            "processor": platform.processor() or platform.machine(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "allocator": allocator,
            "cpu_backend": cpu_backend.installed(ours),
        },
        "repeats": repeats,
        "timings": {},
    }
    for kind, batch in measurements:
        make = {"train": train_step_fn, "sample": sample_step_fn, "sample_plain": sample_step_fn, "optimizer": optimizer_step_fn}[kind]
        with cpu_backend.sampling(ours) if kind == "sample" and device.type == "cpu" else contextlib.nullcontext():
            times = alternate({"peer": make(peer, batch, setup), "ours": make(ours, batch, setup)}, repeats, setup)
        if kind == "optimizer":
            for m in (peer, ours):
                m.zero_grad(set_to_none=True)
        entry = {"runs": times}
        for clock in ("wall", "cpu"):
            med = {name: statistics.median(v[clock]) for name, v in times.items()}
            entry[clock] = {"peer_s": med["peer"], "ours_s": med["ours"], "ratio": med["ours"] / med["peer"],
                            "paired_ratio": paired_ratio(times["ours"][clock], times["peer"][clock])}  # fmt: skip
        entry["minor_faults"] = {name: statistics.median(v["faults"]) for name, v in times.items()}
        key = f"{kind}_b{batch}" if batch else kind
        if kind in ("train", "sample"):
            gflop = {name: counted_gflop(m, kind, batch, setup) for name, m in (("peer", peer), ("ours", ours))}
            entry["gflop"] = gflop
            entry["gflops_achieved"] = {name: gflop[name] / entry["wall"][f"{name}_s"] for name in gflop}
        results["timings"][key] = entry
        w, c = entry["wall"], entry["cpu"]
        print(
            f"{key:10s} wall: peer {w['peer_s']:7.3f} s  ours {w['ours_s']:7.3f} s  ours/peer {w['ratio']:.2f} (paired {w['paired_ratio']:.2f})   "
            f"cpu: peer {c['peer_s']:7.3f} s  ours {c['ours_s']:7.3f} s  ours/peer {c['ratio']:.2f} (paired {c['paired_ratio']:.2f})   "
            f"page faults: peer {entry['minor_faults']['peer']:.0f}  ours {entry['minor_faults']['ours']:.0f}",
            flush=True,
        )
        if "gflop" in entry:
            g, r = entry["gflop"], entry["gflops_achieved"]
            print(
                f"{'':10s} work: peer {g['peer']:.1f} GFLOP ({r['peer']:.0f} GFLOP/s)  ours {g['ours']:.1f} GFLOP ({r['ours']:.0f} GFLOP/s)"
            )
    if not args.no_memory:
        if device.type == "cuda":
            mem = {"peer": peak_cuda_memory(peer, 2, setup), "ours": peak_cuda_memory(ours, 2, setup)}
        else:
            mem = {which: peak_memory(which, 2, args.threads, setup) for which in ("peer", "ours")}
        ratio = mem["ours"]["peak_above_imports_mb"] / mem["peer"]["peak_above_imports_mb"]
        results["memory_train_b2"] = {**mem, "ratio": ratio}
        print(
            f"memory     peer {mem['peer']['peak_above_imports_mb']:7.0f} MB  ours {mem['ours']['peak_above_imports_mb']:7.0f} MB  "
            f"ours/peer {ratio:.2f}  (peak {'allocated' if device.type == 'cuda' else 'RSS'} "
            f"{mem['peer']['peak_rss_mb']:.0f} / {mem['ours']['peak_rss_mb']:.0f} MB)"
        )
    out = args.out or Path(__file__).parent / "results" / f"unet3d_vs_vdp{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
