"""Samplers: correctness against a Gaussian with a closed-form optimal denoiser, guidance, masks, seeds, errors."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from text2video.diffusion.conditioning import Conditioning
from text2video.diffusion.objective import DiffusionObjective, ObjectiveConfig
from text2video.diffusion.sampling import SAMPLERS, dynamic_threshold_x0, plan_sampling, sample
from text2video.errors import ConfigError

MU, SIGMA = 0.3, 0.5
SHAPE = (8, 2, 4, 16, 16)  # 4096 values


class GaussianDenoiser:
    """The optimal denoiser of data x0 ~ N(mu, sigma^2) per element, for any prediction type.

    The schedule comes from diffusers' DDPMScheduler, independently of our objective.
    With x_t = a x0 + s n: E[x0 | x_t] = mu + a sigma^2 / (a^2 sigma^2 + s^2) (x_t - a mu).
    """

    def __init__(self, schedule: str, prediction_type: str, rescale: bool = False, mu=MU, sigma=SIGMA) -> None:
        names = {"cosine": "squaredcos_cap_v2"}
        ref = DDPMScheduler(beta_schedule=names.get(schedule, schedule), rescale_betas_zero_snr=rescale)
        self.ab = ref.alphas_cumprod.double()
        self.kind, self.mu, self.sigma = prediction_type, mu, sigma
        self.calls = 0

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        self.calls += 1
        ab = self.ab[t.long()].view(-1, 1, 1, 1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        x = x_t.double()
        x0 = self.mu + a * self.sigma**2 / (a**2 * self.sigma**2 + s**2) * (x - a * self.mu)
        if self.kind == "sample":
            out = x0
        elif self.kind == "epsilon":
            out = (x - a * x0) / s
        else:
            eps = (x - a * x0) / s
            out = a * eps - s * x0
        return out.to(x_t.dtype)


def _gens(n: int, base: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


# Relative tolerance on the standard deviation at 50 steps. First-order samplers under-disperse at few steps
# (DDPM's posterior variance most); they converge as steps grow (checked below at 250 steps).
STD_TOLERANCE_50 = {"ddpm": 0.15, "euler_ancestral": 0.15, "ddim": 0.08, "euler": 0.08, "dpmpp_2m": 0.03, "unipc": 0.03}


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_every_sampler_matches_the_data_distribution(sampler: str, kind: str) -> None:
    obj = DiffusionObjective(ObjectiveConfig(beta_schedule="cosine", prediction_type=kind))
    model = GaussianDenoiser("cosine", kind)
    x = sample(model, SHAPE, objective=obj, sampler=sampler, steps=50, clip_x0=False, generators=_gens(SHAPE[0]))
    assert abs(x.mean().item() - MU) < 0.03
    assert abs(x.std().item() - SIGMA) < STD_TOLERANCE_50[sampler] * SIGMA
    assert model.calls == 50


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "euler", "euler_ancestral"])
def test_first_order_samplers_converge_with_more_steps(sampler: str) -> None:
    obj = DiffusionObjective(ObjectiveConfig(beta_schedule="linear"))
    model = GaussianDenoiser("linear", "epsilon")
    std = {}
    for steps in (25, 250):
        x = sample(model, SHAPE, objective=obj, sampler=sampler, steps=steps, clip_x0=False, generators=_gens(SHAPE[0]))
        std[steps] = x.std().item()
    assert abs(std[250] - SIGMA) < 0.04 * SIGMA
    assert abs(std[250] - SIGMA) < abs(std[25] - SIGMA)


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpmpp_2m", "unipc"])
def test_zero_terminal_snr_with_v_prediction(sampler: str) -> None:
    obj = DiffusionObjective(ObjectiveConfig(beta_schedule="linear", rescale_zero_terminal_snr=True, prediction_type="v_prediction"))
    model = GaussianDenoiser("linear", "v_prediction", rescale=True)
    x = sample(model, SHAPE, objective=obj, sampler=sampler, steps=50, clip_x0=False, generators=_gens(SHAPE[0]))
    assert abs(x.mean().item() - MU) < 0.03
    assert abs(x.std().item() - SIGMA) < STD_TOLERANCE_50[sampler] * SIGMA


def test_ddim_with_eta_one_is_stochastic_and_still_correct() -> None:
    obj = DiffusionObjective()
    model = GaussianDenoiser("cosine", "epsilon")
    deterministic = sample(model, SHAPE, objective=obj, steps=50, clip_x0=False, generators=_gens(SHAPE[0]))
    noisy = sample(model, SHAPE, objective=obj, steps=50, eta=1.0, clip_x0=False, generators=_gens(SHAPE[0]))
    assert not torch.allclose(deterministic, noisy, atol=1e-3)
    assert abs(noisy.mean().item() - MU) < 0.03
    assert abs(noisy.std().item() - SIGMA) < 0.15 * SIGMA


class TextToy:
    """A model whose output depends on the condition: x * 0.1 + pooled text (zeros where text is dropped)."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        self.batches.append(x_t.shape[0])
        pooled = cond.text_pooled
        if cond.null_text is not None:
            pooled = torch.where(cond.null_text[:, None], torch.zeros_like(pooled), pooled)
        shift = pooled.mean(1).view(-1, 1, 1, 1, 1) * (1 + t.float().view(-1, 1, 1, 1, 1) / 1000)
        return 0.1 * x_t + shift


