"""The Fréchet distance between two Gaussians, computed stably.

``d² = |mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½)``.

The trace of the matrix square root is the sum of the square roots of the eigenvalues of ``S1 S2``.
Those equal the eigenvalues of the symmetric matrix ``S1^½ S2 S1^½``, so everything is done with
symmetric eigendecompositions (``numpy.linalg.eigh``) in float64, clipping the tiny negative eigenvalues
that rounding leaves on positive semi-definite matrices. Near-singular covariances (fewer samples than
feature dimensions) are handled; if the result is still not finite a small ridge ``eps * I`` is added to
both covariances and the computation is repeated.
"""

from __future__ import annotations

import logging

import numpy as np

from text2video.errors import Text2VideoError

log = logging.getLogger(__name__)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, float64) of ``features`` ``(N, D)``."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise Text2VideoError(f"features of shape {feats.shape}: need a 2-D array (N, D) with N >= 2 samples; evaluate more videos (--n)")
    return feats.mean(axis=0), np.cov(feats, rowvar=False).reshape(feats.shape[1], feats.shape[1])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((sigma1 @ sigma2)^½)`` for symmetric PSD ``sigma1``, ``sigma2``."""
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    vals = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(vals, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    This is the number FID and FVD report. Inputs are cast to float64; a negative result from rounding
    is clipped to 0.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise Text2VideoError(
            f"Fréchet distance: mismatched statistics mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
            f"{sigma2.shape}; both sides must come from the same feature extractor"
        )
    diff = mu1 - mu2
    tr_covmean = trace_sqrt_product(sigma1, sigma2)
    if not np.isfinite(tr_covmean):
        log.warning("Fréchet distance: non-finite trace, adding %g to the covariance diagonals", eps)
        ridge = eps * np.eye(sigma1.shape[0])
        tr_covmean = trace_sqrt_product(sigma1 + ridge, sigma2 + ridge)
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def frechet_distance_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fit a Gaussian to each feature set ``(N, D)`` and return their Fréchet distance."""
    return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))
