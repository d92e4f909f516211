"""Meta-device builds of the published configs (no download)."""

import re

import pytest
import torch

from livr.backbones import get_backbone
from livr.params import parameter_counts


@pytest.mark.parametrize(
    ("backbone", "total_billions", "hidden"),
    [
        ("qwen2_5_vl", 3.75, 2048),  # model card: 3.75B
        ("qwen3_vl", 4.44, 2560),  # model card: 4.44B
        ("llava_onevision1_5", 4.74, 2560),  # no card count; LM part checked against Qwen3-4B below
    ],
)
def test_published_config_parameter_counts(backbone, total_billions, hidden):
    counts = parameter_counts(backbone, num_latents=16)
    assert counts["total"] / 1e9 == pytest.approx(total_billions, abs=0.01)
    assert counts["trainable_latent_rows"] == 16 * hidden
    # LoRA r=16 on 7 projections of 36 layers: tens of millions, under 1% of the model
    assert 20e6 < counts["trainable_lora"] < 0.01 * counts["total"]
    assert counts["trainable"] == counts["trainable_lora"] + counts["trainable_latent_rows"]


# The published LLaVA-OneVision-1.5-4B parameter names and shapes (hub safetensors layout: `visual.*`,
# `model.*`, untied `lm_head.weight`), as listed by the public weight converters (see the README).
PUBLISHED_OV15 = {
    r"visual\.patch_embed\.proj\.weight": (1024, 3, 14, 14),
    r"visual\.class_embedding": (1024,),
    r"visual\.class_pos_emb": (1, 32),
    r"visual\.pre_layernorm\.(weight|bias)": (1024,),
    r"visual\.blocks\.\d+\.norm[12]\.(weight|bias)": (1024,),
    r"visual\.blocks\.\d+\.attn\.qkv\.weight": (3072, 1024),
    r"visual\.blocks\.\d+\.attn\.qkv\.bias": (3072,),
    r"visual\.blocks\.\d+\.attn\.proj\.weight": (1024, 1024),
    r"visual\.blocks\.\d+\.attn\.proj\.bias": (1024,),
    r"visual\.blocks\.\d+\.mlp\.fc1\.weight": (4096, 1024),
    r"visual\.blocks\.\d+\.mlp\.fc1\.bias": (4096,),
    r"visual\.blocks\.\d+\.mlp\.fc2\.weight": (1024, 4096),
    r"visual\.blocks\.\d+\.mlp\.fc2\.bias": (1024,),
    r"visual\.merger\.ln_q\.(weight|bias)": (1024,),
    r"visual\.merger\.mlp\.0\.weight": (4096, 4096),
    r"visual\.merger\.mlp\.0\.bias": (4096,),
    r"visual\.merger\.mlp\.2\.weight": (2560, 4096),
    r"visual\.merger\.mlp\.2\.bias": (2560,),
    r"model\.embed_tokens\.weight": (151936, 2560),
    r"model\.norm\.weight": (2560,),
    r"model\.layers\.\d+\.(input_layernorm|post_attention_layernorm)\.weight": (2560,),
    r"model\.layers\.\d+\.self_attn\.q_proj\.weight": (4096, 2560),
    r"model\.layers\.\d+\.self_attn\.(k|v)_proj\.weight": (1024, 2560),
    r"model\.layers\.\d+\.self_attn\.o_proj\.weight": (2560, 4096),
    r"model\.layers\.\d+\.self_attn\.(q|k)_norm\.weight": (128,),
    r"model\.layers\.\d+\.mlp\.(gate|up)_proj\.weight": (9728, 2560),
    r"model\.layers\.\d+\.mlp\.down_proj\.weight": (2560, 9728),
    r"lm_head\.weight": (151936, 2560),
}


def test_native_llava_onevision_1_5_has_the_published_parameter_names_and_shapes():
    adapter = get_backbone("llava_onevision1_5")
    with torch.device("meta"):
        model = adapter.model_class(adapter.published_config())
    state = model.state_dict()
    unmatched = {}
    for name, tensor in state.items():
        shape = next((s for p, s in PUBLISHED_OV15.items() if re.fullmatch(p, name)), None)
        if shape != tuple(tensor.shape):
            unmatched[name] = tuple(tensor.shape)
    assert not unmatched, list(unmatched.items())[:5]
    assert sum(k.startswith("visual.blocks.") and k.endswith("attn.qkv.weight") for k in state) == 24
    assert sum(k.startswith("model.layers.") and k.endswith("q_proj.weight") for k in state) == 36
    # the language model alone is Qwen3-4B (model card: 4.0B with embedding, 3.6B without)
    lm = sum(p.numel() for p in model.model.parameters())
    assert lm / 1e9 == pytest.approx(4.02, abs=0.005)
    assert (lm - model.model.embed_tokens.weight.numel()) / 1e9 == pytest.approx(3.6, abs=0.05)
