"""`STDiT` and `DiffuserSTDiT`: a spatio-temporal diffusion transformer for video (Open-Sora).

Video latents ``(B, C, T, H, W)`` are cut into 3-D patches (``patch_size=(1, 2, 2)``: one frame, 2x2
pixels) and given fixed sin-cos positions in space (2-D) and time (1-D), both sized from the actual
input, so T = 1, longer clips and other resolutions run. Each block attends within a frame
(spatial), across frames at one place (temporal), then to the caption tokens (cross-attention, with
the token mask), then applies an MLP. The timestep embedding drives adaLN-Zero modulation of the
spatial, temporal and MLP branches; their gates, the cross-attention output and the final layer start
at zero, so a fresh model predicts exactly zeros.

Channels: ``in_channels`` counts everything the patch embedding sees, i.e. the latent channels plus
the channels of ``cond_image`` (concatenated on channels), as Open-Sora's models do; ``out_channels``
is the prediction's channels. A model built with ``in_channels > out_channels`` and called without
``cond_image`` gets zeros in those channels (the unconditional input).

Text: ``y`` holds caption token states ``[B, 1, N_token, caption_channels]``; ``mask`` ``[B, N_token]``
marks real tokens. A learned null caption (``y_embedding``, ``model_max_length`` tokens) replaces
dropped rows (classifier-free guidance) and the text of calls without ``y``. With ``pooled_text`` the
masked mean of the caption tokens also goes, through an MLP, into the timestep embedding that drives
every block's adaLN modulation (as Imagen and Stable Diffusion 3 add pooled text to it), so the caption
steers every block from the first step; Open-Sora's STDiT has cross-attention only (``pooled_text=False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..diffusion.conditioning import Conditioning
from ..errors import ModelError
from ..nn.attention import Attention
from ..nn.dit_blocks import (
    AdaLNModulation,
    FinalLayer,
    Mlp,
    TimestepEmbedder,
    gated,
    init_dit_weights,
    modulate,
    sincos_1d,
    sincos_2d,
)
from .image_cond import as_batch_timesteps, cond_image_channels
from .presets import Presets

#: DiT's model sizes (Peebles & Xie, Table 1), used for STDiT with patches of 1x2x2.
PRESETS: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        name: MappingProxyType(dict(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=(1, 2, 2)))
        for name, depth, hidden, heads in (
            ("STDiT-S/2", 12, 384, 6),
            ("STDiT-B/2", 12, 768, 12),
            ("STDiT-L/2", 24, 1024, 16),
            ("STDiT-XL/2", 28, 1152, 16),
        )
    }
)


class STDiTBlock(nn.Module):
    """Spatial self-attention, temporal self-attention, cross-attention to text, MLP."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, cross_attention: bool) -> None:
        super().__init__()
        head_dim = hidden_size // num_heads
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.spatial_attn = Attention(hidden_size, heads=num_heads, dim_head=head_dim, qkv_bias=True)
        self.norm_temporal = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.temporal_attn = Attention(hidden_size, heads=num_heads, dim_head=head_dim, qkv_bias=True)
        self.norm_cross = nn.LayerNorm(hidden_size, eps=1e-6) if cross_attention else None
        self.cross_attn = Attention(hidden_size, heads=num_heads, dim_head=head_dim, qkv_bias=True) if cross_attention else None
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.modulation = AdaLNModulation(hidden_size, 9)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        context: Optional[torch.Tensor] = None,
        context_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``x`` ``(B, T, S, D)`` tokens, ``c`` ``(B, D)``, ``context`` ``(B, L, D)``, mask ``(B, L)``."""
        b, frames, space, d = x.shape
        sh_s, sc_s, g_s, sh_t, sc_t, g_t, sh_m, sc_m, g_m = self.modulation(c)
        h = modulate(self.norm1(x), sh_s, sc_s).reshape(b * frames, space, d)
        x = x + gated(self.spatial_attn(h).view(b, frames, space, d), g_s)
        h = modulate(self.norm_temporal(x), sh_t, sc_t).transpose(1, 2).reshape(b * space, frames, d)
        x = x + gated(self.temporal_attn(h).view(b, space, frames, d).transpose(1, 2), g_t)
        if self.cross_attn is not None and context is not None:
            h = self.norm_cross(x).reshape(b, frames * space, d)
            x = x + self.cross_attn(h, context, key_mask=context_mask).view(b, frames, space, d)
        return x + gated(self.mlp(modulate(self.norm2(x), sh_m, sc_m)), g_m)


class STDiT(Presets, ModelMixin, ConfigMixin):
    """Spatio-temporal DiT over ``(B, C, T, H, W)`` video latents (see the module docstring)."""

    PRESETS = PRESETS
    _supports_gradient_checkpointing = True
    _no_split_modules = ["STDiTBlock"]  # the unit FSDP shards and gathers (train.sharding)

    @register_to_config
    def __init__(
        self,
        input_size: Sequence[int] = (16, 32, 32),
        in_channels: int = 4,
        out_channels: Optional[int] = None,
        patch_size: Sequence[int] = (1, 2, 2),
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        caption_channels: int = 4096,
        model_max_length: int = 120,
        class_dropout_prob: float = 0.1,
        pooled_text: bool = False,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ModelError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
        if hidden_size % 4:
            raise ModelError(f"hidden_size={hidden_size} must be divisible by 4 (2-D sin-cos positions)")
        if len(patch_size) != 3 or len(input_size) != 3:
            raise ModelError(f"input_size and patch_size must be (T, H, W) triples, got {input_size} and {patch_size}")
        self.out_channels = out_channels or in_channels
        self.patch = tuple(int(p) for p in patch_size)
        self.patch_embed = nn.Conv3d(in_channels, hidden_size, self.patch, stride=self.patch)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.pooled_proj = None
        if caption_channels:
            self.caption_proj = Mlp(caption_channels, hidden_size, hidden_size)
            self.y_embedding = nn.Parameter(torch.randn(model_max_length, caption_channels) / caption_channels**0.5)
            if pooled_text:
                self.pooled_proj = Mlp(caption_channels, hidden_size, hidden_size)
        else:
            if pooled_text:
                raise ModelError("pooled_text needs caption_channels > 0 (a model with text)")
            self.caption_proj = None
            self.y_embedding = None
        self.blocks = nn.ModuleList(
            STDiTBlock(hidden_size, num_heads, mlp_ratio, cross_attention=bool(caption_channels)) for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size, self.patch[0] * self.patch[1] * self.patch[2] * self.out_channels)
        self.gradient_checkpointing = False  # enable_gradient_checkpointing(): each block recomputed in backward
        self._init_weights()

    def _init_weights(self) -> None:
        init_dit_weights(self)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.t_embedder.linear_1.weight, std=0.02)
        nn.init.normal_(self.t_embedder.linear_2.weight, std=0.02)
        for block in self.blocks:
            if block.cross_attn is not None:
                nn.init.zeros_(block.cross_attn.to_out.weight)
                nn.init.zeros_(block.cross_attn.to_out.bias)

    # -- text ---------------------------------------------------------------------------------
    def text_context(
        self,
        y: Optional[torch.Tensor],
        mask: Optional[torch.Tensor],
        batch: int,
        *,
        drop: Optional[torch.Tensor] = None,
        random_drop: bool = True,
    ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Caption tokens ``-> ((B, L, hidden), (B, L) bool, pooled)``, the null caption on dropped rows; ``pooled``
        ``(B, hidden)`` is the projected masked mean of the tokens (models with ``pooled_text``, else None)."""
        if self.caption_proj is None:
            if y is not None:
                raise ModelError("this STDiT was built without text (caption_channels=0) but got caption tokens y")
            return None, None, None
        device = self.y_embedding.device
        null = self.y_embedding
        channels = null.shape[1]
        if y is None:
            y = null.new_zeros(batch, 1, 0, channels)
            drop = torch.ones(batch, dtype=torch.bool, device=device)
        if y.ndim == 3:
            y = y[:, None]
        if y.ndim != 4 or y.shape[0] != batch or y.shape[1] != 1 or y.shape[3] != channels:
            raise ModelError(
                f"STDiT expects caption tokens y of shape [B={batch}, 1, N_token, caption_channels={channels}], "
                f"got {tuple(y.shape)}; match caption_channels to the text encoder's width"
            )
        y = y[:, 0].to(null.dtype)
        n = y.shape[1]
        if mask is None:
            mask = torch.ones(batch, n, dtype=torch.bool, device=y.device)
        mask = mask.reshape(batch, -1).to(dtype=torch.bool, device=y.device)
        if mask.shape[1] != n:
            raise ModelError(f"mask must be [B, N_token] = [{batch}, {n}], got {tuple(mask.shape)}")
        drop = torch.zeros(batch, dtype=torch.bool, device=y.device) if drop is None else drop.to(y.device).bool()
        if random_drop and self.training and self.config.class_dropout_prob > 0:
            drop = drop | (torch.rand(batch, device=y.device) < self.config.class_dropout_prob)
        length = max(n, null.shape[0])
        tokens = F.pad(y, (0, 0, 0, length - n))
        token_mask = F.pad(mask, (0, length - n), value=False)
        null_tokens = F.pad(null, (0, 0, 0, length - null.shape[0]))[None].expand(batch, -1, -1)
        null_mask = (torch.arange(length, device=y.device) < null.shape[0])[None].expand(batch, -1)
        tokens = torch.where(drop[:, None, None], null_tokens.to(y.device), tokens)
        token_mask = torch.where(drop[:, None], null_mask, token_mask)
        pooled = None
        if self.pooled_proj is not None:
            weights = token_mask.to(tokens.dtype)[..., None]
            pooled = self.pooled_proj((tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0))
        return self.caption_proj(tokens), token_mask, pooled

    # -- forward ------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor | float,
        y: Optional[torch.Tensor] = None,
        mask: Optional[torch.Tensor] = None,
        cond_image: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``x`` ``[B, C, T, H, W]``, ``timestep`` ``[B]`` or a number, ``y`` ``[B, 1, N_token,
        caption_channels]``, ``mask`` ``[B, N_token]``, ``cond_image`` ``[B, C_cond, T, H, W]``
        -> ``[B, out_channels, T, H, W]``. In training mode ``class_dropout_prob`` of the captions
        are replaced by the null caption."""
        context, context_mask, pooled = self.text_context(y, mask, x.shape[0], random_drop=True)
        return self._run(x, timestep, context, context_mask, cond_image, pooled)

    def _run(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor | float,
        context: Optional[torch.Tensor],
        context_mask: Optional[torch.Tensor],
        cond_image: Optional[torch.Tensor],
        pooled: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if x.ndim != 5:
            raise ModelError(f"STDiT expects x of shape [B, C, T, H, W], got {tuple(x.shape)}")
        x = self._with_cond_image(x, cond_image)
        b, _, frames, h, w = x.shape
        pt, ph, pw = self.patch
        if frames % pt or h % ph or w % pw:
            raise ModelError(f"STDiT input (T, H, W)=({frames}, {h}, {w}) is not divisible by patch_size={self.patch}")
        gt, gh, gw = frames // pt, h // ph, w // pw
        tokens = self.patch_embed(x).flatten(3).permute(0, 2, 3, 1)  # (B, T', S, D)
        d = tokens.shape[-1]
        base = (max(self.config.input_size[1] // ph, 1), max(self.config.input_size[2] // pw, 1))
        spatial = sincos_2d(gh, gw, d, base_size=base, device=x.device)
        temporal = sincos_1d(torch.arange(gt, device=x.device), d)
        tokens = tokens + (spatial[None, None] + temporal[None, :, None]).to(tokens.dtype)
        c = self.t_embedder(as_batch_timesteps(timestep, b, x.device))
        if pooled is not None:
            c = c + pooled.to(c.dtype)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = self._gradient_checkpointing_func(block, tokens, c, context, context_mask)
            else:
                tokens = block(tokens, c, context, context_mask)
        patches = self.final_layer(tokens, c)  # (B, T', S, pt*ph*pw*C)
        out = patches.reshape(b, gt, gh, gw, pt, ph, pw, self.out_channels)
        return out.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, self.out_channels, frames, h, w)

    def _with_cond_image(self, x: torch.Tensor, cond_image: Optional[torch.Tensor]) -> torch.Tensor:
        want = self.config.in_channels
        if cond_image is not None:
            if cond_image.ndim != 5 or cond_image.shape[0] != x.shape[0] or cond_image.shape[2:] != x.shape[2:]:
                raise ModelError(f"cond_image must be [B, C_cond, T, H, W] matching x {tuple(x.shape)}, got {tuple(cond_image.shape)}")
            x = torch.cat([x, cond_image.to(x.dtype)], dim=1)
        elif x.shape[1] < want:
            x = torch.cat([x, x.new_zeros(x.shape[0], want - x.shape[1], *x.shape[2:])], dim=1)
        if x.shape[1] != want:
            raise ModelError(
                f"STDiT was built with in_channels={want} (latent + cond_image channels) but got {x.shape[1]}; "
                "build it with in_channels = latent channels + cond_image channels"
            )
        return x

    def forward_cond(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Token-level text (``cond.text_tokens`` / ``text_mask``, null caption where ``null_text``),
        image frames (``cond.image`` / ``frame_mask``) as ``cond_image`` channels."""
        b = x_t.shape[0]
        y = cond.text_tokens if self.caption_proj is not None else None
        drop = cond.null_text if self.caption_proj is not None else None
        context, context_mask, pooled = self.text_context(y, cond.text_mask if y is not None else None, b, drop=drop, random_drop=False)
        n_cond = self.config.in_channels - x_t.shape[1]
        cond_image = cond_image_channels(cond, x_t, n_cond, "STDiT")
        return self._run(x_t, t, context, context_mask, cond_image, pooled)


