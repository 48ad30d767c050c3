"""Import diffusers' ``DiTTransformer2DModel`` weights into `SegDiTTransformer2DModel`.

diffusers keeps a copy of the timestep and class embedding inside every block
(``transformer_blocks.N.norm1.emb.*``); DiT and text2video share one. The importer checks that all
copies are equal (they are in checkpoints converted from the original DiT), keeps one, and raises a
`ModelError` naming the first block that differs otherwise. diffusers' timestep code uses
``downscale_freq_shift=1``, so the imported model is built with ``timestep_freq_shift=1``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ...errors import ModelError
from ..segdit import SegDiTTransformer2DModel

log = logging.getLogger(__name__)

_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")

#: diffusers name inside a block -> ours inside ``blocks.N``.
_BLOCK_NAMES = {
    "norm1.linear": "modulation.linear",
    "attn1.to_q": "attn.to_q",
    "attn1.to_k": "attn.to_k",
    "attn1.to_v": "attn.to_v",
    "attn1.to_out.0": "attn.to_out",
    "ff.net.0.proj": "mlp.fc1",
    "ff.net.2": "mlp.fc2",
}

#: diffusers name of the shared embedding (inside ``norm1.emb``) -> ours.
_EMB_NAMES = {
    "timestep_embedder.linear_1": "t_embedder.linear_1",
    "timestep_embedder.linear_2": "t_embedder.linear_2",
    "class_embedder.embedding_table": "class_embedder.embedding_table",
}

_TOP_NAMES = {
    "pos_embed.proj": "patch_embed",
    "proj_out_1": "final_layer.modulation.linear",
    "proj_out_2": "final_layer.linear",
}


def config_from_diffusers(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Our constructor arguments for a diffusers ``DiTTransformer2DModel`` config."""
    if cfg.get("norm_type", "ada_norm_zero") != "ada_norm_zero":
        raise ModelError(f"only ada_norm_zero DiT checkpoints can be imported, this one has norm_type={cfg['norm_type']!r}")
    if cfg.get("activation_fn", "gelu-approximate") != "gelu-approximate":
        raise ModelError(f"unsupported activation_fn {cfg['activation_fn']!r} (DiT uses 'gelu-approximate')")
    if cfg.get("norm_elementwise_affine", False):
        raise ModelError("DiT checkpoints with norm_elementwise_affine=True are not supported")
    in_ch = cfg.get("in_channels", 4)
    out_ch = cfg.get("out_channels") or in_ch
    return dict(
        num_attention_heads=cfg.get("num_attention_heads", 16),
        attention_head_dim=cfg.get("attention_head_dim", 72),
        in_channels=in_ch,
        out_channels=out_ch,
        num_layers=cfg.get("num_layers", 28),
        dropout=cfg.get("dropout", 0.0),
        attention_bias=cfg.get("attention_bias", True),
        sample_size=cfg.get("sample_size", 32),
        patch_size=cfg.get("patch_size", 2),
        num_embeds_ada_norm=cfg.get("num_embeds_ada_norm", 1000),
        norm_eps=cfg.get("norm_eps", 1e-5),
        learn_sigma=out_ch == 2 * in_ch,
        timestep_freq_shift=1.0,
    )


