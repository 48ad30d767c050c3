"""Every family's tiny preset can learn its captions: what kept STDiT, UNetSTIC and the latent UNet3DConditionModel
at 0-8% adherence (issue 26) must not come back.

* The noisiest step is where sampling starts and decides the layout; with epsilon prediction on a schedule that
  keeps almost no signal there, the clean clip implied by the model is its error times s_t / a_t (20000x at
  t = 999 on the cosine schedule). Every tiny preset predicts a target whose error is not amplified there.
* After a few optimiser steps the caption reaches the output of each family's preset model, and every parameter
  (the zero-initialised gates, projections and final layers included) receives gradient.
"""

from __future__ import annotations

import pytest
import torch

from text2video.config import load_config, objective_config
from text2video.diffusion.conditioning import Conditioning
from text2video.diffusion.objective import DiffusionObjective
from text2video.runs.build import build_configured_model

TINY = ["tiny-cpu", "tiny-latent", "tiny-stdit", "tiny-unet-stic", "tiny-segdit"]


@pytest.mark.parametrize("preset", TINY)
def test_the_noisiest_step_does_not_amplify_the_models_error(preset):
    objective = DiffusionObjective(objective_config(load_config(preset)))
    x0 = torch.rand(2, 3, 2, 4, 4) * 2 - 1
    noise = torch.randn_like(x0)
    error = 0.1 * torch.randn_like(x0)
    for t in (999, 950):
        tt = torch.full((2,), t)
        x_t = objective.q_sample(x0, tt, noise)
        a = float(objective.alphas_cumprod[t].sqrt())
        s = (1 - a * a) ** 0.5
        x0_error = objective.predict_x0(x_t, tt, objective.target(x0, noise, tt) + error) - x0
        # v: x0 = a x_t - s v, so an error e in v is s e in x0 (never more than e); epsilon: (s / a) e
        factor = {"v_prediction": s, "sample": 1.0, "epsilon": s / a}[objective.prediction_type]
        torch.testing.assert_close(x0_error, -factor * error if objective.prediction_type != "sample" else error, atol=1e-4, rtol=1e-3)
        assert factor <= 1.0, f"{preset}: an error in the prediction is {factor:.0f}x larger in the clean clip at t={t}"


def _caption(batch: int, length: int = 6, dim: int = 384, seed: int = 0) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, length, dim, generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, length - 2 :] = False  # padding, as a real caption has
    pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return Conditioning(text_tokens=tokens, text_mask=mask, text_pooled=pooled)


@pytest.mark.parametrize("preset", TINY)
def test_the_caption_reaches_the_output_and_every_parameter_learns(preset):
    torch.manual_seed(0)
    pixels = ["latent.vae=null", "latent.fit_steps=0", "latent.cache=false"]  # tiny-latent's model on pixels: the same paths
    if preset == "tiny-latent":
        pixels += ["model.in_channels=3", "model.out_channels=3"]
    config = load_config(preset, pixels)
    model = build_configured_model(config, 384)
    objective = DiffusionObjective(objective_config(config))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = 2
    x0 = torch.rand(b, 3, config.data.num_frames, config.data.size, config.data.size) * 2 - 1
    cond = _caption(b)
    cond = Conditioning(**{**cond.__dict__, "null_text": torch.tensor([False, True])})  # one caption dropped (CFG)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        optimizer.zero_grad()
        loss, _ = objective.loss(model, x0, cond, generator=g)
        loss.backward()
        optimizer.step()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))]
    assert not silent, f"{preset}: no gradient after 3 steps for {silent[:8]}"
    x_t, t = torch.randn_like(x0), torch.tensor([950, 950])
    with torch.no_grad():
        one = objective.predict_x0(x_t, t, model.forward_cond(x_t, t, _caption(b, seed=1)))
        other = objective.predict_x0(x_t, t, model.forward_cond(x_t, t, _caption(b, seed=2)))
    change, size = float((one - other).abs().mean()), float(one.abs().mean())
    # measured: Unet3D 60%, UNet3DConditionModel 17%, STDiT 7%, UNetSTIC 6% (0.3% before pooled_text), SegDiT 2%
    assert change > 0.01 * size, f"{preset}: the caption changes the prediction at t=950 by {change:.1e}, {100 * change / size:.2f}% of it"
