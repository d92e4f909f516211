"""Parameter counts of the published backbones, built on the meta device (nothing downloaded)."""

from __future__ import annotations

import torch
from peft import get_peft_model

from livr.backbones import get_backbone
from livr.config import ModelConfig


def parameter_counts(backbone: str, *, num_latents: int = 16, lora_r: int = 16) -> dict[str, int | str]:
    """Total parameters and the LIVR-trainable ones (LoRA + K latent rows) of the published config."""
    from livr.model import LivrModel

    adapter = get_backbone(backbone)
    with torch.device("meta"):
        model = adapter.model_class(adapter.published_config())
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for _, p in adapter.vision_parameters(model))
    vocab = model.get_input_embeddings().weight.shape[0]
    # the ids latents get in the real tokenizer do not change the count; any K spare rows will do
    latent_ids = list(range(vocab - num_latents, vocab))
    config = ModelConfig(backbone=backbone, num_latents=num_latents, lora_r=lora_r)
    peft_model = get_peft_model(model, LivrModel.lora_config(adapter, config, latent_ids))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    hidden = model.get_input_embeddings().weight.shape[1]
    return {
        "backbone": backbone,
        "model_id": adapter.default_model_id,
        "total": total,
        "vision_and_projector": vision,
        "trainable": trainable,
        "trainable_latent_rows": num_latents * hidden,
        "trainable_lora": trainable - num_latents * hidden,
    }
