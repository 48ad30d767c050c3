"""``text2video data``: write synthetic sets to disk, convert MSR-VTT, inspect a video folder."""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from .args import non_negative_float, non_negative_int, positive_float, positive_int, seed_int, writable_folder, writable_output


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="make, convert and inspect datasets")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    s = actions.add_parser("synth", help="write a synthetic captioned set (GIF + .txt) to a folder")
    s.add_argument("--kind", choices=("shapes", "digits"), default="shapes")
    s.add_argument("--n", type=positive_int, default=64, help="number of videos (default 64)")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--frames", type=positive_int, default=8, help="frames per video (default 8)")
    s.add_argument("--size", type=positive_int, default=32, help="frame size in pixels (default 32)")
    s.add_argument("--height", type=positive_int, default=None, help="frame height (default --size)")
    s.add_argument("--width", type=positive_int, default=None, help="frame width (default --size)")
    s.add_argument(
        "--channels", type=int, choices=(1, 3, 4), default=3, help="3 RGB (default), 1 grayscale, 4 RGBA (transparent background)"
    )
    s.add_argument("--seed", type=seed_int, default=0)
    s.add_argument("--fps", type=positive_float, default=8.0)
    s.add_argument("--format", choices=("gif", "mp4"), default="gif")
    s.add_argument("--split", choices=("seen", "held_out", "all"), default="seen", help="shapes: which combinations")
    s.add_argument(
        "--holdout", action="append", metavar="RULE", help="shapes: hold out e.g. 'blue triangle' (repeatable; default: the built-in rules)"
    )
    s.add_argument("--background", choices=("black", "gray", "noise"), default="black", help="shapes background")
    s.add_argument("--digits", default="1", metavar="N[,N]", help="digits per video: 1, 2 or 1,2 (default 1)")
    s.set_defaults(func=run_synth)

    m = actions.add_parser("msrvtt", help="convert MSR-VTT (videos + annotation JSON) to the folder format")
    m.add_argument("--videos", type=Path, required=True, help="folder of video*.mp4")
    m.add_argument("--annotations", type=Path, required=True, help="train_val_videodatainfo.json or alike")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--size", type=positive_int, default=64)
    m.add_argument("--frames", type=non_negative_int, default=16, help="keep at most this many frames (0: all)")
    m.add_argument("--fps", type=non_negative_float, default=8.0, help="resample to about this rate (0: keep)")
    m.add_argument("--captions", choices=("first", "all"), default="first")
    m.add_argument("--split", choices=("train", "validate", "test"), default=None)
    m.add_argument("--limit", type=positive_int, default=None, help="convert at most this many videos")
    m.add_argument("--format", choices=("gif", "mp4"), default="gif")
    m.set_defaults(func=run_msrvtt)

    i = actions.add_parser(
        "inspect",
        help="report counts, frames, sizes, fps, captions; optionally write a contact sheet",
        description="Report on a video folder. Nothing is written anywhere unless --sheet names a contact sheet to write.",
    )
    i.add_argument("folder", type=Path)
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.add_argument("--sheet", type=Path, default=None, help="write a contact sheet (PNG) of the first videos to this path")
    i.add_argument("--no-sheet", action="store_true", help=argparse.SUPPRESS)  # the old opt-out; no sheet is the default now
    i.add_argument("--sheet-videos", type=positive_int, default=8, help="videos on the contact sheet (default 8)")
    i.set_defaults(func=run_inspect)


# ---------------------------------------------------------------------------------------------- synth


