"""Validate the adherence judge on rendered shapes videos with known ground truth.

``python -m text2video.eval.validate [--n 96] [--sizes 16,24,32,64] [--frames 8,16] [--json]`` renders
``n`` items per (size, frames, background, edge style, degradation) cell, judges them with their true
caption, with one attribute of the caption changed, with a shuffled caption, and judges noise and blank
videos; it prints per-attribute agreement and false-success rates (the figures in docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage

from text2video.data.vocab import COLOURS, DIRECTIONS, SHAPES, all_factors, make_caption
from text2video.eval.adherence import ATTRIBUTES, judge_video

log = logging.getLogger(__name__)

Degrade = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _blur_noise(sigma: float, noise: float) -> Degrade:
    def apply(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = frames.astype(np.float32)
        if sigma:
            x = ndimage.gaussian_filter(x, (0, sigma, sigma, 0))
        if noise:
            x = x + rng.normal(0, noise, x.shape)
        return np.clip(x + 0.5, 0, 255).astype(np.uint8)

    return apply


#: name -> degradation applied to ground-truth frames (a stand-in for a generative model's softness).
DEGRADATIONS: dict[str, Degrade] = {
    "clean": lambda f, rng: f,
    "blur0.6+noise4": _blur_noise(0.6, 4.0),
    "blur1.0+noise8": _blur_noise(1.0, 8.0),  # harsher; not in the default run
}
DEFAULT_DEGRADATIONS: tuple[str, ...] = ("clean", "blur0.6+noise4")


def _wrong_caption(factors: dict[str, str], attr: str, rng: np.random.Generator) -> str:
    pool = {"colour": list(COLOURS), "shape": list(SHAPES), "direction": list(DIRECTIONS)}[attr]
    wrong = dict(factors, **{attr: str(rng.choice([v for v in pool if v != factors[attr]]))})
    return make_caption(wrong["colour"], wrong["shape"], wrong["direction"])


def validate(
    n: int = 96,
    sizes: Sequence[int] = (16, 24, 32, 64),
    frames: Sequence[int] = (8, 16),
    backgrounds: Sequence[str] = ("black", "gray", "noise"),
    degradations: Sequence[str] = DEFAULT_DEGRADATIONS,
    seed: int = 0,
) -> dict[str, Any]:
    """Agreement with the ground truth and false-success rates of the judge (see the module docstring)."""
    from text2video.data.synthetic import ShapesDataset

    unknown = [d for d in degradations if d not in DEGRADATIONS]
    if unknown:
        raise ValueError(f"unknown degradation(s) {unknown}; choose from: {', '.join(DEGRADATIONS)}")
    rng = np.random.default_rng(seed)
    truth: dict[str, list[float]] = defaultdict(list)
    wrong: dict[str, list[float]] = defaultdict(list)
    shuffled: dict[str, list[float]] = defaultdict(list)
    cells: dict[str, dict[str, float]] = {}
    for size in sizes:
        for num_frames in frames:
            for background in backgrounds:
                for antialias in (True, False):
                    for name in degradations:
                        ds = ShapesDataset(
                            n=n,
                            num_frames=num_frames,
                            size=size,
                            background=background,
                            split="all",
                            antialias=antialias,
                            seed=seed * 1000 + size * 10 + num_frames,
                        )
                        samples = [ds.render(i) for i in range(n)]
                        videos = [DEGRADATIONS[name](s.frames, rng) for s in samples]
                        cell: dict[str, list[float]] = defaultdict(list)
                        others = rng.permutation(n)
                        for k, (s, video) in enumerate(zip(samples, videos)):
                            v = judge_video(video, s.text)
                            for a in ATTRIBUTES:
                                truth[a].append(getattr(v, f"{a}_ok"))
                                cell[a].append(getattr(v, f"{a}_ok"))
                            truth["all_three"].append(v.all_ok)
                            attr = ATTRIBUTES[k % 3]
                            w = judge_video(video, _wrong_caption(s.factors, attr, rng))
                            wrong[attr].append(getattr(w, f"{attr}_ok"))
                            wrong["all_three"].append(w.all_ok)
                            other = samples[others[k]]
                            sh = judge_video(video, other.text)
                            shuffled["all_three"].append(sh.all_ok)
                            shuffled["chance"].append(all(other.factors[a] == s.factors[a] for a in ATTRIBUTES))
                        key = f"{size}px/{num_frames}f/{background}/{'aa' if antialias else 'hard'}/{name}"
                        cells[key] = {a: float(np.mean(cell[a])) for a in ATTRIBUTES}
    negatives = _negatives(rng, sizes)
    return {
        "items": len(truth["all_three"]),
        "agreement": {k: float(np.mean(v)) for k, v in truth.items()},
        "wrong_attribute_success": {k: float(np.mean(v)) for k, v in wrong.items()},
        "shuffled_caption_success": float(np.mean(shuffled["all_three"])),
        "shuffled_caption_chance": float(np.mean(shuffled["chance"])),
        "negatives": negatives,
        "worst_cells": dict(sorted(cells.items(), key=lambda kv: min(kv[1].values()))[:5]),
    }


def _negatives(rng: np.random.Generator, sizes: Sequence[int], per_kind: int = 24) -> dict[str, dict[str, float]]:
    kinds: dict[str, Callable[[int], np.ndarray]] = {
        "uniform noise": lambda s: rng.integers(0, 256, (8, s, s, 3), dtype=np.uint8),
        "gaussian noise": lambda s: np.clip(rng.normal(128, 40, (8, s, s, 3)), 0, 255).astype(np.uint8),
        "smooth noise": lambda s: np.clip(
            128 + 400 * ndimage.gaussian_filter(rng.normal(0, 1, (8, s, s, 3)), (0, s / 8, s / 8, 0)), 0, 255
        ).astype(np.uint8),
        "blank": lambda s: np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (8, s, s, 3)).copy(),
    }
    combos = all_factors()
    out = {}
    for kind, make in kinds.items():
        verdicts = [judge_video(make(s), combos[int(rng.integers(len(combos)))].caption()) for s in sizes for _ in range(per_kind)]
        out[kind] = {
            "n": len(verdicts),
            "abstained": float(np.mean([v.abstained for v in verdicts])),
            **{a: float(np.mean([getattr(v, f"{a}_ok") for v in verdicts])) for a in ATTRIBUTES},
            "all_three": float(np.mean([v.all_ok for v in verdicts])),
        }
    return out


def fallback_sensitivity(n: int = 64, size: int = 32, num_frames: int = 8, seed: int = 1) -> dict[str, dict[str, float]]:
    """FVD and per-frame FID (fallback features) of rendered shapes (seed ``seed``) against: another
    rendered set (the sampling floor), a gray background, 1 px blur, a frozen first frame, shuffled
    frames and uniform noise."""
    import torch

    from text2video.data.synthetic import ShapesDataset
    from text2video.eval.metrics import fid_frames, fvd

    def render(s: int, **kw: Any) -> torch.Tensor:
        ds = ShapesDataset(n=n, num_frames=num_frames, size=size, seed=s, split="all", **kw)
        return torch.stack([ds[i]["video"] for i in range(n)])

    real, other = render(seed), render(seed + 1)
    gen = torch.Generator().manual_seed(seed)
    variants = {
        "another rendered set": other,
        "gray background": render(seed + 1, background="gray"),
        "blur 1 px": torch.from_numpy(ndimage.gaussian_filter(other.numpy(), (0, 0, 0, 1.0, 1.0))).float(),
        "frozen first frame": other[:, :, :1].expand(-1, -1, num_frames, -1, -1).contiguous(),
        "shuffled frames": other[:, :, torch.randperm(num_frames, generator=gen)],
        "uniform noise": torch.rand(other.shape, generator=gen) * 2 - 1,
    }
    return {name: {"FVD": fvd(real, x)[0], "FID": fid_frames(real, x)[0]} for name, x in variants.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m text2video.eval.validate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=96, help="items per cell (default 96)")
    parser.add_argument("--sizes", default="16,24,32,64")
    parser.add_argument("--frames", default="8,16")
    parser.add_argument("--backgrounds", default="black,gray,noise")
    parser.add_argument("--degradations", default=",".join(DEFAULT_DEGRADATIONS), help=f"of: {', '.join(DEGRADATIONS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fallback-fvd", action="store_true", help="instead: how the fallback FVD/FID react to known degradations")
    args = parser.parse_args(argv)
    if args.fallback_fvd:
        print(json.dumps(fallback_sensitivity(), indent=2))
        return 0
    result = validate(
        args.n,
        [int(s) for s in args.sizes.split(",")],
        [int(f) for f in args.frames.split(",")],
        args.backgrounds.split(","),
        args.degradations.split(","),
        args.seed,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
