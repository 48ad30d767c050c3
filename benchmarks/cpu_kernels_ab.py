"""What the fused CPU kernels (text2video.backends.cpu.kernels) give a Unet3D training step, measured in one process.

The step (forward, MSE loss, backward, optimizer step; the same step as ``unet3d_vs_vdp.py``) runs in
rounds; within each round every configuration runs once, in turn, so that the machine's drift hits all
alike: all kernels on, all off, and each kernel family left out alone. Prints the fastest and median
time of each. Which kernels a call uses is switched by pointing the calling module at a stand-in
that reports the kernels unavailable (the callers then take their PyTorch path, as without a compiler).
With ``--against FILE.c`` another version of the kernel source (e.g. an earlier commit's) is built with
the same flags and runs as one more configuration, all its kernels on; the script also prints the median
over rounds of the step-by-step ratio to it.

Run:  python benchmarks/cpu_kernels_ab.py [--batch 2] [--rounds 12] [--threads 2]
      python benchmarks/cpu_kernels_ab.py --tiny     # the tiny-cpu preset's model at batch 8, 6 x 16 x 16
      git show REV:text2video/backends/cpu/csrc/cpu_kernels.c > /tmp/old_kernels.c
      python benchmarks/cpu_kernels_ab.py --against /tmp/old_kernels.c
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from unet3d_vs_vdp import build, paired_ratio, steady_allocator, train_step_fn  # noqa: E402

from text2video.backends import cpu as cpu_backend  # noqa: E402
from text2video.backends.cpu import fused_norm, short_attention, small_map_conv, winograd_conv  # noqa: E402
from text2video.backends.cpu import kernels as cpu_kernels  # noqa: E402

CALLERS = {"attention": short_attention, "norm": fused_norm, "conv": small_map_conv, "winograd": winograd_conv}
UNAVAILABLE = types.SimpleNamespace(usable=lambda *tensors: None, threads=cpu_kernels.threads, ptr=cpu_kernels.ptr)


def use_kernels(families: set[str], library=None) -> None:
    """Let only these kernel families run (from ``library``, a loaded kernel build, if given; else the
    package's); the other callers take their PyTorch path."""
    chosen = cpu_kernels
    if library is not None:
        chosen = types.SimpleNamespace(
            usable=lambda *tensors: library if cpu_kernels.usable(*tensors) is not None else None,
            threads=cpu_kernels.threads,
            ptr=cpu_kernels.ptr,
        )
    for name, module in CALLERS.items():
        module.cpu_kernels = chosen if name in families else UNAVAILABLE


def tiny_step(batch: int = 8):
    """A training step of the tiny-cpu preset's Unet3D (batch ``batch``, 6 x 16 x 16, a 384-d condition)."""
    from text2video.models.unet3d import Unet3D

    torch.manual_seed(0)
    model = Unet3D(dim=24, dim_mults=(1, 2), attn_heads=2, attn_dim_head=16, init_kernel_size=3, cond_dim=384,
                   frame_pos_emb=True, cond_norm=True, frame_cond=True, coord_channels=True)  # fmt: skip
    cpu_backend.install(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, t, cond = torch.randn(batch, 3, 6, 16, 16), torch.randint(0, 1000, (batch,)), torch.randn(batch, 384)

    def step() -> None:
        model(x, t, cond=cond).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 2; 8 with --tiny)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="the tiny-cpu preset's model instead of text2video-from-scratch's")
    parser.add_argument("--against", type=Path, default=None, help="another version of backends/cpu/csrc/cpu_kernels.c to compare with")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steady_allocator()  # as unet3d_vs_vdp.py: glibc keeps freed memory, as a training process does after a few steps
    if cpu_kernels.load() is None:
        print("the fused CPU kernels are unavailable here (see the log); nothing to compare")
        return 1
    if args.tiny:
        step = tiny_step(args.batch or 8)
    else:
        step = train_step_fn(build("ours"), args.batch or 2)
    every = set(CALLERS)
    configs = {"all kernels": (every, None), "no kernels": (set(), None)}
    configs.update({f"without {name}": (every - {name}, None) for name in CALLERS})
    if args.against is not None:
        with tempfile.TemporaryDirectory() as folder:  # the loaded library stays mapped after its file goes
            configs[f"other: {args.against.name}"] = (every, cpu_kernels.load_other(args.against, Path(folder)))
    for families, library in configs.values():  # warm-up (builds the library, first-call allocations)
        use_kernels(families, library)
        step()
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, (families, library) in configs.items():
            use_kernels(families, library)
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    use_kernels(every)
    base = statistics.median(times["no kernels"])
    print(f"{'tiny-cpu model' if args.tiny else 'text2video-from-scratch config'}, batch {args.batch or (8 if args.tiny else 2)}, "
          f"{args.threads} threads, {args.rounds} rounds")  # fmt: skip
    for name, values in times.items():
        median = statistics.median(values)
        paired = paired_ratio(values, times["all kernels"])
        print(f"{name:20s} fastest {min(values):.3f} s  median {median:.3f} s  median / no kernels {median / base:.2f}"
              f"  paired / all kernels {paired:.3f}")  # fmt: skip
    if args.against is not None:
        ratio = paired_ratio(times["all kernels"], times[f"other: {args.against.name}"])
        print(f"all kernels / {args.against.name}: median of the rounds' ratios {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
