import math

import torch

from text2video.nn import Attention, scaled_dot_product, sinusoidal_embedding


def _reference_attention(q, k, v, key_mask=None, bias=None):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return scores.softmax(-1) @ v


def test_sdpa_matches_explicit_softmax_with_mask_and_bias():
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    k, v = torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 4)
    mask = torch.tensor([[True] * 6, [True, True, False, True, False, False]])
    bias = torch.randn(3, 5, 6)
    out = scaled_dot_product(q, k, v, key_mask=mask, bias=bias)
    torch.testing.assert_close(out, _reference_attention(q, k, v, mask, bias), atol=1e-5, rtol=1e-5)


def test_fully_masked_rows_give_zeros_not_nan():
    q, k, v = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    mask = torch.tensor([[True, False, False, False], [False] * 4])
    out = scaled_dot_product(q, k, v, key_mask=mask)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    torch.testing.assert_close(out[0], v[0, :, :1].expand(2, 3, 4))


def test_cross_attention_ignores_masked_context_tokens():
    attn = Attention(8, heads=2, dim_head=4, context_dim=6)
    x, ctx = torch.randn(1, 5, 8), torch.randn(1, 4, 6)
    mask = torch.tensor([[True, True, False, False]])
    changed = ctx.clone()
    changed[:, 2:] = 100.0
    torch.testing.assert_close(attn(x, ctx, key_mask=mask), attn(x, changed, key_mask=mask))


def test_sinusoidal_embedding_conventions():
    t = torch.tensor([0.0, 3.0])
    emb = sinusoidal_embedding(t, 8, freq_shift=1)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 3)
    expected = torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], dim=-1)
    torch.testing.assert_close(emb, expected)
    flipped = sinusoidal_embedding(t, 8, freq_shift=1, cos_first=True)
    torch.testing.assert_close(flipped, torch.cat([expected[:, 4:], expected[:, :4]], dim=-1))
    assert sinusoidal_embedding(t, 7).shape == (2, 7)
