"""LoRA: targets per model family, the adapter file (ours and diffusers'), scales, merging, unloading, and a
fine-tune of a small trained model on a new caption end to end (CPU, offline)."""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pretrained_toys as toys
import pytest
import torch
from safetensors import safe_open
from test_train_cli import TINY  # the tiny tiny-cpu overrides

from text2video.cli import main
from text2video.config import load_config
from text2video.diffusion.conditioning import Conditioning
from text2video.errors import CheckpointError, ConfigError
from text2video.io.video import write_video
from text2video.models.lora import (
    LoraSettings,
    adapter_names,
    add_lora,
    load_lora,
    merge_lora,
    restore_weights,
    save_lora,
    set_lora_scales,
    target_modules,
    trainable_parameters,
)
from text2video.models.unet3d_condition import UNet3DConditionModel
from text2video.pipelines import load_pipeline
from text2video.pipelines.lora import lora_file, parse_lora_spec
from text2video.runs.build import build_configured_model

# these tiny models run fastest on one thread on the busy 2-core machine (pretrained_toys.one_thread)
_single_thread = pytest.fixture(scope="module", autouse=True)(toys.one_thread)


def _unet3d(seed: int = 0):
    torch.manual_seed(seed)
    return build_configured_model(load_config("tiny-cpu", TINY), 384).eval()


def _inputs(channels: int = 3, frames: int = 4, size: int = 16, text_dim: int = 384):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, channels, frames, size, size, generator=g)
    cond = Conditioning(
        text_tokens=torch.randn(2, 5, text_dim, generator=g),
        text_mask=torch.ones(2, 5, dtype=torch.bool),
        text_pooled=torch.randn(2, text_dim, generator=g),
    )
    return x, torch.tensor([20, 700]), cond


