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
"""

from __future__ import annotations

import contextlib
import csv
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
from ..errors import ConfigError, ModelError, Text2VideoError
from ..models.adapter import ConditionedDenoiser
from ..runs.checkpoint import list_checkpoints, load_checkpoint, resolve_checkpoint, save_checkpoint
from .data import ShardedBatches, collate, seeded_generator
from .ema import EMA

logger = logging.getLogger(__name__)

METRIC_FIELDS = ("step", "loss", "lr", "grad_norm", "steps_per_s", "samples_per_s", "memory_mb", "nonfinite")


class NonFiniteLossError(Text2VideoError):
    """Too many optimizer steps in a row had a NaN or infinite loss."""


@dataclass
class TrainResult:
    """What `Trainer.train` did: the step reached, the per-step losses of this call, why it stopped."""

    step: int
    losses: list[float] = field(default_factory=list)
    stopped: str = "done"  # done | interrupted | time_limit
    checkpoint: Optional[Path] = None


def make_adamw(params: list[nn.Parameter], **kwargs: Any) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel where every parameter allows it (float tensors on CPU or CUDA),
    else PyTorch's default. On CPU the fused step is about 4x faster than the default per-parameter loop
    (42M parameters, 1 thread: 0.06 s against 0.27 s); the update is the same up to float rounding."""
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)


