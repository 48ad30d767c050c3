"""Tiny BERT, CLIP-text and T5 models with offline tokenizers, saved to folders, for the text tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

WORDS = "a an the red blue green yellow circle square ball triangle moving going left right up down fast slow".split()
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def save_tiny_bert(folder: Path, *, max_positions: int = 16, seed: int = 0) -> tuple[Any, Any]:
    """A 1-layer BERT (hidden 16) with a word-piece vocab; returns (model, tokenizer)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = dict.fromkeys(special + WORDS + list(LETTERS) + ["##" + c for c in LETTERS])
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tokenizer = BertTokenizer(vocab=vocab)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=max_positions,
    )
    model = BertModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def clip_tokenizer(words: list[str], **kwargs: Any) -> Any:
    """A CLIP BPE tokenizer over letters in which each of ``words`` merges, letter by letter, into one token."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for piece in [w + "</w>" for w in words] + list(LETTERS) + [c + "</w>" for c in LETTERS]:
        vocab.setdefault(piece, len(vocab))
    merges = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.setdefault(pieces[0], len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=list(dict.fromkeys(merges)), **kwargs)


def save_tiny_clip(folder: Path, *, projection: bool) -> tuple[Any, Any]:
    """A 1-layer CLIP text model (hidden 16, projection 8 when asked); returns (model, tokenizer)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = clip_tokenizer(WORDS)
    torch.manual_seed(1)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=32,
        projection_dim=8,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def save_tiny_t5(folder: Path) -> tuple[Any, Any]:
    """A 1-layer T5 (d_model 16, full encoder-decoder saved, as real T5 folders are); returns
    (encoder stack, tokenizer)."""
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    pieces += [("\u2581" + w, -1.0) for w in WORDS] + [(c, -5.0) for c in LETTERS if c not in WORDS]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    torch.manual_seed(2)
    config = T5Config(
        vocab_size=len(pieces),
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    model = T5ForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model.get_encoder(), tokenizer
