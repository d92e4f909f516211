"""Linear read-outs of image tokens (livr.vision_probe)."""

from __future__ import annotations

import torch

from livr.pretraining import PretrainConfig, pretrain_base
from livr.vision_probe import image_token_probe, linear_probe_accuracy, single_object_scenes


def test_linear_probe_reads_a_linear_code_and_not_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (600,), generator=g)
    coded = torch.nn.functional.one_hot(labels, 5).float() @ torch.randn(5, 16, generator=g)
    coded = coded + 0.1 * torch.randn(600, 16, generator=g)
    accuracy, majority = linear_probe_accuracy(coded, labels)
    assert accuracy > 0.97 and majority < 0.35
    noise = torch.randn(600, 16, generator=g)
    accuracy, majority = linear_probe_accuracy(noise, labels)
    assert abs(accuracy - majority) < 0.12


def test_single_object_scenes_are_seeded_and_cover_every_cell():
    images, cells, colours = single_object_scenes(90, seed=3)
    again = single_object_scenes(90, seed=3)
    assert torch.equal(cells, again[1]) and torch.equal(colours, again[2])
    assert images[0].tobytes() == again[0][0].tobytes() and images[0].size == (48, 48)
    assert set(cells.tolist()) == set(range(9))


def test_image_token_probe_on_a_micro_base(tmp_path):
    micro = PretrainConfig(
        hidden_size=32,
        num_layers=1,
        vision_hidden_size=32,
        patch_size=8,
        image_tokens=9,
        image_size=48,
        steps=2,
        batch_size=2,
    )
    base = pretrain_base(tmp_path / "base", micro, progress=False)
    result = image_token_probe(str(base), num_images=300)
    assert set(result) == {
        f"{name}{suffix}"
        for name in ("object_colour", "object_cell", "any_cell")
        for suffix in ("", "_majority")
    }
    assert all(0.0 <= v <= 1.0 for v in result.values())
    # The patch embedding is linear in the pixels, so even an untrained tower keeps the object's colour.
    assert result["object_colour"] > result["object_colour_majority"] + 0.3
