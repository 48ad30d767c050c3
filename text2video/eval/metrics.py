"""Distribution and reconstruction metrics: FVD, per-frame FID, PSNR, SSIM, CLIP similarity.

Videos are ``(B, C, T, H, W)`` float tensors in [-1, 1] (the package convention).

Feature extractors
------------------
* ``I3DExtractor``: the standard I3D TorchScript file used for published FVD numbers
  (``i3d_torchscript.pt``), loaded from a local path the user gives; never downloaded. Videos are
  resized to 224x224 and passed in [-1, 1] with ``rescale=False, resize=False, return_features=True``
  (400-d logits-layer features, the convention of the TensorFlow reference FVD).
* ``InceptionExtractor``: the Inception-v3 TorchScript file of the FID reference ports
  (``pt_inception-2015-12-05.pt``), frames passed as 0..255 floats with ``return_features=True``
  (2048-d pool features).
* ``RandomConvExtractor``: the fallback when no file is given. A fixed-seed, randomly initialised conv
  net (3-D for videos, 2-D for frames) on 64x64 inputs whose mean and standard deviation pooled
  activations form the features. It is deterministic and sensitive to appearance and motion, so it ranks
  models and tracks training, but its numbers are **not comparable with published FVD/FID**; every
  report says which extractor produced a number (``comparable_with_published``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from text2video.errors import ModelError, Text2VideoError
from text2video.eval.frechet import frechet_distance_from_features

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ helpers


def _as_batch(videos: Any) -> torch.Tensor:
    """(B, C, T, H, W) float32 tensor from a tensor, an array or a list of (C, T, H, W) tensors."""
    if isinstance(videos, (list, tuple)):
        videos = torch.stack([torch.as_tensor(v) for v in videos])
    x = torch.as_tensor(videos).detach().float().cpu()
    if x.ndim == 4:
        x = x.unsqueeze(0)
    if x.ndim != 5:
        raise ModelError(f"video batch of shape {tuple(x.shape)}: expected (B, C, T, H, W) in [-1, 1]")
    return x


def _to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W): grey repeated to RGB, alpha dropped."""
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1, -1)
    return x[:, :3]


# ------------------------------------------------------------------------------- PSNR and SSIM


def psnr(pred: Any, target: Any, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio (dB) per video, over all pixels of ``(B, C, T, H, W)`` tensors.
    ``data_range`` is max - min of the signal: 2 for [-1, 1], 255 for uint8. Identical videos give inf."""
    p, t = _as_batch(pred).double(), _as_batch(target).double()
    if p.shape != t.shape:
        raise ModelError(f"psnr: prediction {tuple(p.shape)} and target {tuple(t.shape)} differ in shape")
    mse = (p - t).pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(data_range**2 / mse)).float()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_frames(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 2.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """SSIM (Wang et al. 2004) of image batches ``(N, C, H, W)``: Gaussian window (11 taps, sigma 1.5),
    population statistics, the map averaged over the valid region and the channels. Returns ``(N,)``.
    Matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=...)``. Images smaller than the window use the largest odd
    window that fits."""
    p, t = pred.double(), target.double()
    win_size = min(win_size, p.shape[-1] - (1 - p.shape[-1] % 2), p.shape[-2] - (1 - p.shape[-2] % 2))
    if win_size < 3:
        raise ModelError(f"ssim: frames of {tuple(p.shape[-2:])} are too small (need at least 3x3)")
    g = gaussian_window(win_size, sigma)
    channels = p.shape[1]
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, win_size, win_size).contiguous()

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=channels)

    mu_p, mu_t = blur(p), blur(t)
    var_p = blur(p * p) - mu_p**2
    var_t = blur(t * t) - mu_t**2
    cov = blur(p * t) - mu_p * mu_t
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return ssim_map.flatten(1).mean(dim=1).float()


def ssim(pred: Any, target: Any, data_range: float = 2.0) -> torch.Tensor:
    """Mean per-frame SSIM of each video in ``(B, C, T, H, W)`` batches; returns ``(B,)``."""
    p, t = _as_batch(pred), _as_batch(target)
    if p.shape != t.shape:
        raise ModelError(f"ssim: prediction {tuple(p.shape)} and target {tuple(t.shape)} differ in shape")
    b, c, frames, h, w = p.shape
    per_frame = ssim_frames(
        p.permute(0, 2, 1, 3, 4).reshape(b * frames, c, h, w),
        t.permute(0, 2, 1, 3, 4).reshape(b * frames, c, h, w),
        data_range,
    )
    return per_frame.view(b, frames).mean(dim=1)


def reconstruction_metrics(pred: Any, target: Any, frame_mask: Sequence[bool] | None = None) -> dict[str, float]:
    """PSNR and SSIM (means over the batch) of predicted against ground-truth videos in [-1, 1], for
    prediction, interpolation and reconstruction. ``frame_mask`` (length T) selects the frames that were
    generated (e.g. the middle frames of an interpolation); the given frames are left out."""
    p, t = _as_batch(pred), _as_batch(target)
    if frame_mask is not None:
        keep = torch.as_tensor(list(frame_mask), dtype=torch.bool)
        if keep.numel() != p.shape[2] or not keep.any():
            raise ModelError(f"frame_mask of length {keep.numel()} must select some of the {p.shape[2]} frames")
        p, t = p[:, :, keep], t[:, :, keep]
    values = psnr(p, t)
    finite = values[torch.isfinite(values)]
    return {
        "psnr": float(finite.mean()) if finite.numel() else math.inf,
        "ssim": float(ssim(p, t).mean()),
        "frames": int(p.shape[2]),
        "videos": int(p.shape[0]),
    }


# --------------------------------------------------------------------------- feature extractors


class FeatureExtractor(Protocol):
    name: str
    comparable_with_published: bool

    def __call__(self, videos: torch.Tensor) -> np.ndarray:
        """(B, C, T, H, W) in [-1, 1] -> features (B, D)."""


class RandomConvExtractor(torch.nn.Module):
    """The documented fallback: a fixed-seed random conv net (see the module docstring).

    ``dims=3`` embeds whole videos (FVD), ``dims=2`` single frames (FID; ``T`` is folded into the batch
    by the caller). Inputs are resized to ``resolution`` x ``resolution``; features are the channel-wise
    mean and standard deviation of the last two layers' activations (384 values)."""

    comparable_with_published = False

    def __init__(self, dims: int = 3, seed: int = 0, resolution: int = 64) -> None:
        super().__init__()
        self.dims, self.seed, self.resolution = dims, seed, resolution
        self.name = f"random-conv{dims}d(seed={seed}, {resolution}px)"
        conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
        widths = (3, 32, 64, 128)
        gen = torch.Generator().manual_seed(seed)
        layers = []
        for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
            stride = (2 if (dims == 3 and i == 2) else 1, 2, 2) if dims == 3 else 2
            layer = conv(cin, cout, kernel_size=3, stride=stride, padding=1)
            fan_in = cin * 3**dims
            with torch.no_grad():
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                layer.bias.zero_()
            layers.append(layer)
        self.layers = torch.nn.ModuleList(layers)
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 3:
            b, c, t, h, w = x.shape
            x = F.interpolate(x, size=(t, self.resolution, self.resolution), mode="trilinear", align_corners=False)
        else:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        feats = []
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x))
            if i > 0:
                flat = x.flatten(2)
                feats += [flat.mean(dim=2), flat.std(dim=2, unbiased=False)]
        return torch.cat(feats, dim=1)

    def __call__(self, videos: torch.Tensor) -> np.ndarray:  # type: ignore[override]
        return super().__call__(videos).double().numpy()