def _randomize_adapters(model, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_settings_and_config_checks() -> None:
    assert LoraSettings().scale == 1.0 and LoraSettings(rank=4, alpha=8).scale == 2.0
    with pytest.raises(ConfigError, match="rank"):
        LoraSettings(rank=0)
    with pytest.raises(ConfigError, match="target set"):
        LoraSettings(targets="everything")
    with pytest.raises(ConfigError, match="unknown train.lora"):
        LoraSettings.from_dict({"rnak": 4})
    with pytest.raises(ConfigError, match="train.init_from"):
        load_config("tiny-cpu", ["train.lora.rank=4"])
    with pytest.raises(ConfigError, match="targets=motion"):
        load_config("tiny-cpu", ["train.lora.rank=4", "train.init_from=x", "train.trainable=motion_modules"])
    assert load_config("tiny-cpu", ["train.lora.rank=4", "train.init_from=x"]).train.lora == {"rank": 4}


def test_default_targets_per_family() -> None:
    unet = _unet3d()
    names = target_modules(unet)
    assert names and all(n.rsplit(".", 1)[-1] in ("to_qkv", "to_out", "to_q", "to_kv") for n in names)
    stdit = build_configured_model(load_config("tiny-stdit"), 384)
    assert {n.rsplit(".", 1)[-1] for n in target_modules(stdit)} == {"to_q", "to_k", "to_v", "to_out"}
    with pytest.raises(ConfigError, match="no motion modules"):
        target_modules(unet, "motion")
    motion = UNet3DConditionModel.from_preset("tiny")
    auto = target_modules(motion)
    assert auto and all(".motion_modules." in n for n in auto)  # AnimateDiff-style: a MotionLoRA
    assert len(target_modules(motion, "attention")) > len(auto)
    assert target_modules(unet, ["frame_pos"]) == ["frame_pos"]


def test_adapter_file_round_trip_scales_merge_and_unload(tmp_path) -> None:
    base = _unet3d()
    tuned = copy.deepcopy(base)
    count = add_lora(tuned, LoraSettings(rank=4, alpha=8))
    assert count == trainable_parameters(tuned) > 0
    assert all(".lora_" in n for n, p in tuned.named_parameters() if p.requires_grad)
    _randomize_adapters(tuned)
    x, t, cond = _inputs()
    with torch.no_grad():
        plain, full = base.forward_cond(x, t, cond), tuned.forward_cond(x, t, cond)
    assert (full - plain).abs().max() > 1e-2

    path = save_lora(tuned, tmp_path)
    with safe_open(str(path), framework="pt") as handle:
        keys, meta = list(handle.keys()), handle.metadata()
    assert all(k.startswith("unet.") and (".lora_A.weight" in k or ".lora_B.weight" in k) for k in keys)
    assert json.loads(meta["lora_adapter_metadata"])["unet.r"] == 4
    assert path.stat().st_size < 100_000

    model = copy.deepcopy(base)
    load_lora(model, path, "a")
    load_lora(model, path, "b")
    assert adapter_names(model) == ["a", "b"]
    set_lora_scales(model, {"a": 1.0, "b": 0.0})
    with torch.no_grad():
        torch.testing.assert_close(model.forward_cond(x, t, cond), full, atol=1e-5, rtol=1e-5)
        set_lora_scales(model, {"a": 0.5, "b": 0.5})  # each layer's two halves add up to one whole
        torch.testing.assert_close(model.forward_cond(x, t, cond), full, atol=1e-5, rtol=1e-5)
        set_lora_scales(model, {"a": 0.0, "b": 0.0})
        torch.testing.assert_close(model.forward_cond(x, t, cond), plain, atol=1e-6, rtol=0)
        set_lora_scales(model, {"a": 1.0, "b": 0.0})
        originals = merge_lora(model)
        assert adapter_names(model) == [] and list(model.state_dict()) == list(base.state_dict())
        torch.testing.assert_close(model.forward_cond(x, t, cond), full, atol=1e-5, rtol=1e-5)
    restore_weights(model, originals)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
    with pytest.raises(ConfigError, match="already"):
        load_lora(tuned, path, "default")


def test_the_cpu_backend_keeps_the_adapter() -> None:
    from text2video.backends import cpu

    model = _unet3d()
    add_lora(model, LoraSettings(rank=4))
    _randomize_adapters(model)
    x, t, cond = _inputs()
    with torch.no_grad():
        plain = model.forward_cond(x, t, cond)
        cpu.install(model)
        fast = model.forward_cond(x, t, cond)
        with cpu.sampling(model):
            sampling = model.forward_cond(x, t, cond)
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sampling, plain, atol=1e-4, rtol=1e-4)


def test_a_unet3d_condition_adapter_loads_in_diffusers(tmp_path) -> None:
    """Our adapter file, read the way diffusers' ``AnimateDiffPipeline.load_lora_weights`` reads it (its
    ``lora_state_dict`` and ``load_lora_into_unet``, on diffusers' UNetMotionModel), gives the same output as our
    model with the adapter."""
    from diffusers import AnimateDiffPipeline, UNetMotionModel
    from test_import_animatediff import _inputs as ad_inputs
    from test_import_animatediff import _run_reference, adapter, unet2d

    reference = UNetMotionModel.from_unet2d(unet2d.__wrapped__(), adapter.__wrapped__()).eval()
    ours = UNet3DConditionModel.from_unet2d(unet2d.__wrapped__(), adapter.__wrapped__()).eval()
    assert any(n.endswith(".to_out") for n in target_modules(ours, "attention"))  # diffusers' to_out.0 in the file
    add_lora(ours, LoraSettings(rank=4, alpha=4, targets="attention"))
    _randomize_adapters(ours, seed=3)
    path = save_lora(ours, tmp_path / "motion_lora")
    state, alphas, metadata = AnimateDiffPipeline.lora_state_dict(str(path.parent), return_lora_metadata=True)
    assert metadata["unet.r"] == 4 and all(k.startswith("unet.") for k in state)
    AnimateDiffPipeline.load_lora_into_unet(state, alphas, reference, adapter_name="ours", metadata=metadata)
    x, t, text = ad_inputs()
    with torch.no_grad():
        expected = _run_reference(reference, x, t, text)
        got = ours(x, t, text).sample
        assert (got - ours.forward(x, t, text).sample).abs().max() == 0
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_parse_lora_spec() -> None:
    assert parse_lora_spec("runs/x") == ("runs/x", 1.0)
    assert parse_lora_spec("a/b.safetensors:0.5") == ("a/b.safetensors", 0.5)
    assert parse_lora_spec("C:/x/y") == ("C:/x/y", 1.0)


