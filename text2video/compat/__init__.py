"""The seeds' own names, translated to text2video's core (one page maps them all: docs/compat.md).

- `WebVid10M` (AnimateDiff): the dataset's constructor names and ``dict(pixel_values, text)`` items.
- `VideoGenerator` (DiffusionPlayground): one object that loads a model, then ``generate`` and ``interpolate``.
- `migrate` / `migrate_file` / `load_any_config` (text2video-from-scratch): its ``configs/default.yaml`` read
  as a text2video config, every renamed key reported.

The core never imports this package; ``text2video train``, ``text2video config`` and user code do.
"""

from __future__ import annotations

from .animatediff import WebVid10M
from .from_scratch import KEY_MAP, Migration, is_seed_config, load_any_config, migrate, migrate_file
from .playground import VideoGenerator

__all__ = ["KEY_MAP", "Migration", "VideoGenerator", "WebVid10M", "is_seed_config", "load_any_config", "migrate", "migrate_file"]
