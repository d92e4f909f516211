"""Qwen2.5-VL (``Qwen/Qwen2.5-VL-3B-Instruct``): native transformers class."""

from __future__ import annotations

from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)

from livr.backbones.base import QwenVLFamilyAdapter


class Qwen25VLAdapter(QwenVLFamilyAdapter):
    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    vision_patch_size = 14
    default_model_id = "Qwen/Qwen2.5-VL-3B-Instruct"

    @property
    def model_class(self) -> type[PreTrainedModel]:
        return Qwen2_5_VLForConditionalGeneration

    def published_config(self) -> PretrainedConfig:
        # Qwen2.5-VL-3B-Instruct's config.json values (public model card), written out so that
        # the parameter count needs no download.
        return Qwen2_5_VLConfig(
            text_config=dict(
                vocab_size=151936,
                hidden_size=2048,
                intermediate_size=11008,
                num_hidden_layers=36,
                num_attention_heads=16,
                num_key_value_heads=2,
                max_position_embeddings=128000,
                rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
                tie_word_embeddings=True,
            ),
            vision_config=dict(
                depth=32,
                hidden_size=1280,
                intermediate_size=3420,
                num_heads=16,
                out_hidden_size=2048,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
                window_size=112,
                fullatt_block_indexes=[7, 15, 23, 31],
            ),
            tie_word_embeddings=True,
        )

    def tiny_config(self, vocab: dict[str, int], vocab_size: int) -> PretrainedConfig:
        return Qwen2_5_VLConfig(
            text_config=self.tiny_text_config(vocab, vocab_size, mrope_section=[2, 1, 1]),
            vision_config=dict(
                depth=2,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                out_hidden_size=32,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
                window_size=56,
                fullatt_block_indexes=[1],
            ),
            **self.special_token_ids(vocab),
        )
