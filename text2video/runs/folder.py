"""What makes a folder a run folder: its ``config.yaml`` and ``checkpoints/`` (see `text2video.runs.checkpoint`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from ..config import Config, config_from_dict
from ..errors import CheckpointError, RunFolderError
from ..io.text import read_text
from .checkpoint import CHECKPOINTS, RUN_RECORD, STATE_FILE, list_checkpoints

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
    try:
        data = yaml.safe_load(read_text(path, "run config"))
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{path} is not a readable YAML config ({exc}); restore it from a copy of the run") from exc
    return config_from_dict(data or {})


#: What a training run writes into its folder; ``--overwrite`` removes these (the content-addressed
#: ``text_cache/`` and ``latent_cache/`` stay: their entries are keyed by what they hold).
RUN_ARTIFACTS = (RUN_CONFIG, RUN_RECORD, "metrics.csv", "loss.png", "samples", "tensorboard", CHECKPOINTS, "vae")


def existing_run(run_dir: str | Path) -> Optional[str]:
    """What of an earlier run ``run_dir`` holds, in words, or None when it holds none."""
    run_dir = Path(run_dir)
    found = [name for name in (RUN_CONFIG, "metrics.csv") if (run_dir / name).is_file()]
    checkpoints = list_checkpoints(run_dir, own=False)
    if checkpoints:
        found.insert(0, f"{len(checkpoints)} checkpoint{'s' if len(checkpoints) > 1 else ''}, newest {checkpoints[-1].name}")
    return ", ".join(found) if found else None


def refuse_existing_run(run_dir: str | Path) -> None:
    """Raise `RunFolderError` when ``run_dir`` already holds a run (training into it afresh would destroy it)."""
    held = existing_run(run_dir)
    if held is None:
        return
    if list_checkpoints(run_dir, own=False):
        raise RunFolderError(
            f"{run_dir} already holds a run ({held}); continue it with --resume latest, or start over with --overwrite "
            "(deletes its checkpoints, metrics and samples), or choose another --run-dir"
        )
    raise RunFolderError(
        f"{run_dir} holds an earlier run that saved no checkpoint ({held}); start over with --overwrite, or choose another --run-dir"
    )


def clear_run(run_dir: str | Path) -> list[str]:
    """Remove what an earlier run wrote into ``run_dir`` (`RUN_ARTIFACTS`); other files stay. Returns the removed names."""
    run_dir = Path(run_dir)
    removed = []
    for name in RUN_ARTIFACTS:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed
