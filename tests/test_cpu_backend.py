"""The CPU backend's switch (text2video.backends.cpu): install, uninstall, the environment switch, parity of a
whole Unet3D with and without it, and that the trainer and the pipelines install it on CPU."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from text2video.backends import cpu as cpu_backend
from text2video.backends.cpu import unet3d as fast
from text2video.diffusion.objective import ObjectiveConfig
from text2video.models.unet3d import Unet3D
from text2video.pipelines import TextToVideoPipeline


def _tiny(**kw) -> Unet3D:
    torch.manual_seed(0)
    return Unet3D(dim=16, cond_dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=16, spatial_attn_dim_head=16, **kw)


def _fast_layers(model: nn.Module) -> list[str]:
    return sorted({type(m).__name__ for m in model.modules() if type(m) in set(fast.UNET3D_LAYERS.values())})


def test_install_swaps_every_plain_layer_and_uninstall_restores_them():
    model = _tiny()
    keys = list(model.state_dict())
    assert not cpu_backend.installed(model)
    assert cpu_backend.install(model) is model
    assert _fast_layers(model) == sorted(cls.__name__ for cls in fast.UNET3D_LAYERS.values())
    assert not any(type(m) in fast.UNET3D_LAYERS for m in model.modules())  # no plain layer of the table left
    assert list(model.state_dict()) == keys  # same parameters, same names: checkpoints do not change
    cpu_backend.install(model)  # idempotent
    assert cpu_backend.installed(model)
    cpu_backend.uninstall(model)
    assert not cpu_backend.installed(model) and _fast_layers(model) == []


def test_the_environment_switch_turns_all_of_it_off(monkeypatch):
    monkeypatch.setenv(cpu_backend.ENV_SWITCH, "0")
    model = _tiny()
    assert not cpu_backend.enabled()
    cpu_backend.install(model)
    with cpu_backend.sampling(model):
        assert not cpu_backend.installed(model)
        assert not any("_frozen_depth" in m.__dict__ for m in model.modules())  # no weight packing either


def test_models_the_backend_does_not_know_are_left_alone():
    toy = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 3, 2))
    cpu_backend.install(toy)
    assert [type(m) for m in toy] == [nn.Conv2d, nn.ConvTranspose2d]
    assert cpu_backend.install(lambda x: x) is not None  # a plain callable passes through


@pytest.mark.parametrize("options", [{}, {"block_norm": "layer", "attn_3d": True}])
def test_unet3d_with_the_backend_matches_the_plain_model(options):
    """Forward, gradients and a frozen-weight sampling call of the whole model agree with the plain layers."""
    plain = _tiny(**options)
    quick = cpu_backend.install(copy.deepcopy(plain))
    x, t, cond = torch.randn(2, 3, 5, 16, 16), torch.tensor([3, 700]), torch.randn(2, 8)
    outs, grads = [], []
    for model in (plain, quick):
        out = model(x, t, cond=cond)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outs[1], outs[0], atol=2e-5, rtol=1e-4)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-4, rtol=1e-3, msg=name)
    with torch.no_grad(), cpu_backend.sampling(quick):
        quick(x, t, cond=cond)
        frozen = quick(x, t, cond=cond)  # from the packed weights
    torch.testing.assert_close(frozen, outs[0], atol=2e-5, rtol=1e-4)


def test_an_installed_model_saves_and_loads_as_the_plain_model(tmp_path):
    model = cpu_backend.install(_tiny())
    model.save_pretrained(tmp_path / "m")
    loaded = Unet3D.from_pretrained(tmp_path / "m")
    assert not cpu_backend.installed(loaded)
    x, t = torch.randn(1, 3, 2, 8, 8), torch.tensor([5])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), model(x, t), atol=2e-5, rtol=1e-4)


class _Encoder:
    dim = 8

    def encode(self, texts):
        from text2video.text.encoders import TextEmbeddings

        pooled = torch.ones(len(texts), 8)
        return TextEmbeddings(pooled[:, None], torch.ones(len(texts), 1, dtype=torch.bool), pooled)


def test_a_cpu_pipeline_samples_through_the_backend(monkeypatch):
    """The pipeline installs the backend on CPU and its sampling loop runs on packed weights."""
    calls = []
    original = fast.packed_conv2d
    monkeypatch.setattr(fast, "packed_conv2d", lambda *a, **k: calls.append(1) or original(*a, **k))
    model = _tiny().eval()
    pipe = TextToVideoPipeline(model, _Encoder(), ObjectiveConfig(), {"num_frames": 2, "height": 8, "width": 8, "steps": 2})
    out = pipe("a red circle", seed=0, progress=False)
    assert out.videos.shape == (1, 3, 2, 8, 8)
    assert cpu_backend.installed(model) and calls
    assert all("_frozen_entries" not in m.__dict__ for m in model.modules())  # freed after the run


def test_the_trainer_installs_the_backend_on_cpu(tmp_path):
    from trainer_toys import ToyTextEncoder, ToyVideos, toy_config

    from text2video.train.trainer import Trainer

    model = Unet3D(dim=8, cond_dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, spatial_attn_dim_head=8)
    trainer = Trainer(toy_config(steps=1), tmp_path, model=model, dataset=ToyVideos(n=4), text_encoder=ToyTextEncoder(), progress=False)
    assert cpu_backend.installed(trainer.unwrapped) and cpu_backend.installed(trainer.ema.shadow)
    assert trainer.train().step == 1
