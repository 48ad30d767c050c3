"""What a ``--model`` value is: text2video's own folders, diffusers pipeline folders, a
video-diffusion-pytorch checkpoint, or a Hugging Face Hub id, told apart from the files alone.

`detect_model` returns a `ModelSource` (the format and the local path), or raises one `ModelError` line
that names what is wrong with the folder and how to fix it. Nothing is loaded here except small JSON
files (and, for a ``.pt`` file, nothing at all: its contents are checked when it is loaded).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional

from ...errors import CheckpointError, ModelError

logger = logging.getLogger(__name__)

PIPELINE_FILE = "pipeline.json"
MODEL_INDEX = "model_index.json"

#: format name -> what it is, in words (``text2video info`` prints it).
FORMATS: MappingProxyType[str, str] = MappingProxyType(
    {
        "text2video-pipeline": "a text2video pipeline folder (pipeline.json)",
        "text2video-run": "a text2video training run (its latest checkpoint)",
        "text2video-checkpoint": "a checkpoint folder of a text2video training run",
        "diffusers-text-to-video": "a diffusers TextToVideoSDPipeline folder (ModelScope / Zeroscope)",
        "diffusers-animatediff": "a diffusers AnimateDiffPipeline folder",
        "diffusers-stable-diffusion": "a diffusers Stable Diffusion 1.x pipeline folder, animated with a motion adapter",
        "video-diffusion-pytorch": "a video-diffusion-pytorch trainer checkpoint (text2video-from-scratch)",
    }
)
#: model_index.json ``_class_name`` -> format, and the components each needs.
DIFFUSERS_PIPELINES: MappingProxyType[str, tuple[str, tuple[str, ...]]] = MappingProxyType(
    {
        "TextToVideoSDPipeline": ("diffusers-text-to-video", ("unet", "vae", "text_encoder", "tokenizer", "scheduler")),
        "AnimateDiffPipeline": ("diffusers-animatediff", ("unet", "vae", "text_encoder", "tokenizer", "scheduler")),
        "StableDiffusionPipeline": ("diffusers-stable-diffusion", ("unet", "vae", "text_encoder", "tokenizer", "scheduler")),
    }
)
#: the class each component's config must name, per pipeline class (None: any).
_COMPONENT_CLASSES: MappingProxyType[str, MappingProxyType[str, tuple[str, ...]]] = MappingProxyType(
    {
        "TextToVideoSDPipeline": MappingProxyType({"unet": ("UNet3DConditionModel",), "vae": ("AutoencoderKL",)}),
        "AnimateDiffPipeline": MappingProxyType(
            {"unet": ("UNet2DConditionModel", "UNetMotionModel"), "vae": ("AutoencoderKL",), "motion_adapter": ("MotionAdapter",)}
        ),
        "StableDiffusionPipeline": MappingProxyType({"unet": ("UNet2DConditionModel",), "vae": ("AutoencoderKL",)}),
    }
)
_COMPONENT_CONFIG = {"scheduler": "scheduler_config.json", "tokenizer": None}
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


@dataclass(frozen=True)
class ModelSource:
    """A detected model: ``format`` (a key of `FORMATS`), its local ``path``, what the user gave
    (``spec``: a path or a Hub id) and, for a diffusers folder, its ``model_index.json``."""

    format: str
    path: Path
    spec: str
    index: Optional[dict[str, Any]] = None

    @property
    def description(self) -> str:
        return FORMATS[self.format]

    @property
    def hub_id(self) -> Optional[str]:
        return None if Path(self.spec).expanduser().exists() else self.spec


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not readable JSON ({exc}); restore {what} (download the model again)") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object; restore {what} (download the model again)")
    return data


def _component_class(root: Path, name: str) -> Optional[str]:
    """The ``_class_name`` of component ``name``'s config (None when it has no config file)."""
    config_name = _COMPONENT_CONFIG.get(name, "config.json")
    if config_name is None:
        return None
    config = root / name / config_name
    if not config.is_file():
        return None
    return read_json(config, f"{name}/{config_name}").get("_class_name")


def _check_diffusers_folder(root: Path, index: dict[str, Any]) -> str:
    """The format of a diffusers pipeline folder, after checking that the parts it needs are there."""
    class_name = index.get("_class_name")
    if class_name not in DIFFUSERS_PIPELINES:
        raise ModelError(
            f"{root / MODEL_INDEX} names a {class_name or 'pipeline without _class_name'}; text2video runs "
            f"{', '.join(DIFFUSERS_PIPELINES)} folders (the last with --motion-adapter): pass one of those, "
            "or convert the model first"
        )
    fmt, needed = DIFFUSERS_PIPELINES[class_name]
    for name in needed:
        entry = index.get(name)
        folder = root / name
        if not (isinstance(entry, list) and entry and entry[0] is not None) or not folder.is_dir():
            raise CheckpointError(
                f"{root} is a {class_name} folder without its {name}/ part (it needs {', '.join(needed)}): the download "
                "is incomplete; download the model again, or pass the complete folder"
            )
        config_name = _COMPONENT_CONFIG.get(name, "config.json")
        if config_name is not None and not (folder / config_name).is_file():
            raise CheckpointError(
                f"{folder} has no {config_name}: the download is incomplete; download the model again, or pass the complete folder"
            )
        expected = _COMPONENT_CLASSES.get(class_name, {}).get(name)
        found = _component_class(root, name)
        if expected and found not in expected:
            raise ModelError(
                f"{folder} holds a {found}, but a {class_name} needs a {' or '.join(expected)} there; "
                f"model_index.json does not match the folder: pass a complete {class_name} folder"
            )
    if class_name == "AnimateDiffPipeline" and _component_class(root, "unet") == "UNet2DConditionModel":
        if not (root / "motion_adapter" / "config.json").is_file():
            raise CheckpointError(
                f"{root} is an AnimateDiffPipeline folder whose unet/ is an image UNet and it has no motion_adapter/: "
                "download the motion_adapter part too, or pass --motion-adapter DIR_OR_CKPT"
            )
    return fmt


