"""Exceptions a user can cause. Each message names the thing that is wrong and how to fix it."""

from __future__ import annotations


class Text2VideoError(Exception):
    """Base class of every error text2video raises on purpose."""


class ConfigError(Text2VideoError, ValueError):
    """A bad config key or value, a missing preset, an impossible combination of settings."""


class DataError(Text2VideoError):
    """A dataset that cannot be used: missing folder, no readable item, bad manifest."""


class VideoReadError(Text2VideoError):
    """A video or image file that is missing, corrupt, truncated or of an unknown format."""


class ModelError(Text2VideoError, ValueError):
    """A model that cannot be built, loaded or called as asked (unknown name, wrong shape)."""


class CheckpointError(Text2VideoError):
    """A checkpoint or run folder that cannot be read or written."""


class TextEncoderError(Text2VideoError):
    """A text encoder that cannot be found or loaded, or does not fit the model."""


class RunFolderError(CheckpointError):
    """A run folder that cannot be trained into as asked: it already holds a run, or it is not writable."""


class RunLockedError(RunFolderError):
    """A run folder another training process is using (its lock names the process)."""


class DiskFullError(CheckpointError):
    """No space left to write a checkpoint; the previous one is intact."""


class NonFiniteError(Text2VideoError):
    """A NaN or infinite number where only finite ones may go: weights about to be saved, a sampled video."""
