"""Importing video-diffusion-pytorch (lucidrains) Unet3D checkpoints: same outputs as the original."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import types

import pytest
import torch

from text2video.cli import main as cli_main
from text2video.errors import CheckpointError
from text2video.models.convert import convert
from text2video.models.convert.video_diffusion_pytorch import import_original_package, infer_config
from text2video.models.unet3d import Unet3D


def import_peer() -> types.ModuleType:
    """video-diffusion-pytorch's model module (skips the test when the dev dependency is missing)."""
    pytest.importorskip("rotary_embedding_torch")
    pytest.importorskip("einops_exts")
    if importlib.util.find_spec("video_diffusion_pytorch") is None:
        pytest.skip("video-diffusion-pytorch is not installed (dev dependency)")
    return import_original_package()


def randomized_peer(seed: int = 0, **config):
    """A tiny peer Unet3D whose norms and position bias are not at their (trivial) initial values."""
    vdp = import_peer()
    torch.manual_seed(seed)
    model = vdp.Unet3D(**config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gamma" in name:
                p.add_(0.3 * torch.randn_like(p))
            elif "relative_attention_bias" in name:
                p.normal_()
    return model


def perturbed(model, seed: int):
    torch.manual_seed(seed)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return other


def trainer_checkpoint(model, ema) -> dict:
    """The layout of video-diffusion-pytorch's Trainer.save: GaussianDiffusion state dicts under model/ema."""
    buffers = {"betas": torch.linspace(1e-4, 0.02, 10), "alphas_cumprod": torch.ones(10)}
    wrap = lambda m: {**{f"denoise_fn.{k}": v for k, v in m.state_dict().items()}, **buffers}  # noqa: E731
    return {"step": 12, "model": wrap(model), "ema": wrap(ema), "scaler": {}}


def assert_same_outputs(peer, ours, *, cond_dim, frames=(1, 4), size=(8, 12)):
    ours = ours.eval()
    torch.manual_seed(3)
    for t in frames:
        x = torch.randn(2, 3, t, *size)
        time = torch.tensor([0.0, 917.0])
        cond = torch.randn(2, cond_dim) if cond_dim else None
        for focus in (None, torch.tensor([True, False])):
            with torch.no_grad():
                expected = peer(x, time, cond=cond, focus_present_mask=focus)
                got = ours(x, time, cond=cond, focus_present_mask=focus)
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        if cond_dim:
            with torch.no_grad():
                expected = peer(x, time, cond=cond, null_cond_prob=1.0)
                got = ours(x, time, cond=cond, null_cond_prob=1.0)
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


CONFIG = dict(dim=8, cond_dim=6, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)


def test_model_and_ema_from_trainer_checkpoint(tmp_path):
    peer = randomized_peer(**CONFIG)
    ema = perturbed(peer, seed=1)
    path = tmp_path / "model-12.pt"
    torch.save(trainer_checkpoint(peer, ema), path)

    report = convert("video-diffusion-pytorch", path, tmp_path / "ema", use_ema=None)
    assert report["weights"] == "ema"
    assert report["config"]["dim"] == 8 and report["config"]["cond_dim"] == 6 and report["config"]["dim_mults"] == [1, 2]
    assert_same_outputs(ema, Unet3D.from_pretrained(str(tmp_path / "ema")), cond_dim=6)

    report = convert("video-diffusion-pytorch", path, tmp_path / "model", use_ema=False)
    assert report["weights"] == "model"
    assert_same_outputs(peer, Unet3D.from_pretrained(str(tmp_path / "model")), cond_dim=6)


def test_raw_state_dict_unconditional_without_linear_attention(tmp_path):
    config = dict(
        dim=8,
        dim_mults=(1, 2, 2),
        attn_heads=3,
        attn_dim_head=40,
        init_dim=8,
        init_kernel_size=5,
        use_sparse_linear_attn=False,
        channels=2,
        out_dim=4,
    )
    peer = randomized_peer(seed=2, **config)
    torch.save(peer.state_dict(), tmp_path / "unet.pt")
    report = convert("video-diffusion-pytorch", tmp_path / "unet.pt", tmp_path / "out")
    inferred = report["config"]
    assert inferred["cond_dim"] is None and inferred["use_sparse_linear_attn"] is False
    assert (inferred["attn_heads"], inferred["attn_dim_head"], inferred["init_kernel_size"]) == (3, 40, 5)
    assert (inferred["channels"], inferred["out_dim"], inferred["dim_mults"]) == (2, 4, [1, 2, 2])
    ours = Unet3D.from_pretrained(str(tmp_path / "out")).eval()
    torch.manual_seed(0)
    x, time = torch.randn(1, 2, 3, 8, 8), torch.tensor([50.0])
    with torch.no_grad():
        torch.testing.assert_close(ours(x, time), peer(x, time), atol=1e-4, rtol=1e-4)


def test_cli_convert_then_same_outputs(tmp_path, capsys):
    peer = randomized_peer(seed=4, **CONFIG)
    ema = perturbed(peer, seed=5)
    path = tmp_path / "ckpt.pt"
    torch.save(trainer_checkpoint(peer, ema), path)
    rc = cli_main(["convert", "--from", "video-diffusion-pytorch", str(path), "--out", str(tmp_path / "m"), "--no-ema", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"] == "model" and report["config"]["attn_heads"] == 2
    assert_same_outputs(peer, Unet3D.from_pretrained(str(tmp_path / "m")), cond_dim=6, frames=(3,))
    rc = cli_main(["convert", "--from", "video-diffusion-pytorch", str(path), "--out", str(tmp_path / "e"), "--ema"])
    assert rc == 0
    assert_same_outputs(ema, Unet3D.from_pretrained(str(tmp_path / "e")), cond_dim=6, frames=(2,))


def test_errors_name_the_problem(tmp_path):
    peer = randomized_peer(**CONFIG)
    torch.save(peer.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="without 'ema'"):
        convert("video-diffusion-pytorch", tmp_path / "plain.pt", tmp_path / "x", use_ema=True)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a video-diffusion-pytorch Unet3D"):
        convert("video-diffusion-pytorch", tmp_path / "other.pt", tmp_path / "x")
    with pytest.raises(CheckpointError, match="does not exist"):
        convert("video-diffusion-pytorch", tmp_path / "missing.pt", tmp_path / "x")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights-only"):
        convert("video-diffusion-pytorch", tmp_path / "junk.pt", tmp_path / "x")
    state = peer.state_dict()
    del state["mid_block1.block1.proj.weight"]
    with pytest.raises(CheckpointError, match="lacks"):
        convert("video-diffusion-pytorch", _save(state, tmp_path / "partial.pt"), tmp_path / "x")
    del state["time_mlp.1.weight"]
    with pytest.raises(CheckpointError, match="time_mlp.1.weight"):
        infer_config(state)
    rc = cli_main(["convert", "--from", "video-diffusion-pytorch", str(tmp_path / "other.pt"), "--out", str(tmp_path / "x")])
    assert rc == 2


def _save(state, path):
    torch.save(state, path)
    return path


def test_training_gradients_match_the_original():
    """Every parameter's gradient of an MSE loss equals the original's (the hand-written backward passes)."""
    from text2video.models.convert.video_diffusion_pytorch import convert_state_dict

    config = dict(dim=8, cond_dim=6, dim_mults=(1, 2, 4), attn_heads=2, attn_dim_head=32)  # rotated weights and features
    peer = randomized_peer(seed=5, **config).train()
    ours = Unet3D(**config).train()
    ours.load_state_dict(convert_state_dict(peer.state_dict(), ours.state_dict()))
    torch.manual_seed(4)
    x, time, cond = torch.randn(2, 3, 5, 16, 16), torch.tensor([3.0, 600.0]), torch.randn(2, 6)
    target = torch.randn_like(x)
    for model in (peer, ours):
        torch.nn.functional.mse_loss(model(x, time, cond=cond), target).backward()
    peer_grads = {name: p.grad for name, p in peer.named_parameters()}
    as_weights = {k: peer_grads[k] if peer_grads.get(k) is not None else torch.zeros_like(v) for k, v in peer.state_dict().items()}
    expected = convert_state_dict(as_weights, ours.state_dict())  # the converter maps gradients like weights
    for name, p in ours.named_parameters():
        if name == "null_cond_emb":  # every item has text: no gradient in either model
            continue
        assert p.grad is not None, name
        scale = expected[name].abs().max().clamp(min=1e-6)
        torch.testing.assert_close(p.grad / scale, expected[name] / scale, atol=1e-4, rtol=0, msg=name)
