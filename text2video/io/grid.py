"""The one grid drawer: videos side by side, a caption above each cell (the trainer's periodic samples, the
demo's grids, and the still contact sheets of `text2video.io.video.write_contact_sheet`)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def video_grid(
    videos: Sequence[np.ndarray],
    captions: Sequence[str],
    *,
    columns: int | None = None,
    min_cell: int = 96,
    pad: int = 4,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` frames of a grid of uint8 ``(T, h, w, 3)`` videos, each enlarged by a whole
    factor to at least ``min_cell`` pixels and captioned (captions wrap to the cell width)."""
    if not videos:
        raise ValueError("video_grid: no video")
    frames = max(v.shape[0] for v in videos)
    h, w = (max(v.shape[i] for v in videos) for i in (1, 2))
    scale = max(1, -(-min_cell // max(h, w)))
    cell_h, cell_w = h * scale, w * scale
    cols = columns or math.ceil(math.sqrt(len(videos)))
    rows = math.ceil(len(videos) / cols)
    font = ImageFont.load_default()
    chars = max(8, cell_w // 6)
    wrapped = [_wrap(c, chars) for c in captions]
    text_h = 11 * max(len(lines) for lines in wrapped) + 2
    out_h = rows * (cell_h + text_h + pad) + pad
    out_w = cols * (cell_w + pad) + pad
    base = Image.new("RGB", (out_w, out_h), background)
    draw = ImageDraw.Draw(base)
    for i, lines in enumerate(wrapped):
        r, c = divmod(i, cols)
        x, y = pad + c * (cell_w + pad), pad + r * (cell_h + text_h + pad)
        for j, line in enumerate(lines):
            draw.text((x, y + 11 * j), line, fill=(0, 0, 0), font=font)
    canvas = np.repeat(np.asarray(base)[None], frames, axis=0).copy()
    for i, video in enumerate(videos):
        r, c = divmod(i, cols)
        x, y = pad + c * (cell_w + pad), pad + r * (cell_h + text_h + pad) + text_h
        big = video.repeat(scale, axis=1).repeat(scale, axis=2)
        bh, bw = big.shape[1:3]
        for t in range(frames):
            canvas[t, y : y + bh, x : x + bw] = big[min(t, len(big) - 1), :, :, :3]
    return canvas


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return lines + [current] if current or not lines else lines
