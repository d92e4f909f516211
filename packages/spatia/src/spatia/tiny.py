"""Tiny configs of every network, for the CPU preset and the tests (random weights, offline)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from spatia.models import SpatiaTransformer3DModel

TINY_LATENT_CHANNELS = 4
TINY_TEXT_DIM = 16


def tiny_transformer_config(**overrides: Any) -> dict[str, Any]:
    """A 4-layer Wan config with control blocks at layers 0 and 2 (head dim 12 splits into t/h/w RoPE)."""
    config: dict[str, Any] = {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 2,
        "attention_head_dim": 12,
        "in_channels": TINY_LATENT_CHANNELS,
        "out_channels": TINY_LATENT_CHANNELS,
        "text_dim": TINY_TEXT_DIM,
        "freq_dim": 16,
        "ffn_dim": 32,
        "num_layers": 4,
        "rope_max_seq_len": 64,
    }
    config.update(overrides)
    return config


def tiny_base_transformer(seed: int = 0, **overrides: Any) -> WanTransformer3DModel:
    """A randomly initialised tiny Wan transformer (the "pretrained" base in tests)."""
    torch.manual_seed(seed)
    return WanTransformer3DModel(**tiny_transformer_config(**overrides))


def tiny_spatia_transformer(seed: int = 0, vace_layers: tuple[int, ...] = (0, 2)) -> SpatiaTransformer3DModel:
    """Tiny Spatia transformer built from :func:`tiny_base_transformer` like the real one from Wan2.2."""
    base = tiny_base_transformer(seed)
    return SpatiaTransformer3DModel.from_transformer(
        base, vace_layers=vace_layers, vace_in_channels=2 * TINY_LATENT_CHANNELS
    )


def tiny_vae(seed: int = 0) -> AutoencoderKLWan:
    """A Wan2.2-style VAE (residual, patchified, 4x temporal / 16x spatial) with 4 latent channels."""
    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=8,
        decoder_base_dim=8,
        z_dim=TINY_LATENT_CHANNELS,
        dim_mult=[1, 1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * TINY_LATENT_CHANNELS,
        latents_std=[1.0] * TINY_LATENT_CHANNELS,
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_temporal=4,
        scale_factor_spatial=16,
    )


def tiny_text_encoder(seed: int = 0) -> UMT5EncoderModel:
    """A 2-layer UMT5 encoder whose hidden size is the tiny transformer's ``text_dim``."""
    torch.manual_seed(seed)
    config = UMT5Config(
        vocab_size=260,
        d_model=TINY_TEXT_DIM,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
    )
    return UMT5EncoderModel(config).eval()


class ByteTokenizer:
    """UTF-8 bytes as token ids (pad 0, eos 1): stands in for the UMT5 tokenizer offline."""

    def __call__(self, prompts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(prompts), max_length, dtype=torch.long)
        mask = torch.zeros(len(prompts), max_length, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            tokens = [*[b + 2 for b in prompt.encode("utf-8")][: max_length - 1], 1]
            ids[i, : len(tokens)] = torch.tensor(tokens)
            mask[i, : len(tokens)] = 1
        return ids, mask
