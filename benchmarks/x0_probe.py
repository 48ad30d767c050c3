"""The one-step x0 probe: how well a trained run recovers clean clips from one noisy step, per timestep.

Clips of the run's data kind the run never saw (another seed) are noised to timestep t and the model predicts
their clean clip once: with the true caption, with the colour word changed and with no caption. The mean
squared x0 error per t (in the model's space: latents for a latent run) sits next to the error of predicting
the mean clip (``mean_clip``: what a model that ignores its input reaches). Sampling starts at the noisiest
step and decides the layout there, so a model whose error at t=950-999 is above ``mean_clip`` samples noise
however good it is at t=100-700. The gap between ``other_colour`` and ``true`` shows whether the caption
reaches the model (0 when it does not).

    python benchmarks/x0_probe.py RUN [RUN ...] --out benchmarks/results/x0_probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

PROBE_TIMESTEPS = (999, 950, 900, 700, 500, 100)


def recolour(caption: str) -> str:
    """``a red circle moving right`` -> ``a green circle moving right`` (red for a green one)."""
    words = caption.split()
    words[1] = "green" if words[1] != "green" else "red"
    return " ".join(words)


def x0_probe(run_dir: Path, threads: int = 1, clips: int = 48, timesteps: tuple[int, ...] = PROBE_TIMESTEPS) -> dict[str, Any]:
    """Mean squared x0 errors of the run at ``run_dir`` per timestep and caption (see the module docstring)."""
    import torch

    from text2video.config import load_config
    from text2video.data import make_dataset
    from text2video.diffusion.denoise import denoise
    from text2video.pipelines import load_pipeline

    torch.set_num_threads(threads)
    pipe = load_pipeline(run_dir)
    d = load_config(Path(run_dir) / "config.yaml").data
    data = make_dataset(d.kind, num_frames=d.num_frames, size=d.size, split="all", **{**d.options, "seed": 123, "n": clips})
    x0 = torch.stack([data[i]["video"] for i in range(clips)])
    if pipe.vae is not None:
        with torch.no_grad():
            x0 = pipe.vae.encode(x0, posterior="mode")
    captions = [data[i]["text"] for i in range(clips)]
    true = pipe.encode_prompts(captions)
    conds = {"true": true, "other_colour": pipe.encode_prompts([recolour(c) for c in captions]), "none": true.text_dropped()}
    objective = pipe.objective
    gen = torch.Generator().manual_seed(0)
    out: dict[str, Any] = {"mean_clip": round(float((x0 - x0.mean(0, keepdim=True)).pow(2).mean()), 5)}
    with torch.no_grad():
        for t in timesteps:
            tt = torch.full((clips,), t)
            x_t = objective.q_sample(x0, tt, torch.randn(x0.shape, generator=gen))
            out[str(t)] = {
                name: round(float((objective.predict_x0(x_t, tt, denoise(pipe.model, x_t, tt, cond)) - x0).pow(2).mean()), 5)
                for name, cond in conds.items()
            }
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (text2video train --run-dir)")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: print)")
    args = parser.parse_args(argv)
    result = {str(run): x0_probe(run, args.threads, args.clips) for run in args.runs}
    text = json.dumps(result, indent=2) + "\n"
    if args.out is None:
        print(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