def convert_state_dict(state: Mapping[str, torch.Tensor], num_layers: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Rename a diffusers DiT state dict to ours, folding the per-block embeddings into one.

    Returns the new state dict and a report. Raises `ModelError` if the embedding copies differ.
    """
    out: dict[str, torch.Tensor] = {}
    emb_copies: dict[str, dict[int, torch.Tensor]] = {}
    unused: list[str] = []
    for key, value in state.items():
        if key == "pos_embed.pos_embed":
            continue  # fixed sin-cos table; we compute it from the input size
        name, _, leaf = key.rpartition(".")
        m = _BLOCK.match(name)
        if m:
            idx, inner = int(m.group(1)), m.group(2)
            if inner.startswith("norm1.emb."):
                emb_copies.setdefault(inner[len("norm1.emb.") :] + "." + leaf, {})[idx] = value
            elif inner in _BLOCK_NAMES:
                out[f"blocks.{idx}.{_BLOCK_NAMES[inner]}.{leaf}"] = value
            else:
                unused.append(key)
        elif name in _TOP_NAMES:
            out[f"{_TOP_NAMES[name]}.{leaf}"] = value
        else:
            unused.append(key)
    if unused:
        raise ModelError(f"diffusers DiT checkpoint has keys the importer does not know: {unused[:5]}")
    for emb_key, copies in emb_copies.items():
        if sorted(copies) != list(range(num_layers)):
            raise ModelError(f"embedding {emb_key!r} is missing from some blocks: found copies in {sorted(copies)}")
        first = copies[0]
        for idx in range(1, num_layers):
            if copies[idx].shape != first.shape or not torch.equal(copies[idx], first):
                diff = (copies[idx].float() - first.float()).abs().max().item() if copies[idx].shape == first.shape else "shape"
                raise ModelError(
                    f"the timestep/class embedding copies of this diffusers DiT disagree: block {idx}'s "
                    f"norm1.emb.{emb_key} differs from block 0's (max abs difference {diff}). text2video's DiT "
                    "shares one embedding, so it cannot hold this checkpoint exactly; fine-tuned per-block "
                    "embeddings are not supported"
                )
        module, _, leaf = emb_key.rpartition(".")
        if module not in _EMB_NAMES:
            raise ModelError(f"unknown embedding parameter norm1.emb.{emb_key} in the diffusers DiT checkpoint")
        out[f"{_EMB_NAMES[module]}.{leaf}"] = first
    report = {"embedding_copies_checked": num_layers, "embedding_copies_equal": True, "tensors": len(out)}
    return out, report


def from_diffusers_dit(model: Any) -> SegDiTTransformer2DModel:
    """A `SegDiTTransformer2DModel` holding the weights of an in-memory diffusers ``DiTTransformer2DModel``."""
    cfg = config_from_diffusers(dict(model.config))
    ours = SegDiTTransformer2DModel(**cfg)
    state, _ = convert_state_dict(model.state_dict(), cfg["num_layers"])
    _load_strict(ours, state)
    dtype = next(model.parameters()).dtype
    return ours if dtype == torch.float32 else ours.to(dtype=dtype)


def _load_strict(model: SegDiTTransformer2DModel, state: Mapping[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    if missing or unexpected:
        raise ModelError(f"diffusers DiT weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _read_state(src: Path) -> dict[str, torch.Tensor]:
    if src.is_dir():
        candidates = sorted(src.glob("*.safetensors")) or sorted(src.glob("*.bin"))
        if not candidates:
            raise ModelError(f"{src} holds no .safetensors or .bin weights of a diffusers DiT")
        state: dict[str, torch.Tensor] = {}
        for file in candidates:
            state.update(_read_state(file))
        return state
    if src.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(src))
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ModelError(f"cannot read DiT weights from {src}: {str(exc).strip().splitlines()[0][:200]}") from exc


def convert(src: Path, out: Path, **opts: Any) -> dict[str, Any]:
    """Convert a diffusers DiT (a ``save_pretrained`` folder with config.json, or a state dict file
    plus ``config=dict`` in ``opts``) into a `SegDiTTransformer2DModel` folder at ``out``."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise ModelError(f"diffusers DiT checkpoint {src} does not exist")
    cfg = opts.get("config")
    config_file = src / "config.json" if src.is_dir() else src.with_name("config.json")
    if cfg is None:
        if not config_file.is_file():
            raise ModelError(f"no config.json next to {src}; pass the diffusers config as config=dict(...)")
        cfg = json.loads(config_file.read_text())
    ours_cfg = config_from_diffusers(cfg)
    state, report = convert_state_dict(_read_state(src), ours_cfg["num_layers"])
    model = SegDiTTransformer2DModel(**ours_cfg)
    _load_strict(model, state)
    model.save_pretrained(str(out))
    log.info("converted diffusers DiT %s -> %s (%d embedding copies agree)", src, out, ours_cfg["num_layers"])
    report.update(config=ours_cfg, source=str(src), out=str(out))
    return report
