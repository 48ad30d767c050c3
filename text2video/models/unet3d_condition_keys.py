"""Key and config mapping from diffusers' UNets (``UNet2DConditionModel``, ``MotionAdapter``,
``UNet3DConditionModel``) and the original AnimateDiff motion checkpoints to `UNet3DConditionModel`.

The layouts differ from ours only in names: ``to_out.0`` -> ``to_out``, ``ff.net.0.proj`` /
``ff.net.2`` -> ``ff.proj_in`` / ``ff.proj_out``, ``downsamplers.0`` / ``upsamplers.0`` ->
``downsample`` / ``upsample``, ModelScope's ``temp_convs.J`` -> ``resnets.J.temporal_conv`` and
``temp_attentions`` -> ``motion_modules``; 1x1-convolution projections become linear weights, and the
fixed sinusoid tables (``pos_embed.pe``) are recomputed rather than loaded.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from ..errors import CheckpointError, ModelError

logger = logging.getLogger(__name__)

_RENAMES = (
    (".to_out.0.", ".to_out."),
    (".ff.net.0.proj.", ".ff.proj_in."),
    (".ff.net.2.", ".ff.proj_out."),
    (".downsamplers.0.", ".downsample."),
    (".upsamplers.0.", ".upsample."),
    (".temp_attentions.", ".motion_modules."),
)
_TEMP_CONV = re.compile(r"\.temp_convs\.(\d+)\.conv(\d)\.(\d)\.")


def diffusers_key(key: str) -> str | None:
    """Our name of a diffusers UNet / MotionAdapter parameter (None: not a parameter we keep)."""
    if key.endswith("pos_embed.pe") or key.endswith("pos_encoder.pe"):
        return None
    for old, new in _RENAMES:
        key = key.replace(old, new)
    match = _TEMP_CONV.search(key)
    if match:
        layer, stage, index = match.groups()
        part = "norm" if index == "0" else "conv"
        key = key[: match.start()] + f".resnets.{layer}.temporal_conv.{part}{stage}." + key[match.end() :]
    return key


_OUR_TEMP_CONV = re.compile(r"\.resnets\.(\d+)\.temporal_conv\.(norm|conv)(\d)\.")


def to_diffusers_key(key: str, modelscope: bool = False) -> str:
    """The diffusers name of one of our parameter or module names (the inverse of `diffusers_key` for the names
    both have): in ``UNetMotionModel``'s layout (motion modules keep the name ``motion_modules``), or with
    ``modelscope`` in ``UNet3DConditionModel``'s (``temp_attentions``, ``temp_convs``)."""
    key = f".{key}."
    for old, new in _RENAMES[:5]:
        key = key.replace(new, old)
    if modelscope:
        key = key.replace(".motion_modules.", ".temp_attentions.")
        # TemporalConvLayer: conv1 = (norm, SiLU, conv), conv2..4 = (norm, SiLU, dropout, conv)
        key = _OUR_TEMP_CONV.sub(lambda m: f".temp_convs.{m[1]}.conv{m[3]}.{0 if m[2] == 'norm' else (2 if m[3] == '1' else 3)}.", key)
    return key[1:-1]


def original_animatediff_key(key: str) -> str:
    """Diffusers ``MotionAdapter`` name of a key in the original AnimateDiff checkpoint layout."""
    for old, new in (
        (".temporal_transformer.", "."),
        (".attention_blocks.0.", ".attn1."),
        (".attention_blocks.1.", ".attn2."),
        (".norms.0.", ".norm1."),
        (".norms.1.", ".norm2."),
        (".ff_norm.", ".norm3."),
    ):
        key = key.replace(old, new)
    return key


