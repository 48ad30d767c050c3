"""The grammar of the synthetic shapes captions, shared by the data generator and the judge.

A caption reads ``"a {colour} {shape} moving {direction}"``; `parse_caption` inverts `make_caption`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

#: colour name -> RGB (uint8). Hues are far apart so a judge can tell them from the foreground's hue.
COLOURS: MappingProxyType[str, tuple[int, int, int]] = MappingProxyType(
    {
        "red": (230, 40, 40),
        "orange": (245, 150, 30),
        "yellow": (235, 225, 40),
        "green": (40, 190, 60),
        "cyan": (40, 210, 220),
        "blue": (40, 70, 230),
        "purple": (150, 60, 220),
        "pink": (240, 90, 200),
    }
)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: direction name -> unit motion (dx, dy) in image coordinates (y grows downwards).
DIRECTIONS: MappingProxyType[str, tuple[int, int]] = MappingProxyType(
    {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
)

_CAPTION = re.compile(r"^an? (?P<colour>\w+) (?P<shape>\w+) moving (?P<direction>\w+)$")


@dataclass(frozen=True)
class ShapeFactors:
    """The ground truth of one synthetic shapes item."""

    colour: str
    shape: str
    direction: str

    def caption(self) -> str:
        return make_caption(self.colour, self.shape, self.direction)


def make_caption(colour: str, shape: str, direction: str) -> str:
    """``"a red circle moving left"``; the article follows the colour ("an orange ...")."""
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {shape} moving {direction}"


def parse_caption(caption: str) -> ShapeFactors | None:
    """The factors a shapes caption names, or None when it is not in the grammar."""
    m = _CAPTION.match(caption.strip().lower())
    if not m:
        return None
    colour, shape, direction = m["colour"], m["shape"], m["direction"]
    if colour not in COLOURS or shape not in SHAPES or direction not in DIRECTIONS:
        return None
    return ShapeFactors(colour, shape, direction)
