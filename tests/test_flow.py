"""Rectified flow: the closed-form Gaussian case, transport by the ODE, time draws, weights, config, pipelines."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from test_pipelines import FakeEncoder, ToyVideoDenoiser
from test_sampling import TextToy, TwoPassGuidance, _text_cond

from text2video.diffusion.conditioning import Conditioning
from text2video.diffusion.flow import FlowObjective, shift_times
from text2video.diffusion.objective import DiffusionObjective, ObjectiveConfig
from text2video.diffusion.objectives import make_objective
from text2video.diffusion.sampling import plan_sampling, sample
from text2video.diffusion.schedule import FLOW_SAMPLERS
from text2video.errors import ConfigError
from text2video.pipelines import TextToVideoPipeline, load_pipeline

MU, SIGMA = 0.3, 0.5
SHAPE = (4, 2, 4, 8, 8)  # 2048 values


class GaussianVelocity:
    """The exact velocity field E[noise - x0 | x_t] of data x0 ~ N(mu, sigma^2) per element on the straight
    path x_t = (1 - t) x0 + t noise (t = timestep / 1000), written from the Gaussian formulas alone."""

    def __init__(self, mu: float = MU, sigma: float = SIGMA) -> None:
        self.mu, self.sigma, self.calls = mu, sigma, 0

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        self.calls += 1
        s = (t.double() / 1000).view(-1, 1, 1, 1, 1)
        var = (1 - s) ** 2 * self.sigma**2 + s**2
        centred = x_t.double() - (1 - s) * self.mu
        x0 = self.mu + (1 - s) * self.sigma**2 / var * centred
        noise = s / var * centred
        return (noise - x0).to(x_t.dtype)


def _gens(n: int, base: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def _noise(shape, base: int = 0) -> torch.Tensor:
    return torch.cat([torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(base + i)) for i in range(shape[0])])


FLOW = ObjectiveConfig(objective="flow")


def test_the_objective_target_is_the_regression_target_of_the_exact_field() -> None:
    """At a fixed time, regressing the objective's target on its x_t recovers the closed-form field."""
    obj = FlowObjective(FLOW)
    g = torch.Generator().manual_seed(0)
    x0 = MU + SIGMA * torch.randn(1_000_000, generator=g, dtype=torch.float64)
    noise = torch.randn(1_000_000, generator=g, dtype=torch.float64)
    for time in (0.2, 0.5, 0.9):
        t = torch.tensor([time * 1000.0])
        like = x0.view(1, -1)
        x_t = obj.q_sample(like, t, noise.view(1, -1)).flatten()
        target = obj.target(like, noise.view(1, -1), t).flatten()
        slope, intercept = torch.linalg.lstsq(torch.stack([x_t, torch.ones_like(x_t)], 1), target[:, None]).solution.flatten()
        field = GaussianVelocity()(torch.tensor([0.0, 1.0], dtype=torch.float64).view(2, 1, 1, 1, 1), t.expand(2), Conditioning())
        exact_intercept, exact_slope = float(field[0]), float(field[1] - field[0])
        assert float(slope) == pytest.approx(exact_slope, abs=0.01)
        assert float(intercept) == pytest.approx(exact_intercept, abs=0.01)


