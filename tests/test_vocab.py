import itertools

from text2video.data.vocab import COLOURS, DIRECTIONS, SHAPES, ShapeFactors, make_caption, parse_caption


def test_every_caption_parses_back_to_its_factors():
    for colour, shape, direction in itertools.product(COLOURS, SHAPES, DIRECTIONS):
        caption = make_caption(colour, shape, direction)
        assert parse_caption(caption) == ShapeFactors(colour, shape, direction)


def test_article_and_rejections():
    assert make_caption("orange", "square", "up") == "an orange square moving up"
    assert parse_caption("a red circle moving sideways") is None
    assert parse_caption("a dog running") is None
    assert parse_caption("  A Red Circle moving LEFT ") == ShapeFactors("red", "circle", "left")


def test_grammar_is_as_large_as_promised():
    assert len(COLOURS) >= 6 and len(SHAPES) >= 3 and len(DIRECTIONS) >= 4


def test_holdout_rules_match_partial_patterns():
    import pytest

    from text2video.data.vocab import DEFAULT_HOLDOUT, HoldoutRule, all_factors, is_held_out

    rule = HoldoutRule.parse("blue triangle")
    assert rule == HoldoutRule("blue", "triangle", None)
    held = [f for f in all_factors() if is_held_out(f, [rule])]
    assert len(held) == len(DIRECTIONS) and all(f.colour == "blue" and f.shape == "triangle" for f in held)
    seen = [f for f in all_factors() if not is_held_out(f)]
    assert {f.colour for f in seen} == set(COLOURS) and {f.shape for f in seen} == set(SHAPES)
    assert len(all_factors()) - len(seen) == len(DEFAULT_HOLDOUT) * len(DIRECTIONS)
    with pytest.raises(ValueError, match="colour"):
        HoldoutRule.parse("blue blob")
