"""Where a Unet3D training step's time goes, part by part: ours beside video-diffusion-pytorch 0.7.0's.

text2video-from-scratch's configuration (the one ``unet3d_vs_vdp.py`` uses), both models with the same weights. One forward
pass of each model records the input every part receives (ResNet blocks, spatial and temporal attention,
resampling convolutions, the first and last layers, the time embedding); each part is then run alone,
forward and backward (a fixed random output gradient, parameter gradients cleared before each call), our
part and the peer's in turn, ``--repeats`` rounds per part. Per part it prints both medians, the median of
the round-by-round ratios (ours / peer), the floating-point work (``torch.utils.flop_counter``, convolutions
counted by the direct method) and the rate; then the sums per kind of part.

What a part covers differs in one small way: the peer's attention parts are ``Residual`` wrappers that add
their input to the output; ours are called by the level, which does that add itself (one elementwise add).
Outside the parts (and so not in these sums): the loss, the optimizer, the skip concatenations of the up
path and the condition embedding. A part run alone starts with its input in cache more often than inside
the whole step, so the sums come out below a whole step; the comparison between the two models is the point.

Run:  python benchmarks/unet3d_parts.py [--repeats 7] [--threads 2] [--batch 2] [--out FILE]
Writes benchmarks/results/unet3d_parts.json by default.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from unet3d_vs_vdp import CONFIG, FRAMES, SIZE, Setup, build, inputs, paired_ratio, steady_allocator  # noqa: E402


def part_pairs(levels: int) -> list[tuple[str, str, str]]:
    """``(kind, our module name, the peer's module name)`` for every part of a U-Net with ``levels`` levels."""
    pairs = [
        ("first layers", "init_conv", "init_conv"),
        ("temporal attention", "init_temporal_attn", "init_temporal_attn"),
        ("time embedding", "time_mlp", "time_mlp"),
    ]
    for side in ("downs", "ups"):
        for i in range(levels):
            ours, peer = f"{side}.{i}", f"{side}.{i}"
            pairs += [
                ("resnet blocks", f"{ours}.res1", f"{peer}.0"),
                ("resnet blocks", f"{ours}.res2", f"{peer}.1"),
                ("spatial attention", f"{ours}.spatial_attn", f"{peer}.2"),
                ("temporal attention", f"{ours}.temporal_attn", f"{peer}.3"),
                ("resampling", f"{ours}.sample", f"{peer}.4"),
            ]
        if side == "downs":
            pairs += [
                ("resnet blocks", "mid.res1", "mid_block1"),
                ("spatial attention", "mid.spatial_attn", "mid_spatial_attn"),
                ("temporal attention", "mid.temporal_attn", "mid_temporal_attn"),
                ("resnet blocks", "mid.res2", "mid_block2"),
            ]
    pairs += [("resnet blocks", "final_block", "final_conv.0"), ("first layers", "final_conv", "final_conv.1")]
    return pairs


def _is_part(module: Any) -> bool:
    return isinstance(module, torch.nn.Module) and not isinstance(module, torch.nn.Identity)


def present_pairs(ours: torch.nn.Module, peer: torch.nn.Module) -> list[tuple[str, str, str]]:
    """The pairs both models have (the outermost levels have no resampling; the peer puts an Identity there)."""
    ours_modules, peer_modules = dict(ours.named_modules()), dict(peer.named_modules())
    pairs = part_pairs(len(ours.downs))
    return [p for p in pairs if _is_part(ours_modules.get(p[1])) and _is_part(peer_modules.get(p[2]))]


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    return value


def capture_inputs(model: torch.nn.Module, names: list[str], batch: int, setup: Setup) -> dict[str, tuple[tuple, dict]]:
    """The ``(args, kwargs)`` each named submodule receives in one forward pass of ``model`` (copies)."""
    modules = dict(model.named_modules())
    seen: dict[str, tuple[tuple, dict]] = {}

    def recorder(name: str) -> Callable:
        def hook(_module, args, kwargs) -> None:
            seen.setdefault(name, (_detached(args), _detached(kwargs)))

        return hook

    handles = [modules[name].register_forward_pre_hook(recorder(name), with_kwargs=True) for name in names]
    try:
        x, t, cond = inputs(batch, setup=setup)
        with torch.no_grad():
            model(x, t, cond=cond)
    finally:
        for handle in handles:
            handle.remove()
    missing = sorted(set(names) - set(seen))
    if missing:
        raise RuntimeError(f"these parts were never called in a forward pass: {missing}")
    return seen


def _with_grad(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().clone().requires_grad_(True)
    return value


def part_step(module: torch.nn.Module, args: tuple, kwargs: dict) -> Callable[[], None]:
    """Forward and backward of ``module`` alone on its recorded input, gradients cleared before each call."""
    args = tuple(_with_grad(a) for a in args)
    kwargs = {k: _with_grad(v) for k, v in kwargs.items()}
    leaves = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.requires_grad]
    params = [p for p in module.parameters() if p.requires_grad]
    grad: list[torch.Tensor] = []
    module.train()

    def step() -> None:
        for tensor in (*params, *leaves):
            tensor.grad = None
        out = module(*args, **kwargs)
        if not grad:
            g = torch.Generator().manual_seed(0)
            grad.append(torch.randn(out.shape, generator=g, dtype=out.dtype).to(out.device))
        out.backward(grad[0])

    return step


def counted_gflop(step: Callable[[], None]) -> float:
    """The step's work in GFLOP, every convolution counted by the direct method (as unet3d_vs_vdp.counted_gflop)."""
    from torch.utils.flop_counter import FlopCounterMode

    from text2video.backends.cpu import winograd_conv

    counter = FlopCounterMode(display=False)
    with counter, winograd_conv.disabled():
        step()
    return counter.get_total_flops() / 1e9


def measure(ours: torch.nn.Module, peer: torch.nn.Module, batch: int, repeats: int, setup: Setup) -> list[dict]:
    """One row per part present in both models: medians (ms), ratio (median of per-round ratios), GFLOP."""
    pairs = present_pairs(ours, peer)
    ours_inputs = capture_inputs(ours, [p[1] for p in pairs], batch, setup)
    peer_inputs = capture_inputs(peer, [p[2] for p in pairs], batch, setup)
    ours_modules, peer_modules = dict(ours.named_modules()), dict(peer.named_modules())
    rows = []
    for kind, ours_name, peer_name in pairs:
        steps = {
            "ours": part_step(ours_modules[ours_name], *ours_inputs[ours_name]),
            "peer": part_step(peer_modules[peer_name], *peer_inputs[peer_name]),
        }
        gflop = {who: counted_gflop(step) for who, step in steps.items()}
        times: dict[str, list[float]] = {"ours": [], "peer": []}
        for _ in range(repeats):
            for who, step in steps.items():
                setup.sync()
                start = time.perf_counter()
                step()
                setup.sync()
                times[who].append(time.perf_counter() - start)
        ms = {who: 1e3 * statistics.median(values) for who, values in times.items()}
        ratio = paired_ratio(times["ours"], times["peer"])
        rows.append(dict(kind=kind, ours=ours_name, peer=peer_name, ours_ms=ms["ours"], peer_ms=ms["peer"], ratio=ratio,
                         gflop_ours=gflop["ours"], gflop_peer=gflop["peer"]))  # fmt: skip
    return rows


def by_kind(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Sums of the medians per kind of part, and over all parts (``total``)."""
    sums: dict[str, dict[str, float]] = {}
    for row in rows:
        for key in (row["kind"], "total"):
            entry = sums.setdefault(key, {"ours_ms": 0.0, "peer_ms": 0.0, "gflop": 0.0})
            entry["ours_ms"] += row["ours_ms"]
            entry["peer_ms"] += row["peer_ms"]
            entry["gflop"] += row["gflop_peer"]
    for entry in sums.values():
        entry["ratio"] = entry["ours_ms"] / entry["peer_ms"]
        entry["share_of_peer"] = entry["peer_ms"] / sums["total"]["peer_ms"]
    return sums


def report(rows: list[dict], kinds: dict[str, dict[str, float]]) -> str:
    lines = [f"{'part (ours | peer)':44s} {'ours ms':>8s} {'peer ms':>8s} {'ratio':>6s} {'GFLOP':>6s} {'ours GF/s':>9s} {'peer GF/s':>9s}"]
    for r in rows:
        rate = {who: r[f"gflop_{who}"] / r[f"{who}_ms"] * 1e3 for who in ("ours", "peer")}
        lines.append(f"{r['ours'] + ' | ' + r['peer']:44s} {r['ours_ms']:8.1f} {r['peer_ms']:8.1f} {r['ratio']:6.2f} "
                     f"{r['gflop_peer']:6.2f} {rate['ours']:9.0f} {rate['peer']:9.0f}")  # fmt: skip
    lines.append("")
    lines.append(f"{'kind':44s} {'ours ms':>8s} {'peer ms':>8s} {'ratio':>6s} {'GFLOP':>6s} {'share of peer':>13s}")
    for kind, e in sorted(kinds.items(), key=lambda item: (item[0] == "total", -item[1]["peer_ms"])):
        lines.append(f"{kind:44s} {e['ours_ms']:8.1f} {e['peer_ms']:8.1f} {e['ratio']:6.2f} {e['gflop']:6.2f} {e['share_of_peer']:13.0%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--allocator", choices=("steady", "default"), default="steady",
                        help="steady: glibc keeps freed memory (as in unet3d_vs_vdp.py); default: glibc as it is")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "unet3d_parts.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steady = args.allocator == "steady" and steady_allocator()
    setup = Setup(frames=args.frames, size=args.size)
    torch.manual_seed(0)
    peer = build("peer")
    ours = build("ours", peer.state_dict())
    rows = measure(ours, peer, args.batch, args.repeats, setup)
    kinds = by_kind(rows)
    print(report(rows, kinds))
    result = {
        "config": {**CONFIG, "dim_mults": list(CONFIG["dim_mults"]), "frames": args.frames, "size": args.size, "batch": args.batch},
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "allocator": "steady" if steady else "default",
            "repeats": args.repeats,
        },  # fmt: skip
        "parts": rows,
        "kinds": kinds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
