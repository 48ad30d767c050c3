"""The prompt-adherence judge: agreement with the ground truth of rendered shapes videos, refusal on wrong
captions, noise and blank videos, seen/held-out reporting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from text2video.data.synthetic import ShapesDataset
from text2video.data.vocab import COLOURS, DIRECTIONS, SHAPES, ShapeFactors, all_factors, is_held_out, make_caption
from text2video.eval.adherence import ATTRIBUTES, judge_batch, judge_video, summarize

# (size, frames, background, antialias, items): 288 items over every size, background and edge style
_GRID = [
    (16, 8, "black", True, 36),
    (16, 8, "noise", True, 36),
    (24, 8, "gray", True, 36),
    (24, 12, "noise", False, 36),
    (32, 8, "black", False, 36),
    (32, 16, "gray", True, 36),
    (32, 8, "noise", True, 36),
    (64, 8, "gray", True, 36),
]


def _samples(size: int, frames: int, background: str, antialias: bool, n: int, seed: int = 0):
    ds = ShapesDataset(n=n, num_frames=frames, size=size, seed=seed + size, split="all", background=background, antialias=antialias)
    return [ds.render(i) for i in range(n)]


@pytest.fixture(scope="module")
def ground_truth():
    return [s for cfg in _GRID for s in _samples(*cfg)]


def test_judge_agrees_with_ground_truth(ground_truth) -> None:
    summary, verdicts = judge_batch([s.frames for s in ground_truth], [s.text for s in ground_truth])
    assert summary["all"]["n"] == len(ground_truth) == 288
    for attr in ATTRIBUTES:
        assert summary["all"][attr] >= 0.99, (attr, [v.predicted for v in verdicts if not getattr(v, f"{attr}_ok")])
    for v, s in zip(verdicts, ground_truth):
        if v.all_ok:
            assert v.predicted == s.factors and not v.abstained
    assert np.mean([v.consistency for v in verdicts]) > 0.8


def _swap(factors: dict[str, str], attr: str, rng: np.random.Generator) -> str:
    choices = {"colour": list(COLOURS), "shape": list(SHAPES), "direction": list(DIRECTIONS)}[attr]
    wrong = dict(factors)
    wrong[attr] = str(rng.choice([c for c in choices if c != factors[attr]]))
    return make_caption(wrong["colour"], wrong["shape"], wrong["direction"])


def test_wrong_attribute_is_reported_wrong(ground_truth) -> None:
    rng = np.random.default_rng(0)
    items = ground_truth[::4]
    for attr in ATTRIBUTES:
        captions = [_swap(s.factors, attr, rng) for s in items]
        summary, _ = judge_batch([s.frames for s in items], captions)
        assert summary["all"][attr] <= 0.01
        assert summary["all"]["all_three"] <= 0.01
        others = [a for a in ATTRIBUTES if a != attr]
        assert all(summary["all"][a] >= 0.99 for a in others)  # the rest of the caption is still right


def test_shuffled_captions_score_at_chance(ground_truth) -> None:
    rng = np.random.default_rng(1)
    items = ground_truth[::2]
    captions = [s.text for s in items]
    shuffled = [captions[i] for i in rng.permutation(len(captions))]
    summary, _ = judge_batch([s.frames for s in items], shuffled)
    chance = {
        a: float(
            np.mean(
                [
                    a_ == b
                    for a_, b in zip(
                        [c.split()[{"colour": 1, "shape": 2, "direction": 4}[a]] for c in captions],
                        [c.split()[{"colour": 1, "shape": 2, "direction": 4}[a]] for c in shuffled],
                    )
                ]
            )
        )
        for a in ATTRIBUTES
    }
    for attr in ATTRIBUTES:  # success only where the shuffled caption happens to name the truth
        assert summary["all"][attr] <= chance[attr] + 0.01


@pytest.mark.parametrize("size", [16, 32, 64])
def test_noise_and_blank_videos_are_refused(size: int) -> None:
    rng = np.random.default_rng(size)
    factors = all_factors()
    videos = []
    for _ in range(8):
        videos.append(rng.integers(0, 256, (8, size, size, 3), dtype=np.uint8))  # uniform noise
        videos.append(np.clip(rng.normal(128, 40, (8, size, size, 3)), 0, 255).astype(np.uint8))  # Gaussian noise
        videos.append(np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (8, size, size, 3)).copy())  # blank
        videos.append(np.zeros((8, size, size, 3), np.uint8))  # black
    captions = [factors[int(rng.integers(len(factors)))].caption() for _ in videos]
    summary, verdicts = judge_batch(videos, captions)
    assert all(v.abstained for v in verdicts)
    assert summary["all"]["all_three"] == 0 and all(summary["all"][a] == 0 for a in ATTRIBUTES)
    assert summary["all"]["consistency"] == 0


def test_two_objects_and_a_static_object_are_not_success() -> None:
    sample = _samples(32, 8, "black", True, 1)[0]
    other = _samples(32, 8, "black", True, 7, seed=5)[-1]
    both = np.maximum(sample.frames, other.frames)
    verdict = judge_video(both, sample.text)
    assert not verdict.all_ok
    static = np.repeat(sample.frames[:1], 8, axis=0)
    verdict = judge_video(static, sample.text)
    assert verdict.predicted["direction"] is None and not verdict.direction_ok


def test_tensor_input_and_caption_outside_grammar() -> None:
    ds = ShapesDataset(n=4, num_frames=8, size=32, seed=3, split="all")
    item = ds[0]
    from_tensor = judge_video(item["video"], item["text"])
    from_uint8 = judge_video(ds.render(0).frames, item["text"])
    assert from_tensor.predicted == from_uint8.predicted == item["factors"]
    assert judge_video(item["video"].unsqueeze(0), item["text"]).all_ok
    odd = judge_video(item["video"], "a cat playing piano")
    assert odd.expected is None and not odd.all_ok
    assert summarize([odd])["outside_grammar"] == 1


def test_seen_and_held_out_reported_apart() -> None:
    seen = ShapesDataset(n=12, num_frames=8, size=32, seed=1, split="seen")
    held = ShapesDataset(n=6, num_frames=8, size=32, seed=1, split="held_out")
    samples = [seen.render(i) for i in range(12)] + [held.render(i) for i in range(6)]
    summary, verdicts = judge_batch([s.frames for s in samples], [s.text for s in samples])
    assert summary["seen"]["n"] == 12 and summary["held_out"]["n"] == 6
    assert [v.held_out for v in verdicts] == [is_held_out(ShapeFactors(**s.factors)) for s in samples]
    assert summary["held_out"]["all_three"] == 1.0 and summary["seen"]["all_three"] == 1.0


def test_blurred_generative_style_output_is_read() -> None:
    """Generated samples are soft and noisy: blur and noise the ground truth and still read it."""
    from scipy import ndimage

    rng = np.random.default_rng(4)
    samples = _samples(32, 8, "gray", True, 24, seed=9)
    videos = []
    for s in samples:
        v = ndimage.gaussian_filter(s.frames.astype(np.float32), (0, 0.8, 0.8, 0)) + rng.normal(0, 6, s.frames.shape)
        videos.append(torch.from_numpy(np.clip(v, 0, 255) / 127.5 - 1).permute(3, 0, 1, 2))
    summary, _ = judge_batch(videos, [s.text for s in samples])
    assert summary["all"]["all_three"] >= 23 / 24


@pytest.mark.parametrize("background", ["gradient", "tinted", "white"])
def test_other_backgrounds(background: str) -> None:
    """The background model is fitted per frame: gradients, coloured and light backgrounds work too."""
    samples = _samples(24, 8, "black", True, 12, seed=21)
    yy, xx = np.mgrid[0:24, 0:24] / 24
    bg = {
        "gradient": np.stack([20 + 60 * xx, 20 + 40 * yy, 50 + 0 * xx], -1),
        "tinted": np.array([30.0, 30.0, 90.0]),
        "white": np.array([245.0, 245.0, 245.0]),
    }[background]
    videos = []
    for s in samples:  # on black, coverage = the frame over the object's colour
        colour = np.array(COLOURS[s.factors["colour"]], float)
        cov = (s.frames.astype(float) / colour).max(-1, keepdims=True).clip(0, 1)
        videos.append(np.clip(bg * (1 - cov) + colour * cov + 0.5, 0, 255).astype(np.uint8))
    summary, _ = judge_batch(videos, [s.text for s in samples])
    assert summary["all"]["all_three"] == 1.0


@pytest.mark.parametrize("name", ["bar", "ring", "cross"])
def test_silhouettes_outside_the_grammar_have_no_shape(name: str) -> None:
    size = 32
    masks = {
        "bar": lambda x, y: (abs(x) <= 7) & (abs(y) <= 1),
        "ring": lambda x, y: (x * x + y * y <= 36) & (x * x + y * y >= 12),
        "cross": lambda x, y: ((abs(x) <= 5) & (abs(y) <= 1)) | ((abs(y) <= 5) & (abs(x) <= 1)),
    }
    yy, xx = np.mgrid[0:size, 0:size]
    frames = np.stack([masks[name](xx - 8 - t, yy - 16)[..., None] * np.array(COLOURS["red"]) for t in range(8)])
    for shape in SHAPES:
        verdict = judge_video(frames.astype(np.uint8), f"a red {shape} moving right")
        assert verdict.predicted["shape"] is None and not verdict.shape_ok
        assert verdict.colour_ok and verdict.direction_ok  # the rest is still read
