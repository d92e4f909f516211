"""The latent-attention maps come from the real model's attention probabilities."""

from __future__ import annotations

import pytest
import torch

from livr.attention_maps import latent_attention, plot_latent_attention
from livr.config import ModelConfig
from livr.data import Example, synthetic_counting
from livr.model import LivrModel


@pytest.fixture(scope="module")
def livr(tiny_backbones):
    torch.manual_seed(0)
    model = LivrModel.from_backbone(ModelConfig(model_id=tiny_backbones["qwen2_5_vl"], num_latents=4)).eval()
    with torch.no_grad():
        for n, p in model.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    return model


def test_stage1_answer_never_attends_to_the_image_and_stage2_does(livr):
    ex = synthetic_counting(1, seed=3)[0]
    one, two = latent_attention(livr, ex, stage=1), latent_attention(livr, ex, stage=2)
    assert one.answer_on_image == pytest.approx(0.0, abs=1e-7)  # the bottleneck, read off the probabilities
    assert one.answer_on_latents > 0.0
    assert two.answer_on_image > 1e-4
    for res in (one, two):
        assert len(res.maps) == 1 and res.maps[0].shape == (2, 2)  # 56 px, 14 px patches, 2x2 merge
        assert res.maps[0].sum() == pytest.approx(1.0, abs=1e-5)
        assert 0.0 < res.image_mass <= 1.0 and 0.0 < res.entropy <= 1.0 + 1e-6


def test_the_model_is_restored_after_reading_attention(livr):
    batch = livr.encode(synthetic_counting(2, seed=5))
    before = livr(batch, 1).logits
    route, impl = livr.config.mask_route, livr.base.config.get_text_config()._attn_implementation
    latent_attention(livr, synthetic_counting(1)[0], stage=1)
    assert livr.config.mask_route == route
    assert livr.base.config.get_text_config()._attn_implementation == impl
    torch.testing.assert_close(livr(batch, 1).logits, before)


def test_figure_with_one_and_two_image_examples(livr, tmp_path):
    single = synthetic_counting(1, seed=1)[0]
    pair = Example(
        single.images + synthetic_counting(1, seed=2)[0].images, "Same count?", "A", {"task": "pair"}
    )
    path, results = plot_latent_attention(livr, [single, pair], tmp_path / "fig" / "attention.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [len(r.maps) for r in results] == [1, 2]


def test_a_model_without_latents_is_refused(tiny_backbones):
    sft = LivrModel.from_backbone(ModelConfig(model_id=tiny_backbones["qwen2_5_vl"], num_latents=0))
    with pytest.raises(ValueError, match="no latent tokens"):
        latent_attention(sft, synthetic_counting(1)[0])
