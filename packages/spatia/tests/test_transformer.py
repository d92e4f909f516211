"""The Spatia transformer: zero-initialised control is exact, the 5B layout, diffusers round trip."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel, WanTransformerBlock

from spatia.models import SPATIA_CONTROL_LAYERS, WAN22_TI2V_5B, SpatiaTransformer3DModel
from spatia.tiny import tiny_base_transformer, tiny_spatia_transformer


def _inputs(batch: int = 2, frames: int = 3, size: int = 4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, frames, size, size, generator=g)
    text = torch.randn(batch, 6, 16, generator=g)
    control = torch.randn(batch, 8, frames, size, size, generator=g)
    return x, text, control


@pytest.mark.parametrize("per_token", [False, True])
def test_untrained_control_leaves_base_output_exactly_unchanged(per_token):
    base = tiny_base_transformer(seed=3)
    model = SpatiaTransformer3DModel.from_transformer(base, vace_layers=(0, 2), vace_in_channels=8)
    x, text, control = _inputs()
    tokens = 3 * 2 * 2
    t = torch.tensor([[0.0] * 4 + [700.0] * (tokens - 4)] * 2) if per_token else torch.tensor([500.0, 20.0])
    with torch.no_grad():
        expected = base(x, t, text).sample
        got = model(x, t, text, control_hidden_states=control).sample
        without_control = model(x, t, text).sample
    assert torch.equal(got, expected)
    assert torch.equal(without_control, expected)


def test_trained_control_changes_output_and_scale_zero_disables_it():
    model = tiny_spatia_transformer()
    for block in model.vace_blocks:
        torch.nn.init.normal_(block.proj_out.weight, std=0.1)
    x, text, control = _inputs()
    t = torch.tensor([300.0, 300.0])
    with torch.no_grad():
        plain = model(x, t, text).sample
        controlled = model(x, t, text, control_hidden_states=control).sample
        other = model(x, t, text, control_hidden_states=control.flip(0)).sample
        off = model(x, t, text, control_hidden_states=control, control_hidden_states_scale=0.0).sample
    assert not torch.allclose(controlled, plain)
    assert not torch.allclose(controlled, other)  # the output depends on what the control says
    assert torch.equal(off, plain)


def test_control_blocks_start_from_main_blocks_at_their_layers():
    base = tiny_base_transformer(seed=1)
    model = SpatiaTransformer3DModel.from_transformer(base, vace_layers=(0, 2), vace_in_channels=8)
    for block, layer in zip(model.vace_blocks, (0, 2), strict=True):
        torch.testing.assert_close(block.attn1.to_q.weight, base.blocks[layer].attn1.to_q.weight)
        assert torch.count_nonzero(block.proj_out.weight) == 0
    assert model.vace_blocks[0].proj_in is not None and model.vace_blocks[1].proj_in is None


def test_rejects_bad_layouts():
    with pytest.raises(ValueError, match="start at 0"):
        SpatiaTransformer3DModel(**{**_tiny_kwargs(), "vace_layers": (1, 2)})
    with pytest.raises(ValueError, match="exceed"):
        SpatiaTransformer3DModel(**{**_tiny_kwargs(), "vace_layers": (0, 4)})
    model = tiny_spatia_transformer()
    x, text, control = _inputs()
    with pytest.raises(ValueError, match="must match"):
        model(x, torch.tensor([1.0, 1.0]), text, control_hidden_states=control[:, :, :2])
    with pytest.raises(ValueError, match="per-token timestep"):
        model(x, torch.zeros(2, 5), text, control_hidden_states=control)


def _tiny_kwargs():
    from spatia.tiny import tiny_transformer_config

    return tiny_transformer_config()


def test_save_pretrained_round_trip(tmp_path):
    model = tiny_spatia_transformer()
    for block in model.vace_blocks:
        torch.nn.init.normal_(block.proj_out.weight, std=0.1)
    model.save_pretrained(tmp_path / "transformer")
    loaded = SpatiaTransformer3DModel.from_pretrained(tmp_path / "transformer")
    assert tuple(loaded.config.vace_layers) == (0, 2)
    x, text, control = _inputs()
    t = torch.tensor([100.0, 900.0])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(x, t, text, control_hidden_states=control).sample,
            model(x, t, text, control_hidden_states=control).sample,
            rtol=0,
            atol=0,
        )


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_meta_device_5b_parameter_counts():
    """The default config is Wan2.2-TI2V-5B with 8 control blocks at main layers 0, 4, ..., 28."""
    with torch.device("meta"):
        model = SpatiaTransformer3DModel()
        base = WanTransformer3DModel(**WAN22_TI2V_5B)
        block = WanTransformerBlock(3072, 14336, 24, "rms_norm_across_heads", True, 1e-6)
    total = _count(model)
    control = sum(p.numel() for p in model.control_parameters())
    assert tuple(model.config.vace_layers) == SPATIA_CONTROL_LAYERS == (0, 4, 8, 12, 16, 20, 24, 28)
    assert len(model.blocks) == 30 and len(model.vace_blocks) == 8
    assert total - control == _count(base) == 4_999_787_712  # the "5B" of TI2V-5B
    linear = 3072 * 3072 + 3072
    patch = 96 * 3072 * 4 + 3072  # 96 = 48 render + 48 holes latent channels, patch (1, 2, 2)
    assert control == 8 * (_count(block) + linear) + linear + patch == 1_395_398_656
