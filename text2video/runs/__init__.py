"""A training run folder: its config, its checkpoints, its lock (one training process at a time), its VAE, and
the model its config describes.

Written by `text2video.train`, read by the trainer (resume) and by `text2video.pipelines.from_run`.
"""
