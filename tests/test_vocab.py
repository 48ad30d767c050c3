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
