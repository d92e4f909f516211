"""The native LLaVA-OneVision-1.5: hub config keys, weight loading, and the RICE-ViT tower."""

from __future__ import annotations

import json

import torch

from livr.backbones import get_backbone
from livr.backbones.llava_onevision1_5_model import LlavaOneVision15Config, RiceVisionConfig
from livr.data import synthetic_counting

# config.json as the hub repo writes it (key set of its remote configuration classes; see the README)
HUB_CONFIG = {
    "architectures": ["LLaVAOneVision1_5_ForConditionalGeneration"],
    "auto_map": {"AutoConfig": "configuration_llavaonevision1_5.Llavaonevision1_5Config"},
    "model_type": "llavaonevision1_5",
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vocab_size": 151936,
    "torch_dtype": "bfloat16",
    "text_config": {
        "model_type": "LLaVAOneVision1_5_text",
        "vocab_size": 151936,
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-06,
        "use_cache": True,
        "tie_word_embeddings": False,
        "rope_theta": 5000000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": 36,
        "attention_dropout": 0.0,
    },
    "vision_config": {
        "model_type": "rice_vit",
        "depth": 24,
        "embed_dim": 1024,
        "hidden_size": 1024,
        "hidden_act": "gelu",
        "intermediate_size": 4096,
        "num_heads": 16,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-05,
        "text_hidden_size": 2560,
    },
}


def test_hub_config_json_parses_to_the_published_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(HUB_CONFIG))
    config = LlavaOneVision15Config.from_pretrained(tmp_path)
    published = get_backbone("llava_onevision1_5").published_config()
    text, vision = config.text_config, config.vision_config
    assert isinstance(vision, RiceVisionConfig)
    assert text.rope_parameters["rope_theta"] == 5e6 and not config.tie_word_embeddings
    for sub, ref in ((text, published.text_config), (vision, published.vision_config)):
        for key in (
            "hidden_size",
            "intermediate_size",
            "vocab_size",
            "num_key_value_heads",
            "head_dim",
            "depth",
        ):
            assert getattr(sub, key, None) == getattr(ref, key, None), key
    assert config.image_token_id == published.image_token_id == 151655


def test_tiny_checkpoint_loads_every_weight_by_its_published_name(tiny_backbones):
    adapter = get_backbone("llava_onevision1_5")
    model, info = adapter.model_class.from_pretrained(
        tiny_backbones["llava_onevision1_5"], output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    names = set(model.state_dict())
    assert {"visual.class_embedding", "visual.merger.mlp.0.weight", "lm_head.weight"} <= names
    assert all(n.startswith(("visual.", "model.", "lm_head.")) for n in names)


def test_rice_vit_encodes_each_image_as_its_own_sequence(tiny_backbones):
    adapter = get_backbone("llava_onevision1_5")
    model = adapter.model_class.from_pretrained(tiny_backbones["llava_onevision1_5"]).eval()
    processor = adapter.image_processor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 4)
    images = [ex.images[0] for ex in synthetic_counting(2, seed=3)]
    out = processor(images=images, return_tensors="pt")
    assert out["pixel_values"].shape[1] == 3 * 14 * 14  # temporal patch 1: one frame per patch row
    with torch.no_grad():
        both = model.visual(out["pixel_values"], out["image_grid_thw"])
        n = int(out["image_grid_thw"][0].prod())
        first = model.visual(out["pixel_values"][:n], out["image_grid_thw"][:1])
        # the class token is part of every sequence: changing it changes the features
        model.visual.class_embedding.add_(torch.randn_like(model.visual.class_embedding))
        moved = model.visual(out["pixel_values"][:n], out["image_grid_thw"][:1])
    assert both.shape == (n // 2, model.config.vision_config.text_hidden_size)
    torch.testing.assert_close(both[: n // 4], first)
    assert not torch.allclose(moved, first)
