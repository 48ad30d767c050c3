"""``text2video eval`` on small folders and with a stand-in pipeline: report files, tables, JSON, errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from text2video.cli import main
from text2video.data.synthetic import ShapesDataset
from text2video.data.vocab import is_held_out, parse_caption
from text2video.io.video import write_video


def _folder(root: Path, n: int = 10, size: int = 24, caption=lambda s: s.text) -> Path:
    ds = ShapesDataset(n=n, num_frames=8, size=size, seed=11, split="all", background="gray")
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sample = ds.render(i)
        write_video(sample.frames, root / f"{i:03d}.gif", fps=8)
        (root / f"{i:03d}.txt").write_text(caption(sample) + "\n", encoding="utf-8")
    return root


def test_eval_videos_writes_report_and_table(tmp_path: Path, capsys) -> None:
    videos = _folder(tmp_path / "videos")
    write_video(np.zeros((4, 24, 24, 3), np.uint8), videos / "no_caption.gif", fps=8)  # skipped: no .txt
    assert main(["eval", "--videos", str(videos), "--out", str(tmp_path / "report")]) == 0
    table = capsys.readouterr().out
    assert "all_three" in table and "FVD" in table and "not comparable" in table
    result = json.loads((tmp_path / "report" / "eval.json").read_text())
    assert result["adherence"]["all"]["n"] == 10 and result["adherence"]["all"]["all_three"] == 1.0
    assert result["adherence"]["seen"]["n"] + result["adherence"]["held_out"]["n"] == 10
    assert result["distribution"]["FVD"]["protocol"]["comparable_with_published"] is False
    assert result["distribution"]["FVD"]["protocol"]["num_fake"] == 10
    assert len(result["items"]) == 10
    markdown = (tmp_path / "report" / "eval.md").read_text()
    assert "not comparable with published numbers" in markdown and "| held_out |" in markdown
    assert (tmp_path / "report" / "adherence.png").stat().st_size > 0
    assert (tmp_path / "report" / "samples.png").stat().st_size > 0


def test_eval_videos_json_and_wrong_captions(tmp_path: Path, capsys) -> None:
    def wrong_colour(sample) -> str:
        colour = "green" if sample.factors["colour"] != "green" else "red"
        return f"a {colour} {sample.factors['shape']} moving {sample.factors['direction']}"

    videos = _folder(tmp_path / "videos", n=8, caption=wrong_colour)
    assert main(["eval", "--videos", str(videos), "--out", str(tmp_path / "r"), "--json", "--no-fvd", "--n", "6"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["adherence"]["all"]["n"] == 6
    assert result["adherence"]["all"]["colour"] == 0.0 and result["adherence"]["all"]["all_three"] == 0.0
    assert result["adherence"]["all"]["shape"] == 1.0 and "distribution" not in result


class _OraclePipeline:
    """Stands in for a trained model: renders exactly what each prompt asks for."""

    def __init__(self, size: int = 24) -> None:
        self.size = size

    def __call__(self, prompts, num_frames=8, height=None, width=None, seed=0, **_):
        videos = []
        for i, prompt in enumerate(prompts):
            f = parse_caption(prompt)
            ds = ShapesDataset(
                n=1,
                num_frames=num_frames,
                size=height or self.size,
                seed=seed + i,
                split="all",
                holdout=(),
                colours=[f.colour],
                shapes=[f.shape],
                directions=[f.direction],
            )
            videos.append(ds[0]["video"])
        return SimpleNamespace(videos=torch.stack(videos), fps=8.0)


class _NoisePipeline(_OraclePipeline):
    def __call__(self, prompts, num_frames=8, seed=0, **_):
        gen = torch.Generator().manual_seed(seed)
        return SimpleNamespace(videos=torch.rand(len(prompts), 3, num_frames, self.size, self.size, generator=gen) * 2 - 1)


@pytest.mark.parametrize("pipeline,expected", [(_OraclePipeline, 1.0), (_NoisePipeline, 0.0)])
def test_eval_model_generates_seen_and_held_out(tmp_path: Path, monkeypatch, capsys, pipeline, expected) -> None:
    import text2video.pipelines

    monkeypatch.setattr(text2video.pipelines, "load_pipeline", lambda path, **kw: pipeline())
    out = tmp_path / "report"
    assert main(["eval", "--model", str(tmp_path / "model"), "--n", "8", "--batch-size", "3", "--out", str(out)]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["adherence"]["seen"]["n"] == 4 and result["adherence"]["held_out"]["n"] == 4
    assert result["adherence"]["all"]["all_three"] == expected
    captions = sorted((out / "samples").glob("*.txt"))
    assert len(captions) == 8 and len(list((out / "samples").glob("*.gif"))) == 8
    held = [is_held_out(parse_caption(p.read_text().strip())) for p in captions]
    assert sum(held) == 4
    assert result["distribution"]["FVD"]["protocol"]["num_real"] == 8
    # the saved samples re-judge to the same numbers
    assert main(["eval", "--videos", str(out / "samples"), "--out", str(tmp_path / "again"), "--no-fvd"]) == 0
    again = json.loads((tmp_path / "again" / "eval.json").read_text())
    assert again["adherence"]["all"]["all_three"] == expected


def test_eval_errors(tmp_path: Path, capsys) -> None:
    assert main(["eval", "--videos", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--videos", str(tmp_path / "empty")]) == 2
    assert "no captioned video" in capsys.readouterr().err
    assert main(["eval", "--videos", str(tmp_path / "empty"), "--holdout", "blue banana"]) == 2
    assert "banana" in capsys.readouterr().err


def test_judge_folder_counts_unreadable(tmp_path: Path) -> None:
    from text2video.eval.adherence import judge_folder

    videos = _folder(tmp_path / "videos", n=4)
    (videos / "broken.gif").write_bytes(b"GIF89a not really")
    (videos / "broken.txt").write_text("a red circle moving left\n")
    summary, verdicts = judge_folder(videos)
    assert summary["unreadable"] == 1 and summary["all"]["n"] == 4 and summary["all"]["all_three"] == 1.0
    assert all(Path(v.details["path"]).suffix == ".gif" for v in verdicts)