class TextEmbedder:
    """Per-prompt embeddings kept in memory (and on disk through ``EmbeddingCache`` when given).

    The shapes data has ~100 distinct captions, so after the first few steps the encoder is never run.
    """

    def __init__(self, encoder: Any, disk_cache: Any = None) -> None:
        self.encoder = encoder
        self.disk_cache = disk_cache
        self._memory: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _encode(self, texts: list[str]) -> Any:
        source = self.disk_cache if self.disk_cache is not None else self.encoder
        with torch.no_grad():
            return source.encode(texts)

    def __call__(self, texts: list[str], device: torch.device | str = "cpu") -> Conditioning:
        missing = sorted({t for t in texts if t not in self._memory})
        if missing:
            emb = self._encode(missing)
            for i, text in enumerate(missing):
                mask = emb.mask[i].bool().cpu()
                length = max(1, int(mask.sum()))
                self._memory[text] = (emb.tokens[i, :length].float().cpu(), mask[:length], emb.pooled[i].float().cpu())
        rows = [self._memory[t] for t in texts]
        longest = max(r[0].shape[0] for r in rows)
        dim = rows[0][0].shape[1]
        tokens = torch.zeros(len(rows), longest, dim)
        mask = torch.zeros(len(rows), longest, dtype=torch.bool)
        for i, (tok, m, _) in enumerate(rows):
            tokens[i, : tok.shape[0]] = tok
            mask[i, : m.shape[0]] = m
        pooled = torch.stack([r[2] for r in rows])
        empty = torch.tensor([not t for t in texts], dtype=torch.bool)
        return Conditioning(text_tokens=tokens, text_mask=mask, text_pooled=pooled, null_text=empty).to(device)


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


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except ImportError:  # pragma: no cover - Windows
        return float("nan")


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
    ) -> None:
        from accelerate import Accelerator

        self.config = config
        self.run_dir = Path(run_dir)
        t = config.train
        # several processes without a GPU (torchrun / accelerate launch on a CPU machine): gloo on the CPU
        distributed_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = Accelerator(mixed_precision=t.mixed_precision, cpu=t.cpu or distributed_cpu)
        self.device = self.accelerator.device
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        if t.batch_size % (t.grad_accum * self.world):
            raise ConfigError(
                f"train.batch_size = {t.batch_size} (the global batch) must be divisible by "
                f"train.grad_accum x processes = {t.grad_accum} x {self.world}"
            )
        self.micro_batch = t.batch_size // (t.grad_accum * self.world)
        self.progress = progress

        self.text_encoder = text_encoder if text_encoder is not None else self._build_text_encoder()
        self.embed = TextEmbedder(self.text_encoder, self._build_disk_cache())
        self.objective = objective if objective is not None else self._build_objective()
        self._loss_takes_step = "step" in inspect.signature(self.objective.loss).parameters
        self.dataset = dataset if dataset is not None else self._build_dataset()
        self.vae = self._build_vae()
        self.latent_cached = False
        if self.vae is not None and config.latent.cache:
            self.dataset = self._cache_latents(self.dataset)
        torch.manual_seed(t.seed)
        self.model = model if model is not None else self._build_model()
        if t.init_from:
            self._load_initial_weights(self.model, t.init_from)
        self._apply_training_options(self.model)
        if self.device.type == "cpu":
            cpu_backend.install(self.model)  # the EMA copy below inherits the fast layers
        self.ema = EMA(self.model, decay=t.ema_decay, warmup=t.ema_warmup, start=t.ema_start, every=t.ema_every)
        self.ema.shadow.to(self.device)
        self.optimizer = make_adamw(
            [p for p in self.model.parameters() if p.requires_grad], lr=t.lr, betas=(t.betas[0], t.betas[1]), weight_decay=t.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        self.wrapped, self.optimizer = self.accelerator.prepare(ConditionedDenoiser(self.model), self.optimizer)
        self.sample_fn = sample_fn
        self.step = 0
        self.consumed = 0
        self.nonfinite_total = 0
        self.nonfinite_run = 0
        self._stop_signal: Optional[int] = None

    # ----------------------------------------------------------------- building from the config
    def _build_text_encoder(self) -> Any:
        from ..text import load_text_encoder

        kwargs = {} if self.config.text.max_length is None else {"max_length": self.config.text.max_length}
        return load_text_encoder(self.config.text.encoder, **kwargs)

    def _build_disk_cache(self) -> Any:
        if not self.config.text.cache:
            return None
        try:
            from ..text.cache import EmbeddingCache
        except ImportError:
            return None
        root = Path(self.config.text.cache_dir) if self.config.text.cache_dir else self.run_dir / "text_cache"
        return EmbeddingCache(root, self.text_encoder)

    def _build_objective(self) -> Any:
        from ..diffusion.objective import DiffusionObjective

        return DiffusionObjective(objective_config(self.config))

    def _build_dataset(self) -> Any:
        from ..data import make_dataset

        d = self.config.data
        return make_dataset(d.kind, num_frames=d.num_frames, size=d.size, **d.options)

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

    @staticmethod
    def _load_initial_weights(model: nn.Module, source: str) -> None:
        """``train.init_from``: the weights of a ``save_pretrained`` folder (e.g. ``text2video convert``'s
        output) or a ``.safetensors`` file, loaded strictly before the first step."""
        from ..runs.checkpoint import load_weights

        path = Path(source).expanduser()
        if path.is_dir():
            path = path / "diffusion_pytorch_model.safetensors"
        if not path.is_file():
            raise ConfigError(
                f"train.init_from = {source!r}: no such weights file ({path}); give a folder written by "
                "save_pretrained / text2video convert, or a .safetensors file"
            )
        load_weights(model, path)
        logger.info("initial weights loaded from %s", path)

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
        }

    def _batches(self, consumed: int) -> ShardedBatches:
        return ShardedBatches(
            len(self.dataset), self.micro_batch * self.world, self.rank, self.world, self.config.train.seed, consumed
        )

    def save(self) -> Optional[Path]:
        """Write a checkpoint of the current step (main process only); every process waits for it."""
        path = None
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            path = save_checkpoint(
                self.run_dir,
                self.step,
                model=self.unwrapped,
                ema_model=self.ema.shadow,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.accelerator.scaler,
                state=self._state(),
                keep=self.config.train.keep_checkpoints,
            )
            self._plot_losses()
        self.accelerator.wait_for_everyone()
        return path

    def resume(self, target: str | Path = "latest") -> Path:
        """Restore a checkpoint (``latest`` of this run, a run folder or a checkpoint folder)."""
        path = resolve_checkpoint(target, self.run_dir)
        state = load_checkpoint(
            path,
            model=self.unwrapped,
            ema_model=self.ema.shadow,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.accelerator.scaler,
        )
        if state.get("world_size", self.world) != self.world:
            logger.warning("resuming a %s-process run on %s processes: the data order changes", state["world_size"], self.world)
        self.step = int(state["step"])
        self.consumed = int(state["consumed_batches"])
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.nonfinite_run = int(state.get("nonfinite_run", 0))
        self.ema.load_state_dict(state["ema"])
        logger.info("resumed from %s at step %d (epoch %d, item %d)", path, self.step, state["epoch"], state["index_in_epoch"])
        return path

    # ----------------------------------------------------------------- one step
    def _micro_step(self, batch: dict[str, Any], micro: int, image_step: bool) -> torch.Tensor:
        t = self.config.train
        gen = seeded_generator(t.seed, self.step, self.rank, micro, device=self.device)
        x0 = batch["video"].to(self.device, non_blocking=True)
        b = x0.shape[0]
        cond = self.embed(batch["text"], self.device)
        drop = torch.rand(b, generator=gen, device=self.device) < t.cond_drop
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
        if all_finite:
            if t.max_grad_norm is not None:
                grad_norm = float(self.accelerator.clip_grad_norm_(self.wrapped.parameters(), t.max_grad_norm))
            else:
                grads = [p.grad.detach().norm() for p in self.wrapped.parameters() if p.grad is not None]
                grad_norm = float(torch.stack(grads).norm()) if grads else 0.0
            self.optimizer.step()
            self.nonfinite_run = 0
        else:
            self.nonfinite_total += 1
            self.nonfinite_run += 1
            logger.warning("step %d: non-finite loss, update skipped (%d in a row)", self.step, self.nonfinite_run)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        if all_finite:
            self.ema.step(self.unwrapped, self.step)
        if self.nonfinite_run >= t.max_nonfinite:
            raise NonFiniteLossError(
                f"{self.nonfinite_run} steps in a row had a non-finite loss (last at step {self.step}); lower "
                "train.lr, set train.max_grad_norm, or use train.mixed_precision=bf16 instead of fp16"
            )
        return float(loss_mean.item()) if all_finite else float("nan"), grad_norm

    # ----------------------------------------------------------------- the loop
    def train(self, resume: Optional[str | Path] = None) -> TrainResult:
        """Run until ``train.steps`` (or a signal / ``train.max_minutes``); checkpoints on the way and at the end."""
        t = self.config.train
        main = self.accelerator.is_main_process
        if resume is not None:
            self.resume(resume)
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(self.run_dir / "config.yaml")
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
        writer = self._open_logs(main)
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
                    row.update(steps_per_s=rate, samples_per_s=rate * t.batch_size, memory_mb=_memory_mb(self.device))
                if main:
                    self._log(writer, row)
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
            if writer is not None:
                writer["csv_file"].close()
                if writer["tb"] is not None:
                    writer["tb"].close()
        if main:
            self._plot_losses()
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

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    # ----------------------------------------------------------------- logs
    def _open_logs(self, main: bool) -> Optional[dict[str, Any]]:
        if not main:
            return None
        path = self.run_dir / "metrics.csv"
        rows = []
        if path.is_file():  # a resumed run drops rows past its checkpoint
            with open(path, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= self.step]
        handle = open(path, "w", newline="")
        csv_writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
        csv_writer.writeheader()
        csv_writer.writerows(rows)
        handle.flush()
        tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step + 1 if self.step else None)
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            logger.warning("tensorboard is not installed; logging to metrics.csv only")
        return {"csv": csv_writer, "csv_file": handle, "tb": tb}

    def _log(self, writer: dict[str, Any], row: dict[str, Any]) -> None:
        writer["csv"].writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
        if row["step"] % self.config.train.log_every == 0:
            writer["csv_file"].flush()
        if writer["tb"] is not None:
            for key, value in row.items():
                if key != "step" and value is not None and not (isinstance(value, float) and math.isnan(value)):
                    writer["tb"].add_scalar(f"train/{key}", value, row["step"])

    def _plot_losses(self) -> Optional[Path]:
        path = self.run_dir / "metrics.csv"
        if not path.is_file():
            return None
        return plot_loss_curve(path, self.run_dir / "loss.png")

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, prompts: list[str], *, seed: Optional[int] = None, use_ema: bool = True) -> torch.Tensor:
        """Videos ``(B, C, T, H, W)`` in [-1, 1] for ``prompts`` with the EMA (or live) weights."""
        s = self.config.sample
        model = self.ema.shadow if use_ema else self.unwrapped
        was_training = model.training
        model.eval()
        frames = s.num_frames or self.config.data.num_frames
        size = s.size or self.config.data.size
        if self.vae is not None:  # sample latents, decode below
            shape = self.vae.latent_shape((len(prompts), self.vae.in_channels, frames, size, size))
        else:
            channels = int(self.dataset[0]["video"].shape[0]) if len(self.dataset) else 3
            shape = (len(prompts), channels, frames, size, size)
        cond = self.embed(list(prompts), self.device)
        seed = s.seed if seed is None else seed
        gens = [seeded_generator(seed, i, device=self.device) for i in range(len(prompts))]
        if self.sample_fn is not None:
            video = self.sample_fn(model, shape, cond, gens)
        else:
            from ..diffusion.sampling import sample

            negative = None
            if s.negative_prompt:
                negative = self.embed([s.negative_prompt] * len(prompts), self.device)
            kwargs: dict[str, Any] = {}
            if negative is not None:
                kwargs["negative_cond"] = negative
            if self.vae is not None:
                kwargs["clip_x0"] = False  # latents are not bounded to [-1, 1]
            video = sample(
                model, shape, cond, objective=self.objective, sampler=s.sampler, steps=s.steps,
                guidance_scale=s.guidance_scale, generators=gens, **kwargs,
            )
        model.train(was_training)
        if self.vae is not None:
            video = self.vae.decode(video)
        return video.clamp(-1, 1)

    def sample_grid(self) -> Optional[Path]:
        """Sample the config's fixed prompts (every process takes part) and save a captioned GIF grid."""
        prompts = list(self.config.sample.prompts)
        if not prompts:
            return None
        video = self.generate(prompts)
        if not self.accelerator.is_main_process:
            return None
        from ..io.video import tensor_to_frames, write_video
        from .grid import video_grid

        path = self.run_dir / "samples" / f"step-{self.step:08d}.gif"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(video_grid(list(tensor_to_frames(video.cpu())), prompts), path, fps=self.config.sample.fps)
        logger.info("samples at step %d: %s", self.step, path)
        return path


