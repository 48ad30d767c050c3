"""Every denoiser's forward creates its tensors on the input's device.

A tensor made without ``device=`` lands on the CPU; on a GPU the next op that mixes it with the model's
tensors fails (this is how every text-conditioned model crashed in the first GPU check: a masked-attention
helper built its fill value from ``torch.tensor(True)``). No GPU is needed to catch that class of bug: the
forward runs under a function mode that records each tensor factory called without a device from inside
the package. The models run plain, as on a GPU; the CPU backend (installed only on the CPU) is left out.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from text2video.config import load_config
from text2video.diffusion.conditioning import Conditioning
from text2video.runs.build import build_configured_model

PACKAGE = Path(__import__("text2video").__file__).resolve().parent
FACTORIES = {torch.tensor, torch.zeros, torch.ones, torch.full, torch.arange, torch.empty, torch.randn, torch.rand,
             torch.randint, torch.linspace, torch.eye}  # fmt: skip
#: code that runs only on the CPU (the CPU backend: fused kernels and their policy)
CPU_ONLY = PACKAGE / "backends" / "cpu"


class ImplicitDeviceFactories(TorchFunctionMode):
    """Records ``file:line`` of each tensor factory called from the package without ``device=``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            for frame in inspect.stack()[1:]:
                path = Path(frame.filename).resolve()
                if PACKAGE in path.parents:
                    if CPU_ONLY not in path.parents:
                        self.calls.append(f"{path.relative_to(PACKAGE)}:{frame.lineno}")
                    break
        return func(*args, **kwargs)


@pytest.mark.parametrize(
    "preset, overrides",
    [
        ("tiny-cpu", []),
        ("tiny-stdit", ["model.input_size=[4,24,24]"]),
        ("tiny-unet-stic", ["model.num_frames=4"]),
        ("tiny-segdit", []),
        (
            "tiny-latent",
            ["latent.vae=null", "latent.fit_steps=0", "data.channels=4", "model.sample_size=8", "data.size=8"],
        ),
    ],
)
def test_forward_makes_no_tensor_without_a_device(preset, overrides):
    config = load_config(preset, ["data.num_frames=4", *overrides])
    kw = config.model.kwargs
    width = kw.get("caption_channels") or kw.get("cross_attention_dim") or 16
    model = build_configured_model(config, width).eval()
    g = torch.Generator().manual_seed(0)
    channels = 4 if preset == "tiny-latent" else 3
    x = torch.randn(2, channels, 4, config.data.size, config.data.size, generator=g)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    tokens = torch.randn(2, 4, width, generator=g) * mask[..., None]
    cond = Conditioning(
        text_tokens=tokens, text_mask=mask, text_pooled=tokens.mean(1), null_text=torch.tensor([False, True]),
        fps=torch.tensor([8.0, 12.0]), class_labels=torch.tensor([1, 2]) if preset == "tiny-segdit" else None,
    )  # fmt: skip
    mode = ImplicitDeviceFactories()
    with torch.no_grad(), mode:
        out = model.forward_cond(x, torch.tensor([10, 900]), cond)
    assert out.shape == x.shape
    assert not mode.calls, f"tensors made without device= (they land on the CPU): {sorted(set(mode.calls))}"


def test_the_check_sees_an_implicit_factory():
    """The mode catches what broke on the GPU: the old masked-attention fill value."""
    mode = ImplicitDeviceFactories()
    code = compile("torch.zeros(()).masked_fill(torch.tensor(True), float('-inf'))", str(PACKAGE / "nn" / "probe.py"), "eval")
    with mode:
        eval(code, {"torch": torch})
    assert mode.calls == ["nn/probe.py:1", "nn/probe.py:1"]
