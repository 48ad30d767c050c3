"""Evaluation reports: ``eval.json`` (everything), ``eval.md`` (readable, with the protocol), an
adherence bar chart (seen vs held-out per attribute) and a sample grid, plus a short text table."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from text2video.eval.adherence import ATTRIBUTES

log = logging.getLogger(__name__)

_COLUMNS: tuple[str, ...] = (*ATTRIBUTES, "all_three", "consistency", "abstained")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.3f}"
    return "-" if value is None else str(value)


def format_table(result: dict[str, Any]) -> str:
    """A short fixed-width table: adherence per split, then the distribution metrics."""
    lines = []
    adherence = result.get("adherence")
    if adherence:
        header = f"{'split':<9} {'n':>5} " + " ".join(f"{c:>11}" for c in _COLUMNS)
        lines += [header, "-" * len(header)]
        for split in ("seen", "held_out", "all"):
            row = adherence.get(split, {})
            if row.get("n"):
                lines.append(f"{split:<9} {row['n']:>5} " + " ".join(f"{_fmt(row.get(c)):>11}" for c in _COLUMNS))
    for name, entry in result.get("distribution", {}).items():
        note = "" if entry["protocol"]["comparable_with_published"] else "  (fallback features: not comparable with published numbers)"
        lines.append(f"{name}: {_fmt(entry['value'])}{note}")
    if "clip_similarity" in result:
        lines.append(f"CLIP similarity: {_fmt(result['clip_similarity']['mean'])}")
    return "\n".join(lines)


def plot_adherence(adherence: dict[str, Any], path: Path) -> Path | None:
    """Bars per attribute (and all three), seen vs held-out. None when there is nothing to plot."""
    splits = [s for s in ("seen", "held_out") if adherence.get(s, {}).get("n")]
    if not splits:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    metrics = (*ATTRIBUTES, "all_three")
    width = 0.8 / len(splits)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    try:
        for k, split in enumerate(splits):
            values = [adherence[split][m] for m in metrics]
            xs = [i + (k - (len(splits) - 1) / 2) * width for i in range(len(metrics))]
            ax.bar(xs, values, width, label=f"{split.replace('_', '-')} (n={adherence[split]['n']})")
        ax.set_xticks(range(len(metrics)), [m.replace("_", " ") for m in metrics])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy (judge)")
        ax.set_title("Prompt adherence on the shapes grammar")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def _markdown(result: dict[str, Any], figures: dict[str, str]) -> str:
    out = ["# text2video evaluation", ""]
    source = result.get("source", {})
    out += [f"- {k}: `{v}`" for k, v in source.items()]
    out.append("")
    adherence = result.get("adherence")
    if adherence:
        out += [
            "## Prompt adherence (shapes judge)",
            "",
            "| split | n | " + " | ".join(_COLUMNS) + " |",
            "|---" * (len(_COLUMNS) + 2) + "|",
        ]
        for split in ("seen", "held_out", "all"):
            row = adherence.get(split, {})
            if row.get("n"):
                out.append(f"| {split} | {row['n']} | " + " | ".join(_fmt(row.get(c)) for c in _COLUMNS) + " |")
        extra = {k: adherence[k] for k in ("outside_grammar", "unreadable") if adherence.get(k)}
        if extra:
            out += ["", ", ".join(f"{k}: {v}" for k, v in extra.items())]
        out += [
            "",
            "Held-out combinations (never seen in training) test compositional generalisation. "
            "The judge abstains (every attribute fails) when a video has no single clear object; see "
            "docs/evaluation.md for its validation.",
            "",
        ]
        if "adherence" in figures:
            out += [f"![adherence]({figures['adherence']})", ""]
    distribution = result.get("distribution", {})
    if distribution:
        out += [
            "## Distribution metrics",
            "",
            "| metric | value | videos (real / generated) | frames | resolution | seed | features |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, entry in distribution.items():
            p = entry["protocol"]
            feats = p["extractor"] + ("" if p["comparable_with_published"] else " — fallback, **not comparable with published numbers**")
            out.append(
                f"| {name} | {_fmt(entry['value'])} | {p['num_real']} / {p['num_fake']} | {p['num_frames']} | "
                f"{p['resolution'][0]}x{p['resolution'][1]} | {p['seed']} | {feats} |"
            )
        out.append("")
    if "clip_similarity" in result:
        c = result["clip_similarity"]
        out += [
            "## CLIP similarity",
            "",
            f"mean cosine similarity {_fmt(c['mean'])} over {c['n']} videos ({c['frames_per_video']} frames each), model `{c['model']}`",
            "",
        ]
    if "protocol" in result:
        out += ["## Protocol", ""] + [f"- {k}: `{v}`" for k, v in result["protocol"].items()] + [""]
    if "samples" in figures:
        out += ["## Samples", "", f"![samples]({figures['samples']})", ""]
    return "\n".join(out)


def write_report(
    result: dict[str, Any],
    out_dir: str | Path,
    sample_videos: Sequence[Any] | None = None,
    sample_captions: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write ``eval.json``, ``eval.md``, ``adherence.png`` and ``samples.png`` (when videos are given)
    into ``out_dir``; returns the written paths by name. ``result`` must be JSON-serialisable."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    figures: dict[str, str] = {}
    if result.get("adherence"):
        chart = plot_adherence(result["adherence"], out / "adherence.png")
        if chart is not None:
            paths["adherence"] = chart
            figures["adherence"] = chart.name
    if sample_videos:
        from text2video.io.video import write_contact_sheet

        paths["samples"] = write_contact_sheet(list(sample_videos), out / "samples.png", captions=sample_captions)
        figures["samples"] = paths["samples"].name
    paths["json"] = out / "eval.json"
    paths["json"].write_text(json.dumps(result, indent=2, default=_json_default), encoding="utf-8")
    paths["markdown"] = out / "eval.md"
    paths["markdown"].write_text(_markdown(result, figures), encoding="utf-8")
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
