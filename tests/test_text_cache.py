"""Embedding cache: hits, misses, reuse across runs, invalidation by encoder id, padding, atomic writes."""

from __future__ import annotations

import logging

import pytest
import torch
from text_models import save_tiny_bert

from text2video.errors import TextEncoderError
from text2video.text import EmbeddingCache, load_text_encoder

CAPTIONS = ["a red ball moving left", "a blue square", "", "a green triangle going up fast"]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    save_tiny_bert(folder)
    return folder


@pytest.fixture(scope="module")
def other_bert_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert_other")
    save_tiny_bert(folder, seed=5)
    return folder


def _count_calls(encoder):
    """Wrap ``encoder.encode`` to record the prompts of every call."""
    calls: list[list[str]] = []
    original = encoder.encode

    def spy(prompts):
        calls.append(list(prompts))
        return original(prompts)

    encoder.encode = spy
    return calls


def _entry_files(cache: EmbeddingCache) -> list:
    return sorted(cache.folder.rglob("*.safetensors"))


def test_miss_then_hit_matches_direct_encoding(tmp_path, bert_folder):
    encoder = load_text_encoder(bert_folder)
    direct = encoder.encode(CAPTIONS)
    calls = _count_calls(encoder)
    cache = EmbeddingCache(tmp_path, encoder)

    first = cache.encode(CAPTIONS + [CAPTIONS[0]])
    assert calls == [CAPTIONS]  # the misses, each once, in one batch
    assert (cache.hits, cache.misses) == (0, 4)
    assert len(_entry_files(cache)) == 4

    second = cache.encode(CAPTIONS)
    assert len(calls) == 1 and (cache.hits, cache.misses) == (4, 4)
    for out in (first, second):
        torch.testing.assert_close(out.tokens[:4], direct.tokens, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out.pooled[:4], direct.pooled)
        assert torch.equal(out.mask[:4], direct.mask)
    torch.testing.assert_close(first.pooled[4], first.pooled[0])


def test_mixed_hits_and_misses_pad_consistently(tmp_path, bert_folder):
    encoder = load_text_encoder(bert_folder)
    cache = EmbeddingCache(tmp_path, encoder)
    cache.encode(["a ball"])  # short entry cached alone
    calls = _count_calls(encoder)
    out = cache.encode(["a ball", "a green triangle going up fast", ""])
    assert calls == [["a green triangle going up fast", ""]]
    lengths = [len(encoder.tokenizer(p)["input_ids"]) for p in ["a ball", "a green triangle going up fast", ""]]
    assert out.tokens.shape == (3, max(lengths), encoder.dim)
    for i, n in enumerate(lengths):
        assert out.mask[i].tolist() == [True] * n + [False] * (max(lengths) - n)
        assert torch.all(out.tokens[i, n:] == 0)
    alone = encoder.encode(["a ball"])
    torch.testing.assert_close(out.tokens[0, : lengths[0]], alone.tokens[0], atol=1e-5, rtol=1e-4)


def test_reused_across_runs_without_encoding(tmp_path, bert_folder):
    run1 = EmbeddingCache(tmp_path, load_text_encoder(bert_folder))
    reference = run1.encode(CAPTIONS)

    encoder2 = load_text_encoder(bert_folder)  # a new process would load the same folder again
    calls = _count_calls(encoder2)
    run2 = EmbeddingCache(tmp_path, encoder2)
    again = run2.encode(CAPTIONS)
    assert calls == [] and (run2.hits, run2.misses) == (4, 0)
    torch.testing.assert_close(again.tokens, reference.tokens)
    torch.testing.assert_close(again.pooled, reference.pooled)


def test_other_encoder_never_reads_stale_entries(tmp_path, bert_folder, other_bert_folder):
    EmbeddingCache(tmp_path, load_text_encoder(bert_folder)).encode(CAPTIONS)
    for other in (load_text_encoder(other_bert_folder), load_text_encoder(bert_folder, pooling="cls")):
        cache = EmbeddingCache(tmp_path, other)
        out = cache.encode(CAPTIONS)
        assert (cache.hits, cache.misses) == (0, 4)
        torch.testing.assert_close(out.pooled, other.encode(CAPTIONS).pooled, atol=1e-5, rtol=1e-4)
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 3  # one folder per encoder id


def test_entry_of_another_text_is_rejected(tmp_path, bert_folder, caplog):
    encoder = load_text_encoder(bert_folder)
    cache = EmbeddingCache(tmp_path, encoder)
    cache.encode(["a red ball"])
    # a file whose metadata names another text (a hash collision, or a file copied by hand)
    target = cache.path_for("a blue square")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(cache.path_for("a red ball").read_bytes())
    fresh = EmbeddingCache(tmp_path, encoder)
    with caplog.at_level(logging.WARNING, logger="text2video.io.store"):
        out = fresh.encode(["a blue square"])
    assert fresh.misses == 1 and "another owner or key" in caplog.text
    torch.testing.assert_close(out.pooled, encoder.encode(["a blue square"]).pooled)


def test_corrupt_entry_is_reencoded_and_rewritten(tmp_path, bert_folder, caplog):
    encoder = load_text_encoder(bert_folder)
    EmbeddingCache(tmp_path, encoder).encode(["a red ball"])
    cache = EmbeddingCache(tmp_path, encoder)
    cache.path_for("a red ball").write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING, logger="text2video.io.store"):
        out = cache.encode(["a red ball"])
    assert cache.misses == 1 and "unreadable" in caplog.text
    torch.testing.assert_close(out.pooled, encoder.encode(["a red ball"]).pooled)
    third = EmbeddingCache(tmp_path, encoder)
    third.encode(["a red ball"])
    assert (third.hits, third.misses) == (1, 0)


def test_precompute_then_training_steps_never_encode(tmp_path, bert_folder):
    encoder = load_text_encoder(bert_folder)
    calls = _count_calls(encoder)
    cache = EmbeddingCache(tmp_path, encoder, keep_in_memory=False)
    dataset_captions = CAPTIONS * 3
    assert cache.precompute(dataset_captions, batch_size=3, progress=True) == 4
    assert [len(c) for c in calls] == [3, 1]
    assert cache.precompute(dataset_captions) == 0
    calls.clear()
    for step in range(3):  # batches of a training loop
        cache.encode(dataset_captions[step : step + 4])
    assert calls == [] and cache.misses == 4 and cache.hits == 12


def test_writes_are_atomic(tmp_path, bert_folder, monkeypatch):
    encoder = load_text_encoder(bert_folder)
    cache = EmbeddingCache(tmp_path, encoder)
    cache.encode(CAPTIONS)
    assert not list(tmp_path.rglob("*.tmp"))

    import safetensors.torch

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cache.encode(["a yellow circle"])
    assert not cache.path_for("a yellow circle").exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_outputs_follow_encoder_dtype(tmp_path, bert_folder):
    encoder = load_text_encoder(bert_folder, dtype=torch.float64)
    cache = EmbeddingCache(tmp_path, encoder)
    for _ in range(2):  # miss, then hit
        out = cache.encode(["a red ball", ""])
        assert out.tokens.dtype == torch.float64 and out.mask.dtype == torch.bool
        assert out.tokens.device == encoder.device


def test_bad_prompts_and_batch_size(tmp_path, bert_folder):
    cache = EmbeddingCache(tmp_path, load_text_encoder(bert_folder))
    with pytest.raises(TextEncoderError, match="strings"):
        cache.encode(["ok", 3])
    with pytest.raises(TextEncoderError, match="batch_size"):
        cache.precompute(["a"], batch_size=0)
    assert cache.encode([]).tokens.shape[0] == 0