def run_synth(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from text2video.data.synthetic import DEFAULT_HOLDOUT, DigitsDataset, ShapesDataset
    from text2video.errors import DataError
    from text2video.io.video import write_video

    if args.n < 1:
        raise DataError(f"--n must be at least 1, got {args.n}")
    hw = (args.height or args.size, args.width or args.size)
    if args.channels == 4 and args.format == "mp4":
        raise DataError("--channels 4 (RGBA) needs --format gif: MP4 has no alpha channel")
    if args.kind == "shapes":
        try:
            holdout = tuple(args.holdout) if args.holdout else DEFAULT_HOLDOUT
            dataset: Any = ShapesDataset(
                args.n, args.frames, hw, args.seed, holdout, args.split, background=args.background, fps=args.fps, channels=args.channels
            )
        except ValueError as exc:  # a bad holdout rule
            raise DataError(str(exc)) from exc
    else:
        try:
            counts = tuple(int(c) for c in args.digits.split(","))
        except ValueError as exc:
            raise DataError(f"--digits {args.digits!r}: expected 1, 2 or 1,2") from exc
        dataset = DigitsDataset(args.n, args.frames, hw, args.seed, num_digits=counts, fps=args.fps, channels=args.channels)
    out: Path = writable_folder(args.out)
    width = max(5, len(str(args.n - 1)))
    with (out / "factors.jsonl").open("w", encoding="utf-8") as factors_file:
        for index in tqdm(range(args.n), desc=f"synth {args.kind}", unit="video"):
            sample = dataset.render(index)
            stem = f"{args.kind}_{index:0{width}d}"
            write_video(sample.frames, out / f"{stem}.{args.format}", fps=args.fps)
            (out / f"{stem}.txt").write_text(sample.text + "\n", encoding="utf-8")
            record = {
                "file": f"{stem}.{args.format}",
                "text": sample.text,
                "factors": sample.factors,
                "centres": sample.centres.round(3).tolist(),
            }
            factors_file.write(json.dumps(record) + "\n")
    print(f"wrote {args.n} {args.kind} videos ({args.frames} frames, {hw[0]}x{hw[1]}, {args.fps:g} fps) with captions to {out}")
    return 0


# --------------------------------------------------------------------------------------------- msrvtt


def run_msrvtt(args: argparse.Namespace) -> int:
    from text2video.data.msrvtt import convert_msrvtt

    report = convert_msrvtt(
        args.videos,
        args.annotations,
        args.out,
        size=args.size,
        num_frames=args.frames or None,
        fps=args.fps or None,
        captions=args.captions,
        split=args.split,
        limit=args.limit,
        suffix=f".{args.format}",
    )
    print(f"{report.summary()} -> {args.out}")
    return 0 if report.converted else 1


# -------------------------------------------------------------------------------------------- inspect


def inspect_folder(folder: Path) -> tuple[dict[str, Any], list[Any]]:
    """Facts about every video under ``folder`` and the probes of the readable ones."""
    from tqdm.auto import tqdm

    from text2video.data.folder import find_videos, read_captions
    from text2video.errors import DataError, VideoReadError
    from text2video.io.video import probe_video

    if not folder.is_dir():
        raise DataError(f"folder not found: {folder}; check the path")
    files = find_videos(folder)
    readable, unreadable, missing = [], [], []
    for path in tqdm(files, desc="inspect", unit="video", disable=len(files) < 50):
        try:
            readable.append(probe_video(path))
        except VideoReadError as exc:
            unreadable.append({"path": str(path.relative_to(folder)), "error": str(exc)})
            continue
        if not read_captions(path):
            missing.append(str(path.relative_to(folder)))
    frames = [v.num_frames for v in readable]
    report: dict[str, Any] = {
        "folder": str(folder),
        "videos": len(files),
        "readable": len(readable),
        "formats": dict(sorted(Counter(Path(v.path).suffix.lower().lstrip(".") for v in readable).items())),
        "frames": {"min": min(frames), "median": statistics.median(frames), "max": max(frames), "total": sum(frames)} if frames else None,
        "sizes": {f"{w}x{h}": c for (w, h), c in Counter((v.width, v.height) for v in readable).most_common()},
        "fps": {f"{fps:g}": c for fps, c in Counter(round(v.fps, 3) for v in readable).most_common()},
        "missing_captions": len(missing),
        "missing_caption_files": missing,
        "unreadable": unreadable,
    }
    return report, readable


def write_folder_sheet(folder: Path, probes: list[Any], path: Path, count: int) -> Path:
    """A contact sheet of the first ``count`` readable videos with their first caption."""
    from text2video.data.folder import read_captions
    from text2video.io.video import read_video, write_contact_sheet

    videos, captions = [], []
    for probe in probes[:count]:
        stride = max(1, probe.num_frames // 8)
        frames, _ = read_video(probe.path, num_frames=8, stride=stride)
        videos.append(frames)
        text = (read_captions(Path(probe.path)) or ("(no caption)",))[0]
        captions.append(f"{Path(probe.path).relative_to(folder)}: {text}"[:90])
    return write_contact_sheet(videos, path, captions)


def run_inspect(args: argparse.Namespace) -> int:
    folder: Path = args.folder
    if args.sheet is not None:
        writable_output(args.sheet, "--sheet")
    report, probes = inspect_folder(folder)
    if probes and args.sheet is not None:
        report["contact_sheet"] = str(write_folder_sheet(folder, probes, args.sheet, args.sheet_videos))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0 if report["readable"] else 1


def _print_report(report: dict[str, Any]) -> None:
    print(f"folder: {report['folder']}")
    print(f"videos: {report['videos']} ({report['readable']} readable)")
    if report["formats"]:
        print("formats: " + ", ".join(f"{k} {v}" for k, v in report["formats"].items()))
    if report["frames"]:
        f = report["frames"]
        print(f"frames per video: min {f['min']}, median {f['median']:g}, max {f['max']} (total {f['total']})")
    if report["sizes"]:
        print("sizes (WxH): " + ", ".join(f"{k} ({v})" for k, v in report["sizes"].items()))
        print("fps: " + ", ".join(f"{k} ({v})" for k, v in report["fps"].items()))
    print(f"missing captions: {report['missing_captions']}")
    for name in report["missing_caption_files"][:10]:
        print(f"  {name}")
    print(f"unreadable: {len(report['unreadable'])}")
    for bad in report["unreadable"][:10]:
        print(f"  {bad['path']}: {bad['error']}")
    if "contact_sheet" in report:
        print(f"contact sheet: {report['contact_sheet']}")
