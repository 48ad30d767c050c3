"""Pretrained models in: detection of every format, the same numbers as diffusers' own pipelines, prompt
embeddings equal to ``encode_prompt``, Stable Diffusion + motion adapters, video-diffusion-pytorch
checkpoints, Hub ids through a cache laid out by huggingface_hub, bad folders, memory options, ``info``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pretrained_toys as toys
import pytest
import torch

from text2video.cli import main
from text2video.errors import CheckpointError, ConfigError, ModelError, Text2VideoError, TextEncoderError
from text2video.pipelines import ImageToVideoPipeline, InterpolationPipeline, load_pipeline
from text2video.pipelines.pretrained import detect_model

PROMPTS = ["a red circle moving left", "a dog"]


_single_thread = pytest.fixture(scope="module", autouse=True)(toys.one_thread)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny diffusers pipeline folders written by diffusers' own save_pretrained."""
    from diffusers import DPMSolverMultistepScheduler

    root = tmp_path_factory.mktemp("pretrained")
    dpm = lambda s: DPMSolverMultistepScheduler.from_config(s.config)  # noqa: E731
    return {
        "t2v-ddim": toys.save_text_to_video(root / "t2v-ddim"),
        "t2v-dpm": toys.save_text_to_video(root / "t2v-dpm", dpm(toys.ddim())),
        "ad-ddim": toys.save_animatediff(root / "ad-ddim"),
        "ad-dpm": toys.save_animatediff(root / "ad-dpm", dpm(toys.ddim(beta_schedule="linear", timestep_spacing="linspace"))),
        "sd": toys.save_stable_diffusion(root / "sd"),
    }


def _reference(cls, folder: Path, **parts):
    ref = cls.from_pretrained(folder, **parts)
    ref.set_progress_bar_config(disable=True)
    return ref


def _as_ours(frames: torch.Tensor) -> torch.Tensor:
    """diffusers' ``output_type="pt"`` frames (B, T, C, H, W) in [0, 1] -> (B, C, T, H, W) in [-1, 1]."""
    return frames.permute(0, 2, 1, 3, 4) * 2 - 1


# ------------------------------------------------------------------------------------------ detection


def test_each_format_is_detected(folders, tmp_path):
    assert detect_model(folders["t2v-ddim"]).format == "diffusers-text-to-video"
    assert detect_model(folders["ad-ddim"]).format == "diffusers-animatediff"
    assert detect_model(folders["sd"]).format == "diffusers-stable-diffusion"
    pipe = load_pipeline(folders["t2v-ddim"])
    pipe.save_pretrained(tmp_path / "ours")
    assert detect_model(tmp_path / "ours").format == "text2video-pipeline"
    (tmp_path / "model.pt").write_bytes(b"")
    assert detect_model(tmp_path / "model.pt").format == "video-diffusion-pytorch"
    run = tmp_path / "run"
    (run / "checkpoints" / "step-00000002").mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    (run / "checkpoints" / "step-00000002" / "state.json").write_text("{}")
    assert detect_model(run).format == "text2video-run"
    assert detect_model(run / "checkpoints" / "step-00000002").format == "text2video-checkpoint"


def test_diffusers_folders_use_their_own_parts(folders):
    from text2video.models.unet3d_condition import UNet3DConditionModel
    from text2video.text.padded import MaxLengthTextEncoder

    pipe = load_pipeline(folders["t2v-ddim"])
    assert isinstance(pipe.model, UNet3DConditionModel) and pipe.model.config.temporal_conv
    assert isinstance(pipe.text_encoder, MaxLengthTextEncoder) and pipe.text_encoder.max_length == toys.TOKENS
    assert pipe.vae.scaling_factor == pytest.approx(0.18215) and pipe.vae.downsample_factor == 2
    assert pipe.scheduler_config["_class_name"] == "DDIMScheduler" and pipe.scheduler_config["steps_offset"] == 1
    d = pipe.defaults  # diffusers' own defaults: unet sample_size x VAE factor, 16 frames, guidance 9
    assert (d.height, d.width, d.num_frames, d.guidance_scale, d.sampler, d.negative_prompt) == (16, 16, 16, 9.0, "ddim", "")
    assert pipe.objective.config.beta_schedule == "scaled_linear" and pipe.objective.config.beta_end == 0.012
    assert load_pipeline(folders["t2v-dpm"]).defaults.sampler == "dpmpp_2m"
    ad = load_pipeline(folders["ad-ddim"])
    assert ad.model.config.use_motion_modules and not ad.model.config.temporal_conv and ad.defaults.guidance_scale == 7.5


