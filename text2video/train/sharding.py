"""Sharded data parallel for the trainer: FSDP2 and DeepSpeed ZeRO through Accelerate.

``train.sharding`` picks the strategy: ``none`` (DDP: every process holds the whole model, optimizer state
and gradients), ``fsdp`` (PyTorch's FSDP2, ``fully_shard``: parameters, gradients and AdamW's state are
split over the processes; each block of ``train.fsdp_wrap``, by default the model's ``_no_split_modules``,
is gathered just for its forward and backward) or ``deepspeed`` (ZeRO stage ``train.zero_stage``). An
Accelerate config file given to ``accelerate launch --config_file`` selects FSDP the same way (its
``FSDP_*`` variables make the plugin).

Accelerate selects FSDP only for accelerator devices. On CPU processes (gloo) the same FSDP2 path of
``Accelerator.prepare`` is switched on by `use_fsdp_on_cpu`; that is how the tests run it on two CPU
processes.

What the trainer does differently under FSDP:

- the EMA copy is sharded exactly as the model (`shard_like`): each process averages its own shard, and
  sampling with the EMA weights gathers them block by block, like the model;
- checkpoints stay in the run's one format: every process takes part in gathering the full weights,
  EMA weights and AdamW state (`gather_for_checkpoint`), the main process writes them atomically with
  `text2video.runs.checkpoint.save_checkpoint`; on resume each process reads the full files and keeps
  its shard (`load_sharded`). A checkpoint of a sharded run resumes unsharded and the other way round.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError

logger = logging.getLogger(__name__)

SHARDING = ("none", "fsdp", "deepspeed")
_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}


def accelerator_kwargs(t: TrainConfig) -> dict[str, Any]:
    """The plugin keyword of ``Accelerator(...)`` for ``train.sharding`` (empty for ``none``)."""
    if t.sharding == "fsdp":
        return {"fsdp_plugin": fsdp_plugin(t)}
    if t.sharding == "deepspeed":
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(
                "train.sharding = deepspeed needs DeepSpeed: pip install --no-build-isolation deepspeed (docs/scaling.md), "
                "or use train.sharding=fsdp"
            )
        return {"deepspeed_plugin": deepspeed_plugin(t)}
    return {}


def fsdp_plugin(t: TrainConfig) -> Any:
    """An FSDP2 plugin: block-wise wrapping (the classes are filled from the model by `wrap_blocks`),
    resharding after forward unless ``fsdp_reshard_after_forward=false``, CPU offload on request. Mixed
    precision gathers the weights in bf16/fp16 but reduces gradients in float32, as DDP does."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    policy = None
    if t.mixed_precision in _PRECISION:
        from torch.distributed.fsdp import MixedPrecisionPolicy

        policy = MixedPrecisionPolicy(param_dtype=_PRECISION[t.mixed_precision], reduce_dtype=torch.float32)
    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        reshard_after_forward=t.fsdp_reshard_after_forward,
        cpu_offload=t.fsdp_cpu_offload,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=list(t.fsdp_wrap) if t.fsdp_wrap else None,
        mixed_precision_policy=policy,
        state_dict_type="FULL_STATE_DICT",
        cpu_ram_efficient_loading=False,
    )


def deepspeed_plugin(t: TrainConfig) -> Any:
    """A DeepSpeed ZeRO plugin (stage ``zero_stage`` 1 or 2: optimizer state, and at 2 the gradients, split over
    the processes; the optimizer state in CPU memory with ``zero_offload``). Training with it needs the
    ``deepspeed`` package and CUDA devices: Accelerate runs DeepSpeed only on accelerators."""
    from accelerate.utils import DeepSpeedPlugin

    offload = "cpu" if t.zero_offload else "none"
    return DeepSpeedPlugin(
        zero_stage=t.zero_stage,
        gradient_accumulation_steps=t.grad_accum,
        gradient_clipping=t.max_grad_norm,
        offload_optimizer_device=offload,
        offload_param_device="none",
        zero3_save_16bit_model=False,
    )


def use_fsdp_on_cpu(accelerator: Any, plugin: Any) -> None:
    """Make a multi-process CPU (gloo) ``accelerator`` prepare models with FSDP2, as it does on GPUs."""
    from accelerate.utils import DistributedType

    state = accelerator.state
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)