# ------------------------------------------------------------------------------ end to end


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    base = root / "base"
    assert (
        main(["train", "--config", "tiny-cpu", *TINY, "train.steps=4", "train.save_every=0", "--run-dir", str(base), "--no-progress"]) == 0
    )
    clips = root / "clips"
    clips.mkdir()
    for i in range(8):  # the new caption: an all-white clip
        write_video(np.full((4, 16, 16, 3), 255, dtype=np.uint8), clips / f"{i}.gif", fps=8)
        (clips / f"{i}.txt").write_text("a zebra dancing\n")
    before = _digest(base / "checkpoints")
    lora = root / "lora"
    common = [*TINY, "data.kind=folder", f"data.options={{root: {clips}}}", f"train.init_from={base}", "train.lora.rank=4",
              "train.lr=0.05", "train.lr_schedule=constant", "train.ema_decay=0.5", "train.cond_drop=0.0", "train.save_every=6", "train.keep_checkpoints=5"]  # fmt: skip
    assert main(["train", "--config", "tiny-cpu", *common, "train.steps=12", "--run-dir", str(lora), "--no-progress"]) == 0
    half = root / "half"
    assert main(["train", "--config", "tiny-cpu", *common, "train.steps=6", "--run-dir", str(half), "--no-progress"]) == 0
    assert (
        main(
            [
                "train",
                "--config",
                str(half / "config.yaml"),
                "train.steps=12",
                "--run-dir",
                str(half),
                "--resume",
                "latest",
                "--no-progress",
            ]
        )
        == 0
    )
    return {"base": base, "lora": lora, "half": half, "clips": clips, "before": before}


def test_lora_checkpoints_hold_the_adapter_and_its_optimizer_state_only(runs) -> None:
    step = runs["lora"] / "checkpoints" / "step-00000012"
    names = {p.name for p in step.iterdir()}
    assert {"lora.safetensors", "ema_lora.safetensors", "optimizer.pt"} <= names
    assert "model.safetensors" not in names and "ema.safetensors" not in names
    with safe_open(str(step / "lora.safetensors"), framework="pt") as handle:
        adapter = sum(handle.get_tensor(k).numel() for k in handle.keys())
    optimizer = torch.load(step / "optimizer.pt", weights_only=True)
    assert sum(s["exp_avg"].numel() for s in optimizer["state"].values()) == adapter
    base_params = sum(p.numel() for p in _unet3d().parameters())
    assert adapter < base_params / 10
    # the reliability checks read the adapter files: finite, and intact for the fallback from a damaged newer one
    from text2video.runs.checkpoint import is_finite_checkpoint, previous_intact

    assert is_finite_checkpoint(step) and previous_intact(step) == runs["lora"] / "checkpoints" / "step-00000006"


