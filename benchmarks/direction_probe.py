"""How well a trained shapes model follows the caption's direction, and whether it uses the caption's sign.

Three measurements on an exported pipeline (``text2video export RUN --out PIPE``) of a run on the
synthetic shapes (the demo's ``tiny-cpu`` data by default):

* adherence: the judge's scores on ``--seen`` seen and all held-out demo prompts at each guidance
  scale of ``--guidance`` (video i of a batch seeded 1000 + i, as in the demo);
* flip test: training clips noised to step t, the clean clip predicted with the true caption, with the
  direction flipped (left <-> right, up <-> down) and with no caption; mean squared x0 errors per t;
* the same errors for the best caption-only predictors: the mean training clip per caption, per
  (colour, direction) and per colour, and the overall mean (what a model ignoring the input would
  reach at pure noise). Means come from items 0..2499, errors from items 3000..3399.

Run:  python benchmarks/direction_probe.py PIPE [--seen 48] [--guidance 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import collections
import sys
from typing import Any, Callable

import torch

FLIP = {"left": "right", "right": "left", "up": "down", "down": "up"}
DATA = dict(kind="shapes", num_frames=6, size=16, split="seen", n=4096, seed=0, speed=[4.0, 5.0], shape_size=[0.25, 0.3])


def flipped(caption: str) -> str:
    words = caption.split()
    return " ".join(words[:-1] + [FLIP[words[-1]]])


def adherence(pipe: Any, seen: int, guidance: float) -> dict[str, dict[str, Any]]:
    from text2video.commands.demo import demo_prompts
    from text2video.eval.adherence import judge_batch
    from text2video.io.video import tensor_to_frames

    seen_prompts, held_prompts = demo_prompts(seen, 12)
    scores = {}
    for split, prompts in (("seen", seen_prompts), ("held_out", held_prompts)):
        videos = torch.cat([
            pipe(prompts[i : i + 12], guidance_scale=guidance, seed=1000 + i, progress=False).videos
            for i in range(0, len(prompts), 12)
        ])  # fmt: skip
        summary, _ = judge_batch(list(tensor_to_frames(videos)), prompts)
        scores[split] = summary[split]
    return scores


def flip_test(pipe: Any, items: list[dict[str, Any]], timesteps: list[int]) -> dict[int, dict[str, float]]:
    from text2video.diffusion.denoise import denoise

    x0 = torch.stack([it["video"] for it in items])
    captions = [it["text"] for it in items]
    variants = {"true": captions, "flipped": [flipped(c) for c in captions], "none": [""] * len(captions)}
    conds = {name: pipe.encode_prompts(texts) for name, texts in variants.items()}
    gen = torch.Generator().manual_seed(0)
    out = {}
    for t in timesteps:
        tt = torch.full((len(items),), t)
        x_t = pipe.objective.q_sample(x0, tt, torch.randn(x0.shape, generator=gen))
        with torch.no_grad():
            out[t] = {
                name: float((pipe.objective.predict_x0(x_t, tt, denoise(pipe.model, x_t, tt, cond)) - x0).pow(2).mean())
                for name, cond in conds.items()
            }
    return out


def mean_predictor_errors(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> dict[str, float]:
    x_train = torch.stack([it["video"] for it in train])
    x_test = torch.stack([it["video"] for it in test])
    keys: dict[str, Callable[[dict[str, Any]], Any]] = {
        "caption": lambda it: it["text"],
        "colour+direction": lambda it: (it["factors"]["colour"], it["factors"]["direction"]),
        "colour": lambda it: it["factors"]["colour"],
        "nothing": lambda it: 0,
    }
    errors = {}
    for name, key in keys.items():
        groups = collections.defaultdict(list)
        for i, it in enumerate(train):
            groups[key(it)].append(i)
        means = {k: x_train[idx].mean(0) for k, idx in groups.items()}
        prediction = torch.stack([means[key(it)] for it in test])
        errors[name] = float((prediction - x_test).pow(2).mean())
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pipeline", help="an exported pipeline folder of a shapes run")
    parser.add_argument("--seen", type=int, default=48, help="seen prompts to judge (default 48)")
    parser.add_argument("--guidance", type=float, nargs="+", default=[3.0], help="guidance scales (default 3)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from text2video.data import make_dataset
    from text2video.pipelines import load_pipeline

    pipe = load_pipeline(args.pipeline)
    for g in args.guidance:
        scores = adherence(pipe, args.seen, g)
        for split, s in scores.items():
            print(f"guidance {g:g} {split:8s} n={s['n']:3d} colour {s['colour']:.0%} shape {s['shape']:.0%} "
                  f"direction {s['direction']:.0%} all three {s['all_three']:.0%}")  # fmt: skip
    data = make_dataset(**DATA)
    test = [data[i] for i in range(3000, 3400)]
    for t, errors in flip_test(pipe, test[:96], [999, 950, 900, 800, 700, 500, 300]).items():
        print(f"t={t:3d}  x0 error: true caption {errors['true']:.4f}  flipped {errors['flipped']:.4f}  no caption {errors['none']:.4f}")
    best = mean_predictor_errors([data[i] for i in range(2500)], test)
    print("pure noise, best predictor from: " + ", ".join(f"{k} {v:.4f}" for k, v in best.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
