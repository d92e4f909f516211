"""Latent tokens: adding them to tokenizer and embedding, and per-token roles from ids.

The K latent tokens are new special tokens, each with its own randomly initialised
embedding row. Qwen checkpoints pad the embedding past the tokenizer's length, so the
matrix only ever grows (never ``resize_token_embeddings(len(tokenizer))``, which would
shrink it), and ``config.vocab_size`` follows any growth so the loss sees every row.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from latentforge.kernels import Role


def latent_token_strings(num_latents: int) -> list[str]:
    """``<|latent_0|> ... <|latent_{K-1}|>``."""
    return [f"<|latent_{i}|>" for i in range(num_latents)]


def add_latent_tokens(tokenizer, num_latents: int) -> list[int]:
    """Register the K latent tokens as special tokens (idempotent); returns their ids."""
    tokens = latent_token_strings(num_latents)
    if num_latents:
        tokenizer.add_tokens(tokens, special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    return [int(i) for i in ids]


def grow_embeddings(model: PreTrainedModel, num_rows: int) -> bool:
    """Make the input (and tied output) embedding hold at least ``num_rows`` rows.

    Returns whether it grew. New rows are left for :func:`init_latent_rows` to fill.
    """
    current = model.get_input_embeddings().weight.shape[0]
    if num_rows <= current:
        return False
    model.resize_token_embeddings(num_rows, mean_resizing=False)
    text_config = model.config.get_text_config()
    text_config.vocab_size = num_rows
    if hasattr(model.config, "vocab_size"):
        model.config.vocab_size = num_rows
    return True


@torch.no_grad()
def init_latent_rows(model: PreTrainedModel, latent_ids: list[int], *, seed: int = 0) -> None:
    """Draw the latent rows from N(0, std of the existing rows), independent of the global RNG."""
    if not latent_ids:
        return
    weight = model.get_input_embeddings().weight
    others = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
    others[latent_ids] = False
    std = weight[others].float().std().item()
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(len(latent_ids), weight.shape[1], generator=generator) * std
    weight[latent_ids] = rows.to(weight.dtype).to(weight.device)


def compute_roles(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    image_token_ids: list[int],
    latent_ids: list[int],
    answer_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B, S)`` :class:`Role` values from token ids.

    Image placeholder ids -> IMAGE, latent ids -> LATENT, ``answer_mask`` -> ANSWER,
    ``attention_mask == 0`` -> PAD, the rest (including ``<|vision_start|>``/``<|vision_end|>``
    and the chat template's markers) -> PROMPT.
    """
    roles = torch.full_like(input_ids, int(Role.PROMPT))
    device = input_ids.device
    if image_token_ids:
        roles[torch.isin(input_ids, torch.tensor(image_token_ids, device=device))] = int(Role.IMAGE)
    if latent_ids:
        roles[torch.isin(input_ids, torch.tensor(latent_ids, device=device))] = int(Role.LATENT)
    if answer_mask is not None:
        roles[answer_mask.bool()] = int(Role.ANSWER)
    if attention_mask is not None:
        roles[attention_mask == 0] = int(Role.PAD)
    return roles