class TwoPassGuidance:
    """Reference: classifier-free guidance by two separate model calls."""

    def __init__(self, model, scale: float, negative: Conditioning | None = None) -> None:
        self.model, self.scale, self.negative = model, scale, negative

    def __call__(self, x_t, t, cond):
        pos = self.model(x_t, t, cond)
        neg = self.model(x_t, t, self.negative if self.negative is not None else cond.text_dropped())
        return neg + self.scale * (pos - neg)


def _text_cond(b: int, seed: int = 0) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    return Conditioning(
        text_tokens=torch.randn(b, 3, 4, generator=g),
        text_mask=torch.ones(b, 3, dtype=torch.bool),
        text_pooled=torch.randn(b, 4, generator=g),
    )


@pytest.mark.parametrize("use_negative", [False, True])
def test_guidance_in_one_batched_pass_equals_two_passes(use_negative: bool) -> None:
    obj = DiffusionObjective()
    cond = _text_cond(2)
    negative = _text_cond(2, seed=7) if use_negative else None
    batched_model = TextToy()
    batched = sample(batched_model, (2, 1, 2, 4, 4), cond, objective=obj, steps=8, guidance_scale=3.0,
                     negative_cond=negative, generators=_gens(2), clip_x0=False)  # fmt: skip
    assert batched_model.batches == [4] * 8  # one pass of cond + uncond per step
    reference = sample(TwoPassGuidance(TextToy(), 3.0, negative), (2, 1, 2, 4, 4), cond, objective=obj, steps=8,
                       generators=_gens(2), clip_x0=False)  # fmt: skip
    torch.testing.assert_close(batched, reference, atol=1e-5, rtol=1e-5)
    unguided = sample(TextToy(), (2, 1, 2, 4, 4), cond, objective=obj, steps=8, generators=_gens(2), clip_x0=False)
    assert not torch.allclose(batched, unguided)


class ImageReadingToy:
    """Predicts x0 = cond.image where given, else 0.5; remembers whether it saw the image."""

    def __init__(self) -> None:
        self.saw_image = False

    def __call__(self, x_t, t, cond):
        self.saw_image = self.saw_image or cond.image is not None
        return torch.full_like(x_t, 0.5)  # x0 prediction type "sample"


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("given", [[0], [0, 1], [0, 4]])
def test_given_frames_are_kept_exactly(sampler: str, given: list[int]) -> None:
    obj = DiffusionObjective(ObjectiveConfig(prediction_type="sample"))
    b, frames = 2, 5
    image = torch.rand(b, 3, frames, 4, 4) * 2 - 1
    mask = torch.zeros(b, frames, dtype=torch.bool)
    mask[:, given] = True
    model = ImageReadingToy()
    out = sample(
        model, image.shape, Conditioning(image=image, frame_mask=mask), objective=obj, sampler=sampler, steps=6, generators=_gens(b)
    )
    assert model.saw_image
    assert torch.equal(out[:, :, given], image[:, :, given])
    rest = [i for i in range(frames) if i not in given]
    torch.testing.assert_close(out[:, :, rest], torch.full_like(out[:, :, rest], 0.5), atol=1e-4, rtol=0)


