"""Prompts encoded the way Stable Diffusion-family pipelines encode them (``padding="max_length"``).

ModelScope, Zeroscope and AnimateDiff were trained on CLIP token states of prompts padded to the
tokenizer's full length (77 for CLIP), with the UNet attending to every position, padding included, and
with the empty prompt as the unconditional input of classifier-free guidance. `MaxLengthTextEncoder`
gives exactly those states: every prompt is padded to ``max_length``, the mask it returns is all True,
padded states are kept (not zeroed), the encoder sees an attention mask only when its config asks for
one (``use_attention_mask``), and ``clip_skip`` takes an earlier layer through CLIP's final layer norm.
Its ``null_prompt`` (``""``) tells pipelines and the trainer what the unconditional prompt is.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import torch

from ..errors import TextEncoderError
from .encoders import HFTextEncoder, TextEmbeddings, TextEncoder, masked_mean, prompt_list

logger = logging.getLogger(__name__)

#: padding modes of `load_text_encoder`: ``longest`` pads to the longest prompt and masks the padding
#: (text2video's own encoders), ``max_length`` is the Stable Diffusion pipelines' encoding.
PADDINGS: tuple[str, ...] = ("longest", "max_length")


class MaxLengthTextEncoder(TextEncoder):
    """A `HFTextEncoder`'s weights and tokenizer, used as diffusers' ``encode_prompt`` uses them."""

    #: the unconditional prompt of classifier-free guidance for models trained with this encoding.
    null_prompt: str = ""

    def __init__(self, inner: HFTextEncoder, *, clip_skip: Optional[int] = None) -> None:
        if clip_skip is not None and (not isinstance(clip_skip, int) or clip_skip < 0):
            raise TextEncoderError(f"clip_skip must be a whole number >= 0 or None, got {clip_skip!r}")
        if clip_skip and inner.backend != "clip":
            raise TextEncoderError(f"clip_skip applies to CLIP text encoders; {inner.folder.model_dir} is a {inner.backend} model")
        self.inner = inner
        self.clip_skip = clip_skip or None
        self.batch_size = inner.batch_size

    # -- what the pipelines and caches need ------------------------------------------------------

    @property
    def folder(self) -> Any:
        return self.inner.folder

    @property
    def model(self) -> torch.nn.Module:
        return self.inner.model

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def pooled_dim(self) -> int:
        return self.inner.pooled_dim

    @property
    def max_length(self) -> int:
        return self.inner.max_length

    @property
    def id(self) -> str:
        return f"{self.inner.id}:max_length" + (f":skip{self.clip_skip}" if self.clip_skip else "")

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    def to(self, device: torch.device | str | None = None) -> MaxLengthTextEncoder:
        self.inner.to(device)
        return self

    def __repr__(self) -> str:
        return f"MaxLengthTextEncoder({self.inner!r}, clip_skip={self.clip_skip})"

    # -- encoding --------------------------------------------------------------------------------

    def _states(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.inner.model
        use_mask = bool(getattr(model.config, "use_attention_mask", False))
        attention = mask.long() if use_mask else None
        out = model(input_ids=ids, attention_mask=attention, output_hidden_states=self.clip_skip is not None)
        if self.clip_skip is None:
            states = out.last_hidden_state
        else:
            text_model = getattr(model, "text_model", model)  # transformers 5 folds text_model into CLIPTextModel
            states = text_model.final_layer_norm(out.hidden_states[-(self.clip_skip + 1)])
        if getattr(out, "text_embeds", None) is not None:
            pooled = out.text_embeds
        elif getattr(out, "pooler_output", None) is not None:
            pooled = out.pooler_output
        else:
            pooled = masked_mean(states, mask)
        return states, pooled

    def encode(self, prompts: Sequence[str]) -> TextEmbeddings:
        prompts = prompt_list(prompts)
        length = self.max_length
        if not prompts:
            device, dtype = self.device, self.dtype
            return TextEmbeddings(torch.zeros(0, length, self.dim, device=device, dtype=dtype),
                                  torch.zeros(0, length, dtype=torch.bool, device=device),
                                  torch.zeros(0, self.pooled_dim, device=device, dtype=dtype))  # fmt: skip
        tokenizer = self.inner.tokenizer
        untruncated = tokenizer(prompts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        too_long = sum(len(ids) > length for ids in untruncated)
        if too_long:
            logger.warning("%d of %d prompts are longer than %d tokens, the limit of %s; they were truncated",
                           too_long, len(prompts), length, self.inner.folder.model_dir)  # fmt: skip
        batch = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt", verbose=False)
        chunks = []
        device = self.device
        with torch.no_grad():
            for start in range(0, len(prompts), self.batch_size):
                ids = batch["input_ids"][start : start + self.batch_size].to(device)
                mask = batch["attention_mask"][start : start + self.batch_size].to(device).bool()
                states, pooled = self._states(ids, mask)
                chunks.append(TextEmbeddings(states, torch.ones_like(mask), pooled))
        return TextEmbeddings.cat(chunks)
