"""One process of the two-process sharding tests (`tests/test_sharding.py`), started by torchrun on gloo.

``python -m torch.distributed.run --nproc_per_node 2 tests/sharded_worker.py OUT``

1. the parity run (tiny-cpu, 4 steps of 2 accumulated micro-batches, checkpoints at 2 and 4) unsharded (DDP);
2. the same run under ``train.sharding=fsdp``;
3. a fresh FSDP trainer resumes step 2 of run 2 and trains to step 4, and another resumes step 2 of run 1;
4. every model family trains 2 steps with FSDP, bf16 and gradient checkpointing and saves.

The main process writes ``OUT/result.json`` (losses, checkpoint paths); the test compares the runs' files.
Accelerate's state is reset between runs (the process group stays), as a new process would start it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from text2video.config import load_config
from text2video.runs.checkpoint import list_checkpoints
from text2video.train.trainer import Trainer

SMALL = [
    "train.log_every=1",
    "train.warmup_steps=1",
    "data.options.n=16",
    "data.num_frames=4",
    "sample.steps=2",
    "sample.prompts=[a red circle moving left]",
]
PARITY = [
    *SMALL,
    "data.size=16",
    "model.dim=8",
    "model.dim_mults=[1, 2]",
    "model.attn_heads=1",
    "model.attn_dim_head=8",
    "train.batch_size=4",
    "train.grad_accum=2",
    "train.steps=4",
    "train.save_every=2",
    "train.keep_checkpoints=3",
    "train.ema_decay=0.9",
    "data.val_split=0.2",  # 3 validation clips: 2 batches on one process, 1 on the other
]
FAMILIES = {
    "unet3d": ("tiny-cpu", ["data.size=16", "model.dim=8", "model.dim_mults=[1, 2]", "model.attn_heads=1", "model.attn_dim_head=8"]),
    "stdit": ("tiny-stdit", ["model.input_size=[4,16,16]", "data.size=16"]),
    "unet_stic": ("tiny-unet-stic", ["model.num_frames=4", "data.size=16"]),
    "segdit": ("tiny-segdit", ["data.size=16"]),
    "unet3d_condition": ("tiny-latent", ["latent.fit_steps=0", "latent.cache=false", "data.size=16"]),
}
FAMILY_TRAIN = [
    "train.steps=2",
    "train.save_every=0",
    "train.batch_size=2",
    "train.mixed_precision=bf16",
    "train.gradient_checkpointing=true",
    "train.sharding=fsdp",
]


def fresh_trainer(config, run_dir: Path) -> Trainer:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    return Trainer(config, run_dir, progress=False)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    result: dict = {}
    for mode in ("ddp", "fsdp"):
        config = load_config("tiny-cpu", [*PARITY, f"train.sharding={'fsdp' if mode == 'fsdp' else 'none'}"])
        trainer = fresh_trainer(config, out / mode)
        result[mode] = {"losses": trainer.train().losses, "sharded": trainer.sharded}
        video = trainer.generate(["a red circle moving left"], seed=0)  # the (sharded) EMA samples on every process
        result[mode]["sample"] = video.tolist()
    half = list_checkpoints(out / "fsdp")[0]
    result["resumed"] = {"losses": fresh_trainer(config, out / "resumed").train(resume=half).losses}
    unsharded_half = list_checkpoints(out / "ddp")[0]  # the checkpoint format is one: DDP's resumes sharded
    result["crossed"] = {"losses": fresh_trainer(config, out / "crossed").train(resume=unsharded_half).losses}
    result["families"] = {}
    for family, (preset, overrides) in FAMILIES.items():
        cfg = load_config(preset, [*SMALL, *FAMILY_TRAIN, *overrides])
        trainer = fresh_trainer(cfg, out / f"family-{family}")
        res = trainer.train()
        result["families"][family] = {"losses": res.losses, "sharded": trainer.sharded, "checkpoint": str(res.checkpoint)}
    if trainer.accelerator.is_main_process:
        (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
