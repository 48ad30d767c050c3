"""Named model sizes: one convention for every model class.

A class lists its sizes in a ``PRESETS`` class attribute (name -> constructor arguments) and inherits
`from_preset`; the config reads ``model.preset`` from the same table.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from ..errors import ModelError


class Presets:
    """Mixin: ``PRESETS`` and ``from_preset(name, **overrides)``."""

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    @classmethod
    def preset_config(cls, name: str, **overrides: Any) -> dict[str, Any]:
        """Constructor arguments of the named size, with ``overrides`` on top."""
        if name not in cls.PRESETS:
            raise ModelError(f"unknown {cls.__name__} preset {name!r}; choose one of: {', '.join(cls.PRESETS)}")
        return {**cls.PRESETS[name], **overrides}

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Any:
        """Build the named size (see ``PRESETS``); ``overrides`` set or replace constructor arguments."""
        return cls(**cls.preset_config(name, **overrides))