@dataclass
class DiffuserSTDiTModelOutput(BaseOutput):
    """``sample``: the prediction ``[B, out_channels, T, H, W]``."""

    sample: torch.Tensor


class DiffuserSTDiT(Presets, ModelMixin, ConfigMixin):
    """A diffusers-style wrapper around `STDiT`: same constructor arguments, a ``forward`` with
    ``encoder_hidden_states`` and an output object with ``.sample``. ``cross_attention_dim`` (the diffusers
    name of the text width, as the Open-Sora document calls it for this class) sets ``caption_channels``."""

    PRESETS = PRESETS
    _supports_gradient_checkpointing = True
    _no_split_modules = ["STDiTBlock"]

    @register_to_config
    def __init__(
        self,
        input_size: Sequence[int] = (16, 32, 32),
        in_channels: int = 4,
        out_channels: Optional[int] = None,
        patch_size: Sequence[int] = (1, 2, 2),
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        caption_channels: int = 4096,
        model_max_length: int = 120,
        class_dropout_prob: float = 0.1,
        pooled_text: bool = False,
        cross_attention_dim: Optional[int] = None,
    ) -> None:
        super().__init__()
        if cross_attention_dim is not None:
            caption_channels = cross_attention_dim
        self.model = STDiT(
            input_size=input_size,
            in_channels=in_channels,
            out_channels=out_channels,
            patch_size=patch_size,
            hidden_size=hidden_size,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            caption_channels=caption_channels,
            model_max_length=model_max_length,
            class_dropout_prob=class_dropout_prob,
            pooled_text=pooled_text,
        )

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        cond_image: Optional[torch.Tensor] = None,
        mask: Optional[torch.Tensor] = None,
        return_dict: bool = True,
    ) -> DiffuserSTDiTModelOutput | tuple[torch.Tensor]:
        """``encoder_hidden_states``: ``[B, N_token, caption_channels]`` (``[B, 1, D]`` is one token)
        or STDiT's ``[B, 1, N_token, caption_channels]``; ``mask`` ``[B, N_token]``."""
        out = self.model(x, timestep, y=encoder_hidden_states, mask=mask, cond_image=cond_image)
        return DiffuserSTDiTModelOutput(sample=out) if return_dict else (out,)

    def forward_cond(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """See `STDiT.forward_cond`."""
        return self.model.forward_cond(x_t, t, cond)
