"""`Trainer`: one training loop for every denoiser, on Hugging Face Accelerate.

The loop per optimizer step: ``grad_accum`` micro-batches (each process reads its shard of the global
batch), text embeddings from a cache, the condition dropped for ``train.cond_drop`` of the samples
(classifier-free guidance), an optional single-frame (image) step, the objective's loss, backward,
clipping, AdamW, the LR schedule and the EMA. All randomness of a step comes from generators seeded by
``(seed, step, rank, micro)``, and the data order from ``(seed, epoch)``, so a resumed run repeats the
uninterrupted one exactly. The trainer knows no particular model: it calls ``forward_cond`` through
`ConditionedDenoiser`.

With ``latent.vae`` set the run works in a VAE's latent space: the frozen VAE (`text2video.runs.vae`)
encodes each batch, or the whole dataset once into a `LatentDataset` cache (``latent.cache``); the model's
channels and sizes are filled from the VAE; samples are drawn at the latent shape without x0 clipping and
decoded. Without a VAE nothing of this runs.

``train.epochs`` sets the steps from the dataset (passes over the training items); ``data.val_split`` holds
items out for a validation loss (fixed noise and timesteps, so values compare across the run), logged as
``val_loss`` every ``train.val_every`` steps, the checkpoint with the lowest one kept as ``checkpoints/best``.
``data.buckets`` draws every batch from one bucket of a mixed-shape dataset. With ``text.encoder: none`` the
run is unconditional: no text encoder is loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..backends import cpu as cpu_backend
from ..config import Config, objective_config
from ..diffusion.conditioning import Conditioning
from ..errors import CheckpointError, ConfigError, NonFiniteError, RunFolderError, Text2VideoError
from ..models.adapter import ConditionedDenoiser
from ..pipelines import TextToVideoPipeline
from ..pipelines.base import device_memory
from ..pipelines.from_run import pipeline_defaults
from ..runs.build import build_configured_model
from ..runs.checkpoint import (
    BEST,
    clean_leftovers,
    load_checkpoint,
    open_checkpoint,
    read_optimizer_state,
    read_weights,
    save_checkpoint,
    start_run_record,
)
from ..runs.folder import RUN_CONFIG, clear_run, refuse_existing_run
from ..runs.lock import RunLock
from ..text.cache import EmbeddingCache
from . import sharding
from .data import BucketBatches, ShardedBatches, bucket_keys, collate, seeded_generator
from .ema import EMA
from .metrics import MetricsLog, memory_mb, plot_run_losses

logger = logging.getLogger(__name__)


class NonFiniteLossError(NonFiniteError):
    """Too many optimizer steps in a row had a NaN or infinite loss or gradient norm."""


@dataclass
class TrainResult:
    """What `Trainer.train` did: the step reached, the per-step losses of this call, why it stopped."""

    step: int
    losses: list[float] = field(default_factory=list)
    stopped: str = "done"  # done | interrupted | time_limit
    checkpoint: Optional[Path] = None


def make_adamw(params: list[nn.Parameter], **kwargs: Any) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel where every parameter allows it (float tensors on CPU or CUDA),
    else PyTorch's default (whose per-parameter loop is much slower on CPU, see docs/training.md); the update
    is the same up to float rounding."""
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)


def text_condition(prompts: Any, texts: list[str], device: torch.device | str = "cpu") -> Conditioning:
    """The text `Conditioning` of ``texts`` from a prompt cache (`text2video.text.cache.EmbeddingCache`); empty
    captions are marked dropped, unless the encoder has a null prompt of its own (max-length encoders: the empty
    prompt is encoded like any other, as the pipelines it came from do). Without a cache (an unconditional run):
    an empty condition."""
    if prompts is None:
        return Conditioning()
    emb = prompts.encode(texts)
    own_null = hasattr(getattr(prompts, "encoder", prompts), "null_prompt")
    empty = torch.tensor([not t and not own_null for t in texts], dtype=torch.bool)
    return Conditioning(text_tokens=emb.tokens.float(), text_mask=emb.mask.bool(), text_pooled=emb.pooled.float(), null_text=empty).to(
        device
    )