# ------------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("name", ["t2v-ddim", "t2v-dpm", "ad-ddim", "ad-dpm"])
def test_same_videos_as_the_diffusers_pipeline(folders, name):
    from diffusers import AnimateDiffPipeline, TextToVideoSDPipeline

    cls = TextToVideoSDPipeline if name.startswith("t2v") else AnimateDiffPipeline
    ours, ref = load_pipeline(folders[name]), _reference(cls, folders[name])
    latents = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    outputs = {}
    for guidance in (1.0, 6.0):
        got = ours(PROMPTS, latents=latents.clone(), steps=3, guidance_scale=guidance, num_frames=3, progress=False).videos
        want = ref(PROMPTS, latents=latents.clone(), num_inference_steps=3, guidance_scale=guidance, num_frames=3, output_type="pt").frames
        torch.testing.assert_close(got, _as_ours(want), atol=1e-4, rtol=0)
        outputs[guidance] = got
    assert (outputs[1.0] - outputs[6.0]).abs().max() > 1e-2  # guidance reaches the output: the check has teeth


def test_prompt_embeddings_equal_encode_prompt(folders):
    from diffusers import TextToVideoSDPipeline

    ours, ref = load_pipeline(folders["t2v-ddim"]), _reference(TextToVideoSDPipeline, folders["t2v-ddim"])
    positive, negative = ref.encode_prompt(PROMPTS, "cpu", 1, True)
    emb = ours.text_encoder.encode(PROMPTS)
    assert emb.tokens.shape == (2, toys.TOKENS, toys.TEXT_DIM) and bool(emb.mask.all())
    torch.testing.assert_close(emb.tokens, positive, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.text_encoder.encode(["", ""]).tokens, negative, atol=1e-6, rtol=0)  # the empty negative
    # clip_skip: the layer before the last, through the final layer norm (diffusers' recipe; its own encode_prompt
    # reaches for text_encoder.text_model, which transformers 5 folded away, so it is computed here directly)
    ids = ref.tokenizer(PROMPTS, padding="max_length", max_length=toys.TOKENS, return_tensors="pt").input_ids
    with torch.no_grad():
        skipped = ref.text_encoder.final_layer_norm(ref.text_encoder(ids, output_hidden_states=True).hidden_states[-2])
    ours_skip = load_pipeline(folders["t2v-ddim"], clip_skip=1)
    torch.testing.assert_close(ours_skip.text_encoder.encode(PROMPTS).tokens, skipped, atol=1e-6, rtol=0)
    assert not torch.allclose(skipped, positive)


