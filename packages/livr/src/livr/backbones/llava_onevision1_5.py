"""LLaVA-OneVision-1.5-4B-Instruct: only through an explicit ``trust_remote_code`` opt-in.

The model is not in transformers 5.24 (native support is an open pull request) and its hub
repo ships modeling code. livr never runs downloaded code unless the user asks for it with
``--model.trust-remote-code``; without it, loading stops with a message saying so. A native
implementation (RICE-ViT vision tower + Qwen3 language model with parameter names that load
the published checkpoint) is the planned replacement, because the remote code is reported to
fail on transformers >= 5.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from livr.backbones.base import BackboneAdapter

#: key numbers of the published config (paper notes), for documentation and future native code
PUBLISHED = {
    "vision": {
        "depth": 24,
        "hidden_size": 1024,
        "num_heads": 16,
        "intermediate_size": 4096,
        "patch_size": 14,
    },
    "vision_merge": {"spatial_merge_size": 2, "temporal_patch_size": 1},
    "text": {
        "hidden_size": 2560,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 9728,
        "rope_theta": 5e6,
        "vocab_size": 151936,
    },
    "image_token_id": 151655,
}


class RemoteCodeRefused(ValueError):
    """Loading would run code downloaded with the checkpoint and the user did not opt in."""


class LlavaOneVision15Adapter(BackboneAdapter):
    name = "llava_onevision1_5"
    model_types = ("llavaonevision1_5", "llava_onevision1_5")
    default_model_id = "lmms-lab/LLaVA-OneVision-1.5-4B-Instruct"
    vision_modules = ("model.visual",)

    @property
    def model_class(self) -> type[PreTrainedModel]:
        return AutoModelForCausalLM

    def load_model(
        self, model_id: str, *, dtype: torch.dtype, attn_implementation: str, trust_remote_code: bool
    ) -> PreTrainedModel:
        self.check_loadable(model_id, trust_remote_code)
        return AutoModelForCausalLM.from_pretrained(
            model_id, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=True
        )

    def check_loadable(self, model_id: str, trust_remote_code: bool) -> None:
        if not trust_remote_code:
            raise RemoteCodeRefused(
                f"{model_id}: LLaVA-OneVision-1.5 is not part of transformers and its checkpoint ships its own "
                "modeling code; livr does not run downloaded code by default. Review that code, then pass "
                "--model.trust-remote-code to opt in (note: the published remote code is reported to fail "
                "on transformers >= 5)."
            )

    def published_config(self) -> PretrainedConfig:
        raise NotImplementedError(
            "LLaVA-OneVision-1.5 has no native implementation in livr yet, so its published config cannot be "
            f"built offline; key numbers: {PUBLISHED}"
        )

    def tiny_config(self, vocab: dict[str, int], vocab_size: int) -> PretrainedConfig:
        raise NotImplementedError("no tiny LLaVA-OneVision-1.5 without a native implementation")

    def image_processor(self, **overrides: Any) -> Any:
        raise NotImplementedError("the LLaVA-OneVision-1.5 image processor comes with the checkpoint")