class I3DExtractor:
    """The standard I3D TorchScript file (see the module docstring), from a local path."""

    comparable_with_published = True

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.model = _load_torchscript(path, "I3D (i3d_torchscript.pt)", device)
        self.device = device
        self.name = f"i3d-torchscript({Path(path).name})"

    @torch.no_grad()
    def __call__(self, videos: torch.Tensor) -> np.ndarray:
        x = _to_rgb(videos).to(self.device)
        x = F.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        feats = self.model(x, rescale=False, resize=False, return_features=True)
        return feats.double().cpu().numpy()


class InceptionExtractor:
    """The Inception-v3 TorchScript file of the FID reference ports, from a local path (per frame)."""

    comparable_with_published = True

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.model = _load_torchscript(path, "Inception (pt_inception-2015-12-05.pt)", device)
        self.device = device
        self.name = f"inception-torchscript({Path(path).name})"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = (images.clamp(-1, 1) + 1) * 127.5
        feats = self.model(x.to(self.device), return_features=True)
        return feats.double().cpu().numpy()


def _load_torchscript(path: str | Path, what: str, device: str) -> torch.jit.ScriptModule:
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"{what} file {path} not found; give the path of a local copy, or leave the option out to "
            "use the fallback extractor (numbers then not comparable with published ones)"
        )
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # torch raises RuntimeError / ValueError variants for non-TorchScript files
        raise ModelError(f"{what} file {path} is not a TorchScript model ({exc}); export it with torch.jit.save") from exc


def video_extractor(i3d_path: str | Path | None = None, device: str = "cpu") -> FeatureExtractor:
    """I3D when a local file is given, else the random-conv fallback (logged as not comparable)."""
    if i3d_path:
        return I3DExtractor(i3d_path, device)
    log.info("no I3D file given: FVD uses the random-conv fallback, not comparable with published FVD")
    return RandomConvExtractor(dims=3)


def image_extractor(inception_path: str | Path | None = None, device: str = "cpu") -> FeatureExtractor:
    """Inception when a local file is given, else the 2-D random-conv fallback."""
    if inception_path:
        return InceptionExtractor(inception_path, device)
    log.info("no Inception file given: FID uses the random-conv fallback, not comparable with published FID")
    return RandomConvExtractor(dims=2)


# ------------------------------------------------------------------------------------- FVD / FID


