"""The GPU device check: every model family, attention backends, torch.compile, and the peers, in one run.

A GPU is lent to a session rarely and briefly (minutes, no network), so everything worth measuring on one
runs from this one script, with the repo on ``PYTHONPATH`` (no install). Sections, in order of value:

* ``env``       GPU, versions, and the measured bf16 matrix-product rate (the ceiling for utilisation);
* ``families``  each model family at its GPU preset, through our `Trainer` (Accelerate, bf16 autocast,
                fused AdamW, EMA): a few training steps (loss finite, peak memory, steps/s after warm-up,
                model FLOPs utilisation from ``torch.utils.flop_counter``), the attention backend that
                ``scaled_dot_product_attention`` dispatched to, and a short guided sampling run (the video
                must be finite and not constant);
* ``peers``     side by side in this process: our UNet3DConditionModel against diffusers'
                ``UNet3DConditionModel`` (ModelScope's size) and ``UNetMotionModel`` (SD 1.5 + AnimateDiff)
                holding the same weights; our STDiT-XL/2 at 16x32x32 latents (16x256x256 video) against
                Open-Sora's published 7.0 samples/s/GPU (H800); and, in a subprocess,
                ``benchmarks/unet3d_vs_vdp.py`` (our Unet3D against video-diffusion-pytorch) at text2video-from-scratch's
                size and at 16x64x64;
* ``pretrained`` the memory and time of one guided sampling step of the pretrained models' native sizes
                in float16 (ModelScope 16x256x256, Zeroscope 24x320x576, AnimateDiff 16x512x512) and of
                decoding their latents with an SD VAE, whole and frame by frame (random weights: memory and
                speed do not depend on the values);
* ``compile``   the training step under ``torch.compile`` against eager, compile time apart.

Each section is guarded: a failure is recorded in the JSON and the run goes on. The JSON is rewritten
after every section, so a run stopped by its time limit still leaves what it measured. ``--budget``
seconds bound the whole run: a section that would not fit is skipped and says so.

``--dry-run`` runs the same code on the CPU at tiny sizes (a test runs it, so the script cannot rot).

Run on a GPU:   PYTHONPATH=. python benchmarks/gpu_check.py --out gpu_check.json
Run on a CPU:   python benchmarks/gpu_check.py --dry-run
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: the repo is the package root
    sys.path.insert(0, str(REPO))

#: NVIDIA's datasheet figure for dense bf16 on an H100/H200 SXM, the usual denominator of MFU.
H100_BF16_DENSE_TFLOPS = 989.0
#: Open-Sora's published STDiT training throughput at 16x256x256 (8 H800, flash attention, fused layer
#: norm, ZeRO; docs/acceleration.md of hpcaitech/Open-Sora v1.0).
OPEN_SORA_STDIT_SAMPLES_PER_S = 7.0

SECTIONS = ("env", "families", "peers", "pretrained", "compile")


# ------------------------------------------------------------------------------------------ plumbing


@dataclasses.dataclass
class Run:
    """Where and how big: the device, the dtype, the sizes (GPU or dry run) and the time left."""

    device: torch.device
    dry: bool
    budget_s: float
    out: Path
    started: float = dataclasses.field(default_factory=time.perf_counter)
    results: dict[str, Any] = dataclasses.field(default_factory=dict)
    only: tuple[str, ...] = ()  # run only the measurements whose key starts with one of these

    @property
    def amp(self) -> torch.dtype:
        return torch.bfloat16

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> Optional[float]:
        """Peak GPU memory allocated by torch since `reset_peak` (None on the CPU)."""
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=2, default=str))
        os.replace(tmp, self.out)


def guarded(run: Run, key: str, fn: Callable[[], Any], need_s: float) -> None:
    """Run one measurement; store its result (or its error, or that it was skipped) under ``key``."""
    if run.only and not key.startswith(run.only):
        return
    if run.left() < need_s:
        run.results[key] = {"skipped": f"{run.left():.0f} s left of the budget, {need_s:.0f} s needed"}
        print(f"[{key}] skipped: not enough time left", flush=True)
        return
    start = time.perf_counter()
    print(f"[{key}] ...", flush=True)
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - the check records every failure and goes on
        value = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}
        print(f"[{key}] FAILED: {type(exc).__name__}: {exc}", flush=True)
    if isinstance(value, dict):
        value.setdefault("section_s", round(time.perf_counter() - start, 1))
    run.results[key] = value
    if run.device.type == "cuda":
        torch.cuda.empty_cache()
    run.save()


def timed(run: Run, fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls, waiting for the device each time."""
    for _ in range(warmup):
        fn()
    run.sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        run.sync()
        times.append(time.perf_counter() - start)
    return times


