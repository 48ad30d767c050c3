"""Memory of one sample of ModelScope, Zeroscope and AnimateDiff at their native sizes, as `text2video info`
estimates it, without downloading a weight.

``text2video info --model X`` reads only the configs of a diffusers folder, so this script writes the
configs of the published models (the values of ali-vilab/text-to-video-ms-1.7b, cerspense/zeroscope_v2_576w,
runwayml/stable-diffusion-v1-5 and guoyww/animatediff-motion-adapter-v1-5-2, which are the diffusers
defaults of those classes plus the values below) into empty folders and describes them. With the real
download, ``text2video info --model ali-vilab/text-to-video-ms-1.7b --json`` gives the same numbers.

    python benchmarks/pretrained_memory.py          # JSON to benchmarks/results/pretrained_memory.json
"""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"

SD_VAE = {"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
          "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
          "up_block_types": ["UpDecoderBlock2D"] * 4, "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215}  # fmt: skip
CLIP_VIT_H_TEXT = {"model_type": "clip_text_model", "architectures": ["CLIPTextModel"], "hidden_size": 1024, "intermediate_size": 4096,
                   "num_hidden_layers": 23, "num_attention_heads": 16, "max_position_embeddings": 77, "vocab_size": 49408,
                   "hidden_act": "gelu", "projection_dim": 512}  # fmt: skip
CLIP_VIT_L_TEXT = {"model_type": "clip_text_model", "architectures": ["CLIPTextModel"], "hidden_size": 768, "intermediate_size": 3072,
                   "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77, "vocab_size": 49408,
                   "hidden_act": "quick_gelu", "projection_dim": 768}  # fmt: skip
MODELSCOPE_UNET = {"_class_name": "UNet3DConditionModel", "sample_size": 32, "in_channels": 4, "out_channels": 4,
                   "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "cross_attention_dim": 1024,
                   "attention_head_dim": 64, "norm_num_groups": 32,
                   "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
                   "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"]}  # fmt: skip
SD15_UNET = {"_class_name": "UNet2DConditionModel", "sample_size": 64, "in_channels": 4, "out_channels": 4,
             "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "cross_attention_dim": 768, "attention_head_dim": 8,
             "norm_num_groups": 32, "norm_eps": 1e-5, "flip_sin_to_cos": True, "freq_shift": 0,
             "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}  # fmt: skip
MOTION_ADAPTER_V152 = {"_class_name": "MotionAdapter", "block_out_channels": [320, 640, 1280, 1280], "motion_layers_per_block": 2,
                       "motion_mid_block_layers_per_block": 1, "motion_num_attention_heads": 8, "motion_norm_num_groups": 32,
                       "motion_max_seq_length": 32, "use_motion_mid_block": True}  # fmt: skip
DDIM = {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
        "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "num_train_timesteps": 1000, "prediction_type": "epsilon"}  # fmt: skip


def _write(folder: Path, pipeline: str, parts: dict[str, dict[str, Any]]) -> Path:
    folder.mkdir(parents=True)
    index = {"_class_name": pipeline}
    for name, config in parts.items():
        (folder / name).mkdir()
        file = "scheduler_config.json" if name == "scheduler" else "config.json"
        library = "transformers" if name == "text_encoder" else "diffusers"
        (folder / name / file).write_text(json.dumps(config))
        index[name] = [library, config.get("_class_name", config.get("architectures", ["CLIPTextModel"])[0])]
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    index["tokenizer"] = ["transformers", "CLIPTokenizer"]
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def main() -> None:
    import torch
    from diffusers import MotionAdapter
    from safetensors.torch import save_file

    from text2video.pipelines.pretrained.describe import describe_model

    results: dict[str, Any] = {"machine": platform.platform(), "torch": torch.__version__, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        text_to_video = {"unet": MODELSCOPE_UNET, "vae": SD_VAE, "text_encoder": CLIP_VIT_H_TEXT, "scheduler": DDIM}
        _write(root / "text-to-video-ms-1.7b", "TextToVideoSDPipeline", text_to_video)
        _write(root / "zeroscope_v2_576w", "TextToVideoSDPipeline", text_to_video)
        _write(
            root / "stable-diffusion-v1-5",
            "StableDiffusionPipeline",
            {"unet": SD15_UNET, "vae": SD_VAE, "text_encoder": CLIP_VIT_L_TEXT, "scheduler": {**DDIM, "_class_name": "PNDMScheduler"}},
        )
        with torch.device("meta"):  # the adapter's tensors by shape only (its weights are read for their layout)
            adapter = MotionAdapter(**{k: v for k, v in MOTION_ADAPTER_V152.items() if not k.startswith("_")})
        (root / "adapter").mkdir()
        (root / "adapter" / "config.json").write_text(json.dumps(MOTION_ADAPTER_V152))
        save_file(
            {
                k: torch.zeros(1).expand(v.shape).contiguous() if v.numel() < 2**20 else torch.zeros(v.shape[:1])
                for k, v in adapter.state_dict().items()
            },
            str(root / "adapter" / "diffusion_pytorch_model.safetensors"),
        )
        runs = {
            "ModelScope text-to-video-ms-1.7b (256x256, 16 frames)": (root / "text-to-video-ms-1.7b", {}),
            "Zeroscope v2 576w (576x320, 24 frames)": (root / "zeroscope_v2_576w", {}),
            "AnimateDiff: SD 1.5 + motion adapter v1-5-2 (512x512, 16 frames)": (
                root / "stable-diffusion-v1-5",
                {"motion_adapter": root / "adapter"},
            ),
        }
        for name, (folder, options) in runs.items():
            facts = describe_model(str(folder), **options)
            results["models"][name] = {"parameters": facts["parameters"], "defaults": facts["defaults"], "memory": facts["memory"]}
            fp16 = facts["memory"]["float16"]
            print(f"{name}: {facts['parameters']['total'] / 1e9:.2f} B parameters; fp16 {fp16['total_gib']:.1f} GiB "
                  f"({fp16['total_offload_gib']:.1f} GiB with CPU offload)")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pretrained_memory.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