#: Constructor arguments that take the text encoder's token width, by model family.
TEXT_WIDTH_ARGS: tuple[str, ...] = ("cond_dim", "caption_channels", "cross_attention_dim")


def _check_explicit(key: str, value: Any, wanted: Any, why: str) -> None:
    if value != wanted:
        raise ConfigError(f"model.{key} = {value!r} does not fit {why}: it must be {wanted!r}; remove model.{key} to have it filled in")


def configured_model_kwargs(
    config: Config, text_dim: Optional[int], vae: Any = None, text_encoder: Any = None
) -> tuple[type[nn.Module], Optional[str], dict[str, Any]]:
    """``(class, preset, constructor kwargs)`` of the config's model, with the sizes the run implies.

    Filled in when the config does not set them (a ``model.preset``'s values count as unset):
    the text width (``cond_dim`` / ``caption_channels`` / ``cross_attention_dim``) from the text
    encoder, and with a VAE the latent channels (``channels``, or ``in_channels`` + ``out_channels``)
    and the latent frame size (``sample_size``, or ``input_size``'s H and W). Set explicitly, the text
    width and the output channels and size are checked instead (a `TextEncoderError` / `ConfigError`).
    """
    import inspect

    from ..models.registry import model_class

    cls = model_class(config.model.name)
    params = inspect.signature(cls.__init__).parameters
    kwargs = dict(config.model.kwargs)
    preset = kwargs.pop("preset", None)
    if text_dim is not None:
        for key in TEXT_WIDTH_ARGS:
            if key not in params:
                continue
            if kwargs.get(key) is None:
                kwargs[key] = int(text_dim)
            elif key != "cond_dim" and int(kwargs[key]) != int(text_dim):
                if text_encoder is not None:
                    from ..text.encoders import check_context_dim

                    check_context_dim(text_encoder, int(kwargs[key]), f"model.{key}")
                from ..errors import TextEncoderError

                raise TextEncoderError(
                    f"the text encoder gives {text_dim}-dim token states but model.{key} is {kwargs[key]}; "
                    f"set model.{key} to {text_dim}, or use a text encoder whose hidden size is {kwargs[key]}"
                )
    if vae is not None:
        from ..runs.vae import latent_model_sizes

        channels, h, w = latent_model_sizes(config, vae)
        why = f"the VAE's {channels}-channel latents"
        if "channels" in params:  # Unet3D: one argument for input and output
            if kwargs.get("channels") is None:
                kwargs["channels"] = channels
            _check_explicit("channels", kwargs["channels"], channels, why)
            if kwargs.get("out_dim") is not None:
                _check_explicit("out_dim", kwargs["out_dim"], channels, why)
        if "in_channels" in params and kwargs.get("in_channels") is None:
            kwargs["in_channels"] = channels  # an explicit value may add conditioning channels
        if "out_channels" in params:
            if kwargs.get("out_channels") is None:
                kwargs["out_channels"] = channels
            _check_explicit("out_channels", kwargs["out_channels"], channels, why)
        size_why = f"{config.data.size}x{config.data.size} frames in the VAE's latent space ({h}x{w})"
        if "sample_size" in params:
            if kwargs.get("sample_size") is None:
                kwargs["sample_size"] = h
            elif isinstance(kwargs["sample_size"], (list, tuple)):
                _check_explicit("sample_size", list(kwargs["sample_size"]), [h, w], size_why)
            else:
                _check_explicit("sample_size", kwargs["sample_size"], h, size_why)
        if "input_size" in params:  # STDiT: (T, H, W)
            frames = config.data.num_frames
            if kwargs.get("input_size") is None:
                kwargs["input_size"] = [frames, h, w]
            else:
                given = list(kwargs["input_size"])
                _check_explicit("input_size", given[-2:], [h, w], size_why)
    return cls, preset, kwargs


