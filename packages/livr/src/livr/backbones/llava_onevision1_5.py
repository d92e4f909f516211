"""LLaVA-OneVision-1.5-4B-Instruct: a native implementation; the hub's remote code is never run.

LLaVA-OneVision-1.5 is not in transformers 5.24 and its hub repo ships modeling code. livr
builds the model from transformers' own modules instead (``llava_onevision1_5_model``: RICE-ViT
from ``Qwen2VLVisionBlock`` + ``PatchMerger``, language model ``Qwen3Model``), with module names
equal to the published parameter names, so the checkpoint loads without running downloaded
code. The hub's own code is never run: ``--model.trust-remote-code`` is refused with the reasons
(its forward cannot carry livr's per-token roles, and it is reported to fail on transformers >= 5).

Position ids: the published model runs its Qwen3 language model with plain 1-D RoPE, so latent
tokens (and everything else) get consecutive text positions; livr passes them as ``(3, B, S)``
with three equal rows, like the Qwen-VL adapters' text positions.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel

from livr.backbones.base import QwenVLFamilyAdapter
from livr.backbones.llava_onevision1_5_model import (
    MODEL_TYPE,
    LlavaOneVision15Config,
    LlavaOneVision15ForConditionalGeneration,
)

#: the published config's numbers (hub config.json, read in its public mirrors; see the README)
PUBLISHED_TEXT = dict(
    vocab_size=151936,
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    hidden_act="silu",
    max_position_embeddings=262144,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 5e6},
    attention_bias=False,
    tie_word_embeddings=False,
)
PUBLISHED_VISION = dict(
    depth=24,
    embed_dim=1024,
    hidden_size=1024,
    hidden_act="gelu",
    intermediate_size=4096,
    num_heads=16,
    in_channels=3,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=1,
    layer_norm_eps=1e-5,
    text_hidden_size=2560,
)


class LlavaOneVision15Adapter(QwenVLFamilyAdapter):
    name = "llava_onevision1_5"
    model_types = (MODEL_TYPE,)
    default_model_id = "lmms-lab/LLaVA-OneVision-1.5-4B-Instruct"
    vision_patch_size = 14
    vision_modules = ("visual",)
    lora_target_modules = r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"

    @property
    def model_class(self) -> type[PreTrainedModel]:
        return LlavaOneVision15ForConditionalGeneration

    def check_loadable(self, model_id: str, trust_remote_code: bool) -> None:
        if trust_remote_code:
            raise ValueError(
                f"{model_id}: --model.trust-remote-code is refused for LLaVA-OneVision-1.5: livr loads the "
                "published weights into its native implementation instead. The hub's own modeling code cannot "
                "run under livr (its forward takes no extra keyword arguments, so the per-token roles of the "
                "bottleneck cannot reach its attention; it expects 2-D position ids and `past_key_values`) and "
                "is reported to fail on transformers >= 5."
            )
        super().check_loadable(model_id, trust_remote_code)

    def published_config(self) -> PretrainedConfig:
        return LlavaOneVision15Config(text_config=dict(PUBLISHED_TEXT), vision_config=dict(PUBLISHED_VISION))

    def tiny_config(self, vocab: dict[str, int], vocab_size: int) -> PretrainedConfig:
        return LlavaOneVision15Config(
            text_config=self.tiny_text_config(vocab, vocab_size),
            vision_config=dict(
                depth=2,
                embed_dim=32,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=1,
                text_hidden_size=32,
            ),
            vocab_size=vocab_size,
            **self.special_token_ids(vocab),
        )

    def image_processor(self, **overrides: Any) -> Any:
        # RICE embeds one frame per patch: the Qwen2-VL processor with temporal patch 1
        return super().image_processor(**{"temporal_patch_size": 1, **overrides})

    def rope_positions(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_grid_thw: torch.Tensor | None,
    ) -> torch.Tensor:
        """1-D text positions (left padding does not shift them), as three equal rows."""
        del model, input_ids, image_grid_thw
        pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return pos[None].expand(3, -1, -1)