def test_given_frames_guide_a_model_that_ignores_the_image() -> None:
    # Data: all frames of a video equal one value c ~ N(0, 1). A replacement-only sampler must pull the
    # generated frames towards the given frame. The toy is the optimal denoiser of this data that ignores cond.
    obj = DiffusionObjective(ObjectiveConfig(prediction_type="sample", beta_schedule="linear"))
    ab_all = DDPMScheduler(beta_schedule="linear").alphas_cumprod.double()

    def model(x_t, t, cond):
        ab = ab_all[t.long()].view(-1, 1, 1, 1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        n = x_t[0, 0].numel()
        mean = x_t.double().mean(dim=(2, 3, 4), keepdim=True)
        return (a * n * mean / (a**2 * n + s**2)).expand_as(x_t).to(x_t.dtype)

    b, frames = 16, 4
    values = torch.randn(b, generator=torch.Generator().manual_seed(5))
    image = values.view(b, 1, 1, 1, 1).expand(b, 1, frames, 4, 4).clone()
    mask = torch.zeros(b, frames, dtype=torch.bool)
    mask[:, 0] = True
    out = sample(model, image.shape, Conditioning(image=image, frame_mask=mask), objective=obj, sampler="ddim",
                 steps=50, generators=_gens(b), clip_x0=False)  # fmt: skip
    generated = out[:, 0, 1:].mean(dim=(1, 2, 3))
    assert torch.corrcoef(torch.stack([generated, values]))[0, 1] > 0.95


@pytest.mark.parametrize("sampler", ["ddpm", "euler_ancestral", "dpmpp_2m"])
def test_same_seed_reproduces_and_batch_equals_single_calls(sampler: str) -> None:
    obj = DiffusionObjective()
    model = GaussianDenoiser("cosine", "epsilon")
    b, frames = 3, 3
    image = torch.rand(b, 2, frames, 4, 4)
    mask = torch.zeros(b, frames, dtype=torch.bool)
    mask[:, 0] = True
    cond = Conditioning(image=image, frame_mask=mask)
    kw = dict(objective=obj, sampler=sampler, steps=10)
    batch = sample(model, (b, 2, frames, 4, 4), cond, generators=_gens(b, 10), **kw)
    again = sample(model, (b, 2, frames, 4, 4), cond, generators=_gens(b, 10), **kw)
    assert torch.equal(batch, again)
    singles = torch.cat([sample(model, (1, 2, frames, 4, 4), cond.index([i]), generators=_gens(1, 10 + i), **kw) for i in range(b)])
    torch.testing.assert_close(batch, singles, atol=1e-6, rtol=0)
    other = sample(model, (b, 2, frames, 4, 4), cond, generators=_gens(b, 20), **kw)
    assert not torch.allclose(batch, other)


def test_clipping_and_dynamic_thresholding() -> None:
    obj = DiffusionObjective(ObjectiveConfig(prediction_type="sample"))

    def far(x_t, t, cond):
        return torch.full_like(x_t, 3.0)

    clipped = sample(far, (1, 1, 2, 4, 4), objective=obj, steps=5, generators=_gens(1))
    torch.testing.assert_close(clipped, torch.ones_like(clipped))
    free = sample(far, (1, 1, 2, 4, 4), objective=obj, steps=5, generators=_gens(1), clip_x0=False)
    torch.testing.assert_close(free, torch.full_like(free, 3.0), atol=1e-4, rtol=0)
    # Dynamic thresholding against a direct computation: s = quantile(|x0|, p) per video, at least 1.
    x0 = torch.cat([torch.linspace(-4, 4, 100).view(1, 1, 1, 10, 10), torch.linspace(-0.5, 0.5, 100).view(1, 1, 1, 10, 10)])
    out = dynamic_threshold_x0(x0, 0.9)
    s = torch.quantile(x0[0].abs().flatten(), 0.9)
    torch.testing.assert_close(out[0], x0[0].clamp(-s, s) / s)
    torch.testing.assert_close(out[1], x0[1])
    assert out.abs().max() <= 1.0


def test_partial_noise_start_stays_near_init() -> None:
    obj = DiffusionObjective(ObjectiveConfig(prediction_type="sample"))
    plan = plan_sampling(obj, "ddim", 50, strength=0.2)
    assert len(plan.timesteps) == 10 and plan.start_timestep == 199

    def identity(x_t, t, cond):  # predicts x0 = x_t / a_t
        ab = DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod[t.long()].view(-1, 1, 1, 1, 1)
        return x_t / ab.sqrt()

    init = torch.rand(2, 1, 2, 8, 8) * 2 - 1
    near = sample(identity, init.shape, objective=obj, steps=50, init=init, strength=0.02, generators=_gens(2))
    assert (near - init).abs().mean() < 0.1
    far = sample(identity, init.shape, objective=obj, steps=50, generators=_gens(2))
    assert (far - init).abs().mean() > 0.3


def test_errors_for_impossible_settings() -> None:
    obj = DiffusionObjective(ObjectiveConfig(num_train_timesteps=100))
    model = GaussianDenoiser("cosine", "epsilon")
    with pytest.raises(ConfigError) as err:
        sample(model, (1, 1, 1, 2, 2), objective=obj, sampler="plms")
    for name in SAMPLERS:
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="more than the 100 training timesteps"):
        sample(model, (1, 1, 1, 2, 2), objective=obj, sampler="ddpm", steps=200)
    image = torch.zeros(1, 1, 4, 2, 2)
    with pytest.raises(ConfigError, match="4 frames"):
        sample(model, image.shape, Conditioning(image=image, frame_mask=torch.ones(1, 3, dtype=torch.bool)), objective=obj, steps=5)
    with pytest.raises(ConfigError, match="generators"):
        sample(model, (2, 1, 1, 2, 2), objective=obj, steps=5, generators=_gens(3))