@pytest.mark.parametrize("layout", ["diffusers", "original-ckpt"])
def test_stable_diffusion_folder_with_a_motion_adapter(folders, tmp_path, layout):
    from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter, UNet2DConditionModel

    adapter = toys.motion_adapter()
    if layout == "diffusers":
        adapter.save_pretrained(tmp_path / "adapter")
        source = tmp_path / "adapter"
    else:  # the original AnimateDiff key layout, as a .ckpt
        source = tmp_path / "mm_sd_v15_v2.ckpt"
        torch.save(toys.to_original_layout(adapter.state_dict()), source)
    with pytest.raises(ModelError, match="--motion-adapter"):
        load_pipeline(folders["sd"])
    ours = load_pipeline(folders["sd"], motion_adapter=source)
    assert ours.scheduler_config["beta_schedule"] == "linear"  # AnimateDiff's sampling schedule
    scheduler = DDIMScheduler.from_config(ours.scheduler_config)
    ref = _reference(AnimateDiffPipeline, folders["sd"], motion_adapter=MotionAdapter.from_pretrained(tmp_path / "adapter")
                     if layout == "diffusers" else adapter, unet=UNet2DConditionModel.from_pretrained(folders["sd"] / "unet"),
                     scheduler=scheduler)  # fmt: skip
    latents = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    got = ours(PROMPTS[0], latents=latents.clone(), steps=2, guidance_scale=5.0, num_frames=3, progress=False).videos
    want = ref(PROMPTS[0], latents=latents.clone(), num_inference_steps=2, guidance_scale=5.0, num_frames=3, output_type="pt").frames
    torch.testing.assert_close(got, _as_ours(want), atol=1e-4, rtol=0)


def test_seeds_negative_prompt_image_to_video_and_infilling_work_on_pretrained_models(folders):
    pipe = load_pipeline(folders["ad-ddim"])
    kw = dict(num_frames=3, steps=2, progress=False)
    a, b = pipe(PROMPTS[0], seed=5, **kw).videos, pipe(PROMPTS[0], seed=5, **kw).videos
    torch.testing.assert_close(a, b)
    assert (pipe(PROMPTS[0], seed=5, negative_prompt="a dog", **kw).videos - a).abs().max() > 1e-3
    i2v = load_pipeline(folders["ad-ddim"], kind="ImageToVideoPipeline")
    assert isinstance(i2v, ImageToVideoPipeline)
    image = torch.rand(3, 16, 16) * 2 - 1
    out = i2v(image, PROMPTS[0], seed=0, **kw).videos
    kept = i2v.decode(i2v.encode_frames(image[None, :, None]))  # the first frame is the VAE's reconstruction of the image
    torch.testing.assert_close(out[:, :, :1], kept.clamp(-1, 1), atol=1e-5, rtol=0)
    interp = load_pipeline(folders["ad-ddim"], kind="InterpolationPipeline")
    assert isinstance(interp, InterpolationPipeline)
    filled = interp.infill(image, -image, num_frames=3, prompt=PROMPTS[0], steps=2, progress=False).videos
    assert filled.shape == (1, 3, 3, 16, 16)


def test_every_model_command_takes_a_pretrained_model(folders, tmp_path, capsys):
    from PIL import Image

    from text2video.io.video import read_video

    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "first.png")
    common = ["--model", str(folders["ad-ddim"]), "--steps", "1", "--frames", "3", "--json"]
    assert main(["animate", str(tmp_path / "first.png"), "--prompt", PROMPTS[0], *common, "-o", str(tmp_path / "a")]) == 0
    animated = json.loads(capsys.readouterr().out)["videos"]
    assert read_video(animated[0])[0].shape == (3, 16, 16, 3)
    assert main(["interpolate", "--first", str(tmp_path / "first.png"), "--last", str(tmp_path / "first.png"), *common,
                 "-o", str(tmp_path / "i")]) == 0  # fmt: skip
    assert len(json.loads(capsys.readouterr().out)["videos"]) == 1
    assert main(["eval", "--model", str(folders["ad-ddim"]), "--n", "2", "--batch-size", "2", "--steps", "1", "--frames", "2",
                 "--size", "16", "--no-fvd", "--out", str(tmp_path / "report"), "--json"]) == 0  # fmt: skip
    assert len(list((tmp_path / "report" / "samples").glob("*.gif"))) == 2


