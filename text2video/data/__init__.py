"""Datasets: folders of videos with captions, CSV manifests, MSR-VTT, built-in synthetic sets.

Every dataset yields dicts ``{"video": (C, T, H, W) float in [-1, 1], "text": str, "fps": float,
"path": str}`` (the synthetic sets add ``factors`` and ``centres``). `make_dataset` builds one by kind.
"""

from __future__ import annotations

from typing import Any

from text2video.data.buckets import Bucket, Buckets
from text2video.data.csv import CsvVideoDataset
from text2video.data.folder import FolderVideoDataset
from text2video.data.split import split_validation
from text2video.data.synthetic import DigitsDataset, ShapesDataset
from text2video.data.transforms import ClipSampler, SpatialTransform
from text2video.errors import ConfigError

DATASET_KINDS: tuple[str, ...] = ("folder", "csv", "shapes", "digits")

__all__ = [
    "DATASET_KINDS",
    "Bucket",
    "Buckets",
    "ClipSampler",
    "CsvVideoDataset",
    "DigitsDataset",
    "FolderVideoDataset",
    "ShapesDataset",
    "SpatialTransform",
    "make_dataset",
    "split_validation",
]


def make_dataset(kind: str, **options: Any):
    """Build a dataset: ``"folder"`` (``root=...``), ``"csv"`` (``csv_path=...``, ``video_folder=...``),
    ``"shapes"`` or ``"digits"``; the options are the class's keyword arguments (``buckets``: folder and csv)."""
    classes = {"folder": FolderVideoDataset, "csv": CsvVideoDataset, "shapes": ShapesDataset, "digits": DigitsDataset}
    if kind not in classes:
        raise ConfigError(f"unknown dataset kind {kind!r}; choose from: {', '.join(DATASET_KINDS)}")
    if options.get("buckets") is not None and kind not in ("folder", "csv"):
        raise ConfigError(
            f"data.buckets sorts real videos of mixed shapes; the {kind!r} dataset makes one shape: use a folder or csv dataset"
        )
    try:
        return classes[kind](**options)
    except TypeError as exc:
        raise ConfigError(f"dataset {kind!r}: {exc}; see help({classes[kind].__name__})") from exc
