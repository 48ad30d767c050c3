"""Synthetic sets: determinism, ground-truth factors read back from the pixels, holdout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from text2video.data.synthetic import ShapesDataset
from text2video.data.vocab import COLOURS, DEFAULT_HOLDOUT, HoldoutRule, ShapeFactors, is_held_out, parse_caption
from text2video.errors import DataError


def _foreground_centroids(video: torch.Tensor, background: float = -1.0) -> np.ndarray:
    """(T, 2) x, y centroid of the pixels that differ from a black background, from the pixels alone."""
    weight = (video - background).abs().sum(0).numpy()  # (T, H, W)
    ys, xs = np.mgrid[: weight.shape[1], : weight.shape[2]]
    total = weight.sum((1, 2))
    return np.stack([(weight * xs).sum((1, 2)) / total, (weight * ys).sum((1, 2)) / total], axis=1)


def test_items_have_the_design_keys_and_shapes() -> None:
    ds = ShapesDataset(n=5, num_frames=6, size=24, seed=3)
    item = ds[2]
    assert item["video"].shape == (3, 6, 24, 24) and item["video"].dtype == torch.float32
    assert item["video"].min() >= -1.0 and item["video"].max() <= 1.0
    assert isinstance(item["text"], str) and item["fps"] == 8.0 and isinstance(item["path"], str)
    assert set(item["factors"]) == {"colour", "shape", "direction"}
    assert parse_caption(item["text"]) == ShapeFactors(**item["factors"])
    assert len(ds) == 5
    with pytest.raises(IndexError):
        ds[5]


def test_deterministic_per_seed_and_index() -> None:
    a, b = ShapesDataset(n=6, seed=7), ShapesDataset(n=6, seed=7)
    other = ShapesDataset(n=6, seed=8)
    for i in (0, 5, 3):  # order of access does not matter
        assert torch.equal(a[i]["video"], b[i]["video"]) and a[i]["text"] == b[i]["text"]
    assert any(not torch.equal(a[i]["video"], other[i]["video"]) for i in range(6))
    assert not torch.equal(a[0]["video"], a[1]["video"])


@pytest.mark.parametrize("direction, axis, sign", [("left", 0, -1), ("right", 0, 1), ("up", 1, -1), ("down", 1, 1)])
def test_motion_matches_the_caption(direction: str, axis: int, sign: int) -> None:
    ds = ShapesDataset(n=12, num_frames=8, size=32, seed=1, directions=[direction], holdout=())
    for i in range(len(ds)):
        item = ds[i]
        assert item["factors"]["direction"] == direction and f"moving {direction}" in item["text"]
        centres = _foreground_centroids(item["video"])
        steps = np.diff(centres[:, axis])
        assert (sign * steps > 0.3).all(), (item["text"], centres[:, axis])  # strictly, frame by frame
        assert np.abs(np.diff(centres[:, 1 - axis])).max() < 0.05  # no drift on the other axis
        assert np.abs(centres - item["centres"].numpy()).max() < 0.3  # the reported truth is the true one


def test_shape_stays_inside_the_frame() -> None:
    ds = ShapesDataset(n=40, num_frames=16, size=32, seed=2, speed=(3.0, 4.0), shape_size=(0.5, 0.6), holdout=())
    for i in range(len(ds)):
        fg = (ds[i]["video"] > -1.0).any(0)  # (T, H, W) foreground
        border = fg[:, 0, :].any() or fg[:, -1, :].any() or fg[:, :, 0].any() or fg[:, :, -1].any()
        assert not border, ds[i]["text"]
        area = fg.float().sum((1, 2))
        assert (area == area[0]).all() or (area.max() - area.min()) / area.max() < 0.15  # never clipped


def test_colour_and_silhouette_are_readable() -> None:
    ds = ShapesDataset(n=30, num_frames=2, size=32, seed=4, holdout=())
    for i in range(len(ds)):
        item = ds[i]
        frame = (item["video"][:, 0] + 1) * 127.5  # (3, H, W)
        colour = torch.tensor(COLOURS[item["factors"]["colour"]], dtype=torch.float32)
        assert (frame.reshape(3, -1).amax(1) - colour).abs().max() < 2  # the named colour is drawn
        solid = frame.sum(0) / colour.sum() > 0.5  # at least half covered (black background)
        area = solid.float().sum().item()
        ys, xs = torch.nonzero(solid, as_tuple=True)
        box = (xs.max() - xs.min() + 1).item() * (ys.max() - ys.min() + 1).item()
        fill = area / box  # square ~1, circle ~pi/4, triangle ~1/2
        expected = {"square": (0.9, 1.01), "circle": (0.65, 0.9), "triangle": (0.35, 0.65)}[item["factors"]["shape"]]
        assert expected[0] <= fill <= expected[1], (item["text"], fill)


def test_holdout_splits_are_disjoint_and_complete() -> None:
    seen = ShapesDataset(n=200, seed=0, split="seen")
    held = ShapesDataset(n=50, seed=0, split="held_out")
    every = ShapesDataset(n=10, seed=0, split="all")
    seen_f = {seen.factors_of(i) for i in range(len(seen))}
    held_f = {held.factors_of(i) for i in range(len(held))}
    assert not any(is_held_out(f, DEFAULT_HOLDOUT) for f in seen_f)
    assert all(is_held_out(f, DEFAULT_HOLDOUT) for f in held_f)
    assert len(held_f) == 3 * 4  # 3 colour-shape pairs x 4 directions, all reached
    assert len(seen.combinations) + len(held.combinations) == len(every.combinations)
    custom = ShapesDataset(n=20, holdout=["blue"], split="held_out")
    assert all(custom[i]["factors"]["colour"] == "blue" for i in range(5))
    assert custom.holdout == (HoldoutRule(colour="blue"),)


def test_bad_options_raise_data_error() -> None:
    with pytest.raises(DataError, match="no colour/shape/direction combination"):
        ShapesDataset(colours=["blue"], shapes=["triangle"], split="seen")
    with pytest.raises(DataError, match="background"):
        ShapesDataset(background="plaid")
    with pytest.raises(DataError, match="unknown colour"):
        ShapesDataset(colours=["mauve"])


def test_backgrounds_vary_but_keep_the_shape_visible() -> None:
    ds = ShapesDataset(n=4, num_frames=4, size=32, seed=0, background="noise", holdout=())
    item = ds[0]
    corner = (item["video"][:, :, :3, :3] + 1) * 127.5
    assert corner.std() > 1.0  # textured
    colour = torch.tensor(COLOURS[item["factors"]["colour"]]).view(3, 1, 1)
    solid = ((item["video"][:, 0] + 1) * 127.5 - colour).abs().amax(0) < 2
    assert solid.sum() > 20


def test_digits_are_real_handwritten_digits_and_captioned() -> None:
    from sklearn.datasets import load_digits

    from text2video.data.synthetic import DigitsDataset

    ds = DigitsDataset(n=6, num_frames=6, size=32, seed=5, num_digits=1)
    again = DigitsDataset(n=6, num_frames=6, size=32, seed=5, num_digits=1)
    bunch = load_digits()
    for i in range(len(ds)):
        item = ds[i]
        assert torch.equal(item["video"], again[i]["video"]) and item["text"] == again[i]["text"]
        assert item["text"] == f"the digit {item['factors']['digits']} bouncing"
        frame = ((item["video"][0, 0] + 1) * 127.5).numpy()
        cx, cy = item["centres"][0].tolist()
        d = ds.digit_size
        x0, y0 = int(round(cx - (d - 1) / 2)), int(round(cy - (d - 1) / 2))
        patch = frame[y0 : y0 + d, x0 : x0 + d]
        assert patch.sum() > 0.95 * frame.sum()  # the whole digit is where the truth says
        # the patch, shrunk back to 8x8, is closest to a real digit of the named class
        small = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(patch)[None, None], 8)[0, 0].numpy()
        small = small / max(small.max(), 1e-6)
        refs = bunch.images / 16.0
        nearest = int(np.argmin(((refs - small) ** 2).sum((1, 2))))
        assert str(bunch.target[nearest]) == item["factors"]["digits"]


def test_two_digits_bounce_inside_the_frame() -> None:
    from text2video.data.synthetic import DigitsDataset

    ds = DigitsDataset(n=5, num_frames=24, size=32, seed=0, num_digits=2, speed=(4.0, 5.0))
    for i in range(len(ds)):
        item = ds[i]
        labels = item["factors"]["digits"].split()
        assert len(labels) == 2 and item["text"] == f"the digits {labels[0]} and {labels[1]} bouncing"
        xs = item["centres"][:, 0].numpy()
        assert (xs >= (ds.digit_size - 1) / 2 - 1e-4).all() and (xs <= 32 - (ds.digit_size + 1) / 2 + 1e-4).all()
    # at 4-5 px per frame for 24 frames, some digit must have turned around at an edge
    turned = any((np.diff(np.sign(np.diff(ds[i]["centres"].numpy(), axis=0)), axis=0) != 0).any() for i in range(len(ds)))
    assert turned
