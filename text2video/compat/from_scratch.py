"""text2video-from-scratch's ``configs/default.yaml``, read as a text2video config.

The seed's file has four top-level entries: ``training_data_dir``, ``model`` (``Unet3D``'s arguments),
``diffusion`` (``GaussianDiffusion``'s) and ``trainer`` (its ``Trainer``'s). `migrate` starts from the
``text2video-from-scratch`` preset (the seed's settings, with its defects fixed) and moves every key of the
file to its text2video name (`KEY_MAP`); each move is one line of `Migration.notes`, which ``train --config``
prints and ``text2video config migrate`` writes at the top of the new YAML, so the user learns the new names.

Changed on purpose (said in the notes, docs/compat.md): the seed's default of 10 diffusion timesteps becomes
1000 and its checkpoint every 10 steps one every 1000; the text condition is dropped for 10% of the samples
(``train.cond_drop``) so that guidance has a learned null condition to push from; BERT-base becomes the
offline MiniLM unless a BERT folder is named with ``text.encoder``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from ..config import Config, apply_overrides, config_from_dict, load_config
from ..errors import ConfigError

PRESET = "text2video-from-scratch"
#: the seed's top-level entries; a file with ``trainer`` or ``training_data_dir`` and none of ours is the seed's.
SEED_KEYS = ("training_data_dir", "model", "diffusion", "trainer")
_OUR_SECTIONS = ("data", "text", "latent", "train", "sample")

#: seed key -> text2video key (``None``: no key of ours; see the note of `_SPECIAL`).
KEY_MAP: dict[str, Optional[str]] = {
    "training_data_dir": "data.options.root",
    "model.dim": "model.dim",
    "model.dim_mults": "model.dim_mults",
    "model.init_dim": "model.init_dim",
    "model.init_kernel_size": "model.init_kernel_size",
    "model.use_sparse_linear_attn": "model.use_sparse_linear_attn",
    "model.block_type": "model.block_type",
    "model.attn_heads": "model.attn_heads",
    "model.attn_dim_head": "model.attn_dim_head",
    "model.out_dim": "model.out_dim",
    "model.cond_dim": "model.cond_dim",
    "model.channels": "data.channels",
    "model.use_bert_text_cond": "text.encoder",
    "diffusion.image_size": "data.size",
    "diffusion.num_frames": "data.num_frames",
    "diffusion.channels": "data.channels",
    "diffusion.timesteps": "diffusion.num_train_timesteps",
    "diffusion.loss_type": "diffusion.loss_type",
    "diffusion.use_dynamic_thres": "sample.dynamic_threshold",
    "diffusion.dynamic_thres_percentile": "sample.dynamic_threshold",
    "trainer.ema_decay": "train.ema_decay",
    "trainer.train_batch_size": "train.batch_size",
    "trainer.train_lr": "train.lr",
    "trainer.train_num_steps": "train.steps",
    "trainer.gradient_accumulate_every": "train.grad_accum",
    "trainer.amp": "train.mixed_precision",
    "trainer.step_start_ema": "train.ema_start",
    "trainer.update_ema_every": "train.ema_every",
    "trainer.save_model_every": "train.save_every",
    "trainer.max_grad_norm": "train.max_grad_norm",
    "trainer.results_folder": None,
    "trainer.num_sample_rows": None,
}
#: the seed's defaults that were defects, and what they become
SEED_TIMESTEPS, OUR_TIMESTEPS = 10, 1000
SEED_SAVE_EVERY, OUR_SAVE_EVERY = 10, 1000


@dataclass
class Migration:
    """A seed config moved to text2video's names: ``data`` (nested dict), one note per key moved or changed,
    and the run folder the seed's ``trainer.results_folder`` named (None when it did not)."""

    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    run_dir: Optional[str] = None

    def config(self, overrides: Optional[list[str]] = None) -> Config:
        """The validated config, with dotted ``overrides`` applied on top."""
        import copy

        return config_from_dict(apply_overrides(copy.deepcopy(self.data), list(overrides or [])))

    def to_yaml(self) -> str:
        """The whole new config as YAML, the migration notes at its top as comments."""
        header = ["# migrated from a text2video-from-scratch config by `text2video config migrate`:"]
        header += [f"#   {line}" for line in self.notes]
        if self.run_dir:
            header.append(f"# train it with: text2video train --config THIS_FILE --run-dir {self.run_dir}")
        return "\n".join(header) + "\n" + self.config().to_yaml()


def is_seed_config(data: Any) -> bool:
    """Whether a loaded YAML mapping is text2video-from-scratch's layout rather than ours."""
    if not isinstance(data, dict):
        return False
    return any(k in data for k in ("training_data_dir", "trainer")) and not any(k in data for k in _OUR_SECTIONS)


