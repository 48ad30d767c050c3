import math

import pytest
import torch
from trainer_toys import ToyObjective, make_trainer, toy_config

from text2video.runs.checkpoint import list_checkpoints, read_state
from text2video.train.ema import EMA
from text2video.train.metrics import read_metrics
from text2video.train.trainer import NonFiniteLossError, lr_lambda


def test_short_run_writes_checkpoint_logs_config_and_loss_curve(tmp_path):
    trainer = make_trainer(tmp_path)
    result = trainer.train()
    assert result.step == 6 and len(result.losses) == 6
    assert all(math.isfinite(x) for x in result.losses)
    ckpts = list_checkpoints(tmp_path)
    assert [p.name for p in ckpts] == ["step-00000003", "step-00000006"]
    for name in ("model.safetensors", "ema.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json"):
        assert (ckpts[-1] / name).is_file()
    state = read_state(ckpts[-1])
    assert state["step"] == 6 and state["consumed_batches"] == 6
    # 24 items, global batch 4: 6 batches per epoch, so after 6 the next read is epoch 1, item 0
    assert (state["epoch"], state["index_in_epoch"]) == (1, 0)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows] == result.losses
    assert all(math.isfinite(r["steps_per_s"]) for r in rows if r["step"] % 2 == 0)
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert (tmp_path / "config.yaml").read_text().count("lr: 0.01") == 1
    assert any((tmp_path / "tensorboard").iterdir())


def test_training_lowers_the_loss(tmp_path):
    config = toy_config(steps=40, save_every=0, lr=3e-2, warmup_steps=0)
    result = make_trainer(tmp_path, config).train()
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.8 * first


def test_periodic_samples_are_a_gif_grid(tmp_path):
    from text2video.io.video import read_video

    trainer = make_trainer(tmp_path, toy_config(steps=2, sample_every=2, save_every=0))
    trainer.train()
    grid = tmp_path / "samples" / "step-00000002.gif"
    frames, _ = read_video(grid)
    assert frames.shape[0] == 4 and frames.ndim == 4


def test_cfg_drop_rate_follows_the_config(tmp_path):
    objective = ToyObjective()
    config = toy_config(steps=60, batch_size=8, cond_drop=0.3, save_every=0, log_every=100)
    make_trainer(tmp_path, config, objective=objective).train()
    dropped = torch.cat([c.null_text for c in objective.seen]).float()
    n = dropped.numel()
    assert n == 480
    # binomial(480, 0.3): sd 0.021, so 4 sd either side
    assert abs(dropped.mean().item() - 0.3) < 0.085


def test_empty_captions_are_always_dropped(tmp_path):
    objective = ToyObjective()
    trainer = make_trainer(tmp_path, toy_config(steps=3, cond_drop=0.0, save_every=0), objective=objective)
    trainer.dataset.texts = ["" if i % 2 else "x" for i in range(len(trainer.dataset.texts))]
    trainer.train()
    for cond in objective.seen:
        assert cond.null_text.sum() > 0
    total = torch.cat([c.null_text for c in objective.seen]).float().mean()
    assert 0 < total < 1


def test_text_encoder_runs_once_per_new_prompt(tmp_path):
    trainer = make_trainer(tmp_path, toy_config(steps=12, save_every=0))
    trainer.train()
    # 5 distinct captions; each encoder call encodes only unseen ones
    assert trainer.text_encoder.calls <= 5


def test_image_steps_train_on_single_frames(tmp_path):
    objective = ToyObjective()
    shapes = []
    original = objective.loss

    def recording(model, x0, cond, generator=None):
        shapes.append(x0.shape[2])
        return original(model, x0, cond, generator)

    objective.loss = recording
    make_trainer(tmp_path, toy_config(steps=30, image_share=0.5, save_every=0), objective=objective).train()
    assert set(shapes) == {1, 4}
    assert 0.2 < shapes.count(1) / len(shapes) < 0.8


class NaNObjective(ToyObjective):
    def loss(self, model, x0, cond, generator=None):
        loss, stats = super().loss(model, x0, cond, generator)
        return loss * float("nan"), stats


def test_non_finite_losses_skip_steps_then_stop_clearly(tmp_path):
    trainer = make_trainer(tmp_path, toy_config(steps=10, max_nonfinite=3, save_every=0), objective=NaNObjective())
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        trainer.train()
    assert trainer.nonfinite_total == 3
    for a, b in zip(before, trainer.model.parameters()):
        assert torch.equal(a, b)


def test_lr_warmup_then_cosine():
    config = toy_config(steps=110, warmup_steps=10, lr_schedule="cosine", min_lr_ratio=0.1)
    f = lr_lambda(config)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(110) == pytest.approx(0.1)


def test_ema_follows_the_warmed_up_decay():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = EMA(model, decay=0.9, warmup=True)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.step(model, 1)
    d = min(0.9, 1 / 10)
    assert torch.allclose(ema.shadow.weight, d * start + (1 - d) * (start + 1))
    for step in range(2, 200):
        ema.step(model, step)
    assert ema.current_decay() == 0.9
    assert torch.allclose(ema.shadow.weight, model.weight, atol=1e-6)


class _StepRecordingObjective(ToyObjective):
    """A toy objective whose loss takes the training step (as DiffusionObjective's does)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = []

    def loss(self, model, x0, cond, generator=None, step=None):
        self.steps.append(step)
        return super().loss(model, x0, cond, generator)


def test_the_trainer_passes_the_step_to_an_objective_that_takes_it(tmp_path):
    objective = _StepRecordingObjective()
    make_trainer(tmp_path, toy_config(steps=3, grad_accum=2, batch_size=4, save_every=0), objective=objective).train()
    assert objective.steps == [0, 0, 1, 1, 2, 2]  # each micro-batch of an optimizer step sees that step
