"""LLaVA-OneVision-1.5 as native transformers modules: RICE-ViT + patch merger + Qwen3.

The published checkpoint (``lmms-lab/LLaVA-OneVision-1.5-4B-Instruct``) ships remote modeling
code; this module rebuilds the architecture from transformers' own pieces so that it loads
without running downloaded code:

- the RICE-ViT blocks are transformers' ``Qwen2VLVisionBlock`` (LayerNorm ``norm1``/``norm2``,
  ``attn.qkv`` with bias + ``attn.proj``, ``mlp.fc1``/``mlp.fc2``), the merger is
  ``qwen2_vl.PatchMerger`` (``ln_q``, ``mlp.0``, ``mlp.2``); what RICE adds on top is written
  here: a bias-free ``Conv2d`` patch embedding (temporal patch 1), a class token with its own
  rotary angles prepended to every frame, and a LayerNorm before the blocks;
- the language model is transformers' ``Qwen3Model`` with an untied ``lm_head``.

Module names equal the published parameter names (``visual.*``, ``model.*``, ``lm_head.weight``),
so ``from_pretrained`` reads the hub safetensors as they are. The language model uses plain 1-D
RoPE positions (the published model does not use multimodal RoPE); the attention of the language
model is whatever ``text_config._attn_implementation`` names, so livr's bottleneck registry route
applies unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import GenerationMixin, PreTrainedConfig, PreTrainedModel, Qwen3Config, Qwen3Model
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.qwen2_vl.modeling_qwen2_vl import PatchMerger, Qwen2VLVisionBlock

MODEL_TYPE = "llavaonevision1_5"


@strict
class RiceVisionConfig(PreTrainedConfig):
    """The RICE-ViT vision tower; field names and defaults as in the published ``vision_config``."""

    model_type = "rice_vit"
    base_config_key = "vision_config"

    depth: int = 24
    embed_dim: int = 1024
    hidden_size: int = 1024
    hidden_act: str = "gelu"
    intermediate_size: int = 4096
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    text_hidden_size: int = 2560

    @property
    def mlp_ratio(self) -> float:
        # transformers' Qwen2VLVisionBlock sizes its MLP as embed_dim * mlp_ratio
        return self.intermediate_size / self.embed_dim


@strict
class LlavaOneVision15Config(PreTrainedConfig):
    """Top-level config (``model_type`` ``llavaonevision1_5``, as on the hub)."""

    model_type = MODEL_TYPE
    sub_configs_defaults: ClassVar[dict[str, Any]] = {
        "vision_config": RiceVisionConfig,
        "text_config": Qwen3Config,
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    vocab_size: int = 151936
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        # the hub's text_config names its own model_type ("LLaVAOneVision1_5_text"); it is a Qwen3 config
        for key in ("text_config", "vision_config"):
            sub = getattr(self, key)
            if isinstance(sub, dict):
                setattr(self, key, {k: v for k, v in sub.items() if k != "model_type"})
        super().__post_init__(**kwargs)


class LlavaOneVision15PreTrainedModel(PreTrainedModel):
    config_class = LlavaOneVision15Config
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["Qwen3DecoderLayer", "Qwen2VLVisionBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, RiceVisionModel):
            std = module.config.hidden_size**-0.5
            module.class_embedding.normal_(0.0, std)
            module.class_pos_emb.normal_(0.0, 1.0)


class RicePatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution (no bias); one frame per patch row."""

    def __init__(self, patch_size: int, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = pixel_values.view(-1, self.in_channels, self.patch_size, self.patch_size)
        return self.proj(patches.to(self.proj.weight.dtype)).view(-1, self.embed_dim)


def merge_window_positions(grid_thw: torch.Tensor, merge: int) -> torch.Tensor:
    """``(N, 2)`` (row, column) of every patch, in the processor's order: merge windows row by row."""
    out = []
    for t, h, w in grid_thw.tolist():
        rows = torch.arange(h)[:, None].expand(h, w)
        cols = torch.arange(w)[None, :].expand(h, w)
        pos = torch.stack([rows, cols], dim=-1).reshape(h // merge, merge, w // merge, merge, 2)
        out.append(pos.permute(0, 2, 1, 3, 4).reshape(-1, 2).repeat(t, 1))
    return torch.cat(out)


class RiceVisionModel(LlavaOneVision15PreTrainedModel):
    """RICE-ViT: patches -> [class token + frame patches] -> pre-LayerNorm -> blocks -> 2x2 merger."""

    config_class = RiceVisionConfig
    _no_split_modules: ClassVar[list[str]] = ["Qwen2VLVisionBlock"]

    def __init__(self, config: RiceVisionConfig) -> None:
        super().__init__(config)
        head_dim = config.embed_dim // config.num_heads
        self.spatial_merge_size = config.spatial_merge_size
        self.rotary_dim = head_dim // 2
        self.patch_embed = RicePatchEmbed(config.patch_size, config.in_channels, config.embed_dim)
        self.class_embedding = nn.Parameter(torch.zeros(config.embed_dim))
        self.class_pos_emb = nn.Parameter(torch.zeros(1, self.rotary_dim))
        self.pre_layernorm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.blocks = nn.ModuleList([Qwen2VLVisionBlock(config) for _ in range(config.depth)])
        self.merger = PatchMerger(
            dim=config.text_hidden_size,
            context_dim=config.embed_dim,
            spatial_merge_size=config.spatial_merge_size,
        )
        # transformers' Qwen2-VL pieces hard-code eps 1e-6; RICE uses the config's layer_norm_eps
        for norm in [self.merger.ln_q, *(n for b in self.blocks for n in (b.norm1, b.norm2))]:
            norm.eps = config.layer_norm_eps
        self.gradient_checkpointing = False
        self.post_init()

    def rotary_angles(self, grid_thw: torch.Tensor, device: torch.device) -> torch.Tensor:
        """2-D axial RoPE angles ``(N, head_dim / 2)``: row angles then column angles (theta 10000)."""
        inv_freq = 1.0 / (
            10000.0
            ** (torch.arange(0, self.rotary_dim, 2, dtype=torch.float, device=device) / self.rotary_dim)
        )
        pos = merge_window_positions(grid_thw, self.spatial_merge_size).to(device)
        return (pos[..., None].float() * inv_freq).flatten(1)

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Merged image features ``(N / merge**2, text_hidden_size)`` for the patches of ``grid_thw``."""
        hidden = self.patch_embed(pixel_values)
        angles = self.rotary_angles(grid_thw, hidden.device)
        frame_lengths = torch.repeat_interleave(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0]).tolist()
        cls_h = self.class_embedding.to(hidden.dtype)[None]
        cls_a = self.class_pos_emb.to(angles.dtype)
        # every frame is its own attention sequence, led by the class token
        hidden = torch.cat([x for h in hidden.split(frame_lengths) for x in (cls_h, h)])
        angles = torch.cat([x for a in angles.split(frame_lengths) for x in (cls_a, a)])
        lengths = torch.tensor(frame_lengths, device=hidden.device) + 1
        cu_seqlens = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
        hidden = self.pre_layernorm(hidden)
        emb = torch.cat([angles, angles], dim=-1)
        position_embeddings = (emb.cos(), emb.sin())
        for block in self.blocks:
            hidden = block(hidden, cu_seqlens=cu_seqlens, position_embeddings=position_embeddings)
        is_patch = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        is_patch[cu_seqlens[:-1].long()] = False
        return self.merger(hidden[is_patch])


class LlavaOneVision15ForConditionalGeneration(LlavaOneVision15PreTrainedModel, GenerationMixin):
    """``visual`` (RICE-ViT + merger), ``model`` (Qwen3) and an untied ``lm_head``."""

    def __init__(self, config: LlavaOneVision15Config) -> None:
        super().__init__(config)
        text = config.text_config
        self.visual = RiceVisionModel._from_config(config.vision_config)
        self.model = Qwen3Model._from_config(text)
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def image_features(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        return self.visual(pixel_values.to(self.visual.patch_embed.proj.weight.dtype), image_grid_thw)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Image features replace the image placeholder embeddings; ``position_ids`` may be ``(B, S)``
        or livr's ``(3, B, S)`` (all three rows equal for a 1-D RoPE model; the first is used).
        ``mm_token_type_ids`` is accepted for interface parity with Qwen-VL and not needed."""
        del mm_token_type_ids
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.model.embed_tokens(input_ids)
        if pixel_values is not None:
            if input_ids is None or image_grid_thw is None:
                raise ValueError(
                    "pixel_values need input_ids (for the image placeholders) and image_grid_thw"
                )
            features = self.image_features(pixel_values, image_grid_thw)
            is_image = input_ids == self.config.image_token_id
            if int(is_image.sum()) != features.shape[0]:
                raise ValueError(
                    f"{int(is_image.sum())} image placeholder tokens but {features.shape[0]} image features"
                )
            inputs_embeds = inputs_embeds.masked_scatter(
                is_image[..., None].expand_as(inputs_embeds), features.to(inputs_embeds.dtype)
            )
        if position_ids is not None and position_ids.ndim == 3:
            position_ids = position_ids[0]
        if position_ids is None and attention_mask is not None and attention_mask.ndim == 2:
            # left padding must not shift a row's positions (same rule as generate's)
            full = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            position_ids = full[:, -inputs_embeds.shape[1] :]
        out = self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = out.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache)


def register_with_auto_classes() -> None:
    """Let ``AutoConfig`` (used by ``AutoTokenizer``/``AutoImageProcessor``) resolve the hub's model type."""
    from transformers import AutoConfig

    AutoConfig.register(MODEL_TYPE, LlavaOneVision15Config, exist_ok=True)


register_with_auto_classes()