def _show(value: Any) -> str:
    """A value as YAML writes it (null, true, [1, 2])."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _flatten(seed: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in seed.items():
        if key in ("model", "diffusion", "trainer"):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _text_encoder(value: Any) -> tuple[str, str]:
    if value:
        return "default", "text.encoder: default (the offline MiniLM; name a BERT folder with text.encoder=DIR for bert-base-cased)"
    return "none", "text.encoder: none (an unconditional model: no text encoder, generate needs no prompt)"


def _mixed_precision(value: Any) -> tuple[str, str]:
    return ("fp16" if value else "no"), f"train.mixed_precision: {'fp16' if value else 'no'}"


#: keys whose value changes form on the way (value -> (new value, note text))
_SPECIAL: dict[str, Callable[[Any], tuple[Any, str]]] = {
    "model.use_bert_text_cond": _text_encoder,
    "trainer.amp": _mixed_precision,
}


def migrate(seed: dict[str, Any]) -> Migration:
    """Move a text2video-from-scratch config (a loaded YAML mapping) to text2video's names (see the module doc)."""
    unknown_top = sorted(set(seed) - set(SEED_KEYS))
    if unknown_top:
        raise ConfigError(
            f"{unknown_top[0]!r} is not a text2video-from-scratch config entry (those are {', '.join(SEED_KEYS)}); "
            "is this a text2video config? Its sections are data, text, model, diffusion, train, sample"
        )
    data = yaml.safe_load(load_config(PRESET).to_yaml())
    out = Migration(data, [f"started from the {PRESET} preset (the seed's defaults, its defects fixed)"])
    flat = _flatten(seed)
    unknown = sorted(k for k in flat if k not in KEY_MAP and not k.startswith("model."))
    if unknown:
        allowed = ", ".join(k for k in KEY_MAP if k.split(".")[0] == unknown[0].split(".")[0])
        raise ConfigError(f"unknown text2video-from-scratch setting {unknown[0]!r}; known ones there: {allowed}")
    if "training_data_dir" in flat:
        data["data"]["kind"] = "folder"
        data["data"]["options"] = {"root": str(flat["training_data_dir"])}
    threshold = flat.get("diffusion.dynamic_thres_percentile", 0.9)
    for key, value in flat.items():
        new = KEY_MAP.get(key, key)  # other Unet3D arguments keep their name under model
        shown = _show(value)
        if key == "training_data_dir":
            out.notes.append(f"training_data_dir: {shown} -> data.kind: folder, data.options.root: {shown}")
        elif key == "trainer.results_folder":
            out.run_dir = str(value)
            out.notes.append(f"trainer.results_folder: {value} -> the run folder: --run-dir {value}")
        elif key == "trainer.num_sample_rows":
            out.notes.append(f"trainer.num_sample_rows: {shown} -> sample.prompts (one video per prompt in the sample grid)")
        elif key == "diffusion.use_dynamic_thres":
            data["sample"]["dynamic_threshold"] = float(threshold) if value else None
            result = f"{float(threshold):g}" if value else "null"
            out.notes.append(
                f"diffusion.use_dynamic_thres + dynamic_thres_percentile -> sample.dynamic_threshold: {result} (used when sampling)"
            )
        elif key == "diffusion.dynamic_thres_percentile":
            continue  # with use_dynamic_thres
        elif key == "diffusion.timesteps" and value == SEED_TIMESTEPS:
            _set(data, "diffusion.num_train_timesteps", OUR_TIMESTEPS)
            out.notes.append(
                f"diffusion.timesteps: {value} -> diffusion.num_train_timesteps: {OUR_TIMESTEPS} (changed on purpose: {value} steps "
                f"cannot make a video; set diffusion.num_train_timesteps={value} to keep the seed's)"
            )
        elif key == "trainer.save_model_every" and value == SEED_SAVE_EVERY:
            _set(data, "train.save_every", OUR_SAVE_EVERY)
            out.notes.append(
                f"trainer.save_model_every: {value} -> train.save_every: {OUR_SAVE_EVERY} (changed on purpose: a checkpoint every "
                f"{value} steps is mostly writing; set train.save_every={value} to keep it)"
            )
        elif key in _SPECIAL:
            converted, note = _SPECIAL[key](value)
            _set(data, new, converted)
            out.notes.append(f"{key}: {shown} -> {note}")
        else:
            _set(data, new, value)
            out.notes.append(f"{key}: {shown} -> {new}: {shown}" if new != key else f"{key}: {shown} (same name)")
    out.notes.append(
        f"train.cond_drop: {data['train']['cond_drop']} (added on purpose: the seed never drops the text, so guidance had no learned null condition)"
    )
    return out


def read_yaml(path: str | Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path}: invalid YAML ({exc})") from exc
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read it ({exc})") from exc


def migrate_file(path: str | Path) -> Migration:
    """`migrate` the text2video-from-scratch YAML file ``path`` (a `ConfigError` when it is not one)."""
    data = read_yaml(path)
    if not is_seed_config(data):
        raise ConfigError(
            f"{path} is not a text2video-from-scratch config (no trainer or training_data_dir entry); "
            "it needs no migration: pass it to `text2video train --config` as it is"
        )
    return migrate(data)


def load_any_config(source: str | Path, overrides: Optional[list[str]] = None) -> tuple[Config, Optional[Migration]]:
    """A preset or YAML file of either layout: ``(config, None)`` for ours, ``(config, migration)`` for the seed's."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        data = read_yaml(path)
        if is_seed_config(data):
            migration = migrate(data)
            return migration.config(overrides), migration
    return load_config(source, overrides), None


__all__ = ["KEY_MAP", "Migration", "is_seed_config", "load_any_config", "migrate", "migrate_file"]
