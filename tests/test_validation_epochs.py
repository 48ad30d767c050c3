"""``train.epochs`` instead of steps, a held-out validation split with its loss logged, and ``checkpoints/best``
kept by it next to ``latest`` (DiffusionPlayground trains for epochs and keeps its best model)."""

from __future__ import annotations

import json
import math

import pytest
from trainer_toys import ToyDenoiser, ToyObjective, ToyTextEncoder, ToyVideos, toy_config, toy_sample

from text2video.config import config_from_dict
from text2video.errors import CheckpointError, ConfigError, DataError
from text2video.runs.checkpoint import BEST, list_checkpoints, read_state, resolve_checkpoint
from text2video.train.metrics import read_metrics


def _config(data: dict | None = None, **train):
    base = toy_config(**train).to_dict()
    base["data"].update(data or {})
    return config_from_dict(base)


def _trainer(tmp_path, config):
    import torch

    from text2video.train.trainer import Trainer

    torch.manual_seed(0)
    return Trainer(config, tmp_path, model=ToyDenoiser(), dataset=ToyVideos(), text_encoder=ToyTextEncoder(),
                   objective=ToyObjective(), sample_fn=toy_sample, progress=False)  # fmt: skip


def test_epochs_set_the_steps_from_the_dataset(tmp_path) -> None:
    trainer = _trainer(tmp_path, _config(steps=1000, epochs=2, batch_size=4, grad_accum=2))
    assert trainer.config.train.steps == 24 * 2 // 4  # 24 items twice, 4 items a step (2 micro-batches of 2)
    result = trainer.train()
    assert result.step == 12 and trainer.consumed == 24
    assert read_state(list_checkpoints(tmp_path)[-1])["epoch"] == 2  # exactly two passes
    with pytest.raises(ConfigError, match="train.epochs"):
        _config(epochs=0)


def test_the_validation_split_is_held_out_and_fixed(tmp_path) -> None:
    config = _config({"val_split": 0.25}, steps=2)
    first, again = _trainer(tmp_path / "a", config), _trainer(tmp_path / "b", config)
    assert len(first.val_dataset) == 6 and len(first.dataset) == 18
    assert set(first.val_dataset.indices).isdisjoint(first.dataset.indices)
    assert first.val_dataset.indices == again.val_dataset.indices
    assert first.validate() == again.validate() == first.validate()  # fixed noise, masks and timesteps
    assert len(_trainer(tmp_path / "c", _config({"val_split": 5}, steps=2)).val_dataset) == 5
    with pytest.raises(DataError, match="leaving none"):
        _trainer(tmp_path / "d", _config({"val_split": 24}, steps=2))


def test_the_best_checkpoint_has_the_lowest_validation_loss_and_is_never_pruned(tmp_path) -> None:
    trainer = _trainer(tmp_path, _config({"val_split": 0.25}, steps=6, val_every=1, save_every=2, keep_checkpoints=1))
    trainer.train()
    rows = [r for r in read_metrics(tmp_path / "metrics.csv") if math.isfinite(r["val_loss"])]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    best_row = min(rows, key=lambda r: r["val_loss"])
    best = resolve_checkpoint(BEST, tmp_path)
    state = read_state(best)
    assert state["step"] == int(best_row["step"]) and state["val_loss"] == pytest.approx(best_row["val_loss"])
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000006"]  # pruned to one; best stays
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-00000006"
    again = _trainer(tmp_path, _config({"val_split": 0.25}, steps=6, val_every=1))
    again.resume(BEST)
    assert again.step == state["step"] and again.best_val == pytest.approx(state["val_loss"])
    assert again.validate() == pytest.approx(state["val_loss"], rel=1e-6)  # the weights it was judged by


def test_validating_does_not_change_training(tmp_path) -> None:
    often = _trainer(tmp_path / "often", _config({"val_split": 0.25}, steps=4, val_every=1)).train().losses
    rarely = _trainer(tmp_path / "rarely", _config({"val_split": 0.25}, steps=4, val_every=100)).train().losses
    assert often == rarely


def test_no_best_checkpoint_without_a_validation_split(tmp_path) -> None:
    _trainer(tmp_path, _config(steps=2)).train()
    assert json.loads((tmp_path / "checkpoints" / "step-00000002" / "state.json").read_text())["best_val_loss"] is None
    with pytest.raises(CheckpointError, match="data.val_split"):
        resolve_checkpoint(BEST, tmp_path)
