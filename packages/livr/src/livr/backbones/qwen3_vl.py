"""Qwen3-VL (``Qwen/Qwen3-VL-4B-Instruct``): native transformers class.

Its DeepStack path adds visual features to the hidden states at the image positions of the
first language-model layers; that stays inside image positions, so the bottleneck still holds.
"""

from __future__ import annotations

from transformers import PretrainedConfig, PreTrainedModel, Qwen3VLConfig, Qwen3VLForConditionalGeneration

from livr.backbones.base import QwenVLFamilyAdapter


class Qwen3VLAdapter(QwenVLFamilyAdapter):
    name = "qwen3_vl"
    model_types = ("qwen3_vl",)
    vision_patch_size = 16
    default_model_id = "Qwen/Qwen3-VL-4B-Instruct"

    @property
    def model_class(self) -> type[PreTrainedModel]:
        return Qwen3VLForConditionalGeneration

    def published_config(self) -> PretrainedConfig:
        # Qwen3-VL-4B-Instruct's config.json values (public model card).
        return Qwen3VLConfig(
            text_config=dict(
                vocab_size=151936,
                hidden_size=2560,
                intermediate_size=9728,
                num_hidden_layers=36,
                num_attention_heads=32,
                num_key_value_heads=8,
                head_dim=128,
                max_position_embeddings=262144,
                rope_parameters={
                    "rope_type": "default",
                    "mrope_section": [24, 20, 20],
                    "mrope_interleaved": True,
                    "rope_theta": 5e6,
                },
                tie_word_embeddings=True,
            ),
            vision_config=dict(
                depth=24,
                hidden_size=1024,
                intermediate_size=4096,
                num_heads=16,
                out_hidden_size=2560,
                patch_size=16,
                spatial_merge_size=2,
                temporal_patch_size=2,
                num_position_embeddings=2304,
                deepstack_visual_indexes=[5, 11, 17],
            ),
            tie_word_embeddings=True,
        )

    def tiny_config(self, vocab: dict[str, int], vocab_size: int) -> PretrainedConfig:
        return Qwen3VLConfig(
            text_config=self.tiny_text_config(
                vocab, vocab_size, mrope_section=[2, 1, 1], mrope_interleaved=True
            ),
            vision_config=dict(
                depth=2,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                out_hidden_size=32,
                patch_size=16,
                spatial_merge_size=2,
                temporal_patch_size=2,
                num_position_embeddings=64,
                deepstack_visual_indexes=[0],
            ),
            **self.special_token_ids(vocab),
        )