def test_the_web_page_serves_pretrained_models_with_the_loading_options(folders, tmp_path):
    """`text2video serve`'s catalog loads any --model format with the loading options, shares the weights
    (and the model's own scheduler) with the interpolation tab, and writes the options into the command."""
    from text2video.serve import ModelCatalog, Request, Studio

    catalog = ModelCatalog([folders["ad-ddim"], "org/not-downloaded"], device="cpu", options={"vae_frames": 2, "offload": "off"})
    assert catalog.names == ["ad-ddim", "not-downloaded"]  # a Hub id is resolved on first use
    assert catalog.spec("not-downloaded") == "org/not-downloaded" and catalog.option_flags() == ["--vae-frames", "2"]
    pipe = catalog.pipeline("ad-ddim")
    assert pipe.scheduler_config is not None and pipe.vae.micro_batch == 2
    interp = catalog.pipeline("ad-ddim", "InterpolationPipeline")
    assert interp.model is pipe.model and interp.scheduler_config == pipe.scheduler_config
    steps = []  # the progress callback follows the model's own scheduler too
    pipe(PROMPTS[0], num_frames=2, height=16, width=16, steps=2, progress=False, callback=lambda done, total: steps.append((done, total)))
    assert steps == [(1, 2), (2, 2)]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is a .txt file"):
        ModelCatalog([tmp_path / "notes.txt"])
    studio = Studio(ModelCatalog([folders["ad-ddim"]], device="cpu", options={"vae_frames": 2}), tmp_path / "out")
    result = studio.generate(Request(prompt=PROMPTS[0], steps=1, seed=0, frames=2, height=16, width=16))[0]
    assert f"--model {folders['ad-ddim'].resolve()} --vae-frames 2" in result.command


# ------------------------------------------------------------------------------------------ memory options