def test_the_base_stays_bit_identical_and_the_caption_changes(runs) -> None:
    assert _digest(runs["base"] / "checkpoints") == runs["before"]
    base_pipe = load_pipeline(runs["base"])
    tuned_pipe = load_pipeline(runs["lora"])
    prompt = "a zebra dancing"
    base_video = base_pipe(prompt, steps=4, seed=0, progress=False).videos
    tuned_video = tuned_pipe(prompt, steps=4, seed=0, progress=False).videos
    # toward the all-white clips of the new caption
    assert float((tuned_video - 1).abs().mean()) < float((base_video - 1).abs().mean()) - 0.4

    # the same adapter loaded on the base pipeline, then removed: the base comes back exactly
    base_state = {k: v.clone() for k, v in base_pipe.model.state_dict().items()}
    name = base_pipe.load_lora(runs["lora"])
    assert name == "lora0"
    loaded = base_pipe(prompt, steps=4, seed=0, progress=False).videos
    torch.testing.assert_close(loaded, tuned_video, atol=1e-4, rtol=1e-4)
    base_pipe.fuse_lora()
    torch.testing.assert_close(base_pipe(prompt, steps=4, seed=0, progress=False).videos, tuned_video, atol=1e-4, rtol=1e-4)
    base_pipe.unload_lora()
    assert all(torch.equal(v, base_state[k]) for k, v in base_pipe.model.state_dict().items())
    torch.testing.assert_close(base_pipe(prompt, steps=4, seed=0, progress=False).videos, base_video)


def test_lora_resume_is_exact(runs) -> None:
    for name in ("lora.safetensors", "ema_lora.safetensors"):
        with safe_open(str(runs["lora"] / "checkpoints" / "step-00000012" / name), framework="pt") as a:
            with safe_open(str(runs["half"] / "checkpoints" / "step-00000012" / name), framework="pt") as b:
                assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def test_cli_generate_with_lora_and_bad_adapters(runs, tmp_path, capsys) -> None:
    out = tmp_path / "videos"
    assert main(["generate", "a zebra dancing", "--model", str(runs["base"]), "--lora", f"{runs['lora']}:0.5", "--steps", "2",
                 "-o", str(out), "--json"]) == 0  # fmt: skip
    assert len(json.loads(capsys.readouterr().out)["videos"]) == 1
    assert main(["generate", "x", "--model", str(runs["base"]), "--lora", str(runs["base"]), "--steps", "2", "-o", str(out)]) == 2
    assert "not trained with train.lora" in capsys.readouterr().err
    pipe = load_pipeline(runs["base"])
    with pytest.raises(CheckpointError, match="transformer"):
        stdit = build_configured_model(load_config("tiny-stdit"), 384)
        add_lora(stdit, LoraSettings(rank=2))
        pipe.load_lora(save_lora(stdit, tmp_path / "stdit"))
    pipe.load_lora(runs["lora"])
    with pytest.raises(ConfigError, match="fuse_lora"):
        pipe.save_pretrained(tmp_path / "pipe")


def test_serve_merges_the_adapters_into_the_served_model(runs) -> None:
    from text2video.serve.catalog import ModelCatalog

    catalog = ModelCatalog.from_args([str(runs["base"])], device="cpu", options={"dtype": "bfloat16"}, loras=[f"{runs['lora']}:0.5"])
    pipe = catalog.pipeline()
    assert pipe.lora_scales == {"lora0": 0.5} and pipe._unmerged is not None
    assert next(pipe.model.parameters()).dtype == torch.bfloat16  # merged in float32, then cast
    assert catalog.option_flags() == ["--dtype", "bfloat16", "--lora", f"{runs['lora'].resolve()}:0.5"]  # the page's command
    assert catalog.describe()["lora"] == {"lora0": 0.5}
    assert catalog.pipeline(kind="InterpolationPipeline").model is pipe.model


# ---------------------------------------------------------------------- a pretrained diffusers base


