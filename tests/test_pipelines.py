"""Pipelines with a tiny ModelMixin toy and a fake text encoder: calls, seeds, masks, save/load, output files."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from text2video.diffusion.conditioning import Conditioning
from text2video.diffusion.objective import ObjectiveConfig
from text2video.errors import CheckpointError, ConfigError, ModelError
from text2video.pipelines import (
    ImageToVideoPipeline,
    InterpolationPipeline,
    PipelineDefaults,
    TextToVideoPipeline,
    load_pipeline,
)


class ToyVideoDenoiser(ModelMixin, ConfigMixin):
    """x_t * scale + a projection of the pooled text (zeros for dropped text); ignores cond.image."""

    @register_to_config
    def __init__(self, channels: int = 3, text_dim: int = 8) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.text_proj = nn.Linear(text_dim, channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        out = self.scale * x
        if text is not None:
            out = out + self.text_proj(text)[:, :, None, None, None]
        return out

    def forward_cond(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        pooled = cond.text_pooled
        if pooled is not None and cond.null_text is not None:
            pooled = torch.where(cond.null_text[:, None], torch.zeros_like(pooled), pooled)
        return self(x_t, t, pooled)


class FakeEncoder:
    """Deterministic text 'embeddings' from the characters of each prompt."""

    dim = 8

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def encode(self, prompts: list[str]) -> SimpleNamespace:
        self.seen.append(list(prompts))
        tokens = torch.zeros(len(prompts), 4, self.dim)
        for i, p in enumerate(prompts):
            g = torch.Generator().manual_seed(sum(ord(c) * (k + 1) for k, c in enumerate(p)))
            tokens[i] = torch.randn(4, self.dim, generator=g)
        return SimpleNamespace(tokens=tokens, mask=torch.ones(len(prompts), 4, dtype=torch.bool), pooled=tokens.mean(1))


DEFAULTS = PipelineDefaults(num_frames=4, height=8, width=8, channels=3, fps=6.0, steps=6, sampler="ddim", guidance_scale=3.0)


def _pipe(cls=TextToVideoPipeline, **objective):
    torch.manual_seed(0)
    return cls(ToyVideoDenoiser(), FakeEncoder(), ObjectiveConfig(**objective), DEFAULTS)


def test_call_gives_videos_prompts_and_seeds() -> None:
    pipe = _pipe()
    out = pipe(["a red circle", "a blue square"], num_videos_per_prompt=2, seed=3, progress=False)
    assert out.videos.shape == (4, 3, 4, 8, 8)
    assert out.videos.abs().max() <= 1.0
    assert out.prompts == ["a red circle", "a red circle", "a blue square", "a blue square"]
    assert out.seeds == [3, 4, 5, 6] and out.fps == 6.0
    again = pipe(["a red circle", "a blue square"], num_videos_per_prompt=2, seed=3, progress=False)
    assert torch.equal(out.videos, again.videos)
    # Video i is seeded seed + i: the third video alone, from seed 5.
    alone = pipe("a blue square", seed=5, progress=False)
    torch.testing.assert_close(alone.videos[0], out.videos[2], atol=1e-6, rtol=0)
    other = pipe(["a red circle", "a blue square"], num_videos_per_prompt=2, seed=4, progress=False)
    assert not torch.allclose(out.videos, other.videos)


def test_explicit_generators_replace_the_seeds() -> None:
    pipe = _pipe()
    by_seed = pipe(["a red circle", "a blue square"], seed=7, progress=False)
    gens = [torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)]
    by_generators = pipe(["a red circle", "a blue square"], generators=gens, progress=False)
    assert torch.equal(by_seed.videos, by_generators.videos) and by_generators.seeds is None
    with pytest.raises(ConfigError, match="generators"):
        pipe(["a red circle", "a blue square"], generators=gens[:1], progress=False)


def test_prompt_guidance_and_negative_prompt_change_the_result() -> None:
    pipe = _pipe(prediction_type="sample")
    kw = dict(seed=0, progress=False)
    a = pipe("a red circle", **kw).videos
    b = pipe("a blue square", **kw).videos
    unguided = pipe("a red circle", guidance_scale=1.0, **kw).videos
    negative = pipe("a red circle", negative_prompt="a blue square", **kw).videos
    assert not torch.allclose(a, b) and not torch.allclose(a, unguided) and not torch.allclose(a, negative)
    assert ["a blue square"] in pipe.text_encoder.seen


def test_generate_maps_seed_004s_api() -> None:
    pipe = _pipe()
    videos = pipe.generate(num_samples=2, num_frames=3, height=8, width=16, num_steps=4, progress=False, seed=1)
    assert videos.shape == (2, 3, 3, 8, 16)
    with pytest.raises(ConfigError, match="unknown sampler"):
        pipe.generate(num_samples=1, sampler="nope", progress=False)


def test_save_and_load_round_trip(tmp_path, monkeypatch) -> None:
    pipe = _pipe(beta_schedule="linear", prediction_type="v_prediction", rescale_zero_terminal_snr=True)
    with torch.no_grad():
        pipe.model.scale.fill_(0.25)
    pipe.save_pretrained(tmp_path / "pipe")
    record = json.loads((tmp_path / "pipe" / "pipeline.json").read_text())
    assert record["pipeline"] == "TextToVideoPipeline"
    assert record["text_encoder"] == "default"
    assert record["objective"]["prediction_type"] == "v_prediction"
    assert record["defaults"]["num_frames"] == 4 and record["defaults"]["fps"] == 6.0
    assert (tmp_path / "pipe" / "model" / "config.json").is_file()

    with pytest.raises(ModelError, match="not a text2video model"):  # a class the registry does not know
        TextToVideoPipeline.from_pretrained(tmp_path / "pipe", text_encoder=FakeEncoder())
    trusted = {"model_classes": [ToyVideoDenoiser]}
    loaded = TextToVideoPipeline.from_pretrained(tmp_path / "pipe", text_encoder=FakeEncoder(), **trusted)
    assert loaded.objective_config == pipe.objective_config and loaded.defaults == pipe.defaults
    assert loaded.model.scale.item() == 0.25
    torch.testing.assert_close(pipe("a circle", seed=0, progress=False).videos, loaded("a circle", seed=0, progress=False).videos)

    # Without an encoder object, the saved reference goes to text2video.text.load_text_encoder.
    calls = []

    def fake_loader(spec, **kwargs):
        calls.append(spec)
        return FakeEncoder()

    import text2video.text

    monkeypatch.setattr(text2video.text, "load_text_encoder", fake_loader)
    via_loader = load_pipeline(tmp_path / "pipe", **trusted)
    assert isinstance(via_loader, TextToVideoPipeline) and calls == ["default"]
    other_kind = load_pipeline(tmp_path / "pipe", kind="InterpolationPipeline", text_encoder=FakeEncoder(), **trusted)
    assert isinstance(other_kind, InterpolationPipeline)


def test_load_errors(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="pipeline.json"):
        load_pipeline(tmp_path)


def test_save_writes_gifs_that_read_back(tmp_path) -> None:
    from text2video.io.video import read_video

    out = _pipe()(["a red circle", "a blue square"], seed=0, progress=False)
    paths = out.save(tmp_path / "samples")
    assert [p.suffix for p in paths] == [".gif", ".gif"] and "a_red_circle" in paths[0].name
    frames, _ = read_video(paths[0])
    assert frames.shape == (4, 8, 8, 3)
    np.testing.assert_allclose(frames.astype(int), out.frames(0).astype(int), atol=40)  # GIF palette
    single = _pipe()("x", seed=0, progress=False).save(tmp_path / "one.gif")
    assert single[0].is_file()
    with pytest.raises(ConfigError, match="folder"):
        out.save(tmp_path / "two.gif")


def test_image_to_video_keeps_the_given_frames() -> None:
    pipe = _pipe(ImageToVideoPipeline)
    image = torch.rand(3, 8, 8) * 2 - 1
    out = pipe(image, "a red circle", num_frames=5, seed=0, progress=False)
    assert out.videos.shape == (1, 3, 5, 8, 8)
    assert torch.equal(out.videos[0, :, 0], image)
    clip = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    predicted = pipe.predict(clip, num_frames=4, prompt="a red circle", seed=0, progress=False, num_videos_per_prompt=2)
    expected = torch.from_numpy(clip).permute(3, 0, 1, 2).float() / 127.5 - 1
    assert predicted.videos.shape == (2, 3, 4, 8, 8)
    for video in predicted.videos:
        torch.testing.assert_close(video[:, :2], expected)
    with pytest.raises(ConfigError, match="nothing to generate"):
        pipe(image[None, :, None].expand(1, 3, 4, 8, 8), num_frames=4, progress=False)


def test_infill_keeps_first_and_last_frame() -> None:
    pipe = _pipe(InterpolationPipeline)
    first, last = torch.rand(3, 8, 8) * 2 - 1, torch.rand(3, 8, 8) * 2 - 1
    out = pipe.infill(first, last, num_frames=6, prompt="a circle", seed=0, progress=False)
    assert torch.equal(out.videos[0, :, 0], first) and torch.equal(out.videos[0, :, -1], last)


def test_interpolate_goes_from_one_video_to_the_other() -> None:
    pipe = _pipe(InterpolationPipeline, prediction_type="sample")
    video1 = torch.full((3, 4, 8, 8), -0.6)
    video2 = torch.full((3, 4, 8, 8), 0.6)
    out = pipe.interpolate(video1, video2, num_steps=10, num_interp_frames=5, strength=0.3, seed=0, guidance_scale=1.0, progress=False)
    assert out.videos.shape == (5, 3, 4, 8, 8)
    assert out.extras["weights"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    means = out.videos.mean(dim=(1, 2, 3, 4))
    assert torch.all(means[1:] > means[:-1])  # monotone from video1 towards video2
    assert means[-1] - means[0] > 0.2  # the toy shifts both by its text bias; the spread comes from the videos
    with pytest.raises(ConfigError, match="one shape"):
        pipe.interpolate(video1, video2[:, :2], progress=False)


# ------------------------------------------------------------------------------ bad requests, bad files


def test_bad_sizes_prompts_seeds_and_guidance_are_refused_before_sampling() -> None:
    pipe = _pipe()
    calls = []
    real = pipe.model.forward_cond
    pipe.model.forward_cond = lambda *a: calls.append(1) or real(*a)
    cases = [
        (dict(num_frames=0), "num_frames must be a positive integer"),
        (dict(height=-8), "height must be a positive integer"),
        (dict(width=8.5), "width must be a positive integer"),
        (dict(height=100_000, width=100_000), r"need at least .* more than the .* of cpu"),  # refused before allocating
        (dict(num_videos_per_prompt=0), "num_videos_per_prompt"),
        (dict(seed=-1), "seed must be an integer from 0"),
        (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number"),
        (dict(guidance_scale=float("inf")), "guidance_scale must be a finite number"),
        (dict(eta=float("nan")), "eta must be a finite number"),
        (dict(eta=-0.5), "eta must be >= 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            pipe("a red circle", progress=False, **kwargs)
    for prompt, message in ((123, "got int"), ([1, 2], "holding int"), ([], "non-empty")):
        with pytest.raises(ConfigError, match=message):
            pipe(prompt, progress=False)
    assert calls == []  # the model never ran


def test_a_non_finite_sample_is_an_error_never_a_video(tmp_path) -> None:
    from text2video.errors import NonFiniteError

    pipe = _pipe()
    with torch.no_grad():
        pipe.model.scale.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="2 of 2 sampled videos hold NaN"):
        pipe(["a", "b"], progress=False).save(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pipeline_json_may_not_name_a_class_outside_the_registry(tmp_path) -> None:
    """A folder naming transformers' AutoModel (whose auto_map would offer to run the folder's code) is refused."""
    import transformers  # noqa: F401 - imported, as it is whenever a text encoder is loaded

    folder = tmp_path / "evil"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "config.json").write_text(
        json.dumps({"auto_map": {"AutoModel": "evil.EvilModel"}, "model_type": "evil", "_class_name": "EvilModel"})
    )
    (folder / "model" / "evil.py").write_text("raise SystemExit('this code must never run')\n")
    record = {"format_version": 1, "pipeline": "TextToVideoPipeline", "model_class": "transformers:AutoModel", "text_encoder": None}
    (folder / "pipeline.json").write_text(json.dumps(record))
    with pytest.raises(ModelError, match="transformers:AutoModel.*not a text2video model"):
        load_pipeline(folder)
    record["model_class"] = "os:system"
    (folder / "pipeline.json").write_text(json.dumps(record))
    with pytest.raises(ModelError, match="not a text2video model"):
        load_pipeline(folder)


class FpsRecorder(ToyVideoDenoiser):
    """The toy denoiser, remembering the fps of every condition it is called with."""

    def forward_cond(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        self.fps_seen = getattr(self, "fps_seen", []) + [cond.fps.tolist()]
        return super().forward_cond(x_t, t, cond)


@pytest.mark.parametrize("mode", ["text", "image", "infill", "interpolate"])
def test_fps_reaches_the_model_and_the_output_and_callback_counts_steps(mode: str) -> None:
    torch.manual_seed(0)
    pipe = InterpolationPipeline(FpsRecorder(), FakeEncoder(), ObjectiveConfig(), DEFAULTS)
    calls: list[tuple[int, int]] = []
    common = dict(steps=4, seed=0, fps=12.0, callback=lambda done, total: calls.append((done, total)), progress=False)
    frame = torch.rand(3, 8, 8) * 2 - 1
    if mode == "text":
        out = TextToVideoPipeline.__call__(pipe, "a circle", **common)
    elif mode == "image":
        out = pipe(frame, "a circle", **common)
    elif mode == "infill":
        out = pipe.infill(frame, frame, prompt="a circle", **common)
    else:
        common["num_steps"] = common.pop("steps")
        out = pipe.interpolate(torch.zeros(3, 4, 8, 8), torch.ones(3, 4, 8, 8) * 0.5, num_interp_frames=2, strength=1.0, **common)
    assert out.fps == 12.0
    assert all(row == [12.0] * len(row) for row in pipe.model.fps_seen)
    videos = 2 if mode == "interpolate" else 1
    assert calls == [(i, 4 * videos) for i in range(1, 4 * videos + 1)]  # one call per step, all videos counted
    assert TextToVideoPipeline.__call__(pipe, "a circle", steps=2, seed=0, progress=False).fps == DEFAULTS.fps


def test_a_callback_that_raises_stops_sampling() -> None:
    pipe = _pipe()
    calls = []

    class Stop(Exception):
        pass

    def stop_at_two(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        pipe("a circle", steps=6, seed=0, progress=False, callback=stop_at_two)
    assert calls == [1, 2]
