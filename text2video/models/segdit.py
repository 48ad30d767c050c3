"""`SegDiTTransformer2DModel`: a 2-D diffusion transformer (DiT) with an optional segmentation map.

From the Open-Sora document (with STDiT). Images (or image latents) ``(B, C, H, W)`` are cut into ``patch_size`` patches; every block
is modulated by adaLN-Zero from ONE shared conditioning vector, the timestep embedding plus the
class embedding (class id ``num_embeds_ada_norm`` is the null class used by classifier-free
guidance). A segmentation map, when configured (``segmentation_channels > 0``), is concatenated to
the input channels. Without it, the model is DiT (Peebles & Xie, 2023): with DiT-XL/2's sizes it has
DiT-XL/2's 675M parameters. Weights of diffusers' ``DiTTransformer2DModel`` load through
``text2video.models.convert.diffusers_dit``.

Channels: ``in_channels`` counts the image channels only; the patch embedding sees
``in_channels + segmentation_channels``. The Open-Sora document's convention works too: a model built with
``segmentation_channels=0`` whose ``in_channels`` counts the image and the map together takes ``segmentation``
as the channels the image lacks (``torch.cat([hidden_states, segmentation], dim=1)``; zeros when no map is
given). ``learn_sigma`` doubles the output channels (the second half is DiT's learned variance);
``forward_cond`` returns only the first ``C`` channels.

Text (text2video's addition, off unless ``text_embed_dim`` is set; a run fills it in from its text encoder):
one pooled text vector per video, through an MLP, is added to the shared conditioning vector like the
class embedding, with a learned null text for dropped captions. ``frame_embedding`` adds an embedding
of the frame's index in its video, so the per-frame model can place a moving object differently in
each frame; the frames still do not see each other.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Optional

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..diffusion.conditioning import Conditioning
from ..errors import ModelError
from ..nn.dit_blocks import DiTBlock, FinalLayer, LabelEmbedder, PooledTextEmbedder, TimestepEmbedder, init_dit_weights, sincos_2d
from .image_cond import as_batch_timesteps
from .presets import Presets

#: DiT's sizes (Peebles & Xie, Table 1) with 2x2 patches; ``DiT-XL/2`` is the released ImageNet 256x256 model
#: (32x32 latents, 1000 classes, learned sigma), whose diffusers weights load through ``text2video convert``.
PRESETS: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        "DiT-S/2": MappingProxyType(dict(num_layers=12, num_attention_heads=6, attention_head_dim=64, patch_size=2)),
        "DiT-B/2": MappingProxyType(dict(num_layers=12, num_attention_heads=12, attention_head_dim=64, patch_size=2)),
        "DiT-L/2": MappingProxyType(dict(num_layers=24, num_attention_heads=16, attention_head_dim=64, patch_size=2)),
        "DiT-XL/2": MappingProxyType(
            dict(
                num_layers=28,
                num_attention_heads=16,
                attention_head_dim=72,
                patch_size=2,
                in_channels=4,
                sample_size=32,
                num_embeds_ada_norm=1000,
                learn_sigma=True,
            )
        ),  # fmt: skip
    }
)


class SegDiTTransformer2DModel(Presets, ModelMixin, ConfigMixin):
    """2-D DiT with adaLN-Zero on timestep + class label and an optional segmentation input.

    Argument names follow diffusers' ``DiTTransformer2DModel``; hidden size is
    ``num_attention_heads * attention_head_dim``. ``num_embeds_ada_norm=None`` makes it
    unconditional (timestep only). ``timestep_freq_shift`` is 0 for DiT's timestep code and 1 for
    diffusers' port (set by the importer). ``text_embed_dim``: width of the pooled text vector that
    conditions it (None: no text); ``frame_embedding``: condition each frame on its index (videos).
    """

    PRESETS = PRESETS
    _supports_gradient_checkpointing = True
    _no_split_modules = ["DiTBlock"]  # the unit FSDP shards and gathers (train.sharding)

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        in_channels: int = 4,
        out_channels: Optional[int] = None,
        num_layers: int = 28,
        dropout: float = 0.0,
        attention_bias: bool = True,
        sample_size: int = 32,
        patch_size: int = 2,
        num_embeds_ada_norm: Optional[int] = 1000,
        norm_eps: float = 1e-6,
        mlp_ratio: float = 4.0,
        segmentation_channels: int = 0,
        learn_sigma: bool = False,
        class_dropout_prob: float = 0.1,
        timestep_freq_shift: float = 0.0,
        text_embed_dim: Optional[int] = None,
        frame_embedding: bool = False,
    ) -> None:
        super().__init__()
        hidden = num_attention_heads * attention_head_dim
        self.out_channels = out_channels if out_channels is not None else in_channels * (2 if learn_sigma else 1)
        if learn_sigma and self.out_channels % 2:
            raise ModelError(f"learn_sigma needs an even out_channels, got {self.out_channels}")
        self.patch_embed = nn.Conv2d(in_channels + segmentation_channels, hidden, patch_size, stride=patch_size)
        self.t_embedder = TimestepEmbedder(hidden, freq_shift=timestep_freq_shift)
        self.class_embedder = LabelEmbedder(num_embeds_ada_norm, hidden, class_dropout_prob) if num_embeds_ada_norm else None
        self.text_embedder = PooledTextEmbedder(text_embed_dim, hidden) if text_embed_dim else None
        self.frame_embedder = TimestepEmbedder(hidden, freq_shift=timestep_freq_shift) if frame_embedding else None
        self.blocks = nn.ModuleList(
            DiTBlock(
                hidden,
                num_attention_heads,
                attention_head_dim,
                mlp_ratio=mlp_ratio,
                qkv_bias=attention_bias,
                norm_eps=norm_eps,
                dropout=dropout,
            )
            for _ in range(num_layers)
        )
        self.final_layer = FinalLayer(hidden, patch_size * patch_size * self.out_channels)
        self.gradient_checkpointing = False  # enable_gradient_checkpointing(): each block recomputed in backward
        self._init_weights()

    def _init_weights(self) -> None:
        init_dit_weights(self)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.t_embedder.linear_1.weight, std=0.02)
        nn.init.normal_(self.t_embedder.linear_2.weight, std=0.02)
        if self.class_embedder is not None:
            nn.init.normal_(self.class_embedder.embedding_table.weight, std=0.02)
        if self.frame_embedder is not None:
            nn.init.normal_(self.frame_embedder.linear_1.weight, std=0.02)
            nn.init.normal_(self.frame_embedder.linear_2.weight, std=0.02)

    @property
    def null_class(self) -> Optional[int]:
        """The class id that means "no class" (classifier-free guidance), or None if unconditional."""
        return self.class_embedder.null_class if self.class_embedder is not None else None

    def conditioning(
        self,
        timestep: torch.Tensor,
        class_labels: Optional[torch.Tensor],
        *,
        drop: Optional[torch.Tensor] = None,
        random_drop: bool = True,
        text: Optional[torch.Tensor] = None,
        frame_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The shared adaLN input ``(B, hidden)``: the timestep embedding plus the class, pooled text and frame
        index embeddings the model has. ``drop`` rows (and, in training mode with ``random_drop``,
        ``class_dropout_prob`` of the rows) get the null class and the null text."""
        c = self.t_embedder(timestep)
        if text is not None and self.text_embedder is None:
            raise ModelError("this SegDiT was built without text (text_embed_dim=None) but got text embeddings")
        if random_drop and self.training and self.config.class_dropout_prob > 0:
            dropped = torch.rand(timestep.shape[0], device=timestep.device) < self.config.class_dropout_prob
            drop = dropped if drop is None else drop.to(timestep.device).bool() | dropped
        if self.class_embedder is not None:
            if class_labels is None:
                class_labels = torch.full_like(timestep, self.class_embedder.null_class, dtype=torch.long)
            c = c + self.class_embedder(class_labels.to(timestep.device), drop, random_drop=False).to(c.dtype)
        if self.text_embedder is not None:
            if text is not None and (text.ndim != 2 or text.shape != (timestep.shape[0], self.config.text_embed_dim)):
                raise ModelError(
                    f"SegDiT expects pooled text of shape (B, text_embed_dim) = ({timestep.shape[0]}, "
                    f"{self.config.text_embed_dim}), got {tuple(text.shape)}; match text_embed_dim to the text encoder"
                )
            c = c + self.text_embedder(text, timestep.shape[0], drop).to(c.dtype)
        if self.frame_embedder is not None and frame_index is not None:
            c = c + self.frame_embedder(frame_index.to(timestep.device)).to(c.dtype)
        return c

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: Optional[torch.Tensor | float] = None,
        class_labels: Optional[torch.Tensor] = None,
        cross_attention_kwargs: Optional[dict[str, Any]] = None,
        segmentation: Optional[torch.Tensor] = None,
        return_dict: bool = True,
        text_embeds: Optional[torch.Tensor] = None,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Predict from ``hidden_states`` ``(B, C, H, W)``; returns ``.sample`` ``(B, out_channels, H, W)``.

        ``class_labels`` ``(B,)`` (None: the null class); in training mode ``class_dropout_prob`` of
        them are dropped to the null class, as DiT does. ``segmentation`` ``(B, segmentation_channels,
        H, W)`` (None: zeros). ``text_embeds`` ``(B, text_embed_dim)`` pooled text (models built with
        ``text_embed_dim``; None: the null text; dropped like the labels in training mode).
        ``cross_attention_kwargs`` is accepted for diffusers compatibility and unused (there is no
        cross-attention).
        """
        del cross_attention_kwargs
        out = self._run(hidden_states, timestep, class_labels, segmentation, drop=None, random_drop=True, text=text_embeds)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

    def _run(
        self,
        x: torch.Tensor,
        timestep: Optional[torch.Tensor | float],
        class_labels: Optional[torch.Tensor],
        segmentation: Optional[torch.Tensor],
        *,
        drop: Optional[torch.Tensor],
        random_drop: bool,
        text: Optional[torch.Tensor] = None,
        frame_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if x.ndim != 4:
            raise ModelError(f"SegDiT expects hidden_states (B, C, H, W), got shape {tuple(x.shape)}")
        if timestep is None:
            raise ModelError("SegDiT needs a timestep: pass timestep=(B,) tensor or a number")
        b, _, h, w = x.shape
        p = self.config.patch_size
        if h % p or w % p:
            raise ModelError(f"SegDiT input {h}x{w} is not divisible by patch_size={p}; resize or pad it")
        if self.config.segmentation_channels:
            x = torch.cat([x, self._segmentation_input(segmentation, x)], dim=1)
        else:
            x = self._concatenated_input(x, segmentation)
        if x.shape[1] != self.patch_embed.in_channels:
            raise ModelError(
                f"SegDiT expects {self.config.in_channels} input channels, got {x.shape[1] - self.config.segmentation_channels}"
            )
        t = as_batch_timesteps(timestep, b, x.device)
        c = self.conditioning(t, class_labels, drop=drop, random_drop=random_drop, text=text, frame_index=frame_index)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        base = self.config.sample_size // p
        pos = sincos_2d(h // p, w // p, tokens.shape[-1], base_size=(base, base), device=x.device)
        tokens = tokens + pos.to(tokens.dtype)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = self._gradient_checkpointing_func(block, tokens, c)
            else:
                tokens = block(tokens, c)
        patches = self.final_layer(tokens, c)
        return _unpatchify(patches, h // p, w // p, p, self.out_channels)

    def _concatenated_input(self, x: torch.Tensor, segmentation: Optional[torch.Tensor]) -> torch.Tensor:
        """The Open-Sora document's convention (``in_channels`` counts image + map): the map fills the missing
        channels, zeros when none is given."""
        missing = self.patch_embed.in_channels - x.shape[1]
        if segmentation is None:
            return torch.cat([x, x.new_zeros(x.shape[0], missing, *x.shape[2:])], dim=1) if missing > 0 else x
        if missing <= 0 or segmentation.shape != (x.shape[0], missing, *x.shape[2:]):
            raise ModelError(
                f"this SegDiT takes {self.patch_embed.in_channels} input channels and got hidden_states with {x.shape[1]} and a "
                f"segmentation of shape {tuple(segmentation.shape)}: build it with in_channels = image + segmentation channels "
                f"(or segmentation_channels=C), and give segmentation as (B, C, H, W) matching hidden_states"
            )
        return torch.cat([x, segmentation.to(x.dtype)], dim=1)

    def _segmentation_input(self, segmentation: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        want = self.config.segmentation_channels
        if segmentation is None:
            return x.new_zeros(x.shape[0], want, *x.shape[2:])
        if segmentation.shape != (x.shape[0], want, *x.shape[2:]):
            raise ModelError(
                f"segmentation must have shape {(x.shape[0], want, *x.shape[2:])} to match hidden_states, got {tuple(segmentation.shape)}"
            )
        return segmentation.to(x.dtype)

    def forward_cond(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Per-frame DiT on videos ``(B, C, T, H, W)``: frames are folded into the batch.

        ``cond.class_labels`` (B,), ``cond.text_pooled`` (B, D) (models with ``text_embed_dim``) and
        ``cond.segmentation`` ((B, Cs, H, W) for all frames, or (B, Cs, T, H, W)) are shared by the
        frames of a video; rows with ``cond.null_text`` set (or without labels / text) get the null class
        and the null text. With ``frame_embedding`` each frame also gets its index. Returns the first ``C``
        output channels.
        """
        if x_t.ndim != 5:
            raise ModelError(f"forward_cond expects x_t (B, C, T, H, W), got shape {tuple(x_t.shape)}")
        b, ch, frames, h, w = x_t.shape
        flat = x_t.permute(0, 2, 1, 3, 4).reshape(b * frames, ch, h, w)
        t = as_batch_timesteps(t, b, x_t.device).repeat_interleave(frames)
        labels = cond.class_labels.repeat_interleave(frames) if cond.class_labels is not None else None
        drop = cond.null_text.to(x_t.device).repeat_interleave(frames) if cond.null_text is not None else None
        seg = cond.segmentation
        if seg is not None:
            if seg.ndim == 4:
                seg = seg.repeat_interleave(frames, dim=0)
            elif seg.ndim == 5:
                seg = seg.permute(0, 2, 1, 3, 4).reshape(b * frames, seg.shape[1], *seg.shape[3:])
            else:
                raise ModelError(f"cond.segmentation must be (B, C, H, W) or (B, C, T, H, W), got {tuple(seg.shape)}")
        text = cond.text_pooled if self.text_embedder is not None else None
        text = text.repeat_interleave(frames, dim=0) if text is not None else None
        index = torch.arange(frames, device=x_t.device).repeat(b) if self.frame_embedder is not None else None
        out = self._run(flat, t, labels, seg, drop=drop, random_drop=False, text=text, frame_index=index)
        out = out[:, :ch]  # learn_sigma's variance half, or a seed-style model's segmentation channels, dropped
        return out.reshape(b, frames, out.shape[1], h, w).permute(0, 2, 1, 3, 4)


def _unpatchify(patches: torch.Tensor, gh: int, gw: int, p: int, channels: int) -> torch.Tensor:
    """``(B, gh*gw, p*p*C)`` (each patch row-major, channels last) -> ``(B, C, gh*p, gw*p)``."""
    b = patches.shape[0]
    x = patches.reshape(b, gh, gw, p, p, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, gh * p, gw * p)
