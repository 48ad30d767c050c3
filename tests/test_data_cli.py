"""``text2video data``: synth writes a readable captioned folder, inspect reports it, msrvtt converts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from text2video.cli import main
from text2video.data import FolderVideoDataset
from text2video.data.msrvtt import convert_msrvtt
from text2video.data.synthetic import ShapesDataset
from text2video.data.vocab import parse_caption
from text2video.errors import DataError
from text2video.io.video import probe_video, read_video, write_video


def test_synth_shapes_writes_gif_and_captions_matching_the_dataset(tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    assert main(["data", "synth", "--kind", "shapes", "--n", "5", "--out", str(out), "--frames", "6", "--size", "24", "--seed", "3"]) == 0
    gifs = sorted(out.glob("*.gif"))
    assert len(gifs) == 5 and all(g.with_suffix(".txt").is_file() for g in gifs)
    reference = ShapesDataset(5, 6, 24, 3)
    for index, gif in enumerate(gifs):
        frames, fps = read_video(gif)
        assert frames.shape == (6, 24, 24, 3) and fps == pytest.approx(8.0)
        caption = gif.with_suffix(".txt").read_text().strip()
        assert caption == reference.render(index).text and parse_caption(caption) is not None
        # the GIF holds the dataset's own pixels (few colours: the palette is exact)
        assert np.abs(frames.astype(int) - reference.render(index).frames.astype(int)).max() <= 8
    records = [json.loads(line) for line in (out / "factors.jsonl").read_text().splitlines()]
    assert [r["file"] for r in records] == [g.name for g in gifs]
    assert records[0]["factors"] == reference.render(0).factors
    ds = FolderVideoDataset(out, num_frames=6, size=24)
    assert len(ds) == 5 and ds.missing_captions == 0


def test_synth_digits_and_bad_holdout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "synth", "--kind", "digits", "--digits", "1,2", "--n", "3", "--out", str(tmp_path / "d"), "--format", "mp4"]) == 0
    assert len(list((tmp_path / "d").glob("*.mp4"))) == 3
    assert "the digit" in (tmp_path / "d" / "digits_00000.txt").read_text()
    assert main(["data", "synth", "--n", "2", "--out", str(tmp_path / "x"), "--holdout", "mauve blob"]) == 2
    assert "mauve" in capsys.readouterr().err


def test_inspect_reports_counts_captions_unreadable_and_writes_a_sheet(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "clips"
    clip = np.zeros((5, 20, 30, 3), dtype=np.uint8)
    write_video(clip, folder / "a.gif", fps=10)
    (folder / "a.txt").write_text("a caption\n")
    write_video(np.zeros((9, 16, 16, 3), dtype=np.uint8), folder / "nested" / "b.mp4", fps=25)
    (folder / "broken.webm").write_bytes(b"nope")
    sheet = tmp_path / "sheet.png"
    assert main(["data", "inspect", str(folder), "--json", "--sheet", str(sheet)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["videos"] == 3 and report["readable"] == 2
    assert report["formats"] == {"gif": 1, "mp4": 1}
    assert report["frames"] == {"min": 5, "median": 7, "max": 9, "total": 14}
    assert report["sizes"] == {"30x20": 1, "16x16": 1}
    assert report["fps"] == {"10": 1, "25": 1}
    assert report["missing_captions"] == 1 and report["missing_caption_files"] == ["nested/b.mp4"]
    assert [u["path"] for u in report["unreadable"]] == ["broken.webm"]
    with Image.open(sheet) as im:
        assert im.size[0] > 30 and im.size[1] > 2 * 20
    assert main(["data", "inspect", str(folder), "--no-sheet"]) == 0
    text = capsys.readouterr().out
    assert "unreadable: 1" in text and "missing captions: 1" in text
    assert main(["data", "inspect", str(tmp_path / "missing")]) == 2


def _msrvtt_layout(root: Path) -> tuple[Path, Path]:
    videos = root / "TrainValVideo"
    for i in range(3):
        frames = np.stack([np.full((36, 48, 3), 6 * t, dtype=np.uint8) for t in range(40)])
        write_video(frames, videos / f"video{i}.mp4", fps=24)
    (videos / "video2.mp4").write_bytes(b"truncated")
    annotations = root / "train_val_videodatainfo.json"
    annotations.write_text(
        json.dumps(
            {
                "videos": [{"video_id": f"video{i}", "split": "train" if i < 3 else "validate"} for i in range(4)],
                "sentences": [
                    {"video_id": "video0", "caption": "a man is talking", "sen_id": 0},
                    {"video_id": "video0", "caption": "someone speaks", "sen_id": 1},
                    {"video_id": "video1", "caption": "a dog runs", "sen_id": 2},
                ],
            }
        )
    )
    return videos, annotations


def test_msrvtt_converter_resizes_trims_and_writes_captions(tmp_path: Path) -> None:
    videos, annotations = _msrvtt_layout(tmp_path)
    out = tmp_path / "out"
    report = convert_msrvtt(videos, annotations, out, size=16, num_frames=4, fps=8, captions="all", progress=False)
    assert report.converted == ["video0", "video1"]
    assert [v for v, _ in report.unreadable] == ["video2"] and report.missing == ["video3"]
    info = probe_video(out / "video0.gif")
    assert (info.num_frames, info.height, info.width) == (4, 16, 16)
    assert info.fps == pytest.approx(8.0)  # 24 fps, every 3rd frame
    frames, _ = read_video(out / "video0.gif")
    levels = frames.reshape(4, -1).mean(1)
    assert np.allclose(levels, [0, 18, 36, 54], atol=3)  # frames 0, 3, 6, 9 of the source
    assert (out / "video0.txt").read_text().splitlines() == ["a man is talking", "someone speaks"]
    first = convert_msrvtt(videos, annotations, tmp_path / "o2", size=16, split="train", limit=1, progress=False)
    assert first.converted == ["video0"] and (tmp_path / "o2" / "video0.txt").read_text() == "a man is talking\n"
    with pytest.raises(DataError, match="videos"):
        bad = tmp_path / "bad.json"
        bad.write_text("{}")
        convert_msrvtt(videos, bad, out)


def test_msrvtt_command(tmp_path: Path) -> None:
    videos, annotations = _msrvtt_layout(tmp_path)
    code = main(
        [
            "data",
            "msrvtt",
            "--videos",
            str(videos),
            "--annotations",
            str(annotations),
            "--out",
            str(tmp_path / "o"),
            "--size",
            "16",
            "--frames",
            "3",
            "--format",
            "mp4",
        ]
    )
    assert code == 0
    assert read_video(tmp_path / "o" / "video1.mp4")[0].shape == (3, 16, 16, 3)