def test_x0_noise_and_velocity_conversions_invert_each_other() -> None:
    obj = FlowObjective(FLOW)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 2, 2, 4, 4, generator=g), torch.randn(3, 2, 2, 4, 4, generator=g)
    t = torch.tensor([100.0, 500.0, 990.0])
    x_t = obj.q_sample(x0, t, noise)
    v = obj.target(x0, noise, t)
    torch.testing.assert_close(obj.predict_x0(x_t, t, v), x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(obj.predict_noise(x_t, t, v), noise, atol=1e-5, rtol=0)
    torch.testing.assert_close(obj.velocity_from_x0(x_t, t, x0), v, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("sampler", "steps", "tolerance"), [("euler", 200, 0.03), ("unipc", 25, 0.03), ("dpmpp_2m", 25, 0.04)])
def test_the_ode_transports_each_noise_to_its_gaussian_quantile(sampler: str, steps: int, tolerance: float) -> None:
    """In 1-D per element the flow ODE is monotone, so noise z must land exactly on mu + sigma z."""
    out = sample(GaussianVelocity(), SHAPE, objective=FlowObjective(FLOW), sampler=sampler, steps=steps, generators=_gens(4), clip_x0=False)
    error = (out - (MU + SIGMA * _noise(SHAPE))).abs()
    assert float(error.max()) < tolerance
    assert float(out.mean()) == pytest.approx(MU, abs=0.03)
    assert float(out.std()) == pytest.approx(SIGMA, rel=0.03)


def test_euler_converges_with_more_steps_and_ddim_is_the_same_step() -> None:
    target = MU + SIGMA * _noise(SHAPE)
    errors = []
    for steps in (5, 20, 80):
        out = sample(
            GaussianVelocity(), SHAPE, objective=FlowObjective(FLOW), sampler="euler", steps=steps, generators=_gens(4), clip_x0=False
        )
        errors.append(float((out - target).abs().mean()))
    assert errors[0] > errors[1] > errors[2]
    ddim = sample(GaussianVelocity(), SHAPE, objective=FlowObjective(FLOW), sampler="ddim", steps=20, generators=_gens(4), clip_x0=False)
    euler = sample(GaussianVelocity(), SHAPE, objective=FlowObjective(FLOW), sampler="euler", steps=20, generators=_gens(4), clip_x0=False)
    torch.testing.assert_close(ddim, euler)


@pytest.mark.parametrize("sampler", ["ddpm", "euler_ancestral"])
def test_stochastic_samplers_reach_the_data_distribution(sampler: str) -> None:
    shape = (8, 2, 4, 16, 16)
    out = sample(GaussianVelocity(), shape, objective=FlowObjective(FLOW), sampler=sampler, steps=100, generators=_gens(8), clip_x0=False)
    assert float(out.mean()) == pytest.approx(MU, abs=0.03)
    assert float(out.std()) == pytest.approx(SIGMA, rel=0.06)
    assert float((out - (MU + SIGMA * _noise(shape))).abs().mean()) > 0.1  # not the deterministic map


def test_the_shift_is_applied_in_training_and_in_sampling_alike() -> None:
    obj = FlowObjective(ObjectiveConfig(objective="flow", flow_shift=2.0, flow_shift_reference=4 * 8 * 8))
    small, large = (1, 2, 4, 8, 8), (1, 2, 4, 16, 16)
    assert obj.shift_for(small) == pytest.approx(2.0)
    assert obj.shift_for(large) == pytest.approx(4.0)  # sqrt(4x the values) doubles it
    plan = plan_sampling(obj, "euler", 10, shape=large)
    reference = FlowMatchEulerDiscreteScheduler(shift=4.0)
    reference.set_timesteps(10)
    torch.testing.assert_close(plan.model_timesteps / 1000, reference.sigmas[:10].double())
    unipc = plan_sampling(obj, "unipc", 10, shape=large)
    reference = UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=4.0, prediction_type="flow_prediction")
    reference.set_timesteps(10)
    torch.testing.assert_close(unipc.model_timesteps / 1000, reference.sigmas[:10].double())
    assert float(unipc.model_timesteps[1] / 1000) > 0.9  # shift 4 keeps the second step near the noise
    draws = obj.training_timesteps(large, torch.Generator().manual_seed(0), "cpu", None).double() / 1000
    median = float(obj.training_timesteps((20_000, *large[1:]), torch.Generator().manual_seed(0), "cpu", None).median()) / 1000
    assert median == pytest.approx(float(shift_times(torch.tensor(0.5), 4.0)), abs=0.01)
    assert draws.shape == (1,)