def requested_fsdp_plugin(t: TrainConfig) -> Optional[Any]:
    """The FSDP plugin a CPU run must switch on itself: ``train.sharding=fsdp``, or an Accelerate config
    file's ``ACCELERATE_USE_FSDP`` (then the plugin is made from its ``FSDP_*`` variables)."""
    if t.sharding == "fsdp":
        return fsdp_plugin(t)
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        from accelerate.utils import FullyShardedDataParallelPlugin

        return FullyShardedDataParallelPlugin()
    return None


def is_fsdp(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def is_deepspeed(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def wrap_blocks(accelerator: Any, model: nn.Module) -> list[str]:
    """Set the FSDP plugin's block classes from ``model`` (its ``_no_split_modules``, keeping only those
    the model has) unless they were given; return them. A named class the model lacks is refused."""
    plugin = accelerator.state.fsdp_plugin
    if plugin.fsdp_version != 2:
        raise ConfigError("the trainer shards with FSDP2: set fsdp_version: 2 in the Accelerate config file, or use train.sharding=fsdp")
    present = {type(m).__name__ for m in model.modules()} | {b.__name__ for m in model.modules() for b in type(m).__mro__}
    given = plugin.transformer_cls_names_to_wrap
    if given:
        missing = [name for name in given if name not in present]
        if missing:
            raise ConfigError(
                f"train.fsdp_wrap names {missing}, which {type(model).__name__} does not contain; "
                f"use block classes of the model such as {list(getattr(model, '_no_split_modules', None) or [])}"
            )
        return list(given)
    names = [name for name in getattr(model, "_no_split_modules", None) or [] if name in present]
    if not names:
        logger.warning("%s names no blocks to shard (_no_split_modules): FSDP shards it as one unit", type(model).__name__)
    plugin.transformer_cls_names_to_wrap = names
    return names


def route_through(root: nn.Module) -> None:
    """Make ``root.model.forward_cond`` (the sampler's and the validation's call) go through ``root``, the
    sharded `ConditionedDenoiser`, whose FSDP hooks gather the weights outside the blocks."""
    root.model.forward_cond = root.__call__


def shard_like(accelerator: Any, module: nn.Module) -> nn.Module:
    """``module`` (the EMA copy of the model) sharded with the plugin the model was prepared with; returned
    as it was (its parameters now shards), callable through ``forward_cond`` as the model is."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    from ..models.adapter import ConditionedDenoiser

    root = fsdp2_prepare_model(accelerator, ConditionedDenoiser(module))
    route_through(root)
    return root.model


def _full_options(**extra: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **extra)


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The names of the optimizer's parameters in its own order (the numbering of PyTorch's format)."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]


def gather_for_checkpoint(model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict, dict]:
    """Full model, EMA and optimizer state dicts of a sharded model, in CPU memory on the main process
    (every process must call it; the others get empty dicts). The optimizer state is numbered in the
    optimizer's order, as an unsharded run's ``optimizer.state_dict()``."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    options = _full_options(cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    ema_state = get_model_state_dict(ema, options=options)
    by_name = get_optimizer_state_dict(model, optimizer, options=options)
    if not model_state:  # not the main process
        return {}, {}, {}
    index = {name: i for i, name in enumerate(_param_names(model, optimizer))}
    groups = [{**group, "params": [index[name] for name in group["params"]]} for group in by_name["param_groups"]]
    state = {index[name]: value for name, value in by_name["state"].items()}
    return model_state, ema_state, {"state": state, "param_groups": groups}


def load_sharded(
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
) -> None:
    """Give every process its shard of full state dicts read from a checkpoint (every process calls it)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    options = _full_options(strict=True)
    set_model_state_dict(model, model_state, options=options)
    set_model_state_dict(ema, ema_state, options=options)
    names = _param_names(model, optimizer)
    state = {names[int(i)]: value for i, value in optimizer_state["state"].items()}
    groups = [{**group, "params": [names[int(i)] for i in group["params"]]} for group in optimizer_state["param_groups"]]
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups}, options=_full_options())


__all__ = [
    "SHARDING",
    "accelerator_kwargs",
    "fsdp_plugin",
    "deepspeed_plugin",
    "use_fsdp_on_cpu",
    "requested_fsdp_plugin",
    "is_fsdp",
    "is_deepspeed",
    "wrap_blocks",
    "shard_like",
    "route_through",
    "gather_for_checkpoint",
    "load_sharded",
]
