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
DIRECTIONS: MappingProxyType[str, tuple[int, int]] = MappingProxyType({"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)})

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


@dataclass(frozen=True)
class HoldoutRule:
    """A pattern over factors; None matches anything. ``HoldoutRule("blue", "triangle")`` holds out
    every blue triangle, whatever its direction."""

    colour: str | None = None
    shape: str | None = None
    direction: str | None = None

    def matches(self, factors: ShapeFactors) -> bool:
        return all(
            want is None or want == got
            for want, got in ((self.colour, factors.colour), (self.shape, factors.shape), (self.direction, factors.direction))
        )

    @staticmethod
    def parse(text: str) -> HoldoutRule:
        """``"blue triangle"``, ``"red"``, ``"square up"``: words naming a colour, shape or direction."""
        values: dict[str, str] = {}
        for word in text.lower().split():
            slot = "colour" if word in COLOURS else "shape" if word in SHAPES else "direction" if word in DIRECTIONS else None
            if slot is None or slot in values:
                raise ValueError(
                    f"holdout rule {text!r}: {word!r} is not a known colour, shape or direction "
                    f"(or names one twice); colours: {', '.join(COLOURS)}; shapes: {', '.join(SHAPES)}; "
                    f"directions: {', '.join(DIRECTIONS)}"
                )
            values[slot] = word
        if not values:
            raise ValueError("empty holdout rule: name a colour, shape and/or direction, e.g. 'blue triangle'")
        return HoldoutRule(**values)


#: The colour-shape pairs held out of training by default (each colour and shape is still seen in
#: other pairs, so a model that composes them can draw the held-out pairs).
DEFAULT_HOLDOUT: tuple[HoldoutRule, ...] = (
    HoldoutRule("blue", "triangle"),
    HoldoutRule("red", "square"),
    HoldoutRule("yellow", "circle"),
)


def is_held_out(factors: ShapeFactors, rules: tuple[HoldoutRule, ...] | list[HoldoutRule] = DEFAULT_HOLDOUT) -> bool:
    """True when any rule matches ``factors``."""
    return any(rule.matches(factors) for rule in rules)


def all_factors() -> list[ShapeFactors]:
    """Every combination of the grammar, in a fixed order."""
    return [ShapeFactors(c, s, d) for c in COLOURS for s in SHAPES for d in DIRECTIONS]