def test_time_draws_uniform_logit_normal_and_biased() -> None:
    g = torch.Generator().manual_seed(0)
    uniform = FlowObjective(FLOW).sample_timesteps(50_000, g) / 1000
    assert uniform.dtype == torch.float32 and float(uniform.min()) >= 0 and float(uniform.max()) <= 1
    assert float(uniform.mean()) == pytest.approx(0.5, abs=0.01)
    logit = FlowObjective(ObjectiveConfig(objective="flow", flow_timesteps="logit_normal", logit_mean=0.5, logit_std=0.8))
    draws = logit.sample_timesteps(50_000, g).double() / 1000
    z = torch.logit(draws)
    assert float(z.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(z.std()) == pytest.approx(0.8, abs=0.02)
    biased = FlowObjective(
        ObjectiveConfig(
            objective="flow", timestep_bias="later", timestep_bias_portion=0.1, timestep_bias_multiplier=9.0, timestep_bias_steps=5
        )
    )
    early = biased.sample_timesteps(50_000, g, step=0) / 1000
    share = float((early >= 0.9).float().mean())
    assert share == pytest.approx(9 * 0.1 / (9 * 0.1 + 0.9), abs=0.01)
    assert float((early[early < 0.9]).mean()) == pytest.approx(0.45, abs=0.01)  # the rest stays uniform
    late = biased.sample_timesteps(50_000, g, step=5) / 1000
    assert float((late >= 0.9).float().mean()) == pytest.approx(0.1, abs=0.01)


def test_loss_weightings_follow_their_formulas() -> None:
    t = torch.tensor([100.0, 500.0, 800.0])
    s = t / 1000
    cfg = dict(objective="flow")
    torch.testing.assert_close(FlowObjective(ObjectiveConfig(**cfg)).loss_weights(t), torch.ones(3))
    torch.testing.assert_close(FlowObjective(ObjectiveConfig(**cfg, loss_weighting="sigma_sqrt")).loss_weights(t), s**-2)
    cosmap = 2 / (math.pi * (1 - 2 * s + 2 * s**2))
    torch.testing.assert_close(FlowObjective(ObjectiveConfig(**cfg, loss_weighting="cosmap")).loss_weights(t), cosmap)
    snr = ((1 - s) / s) ** 2
    torch.testing.assert_close(FlowObjective(ObjectiveConfig(**cfg, min_snr_gamma=5.0)).loss_weights(t), snr.clamp(max=5.0) * s**2)


def test_the_loss_is_smallest_at_the_exact_field() -> None:
    obj = FlowObjective(FLOW)
    x0 = MU + SIGMA * torch.randn(64, 2, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    exact = GaussianVelocity()

    def off(scale):
        return lambda x, t, c: exact(x, t, c) * scale

    losses = [float(obj.loss(model, x0, generator=torch.Generator().manual_seed(4))[0]) for model in (exact, off(0.8), off(1.2))]
    assert losses[0] < losses[1] and losses[0] < losses[2]


def test_guidance_given_frames_and_seeds_work_unchanged_for_flow() -> None:
    obj = FlowObjective(FLOW)
    shape = (2, 3, 4, 8, 8)
    cond, neg = _text_cond(2), _text_cond(2, seed=5)
    one = sample(
        TextToy(), shape, cond, objective=obj, sampler="unipc", steps=6, guidance_scale=3.0, negative_cond=neg, generators=_gens(2)
    )
    two = sample(TwoPassGuidance(TextToy(), 3.0, neg), shape, cond, objective=obj, sampler="unipc", steps=6, generators=_gens(2))
    torch.testing.assert_close(one, two, atol=1e-5, rtol=1e-5)
    image = torch.rand(shape, generator=torch.Generator().manual_seed(9)) * 2 - 1
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[:, 0] = mask[:, -1] = True
    given = Conditioning(image=image, frame_mask=mask)
    out = sample(GaussianVelocity(), shape, given, objective=obj, sampler="euler", steps=8, generators=_gens(2))
    torch.testing.assert_close(out[:, :, [0, -1]], image[:, :, [0, -1]])
    batch = sample(GaussianVelocity(), shape, objective=obj, sampler="dpmpp_2m", steps=5, generators=_gens(2, 7))
    single = sample(GaussianVelocity(), (1, *shape[1:]), objective=obj, sampler="dpmpp_2m", steps=5, generators=_gens(1, 8))
    torch.testing.assert_close(batch[1:], single)


def test_partial_noise_start_stays_near_the_init() -> None:
    obj = FlowObjective(FLOW)
    init = torch.full(SHAPE, 0.9)
    near = sample(GaussianVelocity(), SHAPE, objective=obj, sampler="euler", steps=20, init=init, strength=0.2, generators=_gens(4))
    far = sample(GaussianVelocity(), SHAPE, objective=obj, sampler="euler", steps=20, init=init, strength=1.0, generators=_gens(4))
    assert float((near - init).abs().mean()) < 0.5 * float((far - init).abs().mean())


def test_config_checks_and_the_objective_factory() -> None:
    assert type(make_objective(None)) is DiffusionObjective
    assert type(make_objective({"prediction_type": "v_prediction"})) is DiffusionObjective  # an older pipeline.json
    assert type(make_objective({"objective": "rectified_flow"})) is FlowObjective
    assert ObjectiveConfig(objective="Flow_Matching").objective == "flow"
    assert set(FLOW_SAMPLERS) >= {"euler", "unipc", "dpmpp_2m", "ddim"}
    with pytest.raises(ConfigError, match="objective 'sde'"):
        ObjectiveConfig(objective="sde")
    with pytest.raises(ConfigError, match="flow_shift apply to objective=flow"):
        ObjectiveConfig(flow_shift=3.0)
    with pytest.raises(ConfigError, match="flow_timesteps 'beta'"):
        ObjectiveConfig(objective="flow", flow_timesteps="beta")
    with pytest.raises(ConfigError, match="rescale_zero_terminal_snr"):
        ObjectiveConfig(objective="flow", rescale_zero_terminal_snr=True)
    with pytest.raises(ConfigError, match="flow_shift_reference"):
        ObjectiveConfig(objective="flow", flow_shift_reference=0)
    with pytest.raises(ConfigError, match="choose one of"):
        sample(GaussianVelocity(), SHAPE, objective=FlowObjective(FLOW), sampler="heun", steps=4)


def test_a_pipeline_saves_its_objective_and_samples_with_it(tmp_path) -> None:
    model = ToyVideoDenoiser(channels=3, text_dim=8)
    flow = TextToVideoPipeline(model, FakeEncoder(), {"objective": "flow", "flow_shift": 2.0}, {"num_frames": 3, "height": 8, "width": 8})
    assert isinstance(flow.objective, FlowObjective)
    before = flow("a red circle", steps=4, seed=1, progress=False).videos
    flow.save_pretrained(tmp_path / "flow")
    loaded = load_pipeline(tmp_path / "flow", text_encoder=FakeEncoder(), model_classes=[ToyVideoDenoiser])  # trusted toy class
    assert isinstance(loaded.objective, FlowObjective) and loaded.objective.config.flow_shift == 2.0
    torch.testing.assert_close(loaded("a red circle", steps=4, seed=1, progress=False).videos, before)
    diffusion = TextToVideoPipeline(model, FakeEncoder(), {}, {"num_frames": 3, "height": 8, "width": 8})
    assert not torch.allclose(diffusion("a red circle", steps=4, seed=1, progress=False).videos, before)


def test_flow_and_a_pretrained_models_own_scheduler(tmp_path) -> None:
    """A pretrained diffusion model's scheduler config is a diffusion chain: the diffusion objective samples with
    it, a flow-trained model refuses it (plan, pipeline, export to diffusers), and ``noise=`` (diffusers'
    ``latents``) starts a flow chain as a draw from the generators does."""
    from text2video.errors import ModelError
    from text2video.pipelines.initial import InitialWeights, base_differences, base_scheduler_config
    from text2video.pipelines.to_diffusers import export_diffusers

    ddim = {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
            "steps_offset": 1, "set_alpha_to_one": False, "prediction_type": "epsilon", "num_train_timesteps": 1000}  # fmt: skip
    settings = {k: ddim[k] for k in ("beta_schedule", "beta_start", "beta_end", "prediction_type")}
    native = plan_sampling(DiffusionObjective(settings), "ddim", 10, scheduler_config=ddim)
    assert native.native and not native.exact_last and int(native.timesteps[0]) == 901  # leading spacing, offset 1
    with pytest.raises(ConfigError, match="rectified flow.*DDIMScheduler"):
        plan_sampling(FlowObjective(FLOW), "euler", 10, scheduler_config=ddim)
    model, defaults = ToyVideoDenoiser(channels=3, text_dim=8), {"num_frames": 3, "height": 8, "width": 8}
    with pytest.raises(ConfigError, match="rectified flow"):
        TextToVideoPipeline(model, FakeEncoder(), {"objective": "flow"}, defaults, scheduler_config=ddim)
    with pytest.raises(ModelError, match="rectified flow.*--format text2video"):
        export_diffusers(TextToVideoPipeline(model, FakeEncoder(), {"objective": "flow"}, defaults), tmp_path / "out")

    drawn = sample(GaussianVelocity(), SHAPE, objective=FlowObjective(FLOW), sampler="euler", steps=4, generators=_gens(4))
    given = sample(GaussianVelocity(), SHAPE, objective=FlowObjective(FLOW), sampler="euler", steps=4, noise=_noise(SHAPE))
    torch.testing.assert_close(given, drawn)

    # a fine-tune of that model: what it changes, and whether the model's own scheduler still applies
    base = InitialWeights({}, "base", {**settings, "objective": "diffusion", "num_train_timesteps": 1000}, ddim, True)
    same = ObjectiveConfig(**settings)
    assert base_differences(base, same, "max_length") == [] and base_scheduler_config(base, same) == ddim
    linear = ObjectiveConfig(beta_schedule="linear", prediction_type="epsilon")
    assert base_differences(base, linear, "longest") == [
        "diffusion.beta_schedule: the base was trained with 'scaled_linear', this run trains with 'linear'",
        "diffusion.beta_start: the base was trained with 0.00085, this run trains with 0.0001",
        "diffusion.beta_end: the base was trained with 0.012, this run trains with 0.02",
        "text.padding: the base encodes prompts with max_length, this run with longest",
    ]
    assert base_scheduler_config(base, linear) is None
    assert base_differences(base, FLOW, "max_length") == [
        "diffusion.objective: the base was trained with diffusion, this run trains with flow"
    ]
    assert base_scheduler_config(base, FLOW) is None
    assert base_differences(InitialWeights({}, "weights.safetensors"), FLOW, "longest") == []
