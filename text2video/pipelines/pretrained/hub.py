"""Hugging Face Hub ids (``org/name``, or ``org/name/path/in/repo.ckpt`` for one file) as local paths.

Offline (``HF_HUB_OFFLINE=1``) an id resolves from the local cache only; online the files a pipeline
needs are downloaded into the cache (``HF_HOME``) with ``huggingface_hub``: the components text2video
uses (not safety checkers or feature extractors), and of each component's weights one copy (plain
safetensors before ``.bin``, before fp16 variants). When neither works, one `ModelError` line says why
and what to do (go online, log in, or pass a local folder).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional

from ...errors import ModelError

logger = logging.getLogger(__name__)

#: ``org/name`` or ``org/name/sub/file``: what a Hub reference looks like (and a local path does not).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*(/[^\s]+)?$")
#: components of a diffusers pipeline repo that text2video reads; other folders are not downloaded.
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "motion_adapter")
#: files marking the root of a cached snapshot, in the order they are looked for.
ROOT_MARKERS = ("model_index.json", "pipeline.json", "config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
_SKIPPED_SUFFIXES = (".onnx", ".onnx_data", ".msgpack", ".h5", ".ot", ".pb", ".tflite", ".mlmodel", ".gguf")
_VARIANTS = ("fp16", "bf16", "fp32", "ema", "non_ema", "noema")


def looks_like_hub_id(spec: str | Path) -> bool:
    """Whether ``spec`` is written like a Hub id (and is not an existing local path)."""
    text = str(spec)
    return not Path(text).expanduser().exists() and not text.startswith((".", "/", "~")) and bool(_HUB_ID.match(text))


def split_hub_id(spec: str) -> tuple[str, Optional[str]]:
    """``org/name[/file]`` -> (repo id, file path in the repo or None)."""
    parts = spec.split("/")
    return "/".join(parts[:2]), ("/".join(parts[2:]) or None)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _is_variant(name: str) -> bool:
    parts = name.split(".")
    return len(parts) > 2 and parts[-2] in _VARIANTS


def select_files(files: Iterable[str]) -> list[str]:
    """The files of a repo listing text2video needs: configs, tokenizer files, and one set of weights
    per folder (plain safetensors, else plain .bin, else a variant, else checkpoints)."""
    files = [f for f in files if not f.endswith(_SKIPPED_SUFFIXES)]
    if "model_index.json" in files:  # a diffusers pipeline: only the components we use
        files = [f for f in files if "/" not in f or PurePosixPath(f).parts[0] in COMPONENTS]
    chosen: list[str] = []
    by_folder: dict[str, list[str]] = {}
    for f in files:
        if f.endswith(WEIGHT_SUFFIXES):
            by_folder.setdefault(str(PurePosixPath(f).parent), []).append(f)
        elif not f.startswith(".") and "/." not in f:
            chosen.append(f)
    for weights in by_folder.values():
        tiers = (
            [w for w in weights if w.endswith(".safetensors") and not _is_variant(w)],
            [w for w in weights if w.endswith(".bin") and not _is_variant(w)],
            [w for w in weights if w.endswith(".safetensors")],
            [w for w in weights if w.endswith(".bin")],
            weights,
        )
        chosen.extend(next(t for t in tiers if t))
    return sorted(chosen)


def _from_cache(repo_id: str, filename: Optional[str], revision: Optional[str]) -> Optional[Path]:
    from huggingface_hub import try_to_load_from_cache

    for name in (filename,) if filename else ROOT_MARKERS:
        found = try_to_load_from_cache(repo_id, name, revision=revision)
        if isinstance(found, str):
            return Path(found) if filename else Path(found).parent
    return None


def _download(repo_id: str, filename: Optional[str], revision: Optional[str]) -> Path:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    if filename:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    files = select_files(HfApi().list_repo_files(repo_id, revision=revision))
    logger.info("downloading %d files of %s into %s", len(files), repo_id, _cache_dir())
    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=files))


def resolve_hub_id(spec: str, *, revision: Optional[str] = None) -> Path:
    """The local path of Hub id ``spec``: a snapshot folder, or one file for ``org/name/file``."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    repo_id, filename = split_hub_id(spec)
    if _offline():
        cached = _from_cache(repo_id, filename, revision)
        if cached is None:
            raise ModelError(
                f"{spec} is not in the local Hugging Face cache ({_cache_dir()}) and HF_HUB_OFFLINE=1 forbids "
                "downloading it: run once online (unset HF_HUB_OFFLINE), or pass a local folder"
            )
        return cached
    try:
        return _download(repo_id, filename, revision)
    except GatedRepoError as exc:
        raise ModelError(
            f"{repo_id} is gated on the Hugging Face Hub: accept its terms on huggingface.co/{repo_id} and log in "
            "(`hf auth login`, or set HF_TOKEN), or pass a local folder"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelError(
            f"{repo_id} is not on the Hugging Face Hub, or it is private: check the id, log in (`hf auth login`) "
            "if it is yours, or pass a local folder"
        ) from exc
    except RevisionNotFoundError as exc:
        raise ModelError(f"{repo_id} has no revision {revision!r}; pass an existing branch, tag or commit") from exc
    except Exception as exc:  # noqa: BLE001 - no connection, a proxy, a server error: the cache may still have it
        cached = _from_cache(repo_id, filename, revision)
        if cached is not None:
            logger.warning("cannot reach the Hugging Face Hub (%s); using the cached copy of %s", type(exc).__name__, spec)
            return cached
        raise ModelError(
            f"cannot download {spec} from the Hugging Face Hub ({type(exc).__name__}: {exc}) and it is not in the "
            f"local cache ({_cache_dir()}): check the connection (or HF_ENDPOINT), or pass a local folder"
        ) from exc