@dataclass(frozen=True)
class FrechetProtocol:
    """What a Fréchet number was computed on; written into every report next to the number."""

    metric: str  # "FVD" or "FID (per frame)"
    num_real: int
    num_fake: int
    num_frames: int
    resolution: tuple[int, int]
    seed: int
    extractor: str
    comparable_with_published: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def video_features(videos: Iterable[Any], extractor: FeatureExtractor, batch_size: int = 16) -> np.ndarray:
    """Features ``(N, D)`` of videos given as a batch tensor or an iterable of (C, T, H, W) tensors."""
    out: list[np.ndarray] = []
    if isinstance(videos, torch.Tensor) and videos.ndim == 5:
        videos = list(videos)
    batch: list[torch.Tensor] = []
    for v in videos:
        batch.append(torch.as_tensor(v).float())
        if len(batch) == batch_size:
            out.append(extractor(_to_rgb(_as_batch(batch))))
            batch = []
    if batch:
        out.append(extractor(_to_rgb(_as_batch(batch))))
    if not out:
        raise Text2VideoError("no video to compute features on")
    return np.concatenate(out)


def frame_features(videos: Iterable[Any], extractor: FeatureExtractor, batch_size: int = 16) -> np.ndarray:
    """Per-frame features ``(N*T, D)`` for FID: every frame of every video is one sample."""
    out: list[np.ndarray] = []
    if isinstance(videos, torch.Tensor) and videos.ndim == 5:
        videos = list(videos)
    for start_batch in _chunks(videos, batch_size):
        x = _to_rgb(_as_batch(start_batch))
        b, c, t, h, w = x.shape
        out.append(extractor(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)))
    if not out:
        raise Text2VideoError("no video to compute features on")
    return np.concatenate(out)


def _chunks(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(torch.as_tensor(item).float())
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def fvd(real: Any, fake: Any, extractor: FeatureExtractor | None = None, seed: int = 0) -> tuple[float, FrechetProtocol]:
    """Fréchet video distance between two sets of videos (each a (N, C, T, H, W) tensor or a list of
    (C, T, H, W) tensors, same T and size), and the protocol it was computed under."""
    extractor = extractor or RandomConvExtractor(dims=3)
    real_b, fake_b = _as_batch(real), _as_batch(fake)
    value = frechet_distance_from_features(video_features(real_b, extractor), video_features(fake_b, extractor))
    protocol = FrechetProtocol(
        "FVD",
        len(real_b),
        len(fake_b),
        int(fake_b.shape[2]),
        tuple(fake_b.shape[-2:]),
        seed,
        extractor.name,
        extractor.comparable_with_published,
    )
    return value, protocol


def fid_frames(real: Any, fake: Any, extractor: FeatureExtractor | None = None, seed: int = 0) -> tuple[float, FrechetProtocol]:
    """Per-frame FID: every frame is one sample of the real and of the generated distribution."""
    extractor = extractor or RandomConvExtractor(dims=2)
    real_b, fake_b = _as_batch(real), _as_batch(fake)
    value = frechet_distance_from_features(frame_features(real_b, extractor), frame_features(fake_b, extractor))
    protocol = FrechetProtocol(
        "FID (per frame)",
        len(real_b),
        len(fake_b),
        int(fake_b.shape[2]),
        tuple(fake_b.shape[-2:]),
        seed,
        extractor.name,
        extractor.comparable_with_published,
    )
    return value, protocol


# -------------------------------------------------------------------------------------------- CLIP

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _pooled(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def clip_similarity(videos: Any, prompts: Sequence[str], clip_dir: str | Path, num_frames: int = 4, device: str = "cpu") -> list[float]:
    """Mean cosine similarity between each video's frames (``num_frames`` evenly spaced) and its prompt,
    with a CLIP model loaded from a local folder (transformers ``CLIPModel`` + its tokenizer)."""
    from transformers import AutoTokenizer, CLIPModel

    folder = Path(clip_dir)
    if not folder.is_dir():
        raise ModelError(f"CLIP folder {folder} not found; pass a local folder saved with CLIPModel.save_pretrained")
    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True, trust_remote_code=False).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a CLIP model and tokenizer from {folder}: {exc}") from exc
    x = _to_rgb(_as_batch(videos))
    if len(prompts) != x.shape[0]:
        raise ModelError(f"clip_similarity: {x.shape[0]} videos but {len(prompts)} prompts")
    b, _, t, _, _ = x.shape
    picks = torch.linspace(0, t - 1, min(num_frames, t)).round().long().unique()
    frames = x[:, :, picks].permute(0, 2, 1, 3, 4).reshape(-1, 3, *x.shape[-2:])
    size = model.config.vision_config.image_size
    frames = F.interpolate((frames + 1) / 2, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor(_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_CLIP_STD).view(1, 3, 1, 1)
    image = F.normalize(_pooled(model.get_image_features(pixel_values=((frames - mean) / std).to(device))), dim=-1)
    max_len = model.config.text_config.max_position_embeddings
    tokens = tokenizer(list(prompts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    text = F.normalize(
        _pooled(model.get_text_features(input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device))),
        dim=-1,
    )
    sims = (image.view(b, len(picks), -1) * text[:, None, :]).sum(-1).mean(dim=1)
    return [float(s) for s in sims.cpu()]
