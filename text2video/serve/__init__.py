"""``text2video serve``: a web page (Gradio) for generating videos with any model text2video loads.

The work needs no Gradio: `catalog` (the served models, loaded on first use), `limits` (each control's
range from a pipeline's defaults and its network) and `studio` (one generation: defaults, checks, progress,
cancel, the files written before anything is shown, the equivalent command). `app` builds the page and
needs the ``serve`` extra: ``pip install "text2video[serve]"``. Importing this package imports no Gradio.
"""

from __future__ import annotations

from .catalog import ModelCatalog, describe_pipeline, find_model_folders
from .limits import ControlLimits, Range, limits_for
from .studio import MODES, GenerationCancelled, Request, Result, Studio, command_for

__all__ = [
    "ModelCatalog",
    "describe_pipeline",
    "find_model_folders",
    "ControlLimits",
    "Range",
    "limits_for",
    "MODES",
    "GenerationCancelled",
    "Request",
    "Result",
    "Studio",
    "command_for",
]
