"""Sharded data parallel (train.sharding): FSDP2 on two CPU processes against DDP, exact resume, every
family with bf16 and gradient checkpointing; the plugins the config builds; checkpoints from state dicts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from text2video.config import load_config
from text2video.errors import ConfigError

WORKER = Path(__file__).with_name("sharded_worker.py")


def _weights(run: Path, step: int, name: str) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step-{step:08d}" / f"{name}.safetensors")


def _optimizer(run: Path, step: int) -> dict:
    return torch.load(run / "checkpoints" / f"step-{step:08d}" / "optimizer.pt", weights_only=True)


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(WORKER.parent))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out, json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_fsdp_on_two_processes_trains_as_ddp_does(two_process_runs):
    out, result = two_process_runs
    assert result["fsdp"]["sharded"] and not result["ddp"]["sharded"]
    assert result["fsdp"]["losses"] == pytest.approx(result["ddp"]["losses"], rel=1e-5)
    for name in ("model", "ema"):
        ddp, fsdp = _weights(out / "ddp", 4, name), _weights(out / "fsdp", 4, name)
        assert ddp.keys() == fsdp.keys()
        for key in ddp:  # the same sums in another order: float rounding only
            torch.testing.assert_close(fsdp[key], ddp[key], rtol=1e-4, atol=1e-5)
    # sampling with the sharded EMA weights gives DDP's video
    sample = torch.tensor(result["fsdp"]["sample"])
    assert sample.shape == (1, 3, 4, 16, 16) and bool(torch.isfinite(sample).all())
    torch.testing.assert_close(sample, torch.tensor(result["ddp"]["sample"]), rtol=1e-3, atol=1e-4)
    # validation with the sharded EMA (3 clips over 2 processes: one runs an uncounted forward) and its best checkpoint
    ddp_best = json.loads((out / "ddp" / "checkpoints" / "best" / "state.json").read_text())
    fsdp_best = json.loads((out / "fsdp" / "checkpoints" / "best" / "state.json").read_text())
    assert fsdp_best["step"] == ddp_best["step"] and fsdp_best["val_loss"] == pytest.approx(ddp_best["val_loss"], rel=1e-5)
    ddp_opt, fsdp_opt = _optimizer(out / "ddp", 4), _optimizer(out / "fsdp", 4)
    assert ddp_opt["param_groups"] == fsdp_opt["param_groups"]  # PyTorch's numbering, not parameter names
    for i, state in ddp_opt["state"].items():
        torch.testing.assert_close(fsdp_opt["state"][i]["exp_avg"], state["exp_avg"], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_fsdp_resume_is_exact_with_the_sharded_optimizer_state(two_process_runs):
    out, result = two_process_runs
    assert result["resumed"]["losses"] == result["fsdp"]["losses"][2:]
    for name in ("model", "ema"):
        straight, resumed = _weights(out / "fsdp", 4, name), _weights(out / "resumed", 4, name)
        assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    straight_opt, resumed_opt = _optimizer(out / "fsdp", 4), _optimizer(out / "resumed", 4)
    for i, state in straight_opt["state"].items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(resumed_opt["state"][i][key], state[key])
    # a DDP checkpoint resumes under FSDP (one format): the same run as FSDP throughout, up to rounding
    assert result["crossed"]["losses"] == pytest.approx(result["fsdp"]["losses"][2:], rel=1e-5)
    crossed = _weights(out / "crossed", 4, "model")
    for key, value in _weights(out / "fsdp", 4, "model").items():
        torch.testing.assert_close(crossed[key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_every_family_trains_sharded_with_bf16_and_checkpointing(two_process_runs):
    import text2video as t2v

    out, result = two_process_runs
    assert set(result["families"]) == {"unet3d", "stdit", "unet_stic", "segdit", "unet3d_condition"}
    for family, res in result["families"].items():
        assert res["sharded"], family
        assert all(torch.isfinite(torch.tensor(res["losses"]))), family
        assert res["losses"][1] != res["losses"][0], family  # the first step changed the weights
        # the gathered checkpoint is a whole model: it loads strictly into an unsharded pipeline
        pipe = t2v.load_pipeline(out / f"family-{family}")
        saved = load_file(Path(res["checkpoint"]) / "ema.safetensors")
        for key, value in pipe.model.state_dict().items():
            assert torch.equal(value.float(), saved[key].float()), (family, key)


def test_fsdp_plugin_follows_the_config():
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy

    from text2video.train.sharding import accelerator_kwargs

    t = load_config("tiny-cpu", ["train.sharding=fsdp", "train.mixed_precision=bf16", "train.fsdp_cpu_offload=true",
                                 "train.fsdp_reshard_after_forward=false", "train.fsdp_wrap=[ResnetBlock]"]).train  # fmt: skip
    plugin = accelerator_kwargs(t)["fsdp_plugin"]
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is False
    assert isinstance(plugin.cpu_offload, CPUOffloadPolicy)
    assert plugin.transformer_cls_names_to_wrap == ["ResnetBlock"]
    policy = plugin.mixed_precision_policy
    assert isinstance(policy, MixedPrecisionPolicy)
    assert policy.param_dtype == torch.bfloat16 and policy.reduce_dtype == torch.float32  # gradients summed in float32
    assert accelerator_kwargs(load_config("tiny-cpu").train) == {}


def test_deepspeed_plugin_follows_the_config(monkeypatch):
    import importlib.util

    from text2video.train import sharding

    t = load_config("tiny-cpu", ["train.sharding=deepspeed", "train.zero_stage=1", "train.zero_offload=true", "train.grad_accum=2"]).train
    ds = sharding.deepspeed_plugin(t).deepspeed_config
    assert ds["zero_optimization"]["stage"] == 1
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["gradient_accumulation_steps"] == 2 and ds["gradient_clipping"] == t.max_grad_norm
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install --no-build-isolation deepspeed"):
        sharding.accelerator_kwargs(t)
    with pytest.raises(ConfigError, match="zero_stage: 3 is not allowed"):
        load_config("tiny-cpu", ["train.zero_stage=3"])


def test_deepspeed_is_refused_on_a_cpu(tmp_path):
    from text2video.train.trainer import Trainer

    config = load_config("tiny-cpu", ["train.sharding=deepspeed"])
    with pytest.raises(ConfigError, match="needs CUDA GPUs.*train.sharding=fsdp"):
        Trainer(config, tmp_path / "run", progress=False)


class _Fake:
    """Just enough of an Accelerator for `wrap_blocks`."""

    def __init__(self, names=None):
        from accelerate.utils import FullyShardedDataParallelPlugin

        self.state = type("State", (), {})()
        self.state.fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2, transformer_cls_names_to_wrap=names)


@pytest.mark.parametrize(
    "preset, overrides, expected",
    [
        ("tiny-cpu", [], ["ResnetBlock", "MidBlock"]),
        ("tiny-stdit", [], ["STDiTBlock"]),
        ("tiny-unet-stic", [], ["STLayer"]),
        ("tiny-segdit", [], ["DiTBlock"]),
        ("tiny-latent", ["latent.vae=null", "latent.fit_steps=0", "data.channels=4", "model.sample_size=8", "data.size=8"],
         ["ResnetBlock3D", "Transformer3DModel", "TemporalTransformer"]),
    ],
)  # fmt: skip
def test_each_family_names_the_blocks_fsdp_shards(preset, overrides, expected):
    from text2video.runs.build import build_configured_model
    from text2video.train.sharding import wrap_blocks

    config = load_config(preset, overrides)
    kw = config.model.kwargs
    model = build_configured_model(config, kw.get("caption_channels") or kw.get("cross_attention_dim") or 16)
    fake = _Fake()
    assert wrap_blocks(fake, model) == expected
    assert fake.state.fsdp_plugin.transformer_cls_names_to_wrap == expected
    with pytest.raises(ConfigError, match=r"train.fsdp_wrap names \['Nope'\]"):
        wrap_blocks(_Fake(["Nope"]), model)


@pytest.mark.parametrize("preset", ["tiny-stdit", "tiny-unet-stic", "tiny-segdit"])
def test_gradient_checkpointing_gives_the_same_gradients(preset):
    """The transformer families recompute each block in backward: same loss and gradients as without."""
    from text2video.diffusion.conditioning import Conditioning
    from text2video.runs.build import build_configured_model

    config = load_config(preset, ["data.num_frames=2", "data.size=16"] + (["model.input_size=[2,16,16]"] if preset == "tiny-stdit" else [])
                         + (["model.num_frames=2"] if preset == "tiny-unet-stic" else []))  # fmt: skip
    kw = config.model.kwargs
    width = kw.get("caption_channels") or kw.get("cross_attention_dim") or 16
    torch.manual_seed(0)
    model = build_configured_model(config, width)
    for p in model.parameters():  # zero-initialised output layers would hide the blocks' gradients
        torch.nn.init.normal_(p, std=0.05)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 2, 16, 16, generator=g)
    cond = Conditioning(text_tokens=torch.randn(2, 3, width, generator=g), text_mask=torch.ones(2, 3, dtype=torch.bool),
                        text_pooled=torch.randn(2, width, generator=g), class_labels=torch.tensor([1, 2]))  # fmt: skip

    def grads():
        model.zero_grad()
        loss = model.forward_cond(x, torch.tensor([10, 500]), cond).square().mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain_loss, plain = grads()
    model.enable_gradient_checkpointing()
    checkpointed_loss, checkpointed = grads()
    assert model.gradient_checkpointing
    torch.testing.assert_close(checkpointed_loss, plain_loss)
    assert len(plain) == len(checkpointed) > 0
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
