"""The training objectives by name, and the one function that builds the right one from a config."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from .flow import FlowObjective
from .objective import DiffusionObjective, ObjectiveConfig

__all__ = ["OBJECTIVES", "make_objective"]

#: ``ObjectiveConfig.objective`` -> class.
OBJECTIVES: MappingProxyType[str, type[DiffusionObjective]] = MappingProxyType({"diffusion": DiffusionObjective, "flow": FlowObjective})


def make_objective(config: ObjectiveConfig | Mapping[str, Any] | None = None) -> DiffusionObjective:
    """The objective a config describes: `DiffusionObjective` or `FlowObjective` (``objective: flow``).
    A mapping without ``objective`` (a pipeline saved before rectified flow) is the diffusion objective."""
    if config is None:
        config = ObjectiveConfig()
    elif not isinstance(config, ObjectiveConfig):
        config = ObjectiveConfig.from_dict(config)
    return OBJECTIVES[config.objective](config)
