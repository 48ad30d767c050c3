"""The training objective: agreement with diffusers, targets, loss values, masks, config errors."""

from __future__ import annotations

import math
import re

import pytest
import torch
from diffusers import DDPMScheduler

from text2video.diffusion.conditioning import Conditioning
from text2video.diffusion.objective import DiffusionObjective, ObjectiveConfig
from text2video.diffusion.schedule import SAMPLERS
from text2video.errors import ConfigError

SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


def _diffusers(schedule: str, rescale: bool = False, **kw) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule=SCHEDULES[schedule], rescale_betas_zero_snr=rescale, **kw)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("rescale", [False, True])
def test_q_sample_and_velocity_agree_with_diffusers(schedule: str, rescale: bool) -> None:
    obj = DiffusionObjective(ObjectiveConfig(beta_schedule=schedule, rescale_zero_terminal_snr=rescale, prediction_type="v_prediction"))
    ref = _diffusers(schedule, rescale)
    x0 = torch.randn(6, 3, 2, 4, 4)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    torch.testing.assert_close(obj.q_sample(x0, t, noise), ref.add_noise(x0, noise, t), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(obj.target(x0, noise, t), ref.get_velocity(x0, noise, t), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(obj.alphas_cumprod.float(), ref.alphas_cumprod, atol=1e-6, rtol=1e-4)


def test_cosine_schedule_is_seed_001s_up_to_the_last_clip() -> None:
    # text2video-from-scratch: alpha_bar(x) = cos(((x/T) + s) / (1 + s) * pi/2)^2, betas clipped at 0.9999.
    T, s = 1000, 0.008
    x = torch.linspace(0, T, T + 1, dtype=torch.float64)
    ab = torch.cos(((x / T) + s) / (1 + s) * math.pi * 0.5) ** 2
    seed_betas = torch.clip(1 - ab[1:] / ab[:-1], 0, 0.9999)
    ours = DiffusionObjective(ObjectiveConfig(beta_schedule="cosine")).betas
    torch.testing.assert_close(ours[:-1], seed_betas[:-1], atol=1e-9, rtol=1e-7)
    assert ours[-1] == pytest.approx(0.999)


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_targets_invert_to_x0_and_noise(kind: str) -> None:
    obj = DiffusionObjective(ObjectiveConfig(prediction_type=kind, beta_schedule="linear"))
    x0, noise = torch.randn(4, 2, 3, 4, 4), torch.randn(4, 2, 3, 4, 4)
    t = torch.tensor([3, 100, 600, 990])
    x_t = obj.q_sample(x0, t, noise)
    target = obj.target(x0, noise, t)
    torch.testing.assert_close(obj.predict_x0(x_t, t, target), x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(obj.predict_noise(x_t, t, target), noise, atol=1e-4, rtol=1e-4)
    v_ref = _diffusers("linear").get_velocity(x0, noise, t)
    torch.testing.assert_close(obj.velocity_from_x0(x_t, t, x0), v_ref, atol=1e-4, rtol=1e-4)


class _Recorder:
    """Toy model returning zeros and remembering what it saw."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, Conditioning]] = []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        self.calls.append((x_t, t, cond))
        return torch.zeros_like(x_t)


@pytest.mark.parametrize("loss_type", ["l1", "l2", "huber"])
def test_loss_values_against_an_independent_computation(loss_type: str) -> None:
    obj = DiffusionObjective(ObjectiveConfig(prediction_type="sample", loss_type=loss_type, huber_delta=0.5))
    x0 = torch.randn(3, 2, 4, 4, 4) * 2
    loss, stats = obj.loss(_Recorder(), x0)
    diff = x0.abs()  # the model predicts 0, the target is x0
    expected = {"l1": diff, "l2": diff**2, "huber": torch.where(diff < 0.5, 0.5 * diff**2, 0.5 * (diff - 0.25))}[loss_type]
    assert loss.item() == pytest.approx(expected.mean().item(), rel=1e-5)
    assert stats["loss"].item() == pytest.approx(loss.item())


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_min_snr_weights(kind: str) -> None:
    gamma = 5.0
    obj = DiffusionObjective(ObjectiveConfig(prediction_type=kind, min_snr_gamma=gamma, beta_schedule="linear", loss_type="l1"))
    ab = _diffusers("linear").alphas_cumprod.double()
    t = torch.tensor([10, 400, 900])
    snr = ab[t] / (1 - ab[t])
    clipped = snr.clamp(max=gamma)
    expected = {"epsilon": clipped / snr, "sample": clipped, "v_prediction": clipped / (snr + 1)}[kind]
    torch.testing.assert_close(obj.loss_weights(t).double(), expected, atol=1e-5, rtol=1e-4)
    # The weighted loss is the mean of per-item losses times the weights.
    x0 = torch.randn(3, 1, 2, 4, 4)
    gen = torch.Generator().manual_seed(1)
    loss, stats = obj.loss(_Recorder(), x0, t=t, generator=gen)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(x0.shape, generator=gen)
    per_item = obj.target(x0, noise, t).abs().flatten(1).mean(1)
    assert loss.item() == pytest.approx((per_item * expected.float()).mean().item(), rel=1e-4)


@pytest.mark.parametrize("bias, portion, multiplier", [("later", 0.3, 3.0), ("earlier", 0.1, 5.0), ("later", 1.0, 4.0)])
def test_timestep_bias_draws_the_chosen_portion_more_often(bias: str, portion: float, multiplier: float) -> None:
    obj = DiffusionObjective(ObjectiveConfig(timestep_bias=bias, timestep_bias_portion=portion, timestep_bias_multiplier=multiplier))
    n = obj.num_train_timesteps
    k = round(portion * n)
    index = torch.arange(n)
    part = index >= n - k if bias == "later" else index < k
    share = k * multiplier / (k * multiplier + (n - k))  # the portion's expected share of the draws
    probs = obj.timestep_probabilities()
    assert probs.sum().item() == pytest.approx(1.0)
    assert probs[part].sum().item() == pytest.approx(share)
    t = obj.sample_timesteps(40_000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and 0 <= int(t.min()) and int(t.max()) < n
    assert part[t].float().mean().item() == pytest.approx(share, abs=0.01)
    # the loss draws its timesteps the same way
    seen = _Recorder()
    obj.loss(seen, torch.zeros(4000, 1, 1, 1, 1), generator=torch.Generator().manual_seed(1))
    assert part[seen.calls[0][1]].float().mean().item() == pytest.approx(share, abs=0.03)


def test_no_timestep_bias_is_uniform() -> None:
    obj = DiffusionObjective(ObjectiveConfig(timestep_bias="later", timestep_bias_multiplier=1.0))
    torch.testing.assert_close(obj.timestep_probabilities(), torch.full((1000,), 1e-3, dtype=torch.float64))
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    plain = DiffusionObjective(ObjectiveConfig())
    assert torch.equal(obj.sample_timesteps(16, gen_a), plain.sample_timesteps(16, gen_b))


def test_timestep_bias_ends_after_its_steps() -> None:
    obj = DiffusionObjective(
        ObjectiveConfig(timestep_bias="later", timestep_bias_portion=0.1, timestep_bias_multiplier=1e6, timestep_bias_steps=5)
    )
    plain = DiffusionObjective(ObjectiveConfig())
    early = obj.sample_timesteps(2000, torch.Generator().manual_seed(0), step=4)
    assert int(early.min()) >= 900  # only the noisiest tenth while the bias lasts
    late = obj.sample_timesteps(64, torch.Generator().manual_seed(0), step=5)
    assert torch.equal(late, plain.sample_timesteps(64, torch.Generator().manual_seed(0)))
    assert int(obj.sample_timesteps(500, torch.Generator().manual_seed(0)).min()) >= 900  # no step: biased
    seen = _Recorder()
    obj.loss(seen, torch.zeros(2000, 1, 1, 1, 1), generator=torch.Generator().manual_seed(2), step=10)
    assert (seen.calls[0][1] < 900).float().mean().item() == pytest.approx(0.9, abs=0.03)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"timestep_bias": "noisy"}, "timestep_bias 'noisy' is not supported"),
        ({"timestep_bias_portion": 0.0}, "timestep_bias_portion must be in (0, 1]"),
        ({"timestep_bias_multiplier": -1.0}, "timestep_bias_multiplier must be positive"),
        ({"timestep_bias_steps": -3}, "timestep_bias_steps must be a whole number >= 0 or None"),
    ],
)
def test_timestep_bias_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        ObjectiveConfig(**kwargs)


def test_given_frames_are_excluded_from_the_loss() -> None:
    obj = DiffusionObjective(ObjectiveConfig(prediction_type="sample", loss_type="l1"))
    x0 = torch.ones(2, 1, 4, 2, 2)
    x0[:, :, 0] = 100.0  # a loss that counted frame 0 would be huge
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[:, 0] = True
    cond = Conditioning(image=x0 * mask[:, None, :, None, None], frame_mask=mask)
    loss, stats = obj.loss(_Recorder(), x0, cond)
    assert loss.item() == pytest.approx(1.0)
    assert stats["given_frames"].item() == pytest.approx(0.25)


@pytest.mark.parametrize(
    "task, expected",
    [("image_to_video", [True, False, False, False, False]), ("interpolation", [True, False, False, False, True])],
)
def test_random_frame_masks_fill_the_condition(task: str, expected: list[bool]) -> None:
    cfg = ObjectiveConfig(frame_mask_prob=1.0, mask_tasks={task: 1.0})
    obj = DiffusionObjective(cfg)
    model = _Recorder()
    x0 = torch.randn(3, 2, 5, 4, 4)
    obj.loss(model, x0, generator=torch.Generator().manual_seed(0))
    cond = model.calls[0][2]
    want = torch.tensor(expected).expand(3, -1)
    assert torch.equal(cond.frame_mask, want)
    torch.testing.assert_close(cond.image, x0 * want[:, None, :, None, None])


def test_prediction_masks_are_a_prefix() -> None:
    obj = DiffusionObjective(ObjectiveConfig(frame_mask_prob=1.0, mask_tasks={"prediction": 1.0}))
    masks = obj.random_frame_masks(64, 6, generator=torch.Generator().manual_seed(0))
    counts = masks.sum(1)
    assert counts.min() >= 1 and counts.max() <= 5 and len(set(counts.tolist())) > 2
    for row, k in zip(masks, counts):
        assert row[:k].all() and not row[k:].any()


def test_the_objective_keeps_the_callers_text_dropping() -> None:
    """Guidance dropping is the trainer's (train.cond_drop): the objective passes cond.null_text on as given."""
    obj = DiffusionObjective(ObjectiveConfig())
    model = _Recorder()
    null = torch.tensor([True, False, False, True])
    cond = Conditioning(text_pooled=torch.randn(4, 8), null_text=null)
    _, stats = obj.loss(model, torch.randn(4, 1, 2, 4, 4), cond, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.calls[0][2].null_text, null)
    assert stats["text_dropped"].item() == 0.5
    obj.loss(model, torch.randn(4, 1, 2, 4, 4), Conditioning(text_pooled=torch.randn(4, 8)))
    assert model.calls[1][2].null_text is None  # nothing dropped on its own
    assert "cond_drop_prob" not in ObjectiveConfig().to_dict()
    assert ObjectiveConfig.from_dict({"cond_drop_prob": 0.1}).to_dict() == ObjectiveConfig().to_dict()  # older pipeline.json


def test_same_generator_same_loss() -> None:
    obj = DiffusionObjective(ObjectiveConfig(frame_mask_prob=0.5, offset_noise=0.1))
    x0 = torch.randn(4, 2, 3, 4, 4)
    a, _ = obj.loss(_Recorder(), x0, generator=torch.Generator().manual_seed(3))
    b, _ = obj.loss(_Recorder(), x0, generator=torch.Generator().manual_seed(3))
    c, _ = obj.loss(_Recorder(), x0, generator=torch.Generator().manual_seed(4))
    assert a.item() == b.item() and a.item() != c.item()


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"beta_schedule": "quadratic"}, ["quadratic", "linear", "scaled_linear", "cosine"]),
        ({"prediction_type": "eps"}, ["eps", "epsilon", "v_prediction"]),
        ({"loss_type": "mse"}, ["mse", "l1", "l2", "huber"]),
        ({"num_train_timesteps": 1}, ["num_train_timesteps"]),
        ({"rescale_zero_terminal_snr": True}, ["v_prediction", "epsilon"]),
        ({"frame_mask_prob": 1.5}, ["frame_mask_prob"]),
        ({"mask_tasks": {"outpainting": 1.0}}, ["outpainting", "image_to_video"]),
    ],
)
def test_config_errors_name_the_value_and_the_choices(settings: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        ObjectiveConfig(**settings)
    for word in words:
        assert word in str(err.value)


def test_from_dict_rejects_unknown_keys_and_round_trips() -> None:
    cfg = ObjectiveConfig(beta_schedule="squaredcos_cap_v2", min_snr_gamma=5.0)
    assert cfg.beta_schedule == "cosine"
    assert ObjectiveConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="timesteps"):
        ObjectiveConfig.from_dict({"timesteps": 10})


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_scheduler_walks_our_schedule(name: str) -> None:
    obj = DiffusionObjective(ObjectiveConfig(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012))
    scheduler = obj.make_scheduler(name)
    assert scheduler.config.prediction_type == "epsilon"
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), obj.alphas_cumprod, atol=1e-6, rtol=1e-4)
