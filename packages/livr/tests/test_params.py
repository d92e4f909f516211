"""Meta-device builds of the published configs (no download)."""

import pytest

from livr.params import parameter_counts


@pytest.mark.parametrize(
    ("backbone", "total_billions"),
    [("qwen2_5_vl", 3.75), ("qwen3_vl", 4.44)],  # model cards: 3.75B and 4.44B parameters
)
def test_published_config_parameter_counts(backbone, total_billions):
    counts = parameter_counts(backbone, num_latents=16)
    assert counts["total"] / 1e9 == pytest.approx(total_billions, abs=0.01)
    assert counts["trainable_latent_rows"] == 16 * (2048 if backbone == "qwen2_5_vl" else 2560)
    # LoRA r=16 on 7 projections of 36 layers: tens of millions, under 1% of the model
    assert 20e6 < counts["trainable_lora"] < 0.01 * counts["total"]
    assert counts["trainable"] == counts["trainable_lora"] + counts["trainable_latent_rows"]