def test_dtype_vae_slices_tiles_and_offload(folders):
    from text2video.pipelines.memory import enable_model_cpu_offload

    latents = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    kw = dict(latents=latents, steps=2, guidance_scale=4.0, num_frames=2, progress=False)
    base = load_pipeline(folders["t2v-ddim"])
    reference = base(PROMPTS[0], **kw).videos
    sliced = load_pipeline(folders["t2v-ddim"], vae_frames=1)
    assert sliced.vae.micro_batch == 1
    torch.testing.assert_close(sliced(PROMPTS[0], **kw).videos, reference, atol=1e-5, rtol=0)  # frame slices: same numbers
    bf16 = load_pipeline(folders["t2v-ddim"], dtype="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16 and bf16.vae.dtype == torch.bfloat16
    assert bf16.text_encoder.dtype == torch.bfloat16
    low = bf16(PROMPTS[0], **kw).videos
    assert low.dtype == torch.float32 and 0 < (low - reference).abs().max() < 0.5  # close, not equal
    tiled = load_pipeline(folders["t2v-ddim"], vae_tiling=True)
    big = torch.randn(1, 4, 2, 16, 16, generator=torch.Generator().manual_seed(3))  # 32x32 frames: twice the tile size
    plain_big = base(PROMPTS[0], latents=big, steps=2, num_frames=2, height=32, width=32, progress=False).videos
    tiled_big = tiled(PROMPTS[0], latents=big, steps=2, num_frames=2, height=32, width=32, progress=False).videos
    difference = (tiled_big - plain_big).abs()
    assert tiled.vae.vae.use_tiling and difference.max() > 0 and difference.mean() < 0.1  # blended seams: close, not equal
    with pytest.raises(ConfigError, match="CUDA"):
        load_pipeline(folders["t2v-ddim"], device="cpu", offload="on")
    offloaded = load_pipeline(folders["t2v-ddim"])
    enable_model_cpu_offload(offloaded, "cpu")  # the mechanism, with the CPU standing in for the GPU
    torch.testing.assert_close(offloaded(PROMPTS[0], **kw).videos, reference, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------ bad folders


def test_bad_folders_name_the_fix(folders, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folders["t2v-ddim"], broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(CheckpointError, match="without its vae/ part.*download the model again"):
        load_pipeline(broken)
    wrong = tmp_path / "wrong"
    shutil.copytree(folders["t2v-ddim"], wrong)
    index = json.loads((wrong / "model_index.json").read_text())
    (wrong / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableVideoDiffusionPipeline"}))
    with pytest.raises(ModelError, match="names a StableVideoDiffusionPipeline.*TextToVideoSDPipeline"):
        load_pipeline(wrong)
    (wrong / "model_index.json").write_text(json.dumps({**index, "_class_name": "AnimateDiffPipeline"}))
    with pytest.raises(ModelError, match="holds a UNet3DConditionModel.*does not match"):
        load_pipeline(wrong)
    with pytest.raises(CheckpointError, match="bare UNet3DConditionModel.*whole pipeline"):
        load_pipeline(folders["t2v-ddim"] / "unet")
    with pytest.raises(CheckpointError, match="MotionAdapter: pass it as --motion-adapter"):
        toys.motion_adapter().save_pretrained(tmp_path / "adapter")
        load_pipeline(tmp_path / "adapter")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pipeline(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="--motion-adapter applies"):
        load_pipeline(folders["t2v-ddim"], motion_adapter=tmp_path / "adapter")
    with pytest.raises(ConfigError, match="run folders only"):  # a diffusers folder has no checkpoints or EMA weights
        load_pipeline(folders["t2v-ddim"], use_ema=False)
    assert main(["generate", "x", "--model", str(broken)]) == 2  # the CLI prints the one line, no traceback


# ------------------------------------------------------------------------------------------ video-diffusion-pytorch


@pytest.fixture(scope="module")
def vdp_checkpoint(tmp_path_factory) -> Path:
    from text2video.models.convert.video_diffusion_pytorch import import_original_package

    pytest.importorskip("rotary_embedding_torch")
    vdp = import_original_package()
    torch.manual_seed(0)
    unet = vdp.Unet3D(dim=8, cond_dim=16, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8).eval()
    diffusion = vdp.GaussianDiffusion(unet, image_size=8, num_frames=3, timesteps=100)
    path = tmp_path_factory.mktemp("vdp") / "model-3.pt"
    ema = diffusion.state_dict()
    live = {k: v + 0.01 if v.is_floating_point() else v for k, v in ema.items()}  # the trained weights differ from EMA
    torch.save({"step": 3, "model": live, "ema": ema, "scaler": {}}, path)
    return path


def test_video_diffusion_pytorch_checkpoint_with_its_text_encoder(vdp_checkpoint, tmp_path):
    from text_models import save_tiny_bert

    save_tiny_bert(tmp_path / "bert16")  # hidden size 16 = the checkpoint's cond_dim
    with pytest.raises(TextEncoderError, match="cond_dim=16.*--text-encoder"):
        load_pipeline(vdp_checkpoint)
    pipe = load_pipeline(vdp_checkpoint, text_encoder=tmp_path / "bert16")
    assert pipe.objective.num_train_timesteps == 100 and pipe.objective.config.beta_schedule == "cosine"
    out = pipe("a red circle", num_frames=3, height=8, width=8, steps=3, seed=0, progress=False)
    assert out.videos.shape == (1, 3, 3, 8, 8)
    live = load_pipeline(vdp_checkpoint, text_encoder=tmp_path / "bert16", use_ema=False)  # its "model" weights
    for name, ema_weight in pipe.model.state_dict().items():
        if ema_weight.is_floating_point() and ema_weight.numel():
            torch.testing.assert_close(live.model.state_dict()[name], ema_weight + 0.01)
    with pytest.raises(ConfigError, match="--checkpoint applies to run folders only"):
        load_pipeline(vdp_checkpoint, text_encoder=tmp_path / "bert16", checkpoint="step-1")
    save_tiny_bert(tmp_path / "bert-wide", max_positions=16)
    config = json.loads((tmp_path / "bert-wide" / "config.json").read_text())
    assert config["hidden_size"] == 16
    (tmp_path / "bert-wide" / "config.json").write_text(json.dumps({**config, "hidden_size": 32, "intermediate_size": 64}))
    with pytest.raises(Text2VideoError):  # weights of width 16 under a width-32 config do not even load
        load_pipeline(vdp_checkpoint, text_encoder=tmp_path / "bert-wide")


def test_width_mismatch_names_cond_dim(vdp_checkpoint, tmp_path):
    from text_models import save_tiny_bert

    from text2video.text import load_text_encoder

    save_tiny_bert(tmp_path / "bert16")
    encoder = load_text_encoder(tmp_path / "bert16")
    encoder.model.config.hidden_size = 24  # what a BERT of another width reports
    with pytest.raises(TextEncoderError, match="24-dim.*cond_dim.*hidden size is 16"):
        load_pipeline(vdp_checkpoint, text_encoder=encoder)


# ------------------------------------------------------------------------------------------ Hub ids


def _hub_constants(monkeypatch, cache: Path, endpoint: str | None, offline: bool) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    if endpoint is not None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")


def test_hub_id_downloads_online_and_resolves_offline_from_the_cache(folders, tmp_path, monkeypatch):
    from fake_hub import FakeHub

    repo = tmp_path / "repo"
    shutil.copytree(folders["t2v-ddim"], repo)
    (repo / "safety_checker").mkdir()  # components text2video does not use are not downloaded,
    (repo / "safety_checker" / "model.safetensors").write_bytes(b"x" * 64)
    shutil.copy(repo / "unet" / "diffusion_pytorch_model.safetensors", repo / "unet" / "diffusion_pytorch_model.fp16.safetensors")
    (repo / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"x")  # nor second copies of the weights
    home = tmp_path / "hf_home"
    with FakeHub({"org/tiny-t2v": repo}, gated=("org/gated",)) as hub:
        _hub_constants(monkeypatch, home / "hub", hub.url, offline=False)
        online = load_pipeline("org/tiny-t2v")
        fetched = [r.split("/resolve/")[1].split("/", 1)[1] for r in hub.requests if r.startswith("GET") and "/resolve/" in r]
        assert "unet/diffusion_pytorch_model.safetensors" in fetched
        assert not any("safety_checker" in f or f.endswith((".bin", ".fp16.safetensors")) for f in fetched)
        with pytest.raises(ModelError, match="gated.*log in"):
            load_pipeline("org/gated")
        with pytest.raises(ModelError, match="not on the Hugging Face Hub.*check the id"):
            load_pipeline("org/missing")
    snapshot = next((home / "hub" / "models--org--tiny-t2v" / "snapshots").iterdir())
    assert (snapshot / "model_index.json").is_symlink()  # huggingface_hub's own cache layout

    _hub_constants(monkeypatch, home / "hub", None, offline=True)
    offline = load_pipeline("org/tiny-t2v")
    assert offline.source.path == snapshot and offline.source.format == "diffusers-text-to-video"
    latents = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(latents=latents, steps=2, num_frames=2, progress=False)
    torch.testing.assert_close(offline(PROMPTS[0], **kw).videos, online(PROMPTS[0], **kw).videos)
    with pytest.raises(ModelError, match="not in the local Hugging Face cache.*HF_HUB_OFFLINE=1.*pass a local folder"):
        load_pipeline("org/never-downloaded")
    # online but the Hub cannot be reached (huggingface_hub's own retries skipped): the cache answers, else one line
    import text2video.pipelines.pretrained.hub as hub_module

    def unreachable(*args, **kwargs):
        raise ConnectionError("[Errno 111] Connection refused")

    monkeypatch.setattr(hub_module, "_download", unreachable)
    _hub_constants(monkeypatch, home / "hub", None, offline=False)
    assert load_pipeline("org/tiny-t2v").source.path == snapshot
    _hub_constants(monkeypatch, home / "empty", None, offline=False)
    with pytest.raises(ModelError, match="cannot download org/tiny-t2v.*not in the local cache.*pass a local folder"):
        load_pipeline("org/tiny-t2v")


def test_hub_file_selection_prefers_one_copy_of_each_weight():
    from text2video.pipelines.pretrained.hub import select_files

    files = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
             "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bin", "vae/config.json",
             "vae/diffusion_pytorch_model.bin", "text_encoder/model.fp16.safetensors", "safety_checker/model.safetensors",
             "unet/diffusion_flax_model.msgpack", "README.md"]  # fmt: skip
    assert select_files(files) == ["README.md", "model_index.json", "text_encoder/model.fp16.safetensors", "unet/config.json",
                                   "unet/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.bin"]  # fmt: skip


# ------------------------------------------------------------------------------------------ info


def test_info_reports_family_sizes_and_a_memory_estimate_from_the_model(folders, capsys):
    assert main(["info", "--model", str(folders["t2v-ddim"]), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    pipe = load_pipeline(folders["t2v-ddim"])
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert facts["format"] == "diffusers-text-to-video" and "ModelScope" in facts["family"]
    assert facts["parameters"]["denoiser"] == count(pipe.model)  # described from the configs, counted as loaded
    assert facts["parameters"]["text_encoder"] == count(pipe.text_encoder.model) and facts["parameters"]["vae"] == count(pipe.vae)
    assert facts["text_encoder"]["width"] == toys.TEXT_DIM and facts["text_encoder"]["max_length"] == toys.TOKENS
    assert facts["vae"]["scaling_factor"] == pytest.approx(0.18215)
    assert (facts["defaults"]["height"], facts["defaults"]["num_frames"], facts["sampler"]["scheduler"]) == (16, 16, "DDIMScheduler")
    memory = facts["memory"]
    weights32 = 4 * (count(pipe.model) + count(pipe.text_encoder.model) + count(pipe.vae.vae))
    buffers = sum(
        b.numel() * (4 if b.is_floating_point() else b.element_size())
        for m in (pipe.model, pipe.text_encoder.model, pipe.vae.vae)
        for b in m.buffers()
    )  # e.g. CLIP's position ids
    assert memory["float32"]["weights_bytes"] == weights32 + buffers
    integer_buffers = sum(
        b.numel() * b.element_size()
        for m in (pipe.model, pipe.text_encoder.model, pipe.vae.vae)
        for b in m.buffers()
        if not b.is_floating_point()
    )
    assert (memory["float16"]["weights_bytes"] - integer_buffers) * 2 == memory["float32"]["weights_bytes"] - integer_buffers
    assert 0 < memory["float16"]["activations_bytes"] < memory["float32"]["activations_bytes"]
    assert memory["float16"]["total_bytes"] > memory["float16"]["total_offload_bytes"] > 0
    assert memory["bfloat16"]["total_bytes"] == memory["float16"]["total_bytes"]
    assert main(["info", "--model", str(folders["sd"]), "--json"]) == 2  # needs --motion-adapter: one line
    assert "--motion-adapter" in capsys.readouterr().err


def test_memory_estimate_grows_with_the_sample(folders):
    from text2video.pipelines.estimate import estimate_memory

    pipe = load_pipeline(folders["t2v-ddim"])
    small = estimate_memory(pipe.model, sample_shape=(1, 4, 4, 8, 8), text=(12, 16, 16), dtypes={"f": torch.float32})["f"]
    large = estimate_memory(pipe.model, sample_shape=(1, 4, 8, 16, 16), text=(12, 16, 16), dtypes={"f": torch.float32})["f"]
    # eight times the latent volume: the activations grow about eightfold, the weights not at all
    assert small["weights"] == large["weights"]
    assert 6 < large["activations"] / small["activations"] < 9