def _is_checkpoint_dir(path: Path) -> bool:
    from ...runs.folder import run_of_checkpoint

    return run_of_checkpoint(path) is not None


def _bare_model_error(path: Path, config: dict[str, Any]) -> CheckpointError:
    name = config.get("_class_name") or config.get("model_type") or "model"
    if name == "MotionAdapter":
        return CheckpointError(
            f"{path} is an AnimateDiff MotionAdapter: pass it as --motion-adapter, with a Stable Diffusion 1.5 folder as --model"
        )
    return CheckpointError(
        f"{path} holds a bare {name} (config.json only), not a whole pipeline: pass the pipeline folder that holds it "
        "(with model_index.json), or a text2video pipeline folder (pipeline.json, see `text2video convert` / `export`)"
    )


#: text2video-from-scratch's trainer checkpoint names: ``model-N.pt`` (N: the milestone)
_SEED_CHECKPOINT = re.compile(r"^model-(\d+)\.pt$")


def newest_pt_checkpoint(folder: Path) -> Optional[Path]:
    """The newest trainer checkpoint in ``folder`` (text2video-from-scratch's ``saved_models/``: its
    ``model-N.pt`` files, the highest N), or None when it holds none."""
    found = [(int(m[1]), p) for p in folder.glob("model-*.pt") if (m := _SEED_CHECKPOINT.match(p.name)) and p.is_file()]
    return max(found)[1] if found else None


def detect_local(path: Path, spec: Optional[str] = None) -> ModelSource:
    """The format of the local file or folder ``path``."""
    spec = spec or str(path)
    if path.is_file():
        if path.suffix.lower() in _CHECKPOINT_SUFFIXES:
            return ModelSource("video-diffusion-pytorch", path, spec)
        raise CheckpointError(
            f"{path} is a {path.suffix or 'suffix-less'} file; --model takes a folder (text2video run, checkpoint or "
            "pipeline folder, a diffusers pipeline folder), a video-diffusion-pytorch .pt checkpoint, or a Hub id"
        )
    if (path / PIPELINE_FILE).is_file():
        return ModelSource("text2video-pipeline", path, spec)
    from ...runs.folder import is_run_dir

    if is_run_dir(path):
        return ModelSource("text2video-run", path, spec)
    if _is_checkpoint_dir(path):
        return ModelSource("text2video-checkpoint", path, spec)
    if (path / MODEL_INDEX).is_file():
        index = read_json(path / MODEL_INDEX, MODEL_INDEX)
        return ModelSource(_check_diffusers_folder(path, index), path, spec, index)
    if (path / "config.json").is_file():
        raise _bare_model_error(path, read_json(path / "config.json", "config.json"))
    newest = newest_pt_checkpoint(path)
    if newest is not None:  # a trainer's results folder: its newest checkpoint, as text2video-from-scratch's generate.py
        logger.info("%s: using its newest checkpoint %s", path, newest.name)
        return ModelSource("video-diffusion-pytorch", newest, spec)
    raise CheckpointError(
        f"{path} is not a model folder: it has no pipeline.json (a text2video pipeline), model_index.json (diffusers), "
        "config.yaml + checkpoints/ (a training run) or model-N.pt checkpoints (text2video-from-scratch's); pass one of those, or a Hub id like ali-vilab/text-to-video-ms-1.7b"
    )


def detect_model(spec: str | Path, *, revision: Optional[str] = None) -> ModelSource:
    """Detect the format of ``spec``: a local path, or a Hub id resolved (cache or download) first."""
    from .hub import looks_like_hub_id, resolve_hub_id

    path = Path(str(spec)).expanduser()
    if path.exists():
        return detect_local(path, str(spec))
    if looks_like_hub_id(spec):
        try:
            local = resolve_hub_id(str(spec), revision=revision)
        except ModelError as exc:  # it may as well be a mistyped local path: say both
            raise ModelError(f"{spec} is not a local file or folder, and as a Hugging Face Hub id: {exc}") from exc
        return detect_local(local, str(spec))
    raise CheckpointError(f"model {spec} does not exist: pass a local folder or file, or a Hugging Face Hub id (org/name)")