def lr_lambda(config: Config) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_steps``, then constant or cosine down to ``min_lr_ratio``."""
    t = config.train

    def factor(step: int) -> float:
        if t.warmup_steps and step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        if t.lr_schedule == "constant":
            return 1.0
        span = max(1, t.steps - t.warmup_steps)
        progress = min(1.0, (step - t.warmup_steps) / span)
        return t.min_lr_ratio + (1.0 - t.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class Trainer:
    """Train ``config`` into ``run_dir``. Pieces not given are built from the config.

    model:        a denoiser with ``forward_cond`` (default: ``build_model(config.model.name, ...)``).
    dataset:      items ``dict(video (C,T,H,W), text, fps, path)`` (default: ``make_dataset``).
    text_encoder: has ``dim`` and ``encode(list[str])`` (default: ``load_text_encoder(config.text.encoder)``).
    objective:    has ``loss(model, x0, cond, generator=) -> (loss, stats)``, optionally a ``step=`` keyword
                  (default: ``DiffusionObjective``).
    sample_fn:    ``f(model, shape, cond, generator) -> (B,C,T,H,W)``; default: the sampling module with
                  ``config.sample`` settings. In latent space ``shape`` is the latent shape and the
                  result is decoded.
    overwrite:    start afresh in a folder that holds an earlier run, removing its checkpoints, metrics and
                  samples (`text2video.runs.folder.clear_run`); without it `train` refuses such a folder
                  unless it resumes.

    The run folder is locked (`text2video.runs.lock`) from construction until `train` returns or `close`
    is called: a second process training into it is refused.
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        *,
        model: Optional[nn.Module] = None,
        dataset: Any = None,
        text_encoder: Any = None,
        objective: Any = None,
        sample_fn: Optional[Callable[..., torch.Tensor]] = None,
        progress: bool = True,
        overwrite: bool = False,
    ) -> None:
        from accelerate import Accelerator

        self.config = config
        self.run_dir = Path(run_dir)
        t = config.train
        # several processes without a GPU (torchrun / accelerate launch on a CPU machine): gloo on the CPU
        distributed_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        on_cpu = t.cpu or not torch.cuda.is_available()
        if t.sharding == "deepspeed" and on_cpu:
            raise ConfigError(
                "train.sharding = deepspeed needs CUDA GPUs (Accelerate runs DeepSpeed only there); on CPU use train.sharding=fsdp"
            )
        plugins = {} if on_cpu else sharding.accelerator_kwargs(t)
        self.accelerator = Accelerator(mixed_precision=t.mixed_precision, cpu=t.cpu or distributed_cpu, **plugins)
        self.device = self.accelerator.device
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        cpu_fsdp = sharding.requested_fsdp_plugin(t) if on_cpu and self.world > 1 else None
        if cpu_fsdp is not None:
            sharding.use_fsdp_on_cpu(self.accelerator, cpu_fsdp)
        self.sharded = sharding.is_fsdp(self.accelerator)
        if t.sharding != "none" and self.world == 1:
            logger.info("train.sharding = %s with one process: nothing to shard, training as usual", t.sharding)
        if t.batch_size % (t.grad_accum * self.world):
            raise ConfigError(
                f"train.batch_size = {t.batch_size} (the global batch) must be divisible by "
                f"train.grad_accum x processes = {t.grad_accum} x {self.world}"
            )
        self.micro_batch = t.batch_size // (t.grad_accum * self.world)
        self._check_batch_memory()
        self.progress = progress
        self.lock = RunLock(self.run_dir)
        self._lock_run_dir()
        if overwrite and self.accelerator.is_main_process:
            removed = clear_run(self.run_dir)
            if removed:
                logger.info("--overwrite: removed %s from %s", ", ".join(removed), self.run_dir)
        self.accelerator.wait_for_everyone()

        self.text_encoder = text_encoder if text_encoder is not None else self._build_text_encoder()
        self.prompts = self._build_prompt_cache() if self.text_encoder is not None else None
        self.objective = objective if objective is not None else self._build_objective()
        loss_params = inspect.signature(self.objective.loss).parameters
        self._loss_takes_step = "step" in loss_params
        self._loss_takes_t = "t" in loss_params
        self.dataset = dataset if dataset is not None else self._build_dataset()
        self.val_dataset = None
        if config.data.val_split > 0:
            from ..data.split import split_validation

            self.dataset, self.val_dataset = split_validation(self.dataset, config.data.val_split, t.seed)
            logger.info("validation split: %d items held out, %d to train on", len(self.val_dataset), len(self.dataset))
        if t.epochs is not None:
            steps = math.ceil(self._batches(0).per_epoch * t.epochs / t.grad_accum)
            logger.info(
                "train.epochs = %d: %d steps of %d items (%d batches per epoch)", t.epochs, steps, t.batch_size, self._batches(0).per_epoch
            )
            self.config = config = dataclasses.replace(config, train=dataclasses.replace(t, steps=steps))
            t = config.train
        self.best_val: Optional[float] = None
        self.vae = self._build_vae()
        self.latent_cached = False
        if self.vae is not None and config.latent.cache:
            self.dataset = self._cache_latents(self.dataset)
        torch.manual_seed(t.seed)
        self.model = model if model is not None else self._build_model()
        if t.init_from:
            self._load_initial_weights(self.model, t.init_from)
        self.lora = self._add_lora(self.model)
        self._apply_training_options(self.model)
        if self.device.type == "cpu":
            cpu_backend.install(self.model)  # the EMA copy below inherits the fast layers
        self.ema = EMA(self.model, decay=t.ema_decay, warmup=t.ema_warmup, start=t.ema_start, every=t.ema_every)
        self.ema.shadow.to(self.device)
        self.optimizer = make_adamw(
            [p for p in self.model.parameters() if p.requires_grad], lr=t.lr, betas=(t.betas[0], t.betas[1]), weight_decay=t.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        if self.sharded:
            blocks = sharding.wrap_blocks(self.accelerator, self.model)
            logger.info("FSDP over %d processes, sharding blocks %s", self.world, blocks)
        self.wrapped, self.optimizer = self.accelerator.prepare(ConditionedDenoiser(self.model), self.optimizer)
        if self.sharded:  # the EMA is sharded like the model: each process averages its own shard
            self.ema.shadow = sharding.shard_like(self.accelerator, self.ema.shadow)
            sharding.route_through(self.wrapped)  # sampling with the live weights
        self.sample_fn = sample_fn
        self.step = 0
        self.consumed = 0
        self.nonfinite_total = 0
        self.nonfinite_run = 0
        self._stop_signal: Optional[int] = None

    # ----------------------------------------------------------------- the run folder
    def _lock_run_dir(self) -> None:
        """The main process takes the run folder's lock; every process fails alike when it cannot."""
        error: Optional[Exception] = None
        if self.accelerator.is_main_process:
            try:
                self.lock.acquire()
            except RunFolderError as exc:
                error = exc
        if self.world > 1:
            failed = self.accelerator.reduce(torch.tensor([float(error is not None)], device=self.device), "sum")
            if error is None and float(failed.item()) > 0:
                error = RunFolderError(f"the main process could not lock the run folder {self.run_dir}")
        if error is not None:
            raise error

    def _check_batch_memory(self) -> None:
        """Refuse clip sizes whose micro-batch alone (float32) times a coarse factor for the
        activations exceeds the device's memory: a typo such as ``data.size=100000`` fails here, not in the allocator."""
        d = self.config.data
        height, width = d.hw
        need = 16 * 4 * self.micro_batch * d.channels * d.num_frames * height * width
        total = device_memory(self.device)
        if total is not None and need > total:
            raise ConfigError(
                f"a micro-batch of {self.micro_batch} clips of {d.num_frames} frames at {height}x{width} needs at least "
                f"{need / 2**30:.1f} GB to train, more than the {total / 2**30:.1f} GB of {self.device}; lower data.size, "
                "data.num_frames or train.batch_size"
            )

    def close(self) -> None:
        """Let go of the run folder (`train` does it when it returns)."""
        self.lock.release()

    # ----------------------------------------------------------------- building from the config
    def _build_text_encoder(self) -> Any:
        """The config's text encoder; None for an unconditional run (``text.encoder: none``)."""
        from ..text import load_text_encoder

        if self.config.text.unconditional:
            logger.info("text.encoder = none: an unconditional model, no text encoder loaded")
            return None
        kwargs = {} if self.config.text.max_length is None else {"max_length": self.config.text.max_length}
        if self.config.text.padding != "longest":
            kwargs["padding"] = self.config.text.padding
        return load_text_encoder(self.config.text.encoder, **kwargs)

    def _build_prompt_cache(self) -> EmbeddingCache:
        """Each distinct caption is encoded once: in memory, and on disk with ``text.cache``."""
        root = None
        if self.config.text.cache:
            root = Path(self.config.text.cache_dir) if self.config.text.cache_dir else self.run_dir / "text_cache"
        return EmbeddingCache(root, self.text_encoder)

    def _build_objective(self) -> Any:
        from ..diffusion.objectives import make_objective

        return make_objective(objective_config(self.config))

    def _build_dataset(self) -> Any:
        from ..data import make_dataset

        d = self.config.data
        options = {"num_frames": d.num_frames, "size": d.size, "channels": d.channels, **d.options}
        if d.buckets is not None:
            from ..data.buckets import Buckets

            options["buckets"] = Buckets.from_config(d.buckets, d.hw, d.num_frames)
        return make_dataset(d.kind, **options)

    def _build_model(self) -> nn.Module:
        return build_configured_model(self.config, getattr(self.text_encoder, "dim", None), vae=self.vae, text_encoder=self.text_encoder)

    def _build_vae(self) -> Any:
        """The frozen VAE of ``latent.vae`` on the accelerator device (fitted and saved first if asked), or None."""
        from ..runs.vae import prepare_run_vae

        vae = prepare_run_vae(
            self.config, self.run_dir, self.dataset, device=self.device, is_main=self.accelerator.is_main_process,
            wait=self.accelerator.wait_for_everyone, progress=self.progress,
        )  # fmt: skip
        if vae is not None:
            logger.info("latent space: VAE %s", vae.extra_repr())
        return vae

    def _cache_latents(self, dataset: Any) -> Any:
        """``dataset`` as a `LatentDataset`, every item encoded by the main process before training."""
        from ..latent import LatentDataset

        lat = self.config.latent
        root = Path(lat.cache_dir) if lat.cache_dir else self.run_dir / "latent_cache"
        cached = LatentDataset(dataset, self.vae, root, posterior=lat.posterior, augmentations=lat.augmentations)
        if self.accelerator.is_main_process:
            cached.precompute(progress=self.progress)
        self.accelerator.wait_for_everyone()
        self.latent_cached = True
        return cached

    def _load_initial_weights(self, model: nn.Module, source: str) -> None:
        """``train.init_from``: the weights of any model `load_pipeline` reads (run, checkpoint and pipeline
        folders, diffusers folders, Hub ids), a video-diffusion-pytorch ``.pt``, a ``save_pretrained`` folder or a
        ``.safetensors`` file, loaded strictly before the first step. The saved config names it by its absolute
        path (a LoRA run needs it again to sample). Where the run trains otherwise than the base was trained
        (objective, schedule, prompt padding), each difference is logged as a warning."""
        from ..pipelines.initial import base_differences, load_initial_weights

        found = load_initial_weights(model, source, self.text_encoder)
        self.config.train.init_from = found.source
        ours = getattr(self.objective, "config", None)
        if ours is not None:
            for line in base_differences(found, ours, self.config.text.padding):
                logger.warning("train.init_from %s: %s", found.source, line)

    def _add_lora(self, model: nn.Module) -> Optional[dict[str, Any]]:
        """``train.lora``: freeze the model and add the adapter that trains instead; its size, or None."""
        if self.config.train.lora is None:
            return None
        from ..models.lora import LoraSettings, add_lora, describe

        add_lora(model, LoraSettings.from_dict(self.config.train.lora))
        info = describe(model)
        logger.info("LoRA: %d trainable parameters (%.2f MB in float32)", info["parameters"], info["bytes"] / 2**20)
        return info

    def _apply_training_options(self, model: nn.Module) -> None:
        """``train.trainable`` (AnimateDiff's motion-module-only training) and ``train.gradient_checkpointing``."""
        t = self.config.train
        if t.trainable == "motion_modules":
            freeze = getattr(model, "freeze_except_motion_modules", None)
            if freeze is None:
                raise ConfigError(
                    f"train.trainable = motion_modules: {type(model).__name__} has no motion modules; use train.trainable=all"
                )
            count = freeze()
            logger.info("training the motion modules only: %d parameters", count)
        if t.gradient_checkpointing:
            enable = getattr(model, "enable_gradient_checkpointing", None)
            if enable is None or not getattr(model, "_supports_gradient_checkpointing", True):
                raise ConfigError(f"train.gradient_checkpointing: {type(model).__name__} does not support it; set it to false")
            enable()

    # ----------------------------------------------------------------- state
    @property
    def unwrapped(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.wrapped).model

    def _state(self) -> dict[str, Any]:
        batches = self._batches(0)
        epoch, index = batches.position(self.consumed)
        return {
            "consumed_batches": self.consumed,
            "epoch": epoch,
            "index_in_epoch": index,
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_run": self.nonfinite_run,
            "ema": self.ema.state_dict(),
            "world_size": self.world,
            "best_val_loss": self.best_val,
        }

    def _batches(self, consumed: int) -> ShardedBatches:
        """The run's resumable batch order: one bucket per batch for a bucketed dataset."""
        keys = bucket_keys(self.dataset)
        if keys is not None:
            return BucketBatches(keys, self.micro_batch * self.world, self.rank, self.world, self.config.train.seed, consumed)
        return ShardedBatches(len(self.dataset), self.micro_batch * self.world, self.rank, self.world, self.config.train.seed, consumed)

    def save(self, name: Optional[str] = None, **extra: Any) -> Optional[Path]:
        """Write a checkpoint of the current step (main process only); every process waits for it. ``name``
        (`BEST`) writes that named folder; ``extra`` goes into its ``state.json``."""
        path = None
        error: Optional[Exception] = None
        self.accelerator.wait_for_everyone()
        gathered = None
        if self.sharded:  # every process takes part in gathering the full state
            gathered = sharding.gather_for_checkpoint(self.unwrapped, self.ema.shadow, self.optimizer.optimizer)
        if self.accelerator.is_main_process:
            try:
                path = self._save_checkpoint(name, extra, gathered)
            except Text2VideoError as exc:  # non-finite weights, disk full: every process stops alike
                error = exc
        if self.world > 1:
            failed = self.accelerator.reduce(torch.tensor([float(error is not None)], device=self.device), "sum")
            if error is None and float(failed.item()) > 0:
                error = CheckpointError(f"the main process could not save step {self.step} (see its error)")
        else:
            self.accelerator.wait_for_everyone()
        if error is not None:
            raise error
        return path

    def _save_checkpoint(
        self, name: Optional[str] = None, extra: Optional[dict[str, Any]] = None, gathered: Optional[tuple[dict, dict, dict]] = None
    ) -> Path:
        model, ema, optimizer = gathered if gathered is not None else (self.unwrapped, self.ema.shadow, self.optimizer)
        path = save_checkpoint(
            self.run_dir,
            self.step,
            model=model,
            ema_model=ema,
            optimizer=optimizer,
            scheduler=self.scheduler,
            scaler=self.accelerator.scaler,
            state={**self._state(), **(extra or {})},
            keep=self.config.train.keep_checkpoints,
            name=name,
            lora=self.lora is not None,
        )
        plot_run_losses(self.run_dir)
        return path

    def resume(self, target: str | Path = "latest") -> Path:
        """Restore a checkpoint (``latest`` of this run, a run folder or a checkpoint folder)."""
        if sharding.is_deepspeed(self.accelerator):
            raise CheckpointError(
                "resuming under DeepSpeed is not supported (its partitioned optimizer state is not in the checkpoint); "
                "resume with train.sharding=fsdp or none"
            )
        with open_checkpoint(target, self.run_dir) as path:
            state = load_checkpoint(
                path,
                model=None if self.sharded else self.unwrapped,
                ema_model=None if self.sharded else self.ema.shadow,
                optimizer=None if self.sharded else self.optimizer,
                scheduler=self.scheduler,
                scaler=self.accelerator.scaler,
            )
            if self.sharded:  # every process reads the full files and keeps its shard
                ema_file = path / "ema.safetensors"
                sharding.load_sharded(
                    self.unwrapped,
                    self.ema.shadow,
                    self.optimizer.optimizer,
                    read_weights(path / "model.safetensors"),
                    read_weights(ema_file if ema_file.is_file() else path / "model.safetensors"),
                    read_optimizer_state(path),
                )
        if state.get("world_size", self.world) != self.world:
            logger.warning("resuming a %s-process run on %s processes: the data order changes", state["world_size"], self.world)
        self.step = int(state["step"])
        self.consumed = int(state["consumed_batches"])
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.nonfinite_run = int(state.get("nonfinite_run", 0))
        self.best_val = state.get("best_val_loss")
        self.ema.load_state_dict(state["ema"])
        logger.info("resumed from %s at step %d (epoch %d, item %d)", path, self.step, state["epoch"], state["index_in_epoch"])
        return path

    # ----------------------------------------------------------------- one step
    def _micro_step(self, batch: dict[str, Any], micro: int, image_step: bool) -> torch.Tensor:
        t = self.config.train
        gen = seeded_generator(t.seed, self.step, self.rank, micro, device=self.device)
        x0 = batch["video"].to(self.device, non_blocking=True)
        b = x0.shape[0]
        texts = list(batch["text"])
        drop = torch.rand(b, generator=gen, device=self.device) < t.cond_drop
        null_prompt = getattr(self.text_encoder, "null_prompt", None)
        if null_prompt is not None:  # max-length encoders: a dropped caption is the empty prompt (the pipelines' recipe)
            texts = [null_prompt if dropped else text for text, dropped in zip(texts, drop.tolist())]
        cond = text_condition(self.prompts, texts, self.device)
        if null_prompt is None:
            cond = cond.text_dropped(drop)
        cond.fps = batch["fps"].to(self.device)
        if image_step and t.image_mode == "frames" and x0.shape[2] > 1:
            frame = torch.randint(0, x0.shape[2], (b,), generator=gen, device=self.device)
            x0 = x0[torch.arange(b, device=self.device), :, frame].unsqueeze(2)
        if self.vae is not None and not self.latent_cached:  # frames are encoded one by one: pick first, then encode
            x0 = self.vae.encode(x0, posterior=self.config.latent.posterior, generator=gen)
        if t.image_mode == "focus_present" and t.image_share > 0:
            cond.focus_present = torch.rand(b, generator=gen, device=self.device) < t.image_share
        with self.accelerator.autocast():
            step = {"step": self.step} if self._loss_takes_step else {}  # ends a timestep bias limited in steps
            loss, _ = self.objective.loss(self.wrapped, x0, cond, generator=gen, **step)
        return loss

    def _optimizer_step(self, data_iter: Any) -> tuple[float, float]:
        t = self.config.train
        step_gen = seeded_generator(t.seed, self.step, 0x1A6E)
        image_step = t.image_mode == "frames" and float(torch.rand(1, generator=step_gen)) < t.image_share
        self.wrapped.train()
        losses = []
        for micro in range(t.grad_accum):
            batch = next(data_iter)
            self.consumed += 1
            sync = micro == t.grad_accum - 1
            ctx = contextlib.nullcontext() if sync else self.accelerator.no_sync(self.wrapped)
            with ctx:
                loss = self._micro_step(batch, micro, image_step)
                # every process runs backward, finite or not, so gradient all-reduces stay matched;
                # a non-finite step is dropped below on every process alike
                self.accelerator.backward(loss / t.grad_accum)
            losses.append(loss.detach().float())
        local = torch.stack(losses).mean()
        finite = torch.isfinite(local).float().reshape(1)
        loss_mean = self.accelerator.reduce(torch.nan_to_num(local, nan=0.0, posinf=0.0, neginf=0.0).reshape(1), "mean")
        all_finite = bool(self.accelerator.reduce(finite, "sum").item() == self.world)
        grad_norm = float("nan")
        applied = False
        if all_finite:
            # the norm of the all-reduced gradients (the same on every process); with no limit set it only
            # measures (scaling by 1 leaves the gradients as they are)
            max_norm = t.max_grad_norm if t.max_grad_norm is not None else math.inf
            grad_norm = float(self.accelerator.clip_grad_norm_(self.wrapped.parameters(), max_norm))
            applied = math.isfinite(grad_norm)
            if applied or self.accelerator.scaler is not None:
                self.optimizer.step()  # fp16: the grad scaler skips a non-finite step itself and lowers its scale
        what = "gradient norm" if all_finite else "loss"
        if applied:
            self.nonfinite_run = 0
        else:
            self.nonfinite_total += 1
            self.nonfinite_run += 1
            logger.warning("step %d: non-finite %s, update skipped (%d in a row)", self.step, what, self.nonfinite_run)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        if applied:
            self.ema.step(self.unwrapped, self.step)
        if self.nonfinite_run >= t.max_nonfinite:
            raise NonFiniteLossError(
                f"{self.nonfinite_run} steps in a row had a non-finite {what} (last at step {self.step}); nothing of them was "
                "applied or saved. Lower train.lr, set train.max_grad_norm, or use train.mixed_precision=bf16 instead of fp16, "
                "then --resume latest"
            )
        return float(loss_mean.item()) if applied else float("nan"), grad_norm

    # ----------------------------------------------------------------- validation
    def _val_batches(self) -> list[list[int]]:
        """The validation items in batches of ``micro_batch`` (one bucket per batch), this process's share."""
        keys = bucket_keys(self.val_dataset)
        groups: dict[Any, list[int]] = {}
        for index, key in enumerate(keys if keys is not None else [None] * len(self.val_dataset)):
            groups.setdefault(key, []).append(index)
        batches = [items[i : i + self.micro_batch] for items in groups.values() for i in range(0, len(items), self.micro_batch)]
        mine = batches[self.rank :: self.world]
        if self.sharded and batches:  # a sharded model's forward is collective: every process runs as many
            rounds = -(-len(batches) // self.world)
            mine += [[]] * (rounds - len(mine))  # empty: a forward of the first batch, not counted
        return mine

    @torch.no_grad()
    def validate(self) -> float:
        """Mean loss of the EMA weights on the validation split. Every batch has its own fixed generator (noise,
        frame masks and, for a diffusion objective, uniform timesteps), so values compare across the run."""
        model = self.ema.shadow
        was_training = model.training
        model.eval()
        wrapped = model if self.sharded else ConditionedDenoiser(model)  # sharded: forward_cond goes through its FSDP root
        total = torch.zeros(2, device=self.device)
        timesteps = getattr(self.objective, "num_train_timesteps", None)
        try:
            for number, indices in enumerate(self._val_batches()):
                counted = bool(indices)
                batch = collate([self.val_dataset[i] for i in (indices or [0])])
                gen = seeded_generator(self.config.train.seed, 0x7A11, number, self.rank, device=self.device)
                x0 = batch["video"].to(self.device)
                if self.vae is not None:
                    x0 = self.vae.encode(x0, posterior="mode")
                cond = text_condition(self.prompts, list(batch["text"]), self.device)
                cond.fps = batch["fps"].to(self.device)
                kwargs: dict[str, Any] = {}
                if self._loss_takes_t and timesteps:
                    kwargs["t"] = torch.randint(0, int(timesteps), (x0.shape[0],), generator=gen, device=self.device)
                with self.accelerator.autocast():
                    loss, _ = self.objective.loss(wrapped, x0, cond, generator=gen, **kwargs)
                if counted:
                    total += torch.stack([loss.detach().float() * x0.shape[0], torch.tensor(float(x0.shape[0]), device=self.device)])
        finally:
            model.train(was_training)
        if self.world > 1:
            total = self.accelerator.reduce(total, "sum")
        return float(total[0] / total[1].clamp(min=1.0))

    def _validation_due(self) -> bool:
        t = self.config.train
        if self.val_dataset is None:
            return False
        every = t.val_every or t.save_every or t.steps
        return self.step % every == 0 or self.step == t.steps

    def _validate_and_keep_best(self) -> float:
        """The validation loss now; a new lowest one writes ``checkpoints/best`` (every process takes part)."""
        value = self.validate()
        if math.isfinite(value) and (self.best_val is None or value < self.best_val):
            self.best_val = value
            self.save(name=BEST, val_loss=value)
            logger.info("step %d: validation loss %.5f, the best so far: checkpoints/%s", self.step, value, BEST)
        else:
            logger.info("step %d: validation loss %.5f (best %.5f)", self.step, value, self.best_val)
        return value

    # ----------------------------------------------------------------- the loop
    def train(self, resume: Optional[str | Path] = None) -> TrainResult:
        """Run until ``train.steps`` (or a signal / ``train.max_minutes``); checkpoints on the way and at the end."""
        try:
            return self._train(resume)
        finally:
            self.close()

    def _train(self, resume: Optional[str | Path]) -> TrainResult:
        t = self.config.train
        main = self.accelerator.is_main_process
        if main:
            self.lock.acquire()  # again, when an earlier train() call let it go
        if main:
            clean_leftovers(self.run_dir)
        if resume is not None:
            self.resume(resume)
        elif self.step == 0:
            refuse_existing_run(self.run_dir)  # every process reads the folder, so all refuse alike
        self.accelerator.wait_for_everyone()
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            start_run_record(self.run_dir)
            self.config.save(self.run_dir / RUN_CONFIG)
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=self._batches(self.consumed),
            collate_fn=collate,
            num_workers=self.config.data.num_workers,
            persistent_workers=False,
            # its own generator: creating the iterator must not draw from the global RNG (exact resume)
            generator=seeded_generator(self.config.train.seed, self.consumed, 0xDA7A),
        )
        data_iter = iter(loader)
        log = MetricsLog(self.run_dir, self.step, t.log_every) if main else None
        result = TrainResult(step=self.step)
        previous = self._install_signals()
        start = last_log = time.perf_counter()
        last_log_step = self.step
        bar = None
        if main and self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=t.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        try:
            while self.step < t.steps:
                loss, grad_norm = self._optimizer_step(data_iter)
                result.losses.append(loss)
                lr = self.scheduler.get_last_lr()[0]
                row: dict[str, Any] = {"step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "nonfinite": self.nonfinite_total}
                if self.step % t.log_every == 0 or self.step == t.steps:
                    now = time.perf_counter()
                    rate = (self.step - last_log_step) / max(now - last_log, 1e-9)
                    last_log, last_log_step = now, self.step
                    row.update(steps_per_s=rate, samples_per_s=rate * t.batch_size, memory_mb=memory_mb(self.device))
                if self._validation_due():
                    row["val_loss"] = self._validate_and_keep_best()
                if log is not None:
                    log.write(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                stop = self._should_stop(start)
                if t.sample_every and self.step % t.sample_every == 0:
                    self.sample_grid()
                if stop or (t.save_every and self.step % t.save_every == 0) or self.step == t.steps:
                    result.checkpoint = self.save()
                if stop:
                    result.stopped = stop
                    break
        finally:
            self._restore_signals(previous)
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
        if main:
            plot_run_losses(self.run_dir)
        result.step = self.step
        return result

    def _should_stop(self, start: float) -> Optional[str]:
        t = self.config.train
        flags = torch.zeros(2, device=self.device)
        if self._stop_signal is not None:
            flags[0] = 1
        if t.max_minutes is not None and time.perf_counter() - start > 60 * t.max_minutes:
            flags[1] = 1
        if self.world > 1:
            flags = self.accelerator.reduce(flags, "sum")
        if flags[0] > 0:
            logger.info("signal received: saving a checkpoint at step %d and stopping", self.step)
            return "interrupted"
        if flags[1] > 0:
            logger.info("time limit of %s minutes reached at step %d", t.max_minutes, self.step)
            return "time_limit"
        return None

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:  # second signal: give up at once
                raise KeyboardInterrupt
            self._stop_signal = signum

        # SIGHUP: the terminal went away (a closed SSH session); the run saves and stops as on Ctrl-C
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is None:
                continue
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, prompts: list[str], *, seed: Optional[int] = None, use_ema: bool = True) -> torch.Tensor:
        """Videos ``(B, C, T, H, W)`` in [-1, 1] for ``prompts`` with the EMA (or live) weights, through the
        run's `TextToVideoPipeline` (its ``sample`` settings; the same rules as ``text2video generate``)."""
        s = self.config.sample
        model = self.ema.shadow if use_ema else self.unwrapped
        was_training = model.training
        model.eval()
        seed = s.seed if seed is None else seed
        try:
            if self.sample_fn is not None:
                video = self._sample_with_fn(model, prompts, seed)
            else:
                objective = getattr(self.objective, "config", None) or objective_config(self.config)
                pipe = TextToVideoPipeline(model, self.prompts, objective, self._pipeline_defaults(), vae=self.vae)
                gens = [seeded_generator(seed, i, device=self.device) for i in range(len(prompts))]
                video = pipe(list(prompts), generators=gens, progress=False).videos.to(self.device)
        finally:
            model.train(was_training)
        if not bool(torch.isfinite(video).all()):
            raise NonFiniteError(f"step {self.step}: the samples hold NaN or infinite values (the weights or the sampling settings)")
        return video.clamp(-1, 1)

    def _pipeline_defaults(self) -> dict[str, Any]:
        """The run's pipeline defaults; a pixel run's channels are its videos'."""
        channels = None if self.vae is not None or not len(self.dataset) else int(self.dataset[0]["video"].shape[0])
        return pipeline_defaults(self.config, self.vae, channels)

    def _sample_with_fn(self, model: nn.Module, prompts: list[str], seed: int) -> torch.Tensor:
        """``sample_fn(model, shape, cond, generators)`` (tests, custom samplers); latents are decoded."""
        s = self.config.sample
        frames = s.num_frames or self.config.data.num_frames
        height, width = s.hw(self.config.data)
        channels = self._pipeline_defaults()["channels"]
        shape = (len(prompts), channels, frames, height, width)
        if self.vae is not None:
            shape = self.vae.latent_shape(shape)
        cond = text_condition(self.prompts, list(prompts), self.device)
        gens = [seeded_generator(seed, i, device=self.device) for i in range(len(prompts))]
        video = self.sample_fn(model, shape, cond, gens)
        return self.vae.decode(video) if self.vae is not None else video

    def sample_grid(self) -> Optional[Path]:
        """Sample the config's fixed prompts (every process takes part) and save a captioned GIF grid. An
        unconditional run draws as many videos as there are prompts."""
        prompts = list(self.config.sample.prompts)
        if not prompts:
            return None
        if self.prompts is None:
            prompts = [f"sample {i}" for i in range(len(prompts))]
        try:
            video = self.generate(prompts)
        except NonFiniteError as exc:  # a bad sample must not end the run: nothing is written, training goes on
            logger.error("no sample grid at step %d: %s", self.step, exc)
            return None
        if not self.accelerator.is_main_process:
            return None
        from ..io.grid import video_grid
        from ..io.video import tensor_to_frames, write_video

        path = self.run_dir / "samples" / f"step-{self.step:08d}.gif"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(video_grid(list(tensor_to_frames(video.cpu())), prompts), path, fps=self.config.sample.fps)
        logger.info("samples at step %d: %s", self.step, path)
        return path


def train(config: Config, run_dir: str | Path, resume: Optional[str | Path] = None, **kwargs: Any) -> TrainResult:
    """Build a `Trainer` for ``config`` and run it."""
    return Trainer(config, run_dir, **kwargs).train(resume=resume)


__all__ = ["Trainer", "TrainResult", "NonFiniteLossError", "train"]
