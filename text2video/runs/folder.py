"""What makes a folder a run folder: its ``config.yaml`` and ``checkpoints/`` (see `text2video.runs.checkpoint`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..config import Config, config_from_dict
from ..errors import CheckpointError
from .checkpoint import CHECKPOINTS, STATE_FILE

RUN_CONFIG = "config.yaml"


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / RUN_CONFIG).is_file() and (path / CHECKPOINTS).is_dir()


def run_of_checkpoint(path: str | Path) -> Optional[Path]:
    """The run folder of a checkpoint folder (``RUN/checkpoints/step-N``), or None when ``path`` is not one."""
    path = Path(path)
    run = path.parent.parent
    if (path / STATE_FILE).is_file() and is_run_dir(run):
        return run
    return None


def read_run_config(run_dir: str | Path) -> Config:
    import yaml

    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run folder: it has no {RUN_CONFIG} (train into it with `text2video train`)")
    return config_from_dict(yaml.safe_load(path.read_text()) or {})
