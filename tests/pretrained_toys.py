"""Tiny diffusers pipelines (random weights) written with diffusers' own classes and save_pretrained:
a ModelScope-style TextToVideoSDPipeline, an AnimateDiffPipeline (SD UNet + MotionAdapter) and a Stable
Diffusion folder, with a small CLIP text encoder whose tokenizer is written from a tiny vocabulary."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

WORDS = "a an the red blue green circle square ball moving left right up down fast slow dog cat".split()
TEXT_DIM = 16
TOKENS = 12  # the tokenizer pads every prompt to this many tokens (77 for real CLIP)
WIDTHS = (16, 32)


def randomize(module: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
    """Random values in every parameter (zero-initialised layers included), norm scales around 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            is_norm_scale = "norm" in name and name.endswith("weight") and p.ndim == 1
            p.copy_(1.0 + noise if is_norm_scale else noise)
    return module.eval()


def tiny_clip() -> tuple[Any, Any]:
    """(CLIPTextModel, CLIPTokenizer): one layer, width 16, prompts padded to `TOKENS` tokens."""
    from text_models import clip_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer(WORDS, model_max_length=TOKENS)
    vocab = tokenizer.get_vocab()
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=TEXT_DIM, intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=TOKENS, projection_dim=8, bos_token_id=0,
                            eos_token_id=1, pad_token_id=1)  # fmt: skip
    torch.manual_seed(0)
    return CLIPTextModel(config).eval(), tokenizer


def tiny_vae(seed: int = 3, scaling_factor: float = 0.18215) -> Any:
    """An AutoencoderKL with a 2x downsample factor and 4 latent channels."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=16, scaling_factor=scaling_factor)  # fmt: skip
    return vae.eval()


def ddim(**overrides: Any) -> Any:
    """ModelScope's scheduler settings (DDIM, scaled-linear betas, leading spacing, offset 1)."""
    from diffusers import DDIMScheduler

    settings = dict(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    return DDIMScheduler(**{**settings, **overrides})


def save_text_to_video(folder: Path, scheduler: Any = None, seed: int = 1) -> Path:
    """A ModelScope-style TextToVideoSDPipeline folder (UNet3DConditionModel with random weights)."""
    from diffusers import TextToVideoSDPipeline, UNet3DConditionModel

    torch.manual_seed(0)
    unet = UNet3DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=WIDTHS, layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
                                cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=4)  # fmt: skip
    text_encoder, tokenizer = tiny_clip()
    pipe = TextToVideoSDPipeline(vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=randomize(unet, seed),
                                 scheduler=scheduler or ddim())  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def sd_unet(seed: int = 4) -> Any:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=WIDTHS, layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=TEXT_DIM, attention_head_dim=4, norm_num_groups=4)  # fmt: skip
    return randomize(unet, seed)


def motion_adapter(seed: int = 5) -> Any:
    from diffusers import MotionAdapter

    torch.manual_seed(0)
    adapter = MotionAdapter(block_out_channels=WIDTHS, motion_layers_per_block=1, motion_num_attention_heads=8,
                            motion_norm_num_groups=4, motion_max_seq_length=16, use_motion_mid_block=True)  # fmt: skip
    return randomize(adapter, seed)


def save_stable_diffusion(folder: Path) -> Path:
    """A Stable Diffusion 1.x-style folder (model_index.json names StableDiffusionPipeline)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    text_encoder, tokenizer = tiny_clip()
    scheduler = PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, skip_prk_steps=True, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=sd_unet(), scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def save_animatediff(folder: Path, scheduler: Any = None) -> Path:
    """An AnimateDiffPipeline folder (what AnimateDiffPipeline.save_pretrained writes: unet/ holds the
    UNetMotionModel, motion_adapter/ the adapter)."""
    from diffusers import AnimateDiffPipeline

    text_encoder, tokenizer = tiny_clip()
    sched = scheduler or ddim(beta_schedule="linear", timestep_spacing="linspace")
    pipe = AnimateDiffPipeline(vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=sd_unet(),
                               motion_adapter=motion_adapter(), scheduler=sched)  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def to_original_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Diffusers MotionAdapter names -> original AnimateDiff names (written independently of ours)."""
    names = {"attn1": "attention_blocks.0", "attn2": "attention_blocks.1", "norm1": "norms.0", "norm2": "norms.1", "norm3": "ff_norm"}
    out = {}
    for key, value in state.items():
        key = re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", key)
        key = re.sub(r"(transformer_blocks\.\d+)\.(attn1|attn2|norm1|norm2|norm3)\.", lambda m: f"{m.group(1)}.{names[m.group(2)]}.", key)
        if key.endswith("pos_embed.pe"):
            for i in (0, 1):
                out[key.replace("pos_embed.pe", f"attention_blocks.{i}.pos_encoder.pe")] = value
            continue
        out[key] = value
    return out


def one_thread():
    """A fixture body: these tiny models run fastest on one thread (2 threads on a busy 2-core machine
    spend most of each small op waiting for each other); the previous count is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
