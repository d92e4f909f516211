"""Building the networks: Wan2.2 from a diffusers folder or hub id, or tiny random ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLWan

from spatia.config import ModelConfig
from spatia.models import SpatiaTransformer3DModel

#: Wan's text length (its pipelines pad prompt embeddings to 512 tokens with zeros).
WAN_TEXT_LENGTH = 512
TINY_TEXT_LENGTH = 16

Tokenize = Callable[[list[str], int], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Networks:
    """The transformer being trained and the frozen encoders that feed it."""

    transformer: SpatiaTransformer3DModel
    vae: AutoencoderKLWan
    text_encoder: torch.nn.Module
    tokenize: Tokenize
    text_length: int


def _hf_tokenizer(path: str, revision: str | None) -> Tokenize:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer", revision=revision)

    def tokenize(prompts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = tokenizer(
            prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        )
        return out.input_ids, out.attention_mask

    return tokenize


def build_networks(
    config: ModelConfig, *, stage1_checkpoint: str | None = None, dtype: torch.dtype = torch.float32
) -> Networks:
    """Transformer with control branch, Wan VAE (float32) and UMT5 encoder, all frozen but the transformer.

    ``stage1_checkpoint`` (a ``save_pretrained`` folder of the Spatia transformer) replaces the
    fresh control branch with trained one, as stage 2 needs.
    """
    if config.pretrained == "tiny":
        from spatia.tiny import ByteTokenizer, tiny_base_transformer, tiny_text_encoder, tiny_vae

        if config.vae is not None:
            from spatia.models.tiny_vae import load_vae

            vae = load_vae(config.vae)
        else:
            vae = tiny_vae()
        z = vae.config.z_dim
        base = tiny_base_transformer(
            in_channels=z,
            out_channels=z,
            num_attention_heads=config.tiny_heads,
            ffn_dim=config.tiny_ffn_dim,
            patch_size=(1, config.tiny_patch, config.tiny_patch),
        )
        text_encoder = tiny_text_encoder()
        tokenize: Tokenize = ByteTokenizer()
        text_length = TINY_TEXT_LENGTH
    else:
        from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
        from transformers import UMT5EncoderModel

        kw = {"revision": config.revision}
        base = None
        if stage1_checkpoint is None:
            base = WanTransformer3DModel.from_pretrained(
                config.pretrained, subfolder="transformer", torch_dtype=dtype, **kw
            )
        if config.vae is not None:
            from spatia.models.tiny_vae import load_vae

            vae = load_vae(config.vae)
        else:
            vae = AutoencoderKLWan.from_pretrained(
                config.pretrained, subfolder="vae", torch_dtype=torch.float32, **kw
            )
        text_encoder = UMT5EncoderModel.from_pretrained(
            config.pretrained, subfolder="text_encoder", torch_dtype=dtype, **kw
        )
        tokenize = _hf_tokenizer(config.pretrained, config.revision)
        text_length = WAN_TEXT_LENGTH

    if stage1_checkpoint is not None:
        transformer = SpatiaTransformer3DModel.from_pretrained(stage1_checkpoint, torch_dtype=dtype)
        if tuple(transformer.config.vace_layers) != tuple(config.control_layers):
            raise ValueError(
                f"{stage1_checkpoint}: control layers {transformer.config.vace_layers} differ from the "
                f"configured {config.control_layers}"
            )
    else:
        assert base is not None
        transformer = SpatiaTransformer3DModel.from_transformer(
            base,
            vace_layers=tuple(config.control_layers),
            vace_in_channels=2 * base.config.in_channels,
            copy_main_weights_into_control=config.init_control_from_main,
        )
    vae.requires_grad_(False).eval()
    text_encoder.requires_grad_(False).eval()
    return Networks(transformer, vae, text_encoder, tokenize, text_length)


@torch.no_grad()
def encode_prompts(networks: Networks, prompts: list[str], device: torch.device) -> torch.Tensor:
    """UMT5 states ``(B, L, D)`` with padding positions zeroed, as the Wan pipelines feed them."""
    ids, mask = networks.tokenize(prompts, networks.text_length)
    states = networks.text_encoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
    return states * mask.to(device).unsqueeze(-1).to(states.dtype)