def to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers state dict and reshape 1x1-conv projections to linear weights."""
    out = {}
    for key, value in state.items():
        new = diffusers_key(key)
        if new is None:
            continue
        if (new.endswith("proj_in.weight") or new.endswith("proj_out.weight")) and value.ndim == 4:
            value = value[:, :, 0, 0]
        out[new] = value
    return out


# ---------------------------------------------------------------- reading sources
def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a model folder or a .safetensors / .ckpt / .bin file")
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        if not files:
            raise CheckpointError(f"{path} holds no .safetensors or .bin weights")
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(_read_weights(f))
        return state
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        raise CheckpointError(f"cannot read {path} as a tensor checkpoint (weights_only): {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state


def _unet_folder(path: Path) -> Path:
    """A diffusers UNet folder, or the ``unet`` sub-folder of a pipeline folder."""
    if (path / "config.json").is_file():
        return path
    if (path / "unet" / "config.json").is_file():
        return path / "unet"
    raise CheckpointError(f"{path} is not a diffusers UNet folder (no config.json, no unet/config.json)")


def _load_diffusers_model(source: Union[str, Path, nn.Module], cls_name: str, also: tuple[str, ...] = ()) -> nn.Module:
    """A diffusers model instance, or one loaded from its folder (class ``cls_name`` or one of ``also``)."""
    if isinstance(source, nn.Module):
        return source
    import diffusers

    folder = _unet_folder(Path(source))
    found = json.loads((folder / "config.json").read_text()).get("_class_name", cls_name)
    if found not in (cls_name, *also):
        raise CheckpointError(f"{folder} holds a {found}, expected a {' or '.join((cls_name, *also))}")
    return getattr(diffusers, found).from_pretrained(str(folder))


# ---------------------------------------------------------------- UNet2DConditionModel
def _check_supported(config: dict[str, Any], kind: str) -> None:
    problems = []
    for key, ok in (
        ("class_embed_type", None),
        ("addition_embed_type", None),
        ("encoder_hid_dim", None),
        ("time_cond_proj_dim", None),
    ):
        if config.get(key, ok) != ok:
            problems.append(f"{key}={config[key]!r}")
    if config.get("act_fn", "silu") != "silu":
        problems.append(f"act_fn={config['act_fn']!r}")
    if config.get("resnet_time_scale_shift", "default") != "default":
        problems.append(f"resnet_time_scale_shift={config['resnet_time_scale_shift']!r}")
    if config.get("only_cross_attention") not in (None, False) or config.get("dual_cross_attention") not in (None, False):
        problems.append("only/dual cross-attention")
    if not isinstance(config.get("cross_attention_dim", 768), int):
        problems.append("per-block cross_attention_dim")
    if not isinstance(config.get("layers_per_block", 2), int):
        problems.append("per-block layers_per_block")
    if not isinstance(config.get("transformer_layers_per_block", 1), int):
        problems.append("per-block transformer_layers_per_block")
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") not in ("UNetMidBlock2DCrossAttn", None):
        problems.append(f"mid_block_type={config['mid_block_type']!r}")
    for key in ("conv_in_kernel", "conv_out_kernel"):
        if config.get(key, 3) != 3:
            problems.append(f"{key}={config[key]}")
    if config.get("time_embedding_type", "positional") != "positional":
        problems.append(f"time_embedding_type={config['time_embedding_type']!r}")
    if problems:
        raise ModelError(f"this {kind} uses features UNet3DConditionModel does not have: {', '.join(problems)}")


def unet2d_config(config: dict[str, Any]) -> dict[str, Any]:
    """Our config for an SD-1.x-style ``UNet2DConditionModel`` config."""
    _check_supported(config, "UNet2DConditionModel")
    kinds = {
        "CrossAttnDownBlock2D": "CrossAttnDownBlock3D",
        "DownBlock2D": "DownBlock3D",
        "CrossAttnUpBlock2D": "CrossAttnUpBlock3D",
        "UpBlock2D": "UpBlock3D",
        "CrossAttnDownBlockMotion": "CrossAttnDownBlock3D",
        "DownBlockMotion": "DownBlock3D",
        "CrossAttnUpBlockMotion": "CrossAttnUpBlock3D",
        "UpBlockMotion": "UpBlock3D",
    }
    try:
        down = [kinds[k] for k in config["down_block_types"]]
        up = [kinds[k] for k in config["up_block_types"]]
    except KeyError as exc:
        raise ModelError(f"unsupported UNet block type {exc.args[0]!r}; supported: {sorted(kinds)}") from None
    heads = config.get("num_attention_heads") or config.get("attention_head_dim") or 8
    return dict(
        in_channels=config["in_channels"],
        out_channels=config["out_channels"],
        block_out_channels=tuple(config["block_out_channels"]),
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        layers_per_block=config["layers_per_block"],
        transformer_layers_per_block=config.get("transformer_layers_per_block", 1),
        num_attention_heads=heads if isinstance(heads, int) else tuple(heads),
        cross_attention_dim=config["cross_attention_dim"],
        norm_num_groups=config["norm_num_groups"],
        norm_eps=config["norm_eps"],
        downsample_padding=config.get("downsample_padding", 1),
        mid_block_scale_factor=config.get("mid_block_scale_factor", 1.0),
        flip_sin_to_cos=config.get("flip_sin_to_cos", True),
        freq_shift=config.get("freq_shift", 0),
        motion_norm_num_groups=config["norm_num_groups"],
        sample_size=config.get("sample_size"),
    )


# ---------------------------------------------------------------- motion adapters
def read_motion_source(source: Union[str, Path, nn.Module, dict]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Motion weights in diffusers ``MotionAdapter`` naming, and what is known of their config."""
    config: dict[str, Any] = {}
    if isinstance(source, nn.Module):
        state = source.state_dict()
        config = dict(getattr(source, "config", {}) or {})
    elif isinstance(source, dict):
        state = source
    else:
        path = Path(source)
        state = _read_weights(path)
        if path.is_dir() and (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text())
    if config.get("conv_in_channels"):
        raise ModelError("PIA-style motion adapters (conv_in_channels) are not supported by UNet3DConditionModel")
    if any(".temporal_transformer." in k or ".attention_blocks." in k for k in state):
        state = {original_animatediff_key(k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if ".motion_modules." in k or k.startswith("mid_block.")}
    if not state:
        raise CheckpointError("no motion-module weights found (expected keys like down_blocks.0.motion_modules.0...)")
    return state, config


def infer_motion_config(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, Any]:
    """Our motion options from an adapter's config (diffusers) or its weights (original layout)."""
    layers = {int(m.group(1)) for k in state if (m := re.search(r"^down_blocks\.0\.motion_modules\.0\.transformer_blocks\.(\d+)\.", k))}
    pe = [v for k, v in state.items() if k.endswith(".pe")]
    out: dict[str, Any] = {
        "use_motion_modules": True,
        "motion_mid_block": any(k.startswith("mid_block.") for k in state),
        "motion_layers": max(layers) + 1 if layers else 1,
        "motion_positional_embedding": "sinusoidal",
        "motion_in_plain_blocks": True,
    }
    if pe:
        out["motion_max_seq_length"] = int(pe[0].shape[1])
    if config:
        heads = config.get("motion_num_attention_heads", 8)
        out["motion_num_attention_heads"] = heads if isinstance(heads, int) else tuple(heads)
        out["motion_max_seq_length"] = config.get("motion_max_seq_length", out.get("motion_max_seq_length", 32))
        out["motion_norm_num_groups"] = config.get("motion_norm_num_groups", 32)
        layers_cfg = config.get("motion_transformer_layers_per_block", 1)
        if not isinstance(layers_cfg, int):
            raise ModelError("motion adapters with per-block motion_transformer_layers_per_block are not supported")
    return out


def load_motion_state(model: nn.Module, source: Union[str, Path, nn.Module, dict], strict: bool = True) -> list[str]:
    """Load motion weights into ``model``'s motion modules; returns the parameter names loaded."""
    state, _ = read_motion_source(source)
    ours = to_ours(state)
    own = dict(model.named_parameters())
    motion_names = {n for n in own if ".motion_modules." in n}
    unexpected = sorted(set(ours) - motion_names)
    missing = sorted(motion_names - set(ours))
    if unexpected or (strict and missing):
        raise CheckpointError(
            "motion weights do not fit this model "
            f"(unexpected: {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}, "
            f"missing: {missing[:4]}{'...' if len(missing) > 4 else ''}); check layers_per_block, widths and motion options"
        )
    with torch.no_grad():
        for name, value in ours.items():
            if own[name].shape != value.shape:
                raise CheckpointError(f"motion weight {name} has shape {tuple(value.shape)}, the model expects {tuple(own[name].shape)}")
            own[name].copy_(value.to(own[name].dtype))
    logger.info("loaded %d motion-module tensors", len(ours))
    return sorted(ours)


def _load_into(model: nn.Module, ours: dict[str, torch.Tensor], allowed_missing: set[str], what: str) -> None:
    own = model.state_dict()
    unexpected = sorted(set(ours) - set(own))
    missing = sorted(set(own) - set(ours) - allowed_missing)
    if unexpected or missing:
        raise CheckpointError(
            f"{what} does not fit the inferred UNet3DConditionModel (unexpected: {unexpected[:4]}, missing: {missing[:4]})"
        )
    for name, value in ours.items():
        if own[name].shape != value.shape:
            raise CheckpointError(f"{what}: {name} has shape {tuple(value.shape)}, the model expects {tuple(own[name].shape)}")
    model.load_state_dict(ours, strict=False)


def motion_unet_config(config: dict[str, Any]) -> dict[str, Any]:
    """Motion options of a diffusers ``UNetMotionModel`` config (an AnimateDiff pipeline's ``unet``)."""
    layers = config.get("temporal_transformer_layers_per_block", 1)
    heads = config.get("motion_num_attention_heads", 8)
    if not isinstance(layers, int) or config.get("reverse_motion_num_attention_heads") is not None:
        raise ModelError("UNetMotionModel with per-block temporal layers or reversed motion heads is not supported")
    return dict(
        use_motion_modules=True,
        motion_layers=layers,
        motion_num_attention_heads=heads if isinstance(heads, int) else tuple(heads),
        motion_max_seq_length=config.get("motion_max_seq_length", 32),
        motion_mid_block=config.get("use_motion_mid_block", True),
        motion_norm_num_groups=config["norm_num_groups"],
        motion_positional_embedding="sinusoidal",
        motion_in_plain_blocks=True,
    )


def inflate_unet2d(cls: type, unet2d: Any, motion_adapter: Any, overrides: dict[str, Any]) -> nn.Module:
    """`UNet3DConditionModel.from_unet2d` (also accepts a diffusers ``UNetMotionModel``, motion weights included)."""
    unet = _load_diffusers_model(unet2d, "UNet2DConditionModel", also=("UNetMotionModel",))
    config = unet2d_config(dict(unet.config))
    if type(unet).__name__ == "UNetMotionModel":
        config.update(motion_unet_config(dict(unet.config)))
        if motion_adapter is None:
            config.update(overrides)
            model = cls(**config)
            new_keys = {n for n in model.state_dict() if n.split(".")[0] in ("fps_embedder", "image_projector", "transformer_in")}
            new_keys |= {n for n in model.state_dict() if ".temporal_conv." in n or "_image." in n}
            _load_into(model, to_ours(unet.state_dict()), new_keys, "the UNetMotionModel")
            return model
    motion_state = None
    if motion_adapter is not None:
        motion_state, motion_config = read_motion_source(motion_adapter)
        config.update(infer_motion_config(motion_state, motion_config))
    config.update(overrides)
    model = cls(**config)
    dtype = next(unet.parameters()).dtype
    new_keys = {n for n in model.state_dict() if n.split(".")[0] in ("fps_embedder", "image_projector", "transformer_in")}
    new_keys |= {n for n in model.state_dict() if ".motion_modules." in n or ".temporal_conv." in n or "_image." in n}
    _load_into(model, to_ours(unet.state_dict()), new_keys, "the UNet2DConditionModel")
    if motion_state is not None:
        load_motion_state(model, motion_state)
    return model if dtype == torch.float32 else model.to(dtype)


# ---------------------------------------------------------------- ModelScope (diffusers UNet3DConditionModel)
def unet3d_config(config: dict[str, Any]) -> dict[str, Any]:
    """Our config for a diffusers ``UNet3DConditionModel`` (ModelScope text-to-video) config."""
    if config.get("time_cond_proj_dim") is not None:
        raise ModelError("UNet3DConditionModel with time_cond_proj_dim is not supported")
    head_dim = config.get("attention_head_dim", 64)
    if not isinstance(head_dim, int):
        raise ModelError("per-block attention_head_dim is not supported")
    widths = tuple(config["block_out_channels"])
    groups = config.get("norm_num_groups") or 32
    heads = tuple(c // head_dim for c in widths)
    return dict(
        in_channels=config["in_channels"],
        out_channels=config["out_channels"],
        block_out_channels=widths,
        down_block_types=tuple(config["down_block_types"]),
        up_block_types=tuple(config["up_block_types"]),
        layers_per_block=config["layers_per_block"],
        num_attention_heads=heads,
        cross_attention_dim=config["cross_attention_dim"],
        norm_num_groups=groups,
        norm_eps=config.get("norm_eps", 1e-5),
        downsample_padding=config.get("downsample_padding", 1),
        mid_block_scale_factor=config.get("mid_block_scale_factor", 1.0),
        use_motion_modules=True,
        motion_num_attention_heads=heads,
        motion_layers=1,
        motion_norm_num_groups=groups,
        motion_positional_embedding=None,
        motion_mid_block=True,
        motion_in_plain_blocks=False,
        motion_zero_init=False,
        temporal_conv=True,
        input_temporal_transformer=True,
        input_temporal_heads=8,
        input_temporal_head_dim=head_dim,
        sample_size=config.get("sample_size"),
    )


def load_diffusers_unet3d(cls: type, unet3d: Any, overrides: dict[str, Any]) -> nn.Module:
    """`UNet3DConditionModel.from_diffusers_unet3d`."""
    unet = _load_diffusers_model(unet3d, "UNet3DConditionModel")
    config = {**unet3d_config(dict(unet.config)), **overrides}
    model = cls(**config)
    new_keys = {n for n in model.state_dict() if n.split(".")[0] in ("fps_embedder", "image_projector")}
    new_keys |= {n for n in model.state_dict() if "_image." in n}
    _load_into(model, to_ours(unet.state_dict()), new_keys, "the diffusers UNet3DConditionModel")
    dtype = next(unet.parameters()).dtype
    return model if dtype == torch.float32 else model.to(dtype)