def test_a_lora_on_a_diffusers_text_to_video_folder(tmp_path, capsys) -> None:
    """A ModelScope-style diffusers folder as the LoRA base: `info --train-config` describes it, a LoRA trains on it
    through the one loader, and the LoRA run samples with the base's own scheduler, as does the base with --lora
    and the memory options; the base folder is never written."""
    import yaml

    folder = toys.save_text_to_video(tmp_path / "ms")
    before = _digest(folder)
    config = tmp_path / "ms.yaml"
    assert main(["info", "--model", str(folder), "--train-config", str(config), "--json"]) == 0
    written = yaml.safe_load(config.read_text())
    assert written["train"]["init_from"] == str(folder.resolve()) and written["text"]["padding"] == "max_length"
    assert written["model"]["name"] == "unet3d_condition" and written["diffusion"]["beta_schedule"] == "scaled_linear"

    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(2):
        write_video(np.full((2, 16, 16, 3), 255, dtype=np.uint8), clips / f"{i}.gif", fps=8)
        (clips / f"{i}.txt").write_text("a red circle\n")
    run = tmp_path / "lora"
    overrides = ["data.kind=folder", f"data.options={{root: {clips}}}", "data.num_frames=2", "train.steps=2", "train.batch_size=2",
                 "train.lora.rank=2", "train.lr=0.05", "train.warmup_steps=0", "train.save_every=0", "train.log_every=1",
                 "sample.prompts=[]", "text.cache=false"]  # fmt: skip
    assert main(["train", "--config", str(config), *overrides, "--run-dir", str(run), "--no-progress"]) == 0
    assert _digest(folder) == before

    base = load_pipeline(folder)
    tuned = load_pipeline(run)  # the base through the one loader, the adapter merged, the base's own DDIM
    assert tuned.scheduler_config == base.scheduler_config and tuned.scheduler_config["_class_name"] == "DDIMScheduler"
    call = dict(num_frames=2, steps=2, seed=0, progress=False)
    base_video, tuned_video = base("a red circle", **call).videos, tuned("a red circle", **call).videos
    assert (tuned_video - base_video).abs().max() > 1e-3
    # the base with --lora (merged before the memory options apply) gives the LoRA run's videos
    with_lora = load_pipeline(folder, lora=[f"{run}:1"], vae_frames=1)
    assert with_lora.lora_scales == {"lora0": 1.0} and with_lora.vae.micro_batch == 1
    torch.testing.assert_close(with_lora("a red circle", **call).videos, tuned_video, atol=1e-4, rtol=1e-4)
    _same_in_diffusers_through_peft(folder, lora_file(run), with_lora.model)
    capsys.readouterr()
    assert main(["generate", "a red circle", "--model", str(folder), "--lora", str(run), "--dtype", "bfloat16", "--frames", "2",
                 "--steps", "1", "-o", str(tmp_path / "out"), "--json"]) == 0  # fmt: skip
    assert len(json.loads(capsys.readouterr().out)["videos"]) == 1


def _same_in_diffusers_through_peft(folder, adapter, ours) -> None:
    """The adapter file, put into diffusers' own UNet3DConditionModel of ``folder`` with PEFT (diffusers' class has
    no load_lora_adapter), gives the output of ``ours`` (our model with the adapter merged)."""
    from diffusers import UNet3DConditionModel as DiffusersUNet3D
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    with safe_open(str(adapter), framework="pt") as handle:
        state = {k.removeprefix("unet."): handle.get_tensor(k) for k in handle.keys()}
        meta = {k.removeprefix("unet."): v for k, v in json.loads(handle.metadata()["lora_adapter_metadata"]).items()}
    reference = DiffusersUNet3D.from_pretrained(str(folder / "unet")).eval()
    config = LoraConfig(r=meta["r"], lora_alpha=meta["lora_alpha"], target_modules=meta["target_modules"])
    inject_adapter_in_model(config, reference)
    assert not set_peft_model_state_dict(reference, state).unexpected_keys
    g = torch.Generator().manual_seed(2)
    x, t, text = torch.randn(1, 4, 2, 8, 8, generator=g), torch.tensor([500]), torch.randn(1, 12, 16, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t, text).sample, reference(x, t, encoder_hidden_states=text).sample, atol=1e-4, rtol=1e-4)
