"""Non-square frames (``data.size: [h, w]``, DiffusionPlayground's height/width) and buckets for folders of
mixed shapes (aspect ratio and frame count, as Open-Sora and diffusion-pipe bucket them)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from tiny_runs import train_tiny

from text2video.config import load_config
from text2video.data import Bucket, Buckets, FolderVideoDataset, ShapesDataset
from text2video.errors import ConfigError, DataError
from text2video.io.video import write_video
from text2video.pipelines import load_pipeline
from text2video.train.data import BucketBatches


def test_non_square_shapes_stay_inside_and_square_ones_are_unchanged() -> None:
    wide = ShapesDataset(n=24, num_frames=6, size=(16, 40), seed=3)
    for index in range(24):
        sample = wide.render(index)
        assert sample.frames.shape == (6, 16, 40, 3)
        xs, ys = sample.centres[:, 0], sample.centres[:, 1]
        assert xs.min() > 0 and xs.max() < 39 and ys.min() > 0 and ys.max() < 15
        moved = (xs[-1] - xs[0], ys[-1] - ys[0])
        direction = sample.factors["direction"]
        assert {"right": moved[0] > 0, "left": moved[0] < 0, "down": moved[1] > 0, "up": moved[1] < 0}[direction]
    square, as_pair = ShapesDataset(n=4, size=24, seed=5), ShapesDataset(n=4, size=(24, 24), seed=5)
    assert all(np.array_equal(square.render(i).frames, as_pair.render(i).frames) for i in range(4))


def test_buckets_pick_the_nearest_aspect_and_the_longest_clip() -> None:
    buckets = Buckets([0.5, "1:1", 2.0], frames=[4, 8], area_hw=(32, 32), multiple=8)
    assert buckets.resolution(1.0) == (32, 32)
    h, w = buckets.resolution(2.0)  # about the same area, twice as wide, in multiples of 8
    assert (h, w) == (24, 48) and abs(h * w - 32 * 32) / (32 * 32) < 0.15
    assert buckets.assign(height=90, width=160, num_frames=30) == Bucket(8, 24, 48)  # 16:9 is nearest to 2:1
    assert buckets.assign(height=100, width=100, num_frames=5) == Bucket(4, 32, 32)  # 5 frames hold 4, not 8
    assert buckets.assign(height=100, width=40, num_frames=2) == Bucket(4, 48, 24)  # too short: the shortest, padded
    assert buckets.clip_length(8, stride=2) == 4  # 8 frames at stride 2 span 15
    with pytest.raises(ConfigError, match="data.buckets.frame"):
        Buckets.from_config({"frame": [4]}, (32, 32))
    with pytest.raises(ConfigError, match="ratio like 16:9"):
        Buckets.from_config({"aspect_ratios": ["wide"]}, (32, 32))


def test_bucket_batches_stack_cover_every_item_and_resume_exactly() -> None:
    keys = ["a"] * 5 + ["b"] * 2 + ["c"] * 9
    batches = BucketBatches(keys, global_batch=4, seed=7)
    assert batches.per_epoch == 2 + 1 + 3
    epoch = batches.epoch_batches(0)
    assert all(len(batch) == 4 and len({keys[i] for i in batch}) == 1 for batch in epoch)
    assert {i for batch in epoch for i in batch} == set(range(len(keys)))  # every item, short buckets filled up
    assert epoch != batches.epoch_batches(1)
    stream = iter(BucketBatches(keys, 4, seed=7))
    first = [next(stream) for _ in range(9)]
    resumed = iter(BucketBatches(keys, 4, seed=7, consumed=4))
    assert [next(resumed) for _ in range(5)] == first[4:]
    halves = [iter(BucketBatches(keys, 4, rank=r, world=2, seed=7)) for r in (0, 1)]
    assert [i for h in halves for i in next(h)] == first[0]  # the two processes split the global batch


def _mixed_folder(root: Path) -> Path:
    """Videos of three shapes: square 8 frames, wide 4 frames, tall 8 frames."""
    shapes = {"square": (8, 16, 16), "wide": (4, 16, 32), "tall": (8, 32, 16)}
    for name, (t, h, w) in shapes.items():
        for k in range(2):
            frames = np.full((t, h, w, 3), 40 * k + 20, dtype=np.uint8)
            write_video(frames, root / f"{name}{k}.gif", fps=8)
            (root / f"{name}{k}.txt").write_text(f"a {name} clip\n")
    return root


def test_a_mixed_folder_reads_each_video_at_its_bucket(tmp_path: Path) -> None:
    buckets = Buckets([0.5, 1.0, 2.0], [4, 8], (16, 16), multiple=8)
    dataset = FolderVideoDataset(_mixed_folder(tmp_path / "mixed"), size=16, num_frames=8, buckets=buckets)
    for index, entry in enumerate(dataset.entries):
        bucket = dataset.bucket_keys()[index]
        assert tuple(dataset[index]["video"].shape) == (3, bucket.frames, bucket.height, bucket.width)
        kind = Path(entry.path).stem[:-1]
        assert (bucket.frames, bucket.width > bucket.height, bucket.height > bucket.width) == {
            "square": (8, False, False), "wide": (4, True, False), "tall": (8, False, True)
        }[kind]  # fmt: skip
    with pytest.raises(DataError, match="scan=True"):
        FolderVideoDataset(tmp_path / "mixed", buckets=buckets, scan=False)


def test_training_on_a_mixed_folder_batches_one_bucket_at_a_time(tmp_path: Path) -> None:
    from text2video.train.trainer import Trainer

    root = _mixed_folder(tmp_path / "mixed")
    config = load_config(
        "tiny-cpu",
        ["train.steps=3", "train.batch_size=2", "train.save_every=0", "train.warmup_steps=0", "text.cache=false", "data.kind=folder",
         f"data.options={{root: {root}}}", "data.size=16", "data.buckets={aspect_ratios: [0.5, 1.0, 2.0], frames: [4, 8]}",
         "model.dim=8", "model.attn_heads=1", "model.attn_dim_head=8"],
    )  # fmt: skip
    trainer = Trainer(config, tmp_path / "run", progress=False)
    seen = []
    micro_step = trainer._micro_step
    trainer._micro_step = lambda batch, *a: (seen.append(tuple(batch["video"].shape)), micro_step(batch, *a))[1]
    result = trainer.train()
    assert result.step == 3 and all(math.isfinite(loss) for loss in result.losses)
    assert len(seen) == 3 and {s[2:] for s in seen} <= {(8, 16, 16), (4, 8, 24), (8, 24, 8)}
    with pytest.raises(ConfigError, match="folder or csv"):
        Trainer(load_config("tiny-cpu", ["data.buckets={frames: [4]}"]), tmp_path / "bad", progress=False)


def test_a_non_square_run_samples_at_its_size_and_any_other(tmp_path: Path) -> None:
    run = train_tiny(tmp_path / "run", "data.size=[16, 24]")
    pipe = load_pipeline(run)
    assert (pipe.defaults.height, pipe.defaults.width) == (16, 24)
    assert pipe("a red circle moving left", steps=2, seed=0, progress=False).videos.shape[-2:] == (16, 24)
    videos = pipe.generate(num_samples=2, num_frames=4, height=24, width=16, num_steps=2, prompt="a blue square moving up", progress=False)
    assert videos.shape == (2, 3, 4, 24, 16)  # DiffusionPlayground's generate(num_samples, num_frames, height, width, num_steps)
    with pytest.raises(ConfigError, match="data.size"):
        load_config("tiny-cpu", ["data.size=[16, 24, 3]"])
