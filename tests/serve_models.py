"""Tiny untrained pipeline folders for the serve tests: real models and the bundled MiniLM text encoder."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_pipeline(folder: Path, *, fps_model: bool = False, latent: bool = False, seed: int = 0) -> Path:
    """A pixel pipeline of 4 frames of 16x16, 3 DDIM steps by default: a Unet3D (or, with ``fps_model``, a
    UNet3DConditionModel with an fps embedding) conditioned on the bundled MiniLM text encoder. ``latent``:
    the UNet3DConditionModel on the latents of a tiny random VAE (4x smaller)."""
    from text2video.diffusion.objective import ObjectiveConfig
    from text2video.models.registry import build_model
    from text2video.pipelines import PipelineDefaults, TextToVideoPipeline
    from text2video.text import load_text_encoder

    encoder = load_text_encoder("default")
    torch.manual_seed(seed)
    vae = None
    if latent:
        from text2video.latent import VideoVAE

        vae = VideoVAE.tiny(seed=seed)
    if fps_model or latent:
        channels = 3 if vae is None else vae.latent_channels
        model = build_model(
            "unet3d_condition", sample_size=16, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            layers_per_block=1, num_attention_heads=2, cross_attention_dim=encoder.dim, norm_num_groups=4,
            motion_num_attention_heads=2, motion_norm_num_groups=4, fps_embedding=fps_model,
        )  # fmt: skip
    else:
        model = build_model("unet3d", dim=8, dim_mults=(1, 2), cond_dim=encoder.dim, attn_heads=1, attn_dim_head=8)
    defaults = PipelineDefaults(num_frames=4, height=16, width=16, fps=8.0, steps=3, sampler="ddim", guidance_scale=2.0)
    pipe = TextToVideoPipeline(model.eval(), encoder, ObjectiveConfig(num_train_timesteps=100), defaults, vae=vae)
    return pipe.save_pretrained(folder)