def build_configured_model(config: Config, text_dim: Optional[int], vae: Any = None, text_encoder: Any = None) -> nn.Module:
    """The config's model (``model.preset`` through the class's ``from_preset``), its text width set to
    the text encoder's and, with a ``vae``, its channels and sizes set to the latent space's
    (see `configured_model_kwargs`)."""
    from ..models.registry import build_model

    cls, preset, kwargs = configured_model_kwargs(config, text_dim, vae, text_encoder)
    if preset is None:
        return build_model(config.model.name, **kwargs)
    try:
        return cls.from_preset(preset, **kwargs)  # type: ignore[attr-defined]
    except TypeError as exc:
        raise ModelError(f"cannot build model {config.model.name!r} from preset {preset!r} with {sorted(kwargs)}: {exc}") from exc


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a run's ``metrics.csv`` as floats (empty cells become NaN)."""
    with open(path, newline="") as handle:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()} for row in csv.DictReader(handle)]


def plot_loss_curve(metrics_csv: str | Path, out: str | Path) -> Path:
    """A PNG of the loss per step and its running mean."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    rows = [r for r in read_metrics(metrics_csv) if math.isfinite(r["loss"])]
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if rows:
        steps = [r["step"] for r in rows]
        losses = [r["loss"] for r in rows]
        ax.plot(steps, losses, lw=0.6, alpha=0.4, label="loss")
        window = max(1, len(losses) // 50)
        smooth = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1]) for i in range(len(losses))]
        ax.plot(steps, smooth, lw=1.5, label=f"mean of {window}")
        ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    return out


def train(config: Config, run_dir: str | Path, resume: Optional[str | Path] = None, **kwargs: Any) -> TrainResult:
    """Build a `Trainer` for ``config`` and run it."""
    return Trainer(config, run_dir, **kwargs).train(resume=resume)


__all__ = ["Trainer", "TrainResult", "NonFiniteLossError", "train", "build_configured_model", "configured_model_kwargs", "plot_loss_curve", "read_metrics", "list_checkpoints"]
