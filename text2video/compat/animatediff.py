"""AnimateDiff's ``WebVid10M`` dataset, for code written against it: its constructor names and its items.

``WebVid10M(csv_path, video_folder, sample_size=256, sample_stride=4, sample_n_frames=16, is_image=False)``
yields ``dict(pixel_values, text)``: ``pixel_values`` is ``(T, C, H, W)`` in [-1, 1] (video mode) or
``(C, H, W)`` (image mode, one random frame), ``text`` the CSV's ``name``. As in AnimateDiff, frames are
flipped horizontally with probability 0.5 (``hflip``), resized on the short side and centre-cropped.
It is text2video's `CsvVideoDataset` underneath (unreadable videos are skipped and counted, not fatal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import Dataset

from ..data.csv import CsvVideoDataset


class WebVid10M(Dataset):
    """AnimateDiff's WebVid-10M dataset contract over `text2video.data.CsvVideoDataset`.

    Args:
        csv_path: WebVid's CSV (``videoid,name,page_dir``) or text2video's ``path,text[,fps]``.
        video_folder: where the videos are (``video_folder/page_dir/videoid.mp4`` or ``video_folder/videoid.mp4``).
        sample_size: output size, an int or ``(height, width)``.
        sample_stride: frames skipped between the sampled ones.
        sample_n_frames: frames per clip.
        is_image: one random frame per item, ``(C, H, W)``.
        hflip: probability of a horizontal flip (AnimateDiff's ``RandomHorizontalFlip``: 0.5).
    """

    def __init__(
        self,
        csv_path: str | Path,
        video_folder: str | Path,
        sample_size: int | Sequence[int] = 256,
        sample_stride: int = 4,
        sample_n_frames: int = 16,
        is_image: bool = False,
        *,
        hflip: float = 0.5,
        **options: Any,
    ) -> None:
        size = sample_size if isinstance(sample_size, int) else (int(sample_size[0]), int(sample_size[1]))
        self.is_image = is_image
        self.dataset = CsvVideoDataset(
            csv_path, video_folder, mode="image" if is_image else "video", num_frames=sample_n_frames,
            stride=sample_stride, size=size, hflip=hflip, **options,
        )  # fmt: skip
        self.length = len(self.dataset)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item = self.dataset[idx]
        video = item["video"]  # (C, T, H, W) in [-1, 1]
        pixel_values = video[:, 0] if self.is_image else video.permute(1, 0, 2, 3).contiguous()
        return {"pixel_values": pixel_values, "text": item["text"]}


__all__ = ["WebVid10M"]
