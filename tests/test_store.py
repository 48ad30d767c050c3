"""The content-addressed safetensors store behind the text and latent caches (text2video.io.store)."""

from __future__ import annotations

import hashlib

import torch

from text2video.io.store import TensorStore, content_hash


def test_round_trip_layout_and_checks(tmp_path):
    store = TensorStore(tmp_path / "s", owner="vae-1")
    tensors = {"mean": torch.randn(2, 3), "mask": torch.tensor([True, False])}
    path = store.put("item 7", tensors, {"note": "x"})
    digest = hashlib.sha256(b"item 7\0").hexdigest()
    assert path == tmp_path / "s" / digest[:2] / f"{digest}.safetensors" and "item 7" in store and len(store) == 1
    got, meta = store.get("item 7")
    assert got.keys() == tensors.keys() and all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert meta["note"] == "x" and meta["owner"] == "vae-1" and meta["key"] == "item 7"
    assert store.get("item 8") is None
    assert TensorStore(tmp_path / "s", owner="vae-2").get("item 7") is None  # another owner's file is a miss
    path.write_bytes(b"not a safetensors file")
    assert store.get("item 7") is None  # a damaged file is a miss
    assert not list(path.parent.glob(".*.tmp"))  # no temporary file left behind


def test_content_hash_separates_parts():
    assert content_hash("ab", "c") != content_hash("a", "bc")
    assert content_hash("x") == hashlib.sha256(b"x\0").hexdigest()
