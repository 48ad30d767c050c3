"""Small stand-ins for the trainer tests: a toy denoiser, objective, text encoder and dataset."""

from __future__ import annotations

import math

import torch
from torch import nn

from text2video.config import config_from_dict
from text2video.diffusion.denoise import denoise
from text2video.text.encoders import TextEmbeddings as ToyEmbeddings


class ToyDenoiser(nn.Module):
    def __init__(self, channels: int = 3, text_dim: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 3, padding=1)
        self.text = nn.Linear(text_dim, channels)
        self.null = nn.Parameter(torch.zeros(channels))
        self.time = nn.Linear(1, channels)
        self.dropout = nn.Dropout(0.2)  # uses the global torch RNG: exact resume must restore it

    def forward_cond(self, x, t, cond):
        text = self.text(cond.text_pooled)
        if cond.null_text is not None:
            text = torch.where(cond.null_text[:, None], self.null.expand_as(text), text)
        bias = text + self.time(t.float()[:, None] / 1000)
        return self.dropout(self.conv(x)) + bias[:, :, None, None, None]


class ToyObjective:
    """eps-prediction MSE on a cosine schedule; records the conditions it saw."""

    def __init__(self) -> None:
        self.seen = []

    def loss(self, model, x0, cond, generator=None):
        self.seen.append(cond)
        b = x0.shape[0]
        t = torch.randint(0, 1000, (b,), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        a = torch.cos(t.float() / 1000 * math.pi / 2).view(b, 1, 1, 1, 1)
        x_t = a * x0 + (1 - a**2).sqrt() * noise
        pred = denoise(model, x_t, t, cond)
        return ((pred - noise) ** 2).mean(), {}


class ToyTextEncoder:
    dim = 8
    max_length = 4
    id = "toy"
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        pooled = torch.stack([torch.tensor([float(len(t) % (i + 2)) for i in range(self.dim)]) for t in texts])
        tokens = pooled[:, None, :].repeat(1, self.max_length, 1)
        return ToyEmbeddings(tokens, torch.ones(len(texts), self.max_length, dtype=torch.bool), pooled)


class ToyVideos(torch.utils.data.Dataset):
    def __init__(self, n: int = 24, frames: int = 4, size: int = 8) -> None:
        g = torch.Generator().manual_seed(1)
        self.videos = torch.rand(n, 3, frames, size, size, generator=g) * 2 - 1
        self.texts = [f"clip {i % 5}" for i in range(n)]

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        return {"video": self.videos[i], "text": self.texts[i], "fps": 8.0, "path": f"clip{i}.gif"}


def toy_config(**train):
    settings = dict(steps=6, batch_size=4, lr=1e-2, warmup_steps=2, log_every=2, save_every=3, sample_every=0, cpu=True)
    settings.update(train)
    return config_from_dict(
        {
            "data": {"kind": "shapes", "num_frames": 4, "size": 8},
            "model": {"name": "unet3d"},
            "train": settings,
            "sample": {"prompts": ["clip 1", "clip 2"], "steps": 2},
        }
    )


def toy_sample(model, shape, cond, generators):
    """A one-step 'sampler': the model's prediction from pure noise."""
    x = torch.stack([torch.randn(shape[1:], generator=g) for g in generators])
    return denoise(model, x, torch.full((shape[0],), 999), cond).clamp(-1, 1)


def make_trainer(tmp_path, config=None, **kwargs):
    from text2video.train.trainer import Trainer

    torch.manual_seed(0)
    return Trainer(
        config or toy_config(),
        tmp_path,
        model=ToyDenoiser(),
        dataset=ToyVideos(),
        text_encoder=ToyTextEncoder(),
        objective=kwargs.pop("objective", ToyObjective()),
        sample_fn=toy_sample,
        progress=False,
        **kwargs,
    )