def alternate(run: Run, fns: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Like `timed` for several functions, called in turn each round so that drift hits them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    run.sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            run.sync()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fill_random(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Small random weights in place (std 0.02; norm scales 1), drawn on the weights' device: fast for a
    billion parameters, and nothing zero, so zero-initialised output layers do not make a step trivially
    cheap or a video constant."""
    with torch.no_grad():
        for i, (name, p) in enumerate(module.named_parameters()):
            g = torch.Generator(device=p.device).manual_seed(seed * 100003 + i)
            p.copy_(torch.randn(p.shape, generator=g, device=p.device, dtype=torch.float32).mul_(0.02).to(p.dtype))
            if p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.add_(1.0)
    return module


def flops_of(fn: Callable[[], Any]) -> float:
    """Floating-point operations of one call of ``fn`` (matrix products, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


SDPA_OPS = {
    "flash": ("_scaled_dot_product_flash_attention", "_flash_attention_forward"),
    "memory_efficient": ("_scaled_dot_product_efficient_attention", "_efficient_attention_forward"),
    "cudnn": ("_scaled_dot_product_cudnn_attention",),
    "math": ("_scaled_dot_product_attention_math",),
}


def sdpa_backends(run: Run, fn: Callable[[], Any]) -> dict[str, int]:
    """How many attention calls of one ``fn()`` ran on each SDPA backend (from the profiler's op names)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
        run.sync()
    counts: dict[str, int] = {}
    for event in prof.key_averages():
        for backend, names in SDPA_OPS.items():
            if any(event.key.endswith(n) or f"{n}_for_cpu" in event.key for n in names):
                counts[backend] = counts.get(backend, 0) + event.count
                break
    return counts


# ------------------------------------------------------------------------------------------ env


def section_env(run: Run) -> dict[str, Any]:
    import accelerate
    import diffusers
    import transformers

    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "device": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else platform.processor() or "cpu",
        "dry_run": run.dry,
    }
    if run.device.type == "cuda":
        props = torch.cuda.get_device_properties(run.device)
        info["memory_gb"] = round(props.total_memory / 1e9, 1)
        info["multiprocessors"] = props.multi_processor_count
        info["flash_sdp_enabled"] = torch.backends.cuda.flash_sdp_enabled()
        info["cudnn_sdp_enabled"] = torch.backends.cuda.cudnn_sdp_enabled()
    n = 512 if run.dry else 8192
    a = torch.randn(n, n, device=run.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=run.device, dtype=torch.bfloat16)
    times = timed(run, lambda: a @ b, warmup=2, repeats=3 if run.dry else 10)
    info["bf16_matmul_tflops"] = round(2 * n**3 / median(times) / 1e12, 1)
    return info


# ------------------------------------------------------------------------------------------ families


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family: its GPU preset and the tiny preset of the dry run, and what its data looks like.

    ``latent``: the family trains on VAE latents; the check feeds random latents of ``channels`` x
    ``size`` x ``size`` directly (as with a latent cache), so no VAE runs in the timed step.
    """

    name: str
    preset: str
    dry_preset: str
    text_dim: int = 384  # MiniLM's width (the presets' default text encoder)
    text_len: int = 16
    batch: int = 8
    channels: int = 3
    latent_size: Optional[int] = None  # latents' height/width at the GPU preset (latent families only)
    overrides: tuple[str, ...] = ()


FAMILIES = (
    Family("unet3d", "gpu-64", "tiny-cpu"),
    Family("stdit", "stdit-gpu-64", "tiny-stdit"),
    Family("unet_stic", "unet-stic-gpu-64", "tiny-unet-stic"),
    Family("segdit", "segdit-gpu-64", "tiny-segdit"),
    # SD 1.5 + motion modules at 16x256x256 video = 16 x 4 x 32x32 latents, CLIP-L text (77 x 768)
    Family("unet3d_condition", "animatediff-256", "tiny-latent", text_dim=768, text_len=77, batch=4, channels=4, latent_size=32),
)


class RandomClips(torch.utils.data.Dataset):
    """Random videos in [-1, 1] (or latents) with captions: what the timed steps read."""

    def __init__(self, n: int, channels: int, frames: int, size: int) -> None:
        self.shape = (channels, frames, size, size)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(i)
        video = torch.rand(self.shape, generator=g) * 2 - 1
        return {"video": video, "text": f"caption number {i % 7}", "fps": 8.0, "path": f"random-{i}"}


class RandomTextEncoder:
    """Stands in for the text encoder: fixed random token states of the right width and length per prompt
    (the encoder's own cost is outside the training step: the trainer caches embeddings)."""

    def __init__(self, dim: int, length: int, device: torch.device) -> None:
        self.dim, self.max_length, self.device, self.dtype, self.id = dim, length, device, torch.float32, f"random-{dim}"

    def encode(self, prompts: list[str]) -> Any:
        from text2video.text.encoders import TextEmbeddings

        rows = [torch.randn(self.max_length, self.dim, generator=torch.Generator().manual_seed(hash(p) % 2**31)) for p in prompts]
        tokens = torch.stack(rows)
        mask = torch.zeros(len(prompts), self.max_length, dtype=torch.bool)
        for i, p in enumerate(prompts):
            mask[i, : min(self.max_length, 2 + len(p.split()))] = True
        tokens = tokens * mask[..., None]
        return TextEmbeddings(tokens, mask, tokens.sum(1) / mask.sum(1, keepdim=True))


def family_config(run: Run, family: Family) -> Any:
    """The family's preset with the data, text and checkpoint settings this check needs."""
    from text2video.config import load_config

    preset = family.dry_preset if run.dry else family.preset
    base = load_config(preset)
    overrides = [
        "data.kind=shapes", "data.options={}", "data.num_workers=0", "text.cache=false",
        "train.mixed_precision=bf16", f"train.batch_size={2 if run.dry else family.batch}", "train.grad_accum=1",
        "train.save_every=0", "train.sample_every=0", "train.log_every=1000000", "train.warmup_steps=0",
        "sample.steps=2" if run.dry else "sample.steps=10", "sample.sampler=dpmpp_2m", "sample.guidance_scale=5.0",
        "latent.vae=null", "latent.cache=false", "latent.fit_steps=0", "train.cpu=false",
    ]  # fmt: skip
    if family.latent_size is not None:  # random latents stand in for the VAE's
        size = 8 if run.dry else family.latent_size
        overrides += [f"data.size={size}", "data.channels=4", f"model.sample_size={size}"]
    if run.dry:
        overrides += [f"data.num_frames={min(base.data.num_frames, 4)}"]
        if family.name == "stdit":
            overrides += [f"model.input_size=[4,{base.data.size},{base.data.size}]"]
        if family.name == "unet_stic":
            overrides += ["model.num_frames=4"]
    return load_config(preset, overrides + list(family.overrides))


def measure_family(run: Run, family: Family, steps: int) -> dict[str, Any]:
    from text2video.train.data import collate
    from text2video.train.trainer import Trainer

    config = family_config(run, family)
    frames, size = config.data.num_frames, config.data.size
    text_dim = 32 if run.dry and family.latent_size is not None else family.text_dim
    if run.dry and family.latent_size is not None:
        config.model.kwargs["cross_attention_dim"] = text_dim
    encoder = RandomTextEncoder(text_dim, family.text_len, run.device)
    dataset = RandomClips(64, family.channels if family.latent_size else 3, frames, size)
    run.reset_peak()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, tmp, dataset=dataset, text_encoder=encoder, progress=False)
        params = sum(p.numel() for p in trainer.model.parameters())
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=trainer._batches(0), collate_fn=collate)
        data = iter(loader)
        losses: list[float] = []

        def step() -> None:
            loss, _ = trainer._optimizer_step(data)
            losses.append(loss)

        times = timed(run, step, warmup=1 if run.dry else 2, repeats=steps)
        peak = run.peak_mb()
        flops = flops_of(step)
        backends = sdpa_backends(run, step)  # a training step, under the trainer's bf16 autocast
        with run.autocast():
            start = time.perf_counter()
            video = trainer.generate(["a red circle moving right", "waves on a beach"])
            run.sync()
            sample_s = time.perf_counter() - start
    step_s = median(times)
    video = video.float()
    result = {
        "preset": family.dry_preset if run.dry else family.preset,
        "parameters_m": round(params / 1e6, 1),
        "batch": config.train.batch_size,
        "shape": [dataset.shape[0], frames, size, size],
        "losses": [round(x, 4) for x in losses],
        "loss_finite": all(math.isfinite(x) for x in losses),
        "step_s": round(step_s, 4),
        "steps_per_s": round(1 / step_s, 2),
        "samples_per_s": round(config.train.batch_size / step_s, 1),
        "peak_memory_mb": None if peak is None else round(peak),
        "train_tflop_per_step": round(flops / 1e12, 3),
        "achieved_tflops": round(flops / step_s / 1e12, 1),
        "sdpa_backends": backends,
        "sample": {
            "sampler": config.sample.sampler,
            "steps": config.sample.steps,
            "guidance_scale": config.sample.guidance_scale,
            "seconds": round(sample_s, 2),
            "seconds_per_step": round(sample_s / config.sample.steps, 4),
            "finite": bool(torch.isfinite(video).all()),
            "std": round(float(video.std()), 4),
        },
    }
    result["sample"]["ok"] = result["sample"]["finite"] and result["sample"]["std"] > 1e-3
    return result


def section_families(run: Run) -> None:
    steps = 1 if run.dry else 5
    for family in FAMILIES:
        guarded(run, f"family:{family.name}", lambda f=family: measure_family(run, f, steps), need_s=5 if run.dry else 40)


# ------------------------------------------------------------------------------------------ peers


def diffusers_modelscope(run: Run) -> Any:
    """diffusers' ``UNet3DConditionModel`` at ModelScope text-to-video-ms-1.7b's size (tiny in a dry run),
    built on the run's device with random weights."""
    from diffusers import UNet3DConditionModel

    if run.dry:
        cfg = dict(block_out_channels=(16, 16, 32, 32), layers_per_block=1, cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4)
    else:
        cfg = dict(
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=1024,
            attention_head_dim=64,
            norm_num_groups=32,
        )
    with torch.device(run.device):
        return fill_random(UNet3DConditionModel(sample_size=32, in_channels=4, out_channels=4, **cfg))


def diffusers_animatediff(run: Run) -> Any:
    """diffusers' ``UNetMotionModel``: an SD 1.5 UNet with AnimateDiff v2's motion modules (mid block
    included), built on the run's device with random weights."""
    from diffusers import UNetMotionModel

    if run.dry:
        cfg = dict(
            block_out_channels=(16, 16, 32, 32),
            norm_num_groups=4,
            cross_attention_dim=16,
            num_attention_heads=2,
            motion_num_attention_heads=2,
        )
    else:
        cfg = dict(
            block_out_channels=(320, 640, 1280, 1280),
            norm_num_groups=32,
            cross_attention_dim=768,
            num_attention_heads=8,
            motion_num_attention_heads=8,
        )
    with torch.device(run.device):
        return fill_random(UNetMotionModel(sample_size=64, layers_per_block=2, motion_max_seq_length=32, use_motion_mid_block=True, **cfg))


def _unet_inputs(run: Run, batch: int, frames: int, size: int, text_dim: int, text_len: int, per_frame_text: bool):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, frames, size, size, generator=g).to(run.device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(run.device)
    text = torch.randn(batch, text_len, text_dim, generator=g).to(run.device)
    theirs_text = text.repeat_interleave(frames, dim=0) if per_frame_text else text
    return x, t, text, theirs_text


def compare_unets(run: Run, theirs: Any, ours: Any, inputs: tuple, batch_sample: int, repeats: int) -> dict[str, Any]:
    """Training step (bf16 autocast, MSE, fused AdamW) and guided sampling step (a no-grad call on a doubled
    batch, as classifier-free guidance makes it) of two models holding the same weights."""
    from text2video.train.trainer import make_adamw

    x, t, text, theirs_text = inputs
    target = torch.randn_like(x)
    models = {"diffusers": (theirs, theirs_text), "ours": (ours, text)}
    with torch.no_grad(), run.autocast():
        outs = {name: m(x, t, c).sample.float() for name, (m, c) in models.items()}
    scale = outs["diffusers"].abs().mean().item()
    diff = (outs["ours"] - outs["diffusers"]).abs().max().item()

    def train_fn(model: Any, cond: torch.Tensor) -> Callable[[], None]:
        opt = make_adamw([p for p in model.parameters() if p.requires_grad], lr=1e-5)

        def step() -> None:
            with run.autocast():
                loss = torch.nn.functional.mse_loss(model(x, t, cond).sample.float(), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    def sample_fn(model: Any, cond: torch.Tensor) -> Callable[[], None]:
        rows = min(batch_sample, x.shape[0])
        frames = x.shape[2]
        cond = cond[: rows * (frames if cond.shape[0] != x.shape[0] else 1)]

        def step() -> None:
            with torch.no_grad(), run.autocast():
                model(x[:rows].repeat(2, 1, 1, 1, 1), t[:rows].repeat(2), cond.repeat(2, 1, 1))

        return step

    result: dict[str, Any] = {"bf16_max_abs_difference": diff, "output_mean_abs": scale}
    memory = {}
    for name, (model, cond) in models.items():
        model.train()
        run.reset_peak()
        train_fn(model, cond)()
        run.sync()
        memory[name] = run.peak_mb()
        model.zero_grad(set_to_none=True)
    result["train_peak_memory_mb"] = memory
    train = alternate(run, {n: train_fn(m, c) for n, (m, c) in models.items()}, warmup=1, repeats=repeats)
    for model, _ in models.values():
        model.zero_grad(set_to_none=True)
        model.eval()
    sample = alternate(run, {n: sample_fn(m, c) for n, (m, c) in models.items()}, warmup=1, repeats=repeats + 2)
    for kind, times in (("train_step_s", train), ("sample_step_s", sample)):
        result[kind] = {n: round(median(v), 4) for n, v in times.items()}
        result[kind]["ours/diffusers"] = round(median(times["ours"]) / median(times["diffusers"]), 3)
    return result


def peer_modelscope(run: Run) -> dict[str, Any]:
    """Ours against diffusers' UNet3DConditionModel at ModelScope's size; then, with the same diffusers
    model in float16, the pretrained sizes' sampling memory (stored as ``pretrained:modelscope_zeroscope``)."""
    from text2video.models.unet3d_condition import UNet3DConditionModel

    theirs = diffusers_modelscope(run)
    with torch.device(run.device):
        ours = UNet3DConditionModel.from_diffusers_unet3d(theirs)
    frames, size = (4, 8) if run.dry else (16, 32)
    text_dim = theirs.config.cross_attention_dim
    inputs = _unet_inputs(run, 2, frames, size, text_dim, 77, per_frame_text=False)
    result = compare_unets(run, theirs, ours, inputs, batch_sample=1, repeats=1 if run.dry else 3)
    result.update(parameters_m=round(sum(p.numel() for p in ours.parameters()) / 1e6, 1), shape=[2, 4, frames, size, size])
    del ours, inputs
    sizes = {"modelscope_tiny": (4, 8, 8)} if run.dry else {"modelscope_16x256x256": (16, 32, 32), "zeroscope_24x320x576": (24, 40, 72)}
    guarded(run, "pretrained:modelscope_zeroscope_unet", lambda: pretrained_sizes(run, theirs, sizes, per_frame_text=False), 1)
    return result


def peer_animatediff(run: Run) -> dict[str, Any]:
    """Ours against diffusers' UNetMotionModel (SD 1.5 + AnimateDiff); then AnimateDiff's native size in
    float16 with the same diffusers model (stored as ``pretrained:animatediff_unet``)."""
    from text2video.models.unet3d_condition import UNet3DConditionModel

    theirs = diffusers_animatediff(run)
    with torch.device(run.device):
        ours = UNet3DConditionModel.from_unet2d(theirs)
    frames, size = (4, 8) if run.dry else (16, 32)
    text_dim = theirs.config.cross_attention_dim
    inputs = _unet_inputs(run, 2, frames, size, text_dim, 77, per_frame_text=True)
    result = compare_unets(run, theirs, ours, inputs, batch_sample=1, repeats=1 if run.dry else 3)
    result.update(parameters_m=round(sum(p.numel() for p in ours.parameters()) / 1e6, 1), shape=[2, 4, frames, size, size])
    del ours, inputs
    sizes = {"animatediff_tiny": (4, 8, 8)} if run.dry else {"animatediff_16x512x512": (16, 64, 64)}
    guarded(run, "pretrained:animatediff_unet", lambda: pretrained_sizes(run, theirs, sizes, per_frame_text=True), 1)
    return result


def peer_stdit_xl(run: Run) -> dict[str, Any]:
    """Our STDiT at STDiT-XL/2's size on 16x32x32 latents with T5-XXL-width captions (120 x 4096):
    training samples/s in bf16, beside Open-Sora's 7.0 samples/s/GPU for the same setting."""
    from text2video.diffusion.conditioning import Conditioning
    from text2video.diffusion.objective import DiffusionObjective
    from text2video.models.stdit import STDiT
    from text2video.train.trainer import make_adamw

    if run.dry:
        cfg = dict(input_size=(4, 8, 8), hidden_size=32, depth=2, num_heads=2, caption_channels=16, model_max_length=8)
        batches = (2,)
    else:
        cfg = dict(input_size=(16, 32, 32), hidden_size=1152, depth=28, num_heads=16, caption_channels=4096, model_max_length=120)
        batches = (8, 16)
    model = STDiT(in_channels=4, out_channels=4, patch_size=(1, 2, 2), **cfg).to(run.device)
    fill_random(model)
    objective = DiffusionObjective({"prediction_type": "v_prediction"})
    opt = make_adamw(list(model.parameters()), lr=1e-5)
    result: dict[str, Any] = {"parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1), "config": cfg}
    for batch in batches:
        g = torch.Generator().manual_seed(0)
        x0 = torch.randn(batch, 4, *cfg["input_size"], generator=g).to(run.device)
        tokens = torch.randn(batch, cfg["model_max_length"], cfg["caption_channels"], generator=g).to(run.device)
        cond = Conditioning(text_tokens=tokens, text_mask=torch.ones(tokens.shape[:2], dtype=torch.bool, device=run.device))
        gen = torch.Generator(device=run.device).manual_seed(0)

        def step(x0: torch.Tensor = x0, cond: Conditioning = cond, gen: torch.Generator = gen) -> None:
            with run.autocast():
                loss, _ = objective.loss(model, x0, cond, generator=gen)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        run.reset_peak()
        try:
            times = timed(run, step, warmup=1 if run.dry else 2, repeats=1 if run.dry else 4)
        except torch.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            result[f"batch_{batch}"] = {"error": "out of memory"}
            break
        step_s = median(times)
        flops = flops_of(step)
        result[f"batch_{batch}"] = {
            "step_s": round(step_s, 4),
            "samples_per_s": round(batch / step_s, 2),
            "peak_memory_mb": run.peak_mb(),
            "achieved_tflops": round(flops / step_s / 1e12, 1),
        }
    best = max(v.get("samples_per_s", 0.0) for k, v in result.items() if k.startswith("batch_"))
    result["open_sora_samples_per_s"] = OPEN_SORA_STDIT_SAMPLES_PER_S
    result["ours/open_sora"] = round(best / OPEN_SORA_STDIT_SAMPLES_PER_S, 2)
    return result


def peer_vdp(run: Run, frames: int, size: int) -> dict[str, Any]:
    """benchmarks/unet3d_vs_vdp.py in a subprocess (it needs video-diffusion-pytorch installed)."""
    out = run.out.parent / f"unet3d_vs_vdp-{frames}x{size}{'-dry' if run.dry else ''}.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "unet3d_vs_vdp.py"), "--device", str(run.device), "--frames", str(frames),
           "--size", str(size), "--out", str(out)]  # fmt: skip
    cmd += ["--quick", "--repeats", "1", "--no-memory"] if run.dry else ["--dtype", "bfloat16", "--repeats", "5"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(30.0, run.left() - 10))
    if proc.returncode != 0:
        raise RuntimeError(f"unet3d_vs_vdp.py exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    data = json.loads(out.read_text())
    summary = {key: {"ours/peer": round(v["wall"]["ratio"], 3), "peer_s": round(v["wall"]["peer_s"], 4), "ours_s": round(v["wall"]["ours_s"], 4)}
               for key, v in data["timings"].items()}  # fmt: skip
    if "memory_train_b2" in data:
        summary["memory_train_b2"] = {"ours/peer": round(data["memory_train_b2"]["ratio"], 3)}
    return {"frames": frames, "size": size, "dtype": data["config"]["dtype"], "ratios": summary, "json": out.name}


def section_peers(run: Run) -> None:
    need = 5 if run.dry else 45
    guarded(run, "peer:stdit_xl_vs_open_sora", lambda: peer_stdit_xl(run), need)
    guarded(run, "peer:unet3d_condition_vs_diffusers_modelscope", lambda: peer_modelscope(run), need)
    guarded(run, "peer:unet3d_condition_vs_diffusers_animatediff", lambda: peer_animatediff(run), need)
    sizes = [(2, 16)] if run.dry else [(5, 32), (16, 64)]
    for frames, size in sizes:
        guarded(run, f"peer:unet3d_vs_vdp_{frames}x{size}", lambda f=frames, s=size: peer_vdp(run, f, s), need)


# ------------------------------------------------------------------------------------------ pretrained sizes


def sampling_step_memory(run: Run, unet: Any, frames: int, h: int, w: int, text: torch.Tensor, per_frame_text: bool) -> dict[str, Any]:
    """Peak memory (weights included) and time of one guided sampling step (2 rows) in the model's dtype."""
    x = torch.randn(2, 4, frames, h, w, device=run.device, dtype=unet.dtype)
    t = torch.tensor([500, 500], device=run.device)
    cond = text.repeat_interleave(frames, dim=0) if per_frame_text else text

    def step() -> None:
        with torch.no_grad():
            unet(x, t, cond)

    run.reset_peak()
    times = timed(run, step, warmup=1, repeats=1 if run.dry else 3)
    return {"frames": frames, "latent_hw": [h, w], "peak_memory_mb": run.peak_mb(), "step_s": round(median(times), 4)}


def vae_decode_memory(run: Run, frames: int, size: int) -> dict[str, Any]:
    """Decoding ``frames`` latents of an SD VAE (float16) to size x size: all at once against one by one."""
    from diffusers import AutoencoderKL

    if run.dry:
        vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4)  # fmt: skip
    else:
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2)  # fmt: skip
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    vae = fill_random(vae.to(run.device)).to(torch.float16).eval()
    z = torch.randn(frames, 4, size // factor, size // factor, device=run.device, dtype=torch.float16)
    out: dict[str, Any] = {"frames": frames, "size": size}
    for name, chunk in (("all_frames", frames), ("one_frame_at_a_time", 1)):

        def decode(c: int = chunk) -> None:
            with torch.no_grad():
                for i in range(0, frames, c):
                    _ = vae.decode(z[i : i + c]).sample

        run.reset_peak()
        times = timed(run, decode, warmup=1, repeats=1 if run.dry else 2)
        out[name] = {"peak_memory_mb": run.peak_mb(), "seconds": round(median(times), 3)}
    return out


def pretrained_sizes(run: Run, unet: Any, sizes: dict[str, tuple[int, int, int]], per_frame_text: bool) -> dict[str, Any]:
    """One guided sampling step of ``unet`` cast to float16 at each of ``sizes`` (frames, latent h, w)."""
    unet = unet.to(torch.float16).eval()
    text = torch.randn(2, 77, unet.config.cross_attention_dim, device=run.device, dtype=torch.float16)
    weights_mb = sum(p.numel() * p.element_size() for p in unet.parameters()) / 2**20
    res: dict[str, Any] = {"weights_mb": round(weights_mb), "dtype": "float16"}
    for name, (f, h, w) in sizes.items():
        res[name] = sampling_step_memory(run, unet, f, h, w, text, per_frame_text=per_frame_text)
    return res


def section_pretrained(run: Run) -> None:
    """The SD VAE's decoding memory (the pretrained UNets' sizes are measured with the peers' models)."""

    def vae_sizes() -> dict[str, Any]:
        if run.dry:
            return {"tiny": vae_decode_memory(run, 4, 16)}
        return {"16x256x256": vae_decode_memory(run, 16, 256), "16x512x512": vae_decode_memory(run, 16, 512)}

    guarded(run, "pretrained:sd_vae_decode", vae_sizes, 5 if run.dry else 30)


# ------------------------------------------------------------------------------------------ compile


def compile_vs_eager(run: Run, family: Family) -> dict[str, Any]:
    """One family's training step (model + objective + AdamW, bf16 autocast), eager and under torch.compile."""
    from text2video.diffusion.objective import DiffusionObjective
    from text2video.models.adapter import ConditionedDenoiser
    from text2video.runs.build import build_configured_model
    from text2video.train.trainer import make_adamw

    config = family_config(run, family)
    text_dim = 32 if run.dry and family.latent_size is not None else family.text_dim
    if run.dry and family.latent_size is not None:
        config.model.kwargs["cross_attention_dim"] = text_dim
    model = build_configured_model(config, text_dim).to(run.device)
    objective = DiffusionObjective(dict(config.diffusion.kwargs))
    batch = next(iter(torch.utils.data.DataLoader(RandomClips(config.train.batch_size, 3, config.data.num_frames, config.data.size),
                                                  batch_size=config.train.batch_size)))  # fmt: skip
    from text2video.diffusion.conditioning import Conditioning

    emb = RandomTextEncoder(text_dim, family.text_len, run.device).encode(batch["text"])
    cond = Conditioning(text_tokens=emb.tokens, text_mask=emb.mask, text_pooled=emb.pooled).to(run.device)
    x0 = batch["video"].to(run.device)
    opt = make_adamw(list(model.parameters()), lr=1e-5)

    def step_of(net: Any) -> Callable[[], None]:
        gen = torch.Generator(device=run.device).manual_seed(0)

        def step() -> None:
            with run.autocast():
                loss, _ = objective.loss(net, x0, cond, generator=gen)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    eager = step_of(ConditionedDenoiser(model))
    torch._dynamo.reset()  # no shapes carried over from another family's compile (they would turn dynamic)
    backend = "eager" if run.dry else "inductor"  # the dry run traces the graph without compiling kernels
    compiled = step_of(torch.compile(ConditionedDenoiser(model), backend=backend))
    start = time.perf_counter()
    compiled()
    run.sync()
    compile_s = time.perf_counter() - start
    repeats = 1 if run.dry else 5
    times = alternate(run, {"eager": eager, "compiled": compiled}, warmup=1, repeats=repeats)
    return {
        "preset": family.dry_preset if run.dry else family.preset,
        "backend": backend,
        "compile_s": round(compile_s, 1),
        "eager_step_s": round(median(times["eager"]), 4),
        "compiled_step_s": round(median(times["compiled"]), 4),
        "compiled/eager": round(median(times["compiled"]) / median(times["eager"]), 3),
    }


def section_compile(run: Run) -> None:
    for name in ("stdit",) if run.dry else ("stdit", "unet3d"):
        family = next(f for f in FAMILIES if f.name == name)
        guarded(run, f"compile:{name}", lambda f=family: compile_vs_eager(run, f), need_s=10 if run.dry else 120)


# ------------------------------------------------------------------------------------------ report


def table(results: dict[str, Any]) -> str:
    """A markdown summary of the JSON (the one docs/gpu.md shows)."""
    lines = ["| family (preset) | params (M) | batch | steps/s | samples/s | peak GB | TFLOP/s | MFU | attention | sample ok |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    env = results.get("env", {})
    ceiling = env.get("bf16_matmul_tflops")
    for key, r in results.items():
        if not key.startswith("family:"):
            continue
        if "error" in r or "skipped" in r:
            lines.append(f"| {key[7:]} | {r.get('error') or r.get('skipped')} |")
            continue
        peak = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb'] / 1024:.1f}"
        mfu = f"{r['achieved_tflops'] / H100_BF16_DENSE_TFLOPS:.1%}"
        attn = ", ".join(f"{k} {v}" for k, v in r["sdpa_backends"].items()) or "none"
        lines.append(f"| {key[7:]} ({r['preset']}) | {r['parameters_m']} | {r['batch']} | {r['steps_per_s']} | {r['samples_per_s']} | "
                     f"{peak} | {r['achieved_tflops']} | {mfu} | {attn} | {r['sample']['ok']} |")  # fmt: skip
    if ceiling:
        lines.append(
            f"\nMFU against {H100_BF16_DENSE_TFLOPS:.0f} TFLOP/s (dense bf16, datasheet); measured bf16 matmul: {ceiling} TFLOP/s."
        )
    for key, r in results.items():
        if key.startswith(("peer:", "pretrained:", "compile:")):
            shown = {k: v for k, v in r.items() if k not in ("traceback", "section_s")}
            lines.append(f"\n- **{key}**: `{json.dumps(shown, default=str)}`")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the same code on the CPU at tiny sizes")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/gpu_check[-dry].json)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 450; dry run 600)")
    parser.add_argument("--only", nargs="+", default=(), help="only the measurements whose key starts so (e.g. family:stdit)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="which sections to run")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device is visible to torch; use --dry-run to check the script on the CPU")
    device = torch.device("cpu" if args.dry_run else "cuda")
    out = args.out or REPO / "benchmarks" / "results" / f"gpu_check{'-dry' if args.dry_run else ''}.json"
    run = Run(device=device, dry=args.dry_run, budget_s=args.budget or (600.0 if args.dry_run else 450.0), out=out, only=tuple(args.only))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    if "env" in args.sections:
        guarded(run, "env", lambda: section_env(run), need_s=1)
    runners = {"families": section_families, "peers": section_peers, "pretrained": section_pretrained, "compile": section_compile}
    for name in SECTIONS[1:]:
        if name in args.sections:
            runners[name](run)
    run.save()
    print(table(run.results))
    print(f"wrote {out} in {run.results['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
