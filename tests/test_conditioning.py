import pytest
import torch

from text2video.diffusion.conditioning import Conditioning
from text2video.errors import ModelError


def _cond(b: int, length: int) -> Conditioning:
    return Conditioning(
        text_tokens=torch.randn(b, length, 8),
        text_mask=torch.ones(b, length, dtype=torch.bool),
        text_pooled=torch.randn(b, 8),
        fps=torch.full((b,), 8.0),
    )


def test_guidance_batch_stacks_cond_then_dropped_copy():
    c = _cond(3, 5)
    both = c.with_guidance_batch()
    assert both.batch_size == 6
    assert torch.equal(both.text_tokens[:3], c.text_tokens)
    assert torch.equal(both.text_tokens[3:], c.text_tokens)
    assert both.null_text.tolist() == [False] * 3 + [True] * 3


def test_cat_pads_token_sequences_with_masked_zeros():
    a, b = _cond(2, 4), _cond(1, 7)
    out = Conditioning.cat([a, b])
    assert out.text_tokens.shape == (3, 7, 8)
    assert not out.text_mask[:2, 4:].any() and out.text_mask[2].all()
    assert torch.equal(out.text_tokens[:2, 4:], torch.zeros(2, 3, 8))


def test_text_dropped_merges_with_existing_drops():
    c = _cond(4, 3).text_dropped(torch.tensor([True, False, False, False]))
    c = c.text_dropped(torch.tensor([False, False, True, False]))
    assert c.null_text.tolist() == [True, False, True, False]


def test_cat_refuses_a_field_set_in_some_items_only():
    a = _cond(1, 3)
    b = Conditioning(text_tokens=torch.randn(1, 3, 8), text_mask=torch.ones(1, 3, dtype=torch.bool), text_pooled=torch.randn(1, 8))
    with pytest.raises(ModelError, match="fps"):
        Conditioning.cat([a, b])


def test_batch_size_disagreement_is_reported():
    c = Conditioning(text_pooled=torch.randn(2, 4), fps=torch.ones(3))
    with pytest.raises(ModelError, match="batch size"):
        _ = c.batch_size


def test_index_and_repeat_interleave():
    c = _cond(2, 3)
    r = c.repeat_interleave(3)
    assert r.batch_size == 6
    assert torch.equal(r.index(slice(3, 6)).text_pooled, c.text_pooled[1:2].expand(3, -1))
