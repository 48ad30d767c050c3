"""Evaluation: the shapes prompt-adherence judge (`adherence`), Fréchet distances (`frechet`), FVD / FID /
PSNR / SSIM / CLIP similarity (`metrics`), reports (`report`) and the judge's validation (`validate`).
See docs/evaluation.md."""
