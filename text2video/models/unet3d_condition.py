"""`UNet3DConditionModel`: Stable Diffusion's UNet inflated to video with motion modules (AnimateDiff),
with VideoCrafter's options: temporal convolution in the ResNets, an fps
embedding added to the timestep embedding, temporal cross-attention, and image-to-video dual
cross-attention with an image projector.

Input and output are ``(B, C, T, H, W)``. Spatial layers run on each frame (frames folded into the
batch); motion modules attend over frames. Importers: `from_unet2d` (a diffusers
``UNet2DConditionModel`` plus optional AnimateDiff motion weights), `load_motion_modules`
(diffusers ``MotionAdapter`` or the original AnimateDiff key layout) and `from_diffusers_unet3d`
(ModelScope-style weights in diffusers' ``UNet3DConditionModel`` format).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Optional, Sequence, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..diffusion.conditioning import Conditioning
from ..errors import ModelError
from ..nn.embeddings import sinusoidal_embedding
from ..nn.frames import fold_frames, unfold_frames
from ..nn.motion import TemporalTransformer
from .presets import Presets
from .unet3d_condition_blocks import (
    AttentionOptions,
    Context,
    CrossAttnDownBlock3D,
    CrossAttnUpBlock3D,
    DownBlock3D,
    ImageContextProjector,
    MotionOptions,
    UNetMidBlock3DCrossAttn,
    UpBlock3D,
)

logger = logging.getLogger(__name__)

_DOWN_BLOCKS = {"CrossAttnDownBlock3D": CrossAttnDownBlock3D, "DownBlock3D": DownBlock3D}
_UP_BLOCKS = {"CrossAttnUpBlock3D": CrossAttnUpBlock3D, "UpBlock3D": UpBlock3D}

#: Named sizes. ``sd15``: Stable Diffusion 1.5 with AnimateDiff v2 motion modules;
#: ``tiny``: the same structure at CPU scale; ``videocrafter-tiny``: tiny with every VideoCrafter option.
PRESETS: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        "sd15": MappingProxyType(
            dict(
                in_channels=4,
                out_channels=4,
                block_out_channels=(320, 640, 1280, 1280),
                layers_per_block=2,
                num_attention_heads=8,
                cross_attention_dim=768,
                norm_num_groups=32,
                motion_num_attention_heads=8,
                motion_norm_num_groups=32,
                motion_max_seq_length=32,
                motion_mid_block=True,
            )
        ),
        "tiny": MappingProxyType(
            dict(
                in_channels=4,
                out_channels=4,
                block_out_channels=(32, 32, 64, 64),
                layers_per_block=1,
                num_attention_heads=2,
                cross_attention_dim=32,
                norm_num_groups=8,
                motion_num_attention_heads=2,
                motion_norm_num_groups=8,
                motion_max_seq_length=32,
            )
        ),
        "videocrafter-tiny": MappingProxyType(
            dict(
                in_channels=4,
                out_channels=4,
                block_out_channels=(32, 32, 64, 64),
                layers_per_block=1,
                num_attention_heads=2,
                cross_attention_dim=32,
                norm_num_groups=8,
                motion_num_attention_heads=2,
                motion_norm_num_groups=8,
                temporal_conv=True,
                temporal_cross_attention=True,
                fps_embedding=True,
                image_cross_attention=True,
                image_embed_dim=32,
                num_image_tokens=4,
            )
        ),
    }
)


@dataclass
class UNet3DConditionOutput(BaseOutput):
    """``sample``: the prediction, ``(B, C, T, H, W)``."""

    sample: torch.Tensor


class TimestepMLP(nn.Module):
    """Linear, SiLU, linear: a sinusoidal embedding -> the ResNets' conditioning vector."""

    def __init__(self, in_dim: int, out_dim: int, zero_init: bool = False) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(out_dim, out_dim)
        if zero_init:
            nn.init.zeros_(self.linear_2.weight)
            nn.init.zeros_(self.linear_2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


def _per_block(value: Union[int, Sequence[int]], n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ModelError(f"{name} has {len(value)} entries but the model has {n} blocks; give one per block or one int")
    return value


class UNet3DConditionModel(Presets, ModelMixin, ConfigMixin):
    """Text(-and-image)-conditioned 3D UNet of latent video diffusion (AnimateDiff and VideoCrafter).

    Sizes: ``block_out_channels``, ``layers_per_block``, ``num_attention_heads`` (spatial heads per block,
    head width = channels / heads), ``cross_attention_dim`` (text token width), ``norm_num_groups``.
    Motion modules (``use_motion_modules``): a temporal transformer after every ResNet/attention pair
    (``motion_in_plain_blocks``: also in blocks without attention; ``motion_mid_block``: in the middle
    block), ``motion_layers`` transformer layers each, ``motion_num_attention_heads`` heads, sinusoidal
    frame positions up to ``motion_max_seq_length`` (``motion_positional_embedding=None``: none),
    zero-initialised output (``motion_zero_init``).
    VideoCrafter options: ``temporal_conv`` (temporal convolution inside every ResNet),
    ``fps_embedding`` (fps sinusoid -> MLP, added to the timestep embedding; zero-initialised),
    ``temporal_cross_attention`` (motion modules' second attention attends to the text/image tokens),
    ``image_cross_attention`` (dual cross-attention; ``image_embed_dim``-wide embeddings become
    ``num_image_tokens`` tokens through the image projector). ModelScope's input temporal transformer:
    ``input_temporal_transformer``.

    Null text (classifier-free guidance): a row without text attends to an empty context, so the
    text cross-attention contributes only its output bias. That equals attending to all-masked
    tokens; no learned null embedding is used, so an imported model keeps working unchanged.
    """

    _supports_gradient_checkpointing = True
    # the units FSDP shards and gathers (train.sharding); those a configuration lacks are skipped
    _no_split_modules = ["ResnetBlock3D", "Transformer3DModel", "TemporalTransformer"]

    PRESETS = PRESETS

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        down_block_types: Sequence[str] = ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types: Sequence[str] = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        layers_per_block: int = 2,
        transformer_layers_per_block: int = 1,
        num_attention_heads: Union[int, Sequence[int]] = 8,
        cross_attention_dim: int = 768,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        dropout: float = 0.0,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        flip_sin_to_cos: bool = True,
        freq_shift: float = 0.0,
        use_motion_modules: bool = True,
        motion_num_attention_heads: Union[int, Sequence[int]] = 8,
        motion_layers: int = 1,
        motion_norm_num_groups: int = 32,
        motion_positional_embedding: Optional[str] = "sinusoidal",
        motion_max_seq_length: int = 32,
        motion_mid_block: bool = True,
        motion_in_plain_blocks: bool = True,
        motion_zero_init: bool = True,
        temporal_conv: bool = False,
        temporal_conv_dropout: float = 0.1,
        temporal_cross_attention: bool = False,
        fps_embedding: bool = False,
        default_fps: float = 8.0,
        image_cross_attention: bool = False,
        image_embed_dim: int = 1024,
        num_image_tokens: int = 16,
        image_cross_attention_scale: float = 1.0,
        image_frame_channels: Optional[int] = None,
        input_temporal_transformer: bool = False,
        input_temporal_heads: int = 8,
        input_temporal_head_dim: int = 64,
        sample_size: Optional[int] = None,
    ) -> None:
        super().__init__()
        n = len(block_out_channels)
        if len(down_block_types) != n or len(up_block_types) != n:
            raise ModelError(
                f"down_block_types ({len(down_block_types)}), up_block_types ({len(up_block_types)}) and "
                f"block_out_channels ({n}) must have the same length"
            )
        unknown = [b for b in down_block_types if b not in _DOWN_BLOCKS] + [b for b in up_block_types if b not in _UP_BLOCKS]
        if unknown:
            raise ModelError(f"unknown block types {unknown}; use {sorted(_DOWN_BLOCKS)} and {sorted(_UP_BLOCKS)}")
        for c in block_out_channels:
            if c % norm_num_groups:
                raise ModelError(f"block width {c} is not divisible by norm_num_groups={norm_num_groups}; change one of them")
        heads = _per_block(num_attention_heads, n, "num_attention_heads")
        motion_heads = _per_block(motion_num_attention_heads, n, "motion_num_attention_heads")
        ch0 = block_out_channels[0]
        temb = ch0 * 4

        self.conv_in = nn.Conv2d(in_channels, ch0, 3, padding=1)
        self.time_embedding = TimestepMLP(ch0, temb)
        self.fps_embedder = TimestepMLP(ch0, temb, zero_init=True) if fps_embedding else None
        self.image_projector = (
            ImageContextProjector(image_embed_dim, cross_attention_dim, num_image_tokens, image_frame_channels or in_channels)
            if image_cross_attention
            else None
        )
        self.transformer_in = (
            TemporalTransformer(
                ch0,
                heads=input_temporal_heads,
                dim_head=input_temporal_head_dim,
                norm_groups=norm_num_groups,
                positional_embedding=None,
                zero_init=motion_zero_init,
            )
            if input_temporal_transformer
            else None
        )

        motion = MotionOptions(
            enabled=use_motion_modules,
            layers=motion_layers,
            norm_groups=motion_norm_num_groups,
            positional_embedding=motion_positional_embedding,
            max_seq_length=motion_max_seq_length,
            in_plain_blocks=motion_in_plain_blocks,
            zero_init=motion_zero_init,
            cross_attention=temporal_cross_attention,
        )
        attn = AttentionOptions(
            cross_attention_dim=cross_attention_dim,
            transformer_layers=transformer_layers_per_block,
            norm_groups=norm_num_groups,
            image_context=image_cross_attention,
            image_scale=image_cross_attention_scale,
        )
        resnet_kwargs = dict(
            groups=norm_num_groups,
            eps=norm_eps,
            dropout=dropout,
            temporal_conv=temporal_conv,
            temporal_conv_dropout=temporal_conv_dropout,
        )

        self.down_blocks = nn.ModuleList()
        out_ch = ch0
        for i, kind in enumerate(down_block_types):
            in_ch, out_ch = out_ch, block_out_channels[i]
            self.down_blocks.append(
                _DOWN_BLOCKS[kind](
                    in_ch,
                    out_ch,
                    temb,
                    num_layers=layers_per_block,
                    heads=heads[i],
                    motion_heads=motion_heads[i],
                    add_downsample=i < n - 1,
                    downsample_padding=downsample_padding,
                    resnet_kwargs=resnet_kwargs,
                    motion=motion,
                    attn=attn,
                )
            )
        self.mid_block = UNetMidBlock3DCrossAttn(
            block_out_channels[-1],
            temb,
            heads=heads[-1],
            motion_heads=motion_heads[-1],
            use_motion=motion_mid_block,
            resnet_kwargs={**resnet_kwargs, "output_scale_factor": mid_block_scale_factor},
            motion=motion,
            attn=attn,
        )
        self.up_blocks = nn.ModuleList()
        rev = list(reversed(block_out_channels))
        rev_heads, rev_motion_heads = list(reversed(heads)), list(reversed(motion_heads))
        out_ch = rev[0]
        for i, kind in enumerate(up_block_types):
            prev, out_ch = out_ch, rev[i]
            skip_in = rev[min(i + 1, n - 1)]
            self.up_blocks.append(
                _UP_BLOCKS[kind](
                    skip_in,
                    prev,
                    out_ch,
                    temb,
                    num_layers=layers_per_block + 1,
                    heads=rev_heads[i],
                    motion_heads=rev_motion_heads[i],
                    add_upsample=i < n - 1,
                    resnet_kwargs=resnet_kwargs,
                    motion=motion,
                    attn=attn,
                )
            )
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, ch0, eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch0, out_channels, 3, padding=1)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_unet2d(
        cls,
        unet2d: Union[str, Path, nn.Module],
        motion_adapter: Union[None, str, Path, nn.Module, dict] = None,
        **overrides: Any,
    ) -> UNet3DConditionModel:
        """Inflate a diffusers ``UNet2DConditionModel`` (instance or folder) into this model (a
        ``UNetMotionModel`` is accepted too, its motion modules included).

        ``motion_adapter``: AnimateDiff motion weights (a diffusers ``MotionAdapter``, its folder,
        or a ``.safetensors`` / ``.ckpt`` file in either key layout). Without one the motion modules
        start at zero and the model reproduces the image model on every frame. ``overrides`` change
        the config (e.g. ``fps_embedding=True``); weights they add start fresh.
        """
        from .unet3d_condition_keys import inflate_unet2d

        return inflate_unet2d(cls, unet2d, motion_adapter, overrides)

    @classmethod
    def from_diffusers_unet3d(cls, unet3d: Union[str, Path, nn.Module], **overrides: Any) -> UNet3DConditionModel:
        """Load ModelScope-style weights from a diffusers ``UNet3DConditionModel`` (instance or folder)."""
        from .unet3d_condition_keys import load_diffusers_unet3d

        return load_diffusers_unet3d(cls, unet3d, overrides)

    def load_motion_modules(self, adapter: Union[str, Path, nn.Module, dict], strict: bool = True) -> list[str]:
        """Load AnimateDiff motion weights (``MotionAdapter``, folder, file or state dict; diffusers or
        original key layout) into the motion modules; returns the names loaded."""
        from .unet3d_condition_keys import load_motion_state

        return load_motion_state(self, adapter, strict=strict)

    # ------------------------------------------------------------------ training helpers
    def motion_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of every motion module (temporal transformers)."""
        for name, p in self.named_parameters():
            if ".motion_modules." in name:
                yield name, p

    def freeze_except_motion_modules(self) -> int:
        """AnimateDiff's recipe: only the motion modules train. Returns the trainable parameter count."""
        self.requires_grad_(False)
        count = 0
        for _, p in self.motion_parameters():
            p.requires_grad_(True)
            count += p.numel()
        if count == 0:
            raise ModelError("this model has no motion modules to train; build it with use_motion_modules=True")
        return count

    def motion_state_dict(self) -> dict[str, torch.Tensor]:
        """The motion modules' weights only (to share them as a motion adapter)."""
        return {name: p.detach() for name, p in self.motion_parameters()}

    # ------------------------------------------------------------------ forward
    def _embed(self, values: torch.Tensor) -> torch.Tensor:
        return sinusoidal_embedding(
            values, self.config.block_out_channels[0], cos_first=self.config.flip_sin_to_cos, freq_shift=self.config.freq_shift
        )

    def encode_image(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` conditioning frames -> ``(B, image_embed_dim)`` with the built-in frame encoder."""
        if self.image_projector is None:
            raise ModelError("this model has no image cross-attention; build it with image_cross_attention=True")
        return self.image_projector.encode_frames(frames.to(self.dtype))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, float, int],
        encoder_hidden_states: Optional[torch.Tensor] = None,
        encoder_attention_mask: Optional[torch.Tensor] = None,
        fps: Union[None, torch.Tensor, float] = None,
        image_embeds: Optional[torch.Tensor] = None,
        return_dict: bool = True,
    ) -> Union[UNet3DConditionOutput, tuple[torch.Tensor]]:
        """Predict from ``sample`` ``(B, C, T, H, W)`` at ``timestep`` (scalar or ``(B,)``).

        encoder_hidden_states: ``(B, L, cross_attention_dim)`` text tokens (None: no text).
        encoder_attention_mask: ``(B, L)``, True/1 on tokens to attend to.
        fps: ``(B,)`` or a number (models with ``fps_embedding``; default ``default_fps``).
        image_embeds: ``(B, image_embed_dim)`` or ``(B, N, image_embed_dim)`` (models with image
        cross-attention; None: the image branch is off).
        """
        if sample.ndim != 5:
            raise ModelError(f"sample must be (B, C, T, H, W), got shape {tuple(sample.shape)}")
        b, _, frames, height, width = sample.shape
        if encoder_hidden_states is not None and encoder_hidden_states.shape[-1] != self.config.cross_attention_dim:
            raise ModelError(
                f"text tokens have width {encoder_hidden_states.shape[-1]} but the model's cross_attention_dim is "
                f"{self.config.cross_attention_dim}; use a text encoder of that width or rebuild the model"
            )
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(-1).expand(b) if t.numel() == 1 else t.reshape(b)
        emb = self.time_embedding(self._embed(t).to(self.dtype))
        if self.fps_embedder is not None:
            fps_t = torch.as_tensor(self.config.default_fps if fps is None else fps, device=sample.device, dtype=torch.float32)
            fps_t = fps_t.reshape(-1).expand(b) if fps_t.numel() == 1 else fps_t.reshape(b)
            emb = emb + self.fps_embedder(self._embed(fps_t).to(self.dtype))

        image_context = None
        if image_embeds is not None:
            if self.image_projector is None:
                raise ModelError("image_embeds given but the model has no image cross-attention (image_cross_attention=True)")
            image_context = self.image_projector(image_embeds.to(self.dtype))
        mask = None if encoder_attention_mask is None else encoder_attention_mask.to(device=sample.device).bool()
        ctx = Context(text=encoder_hidden_states, text_mask=mask, image=image_context)

        up_factor = 2 ** (len(self.up_blocks) - 1)
        forward_size = height % up_factor != 0 or width % up_factor != 0

        x = unfold_frames(self.conv_in(fold_frames(sample)), frames)
        if self.transformer_in is not None:
            x = self.transformer_in(x)
        skips: tuple[torch.Tensor, ...] = (x,)
        for block in self.down_blocks:
            x, res = block(x, emb, ctx)
            skips += res
        x = self.mid_block(x, emb, ctx)
        for i, block in enumerate(self.up_blocks):
            k = len(block.resnets)
            res, skips = skips[-k:], skips[:-k]
            size = tuple(skips[-1].shape[-2:]) if (forward_size and i < len(self.up_blocks) - 1) else None
            x = block(x, res, emb, ctx, size)
        x2d = self.conv_out(self.conv_act(self.conv_norm_out(fold_frames(x))))
        out = unfold_frames(x2d, frames)
        if not return_dict:
            return (out,)
        return UNet3DConditionOutput(sample=out)

    def forward_cond(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """`denoise` protocol: text tokens/mask (null rows attend to nothing), fps, and the first given
        frame of ``cond.image`` as the image condition (when the model has image cross-attention)."""
        tokens, mask = cond.text_tokens, cond.text_mask
        if tokens is not None:
            if mask is None:
                mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            mask = mask.bool()
            if cond.null_text is not None:
                mask = mask & ~cond.null_text.to(mask.device).bool()[:, None]
            tokens = tokens.to(self.dtype)
        image_embeds = None
        if cond.image is not None and self.image_projector is not None:
            image_embeds = self.encode_image(_first_given_frame(cond.image, cond.frame_mask))
        out = self.forward(
            x_t, t, encoder_hidden_states=tokens, encoder_attention_mask=mask, fps=cond.fps, image_embeds=image_embeds
        ).sample
        return out[:, : x_t.shape[1]]


def _first_given_frame(image: torch.Tensor, frame_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B, C, H, W)``: each row's first frame with mask True (frame 0 if none)."""
    if image.ndim == 4:
        return image
    if frame_mask is None:
        return image[:, :, 0]
    idx = frame_mask.to(image.device).bool().float().argmax(dim=1)  # first True, 0 when none
    return image[torch.arange(image.shape[0], device=image.device), :, idx]
