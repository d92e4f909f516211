"""The LIVR bottleneck mask, in dense, mask_mod and BlockMask form.

Rule, for a query at position ``q`` and a key at position ``kv`` (both absolute positions in the sequence):

- causal: ``kv <= q``;
- padding keys are never attended;
- stage 1 only: image keys are visible to image and latent queries only, so the prompt after an image and the
  answer see the image solely through the latent tokens;
- a padding query attends only to itself. That keeps every row non-empty (no NaN from a softmax over nothing);
  the outputs at padding positions are meaningless and must be ignored by the loss.

When fewer queries than keys are given (decoding with a KV cache), the queries are the *last* positions,
the same lower-right alignment transformers' dynamic cache uses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

from latentforge.kernels.roles import Role, parse_stage, validate_roles

# Plain ints: flex_attention traces mask_mod, and IntEnum constants were mis-traced there (wrong masks).
_IMAGE, _LATENT, _PAD = int(Role.IMAGE), int(Role.LATENT), int(Role.PAD)


def _allowed(
    q_role: torch.Tensor, kv_role: torch.Tensor, q_pos: torch.Tensor, kv_pos: torch.Tensor, stage: int
):
    # Written with tensor ops only so the same expression serves the dense mask and flex's vmapped mask_mod.
    keep = (kv_pos <= q_pos) & (kv_role != _PAD)
    if stage == 1:
        sees_image = (q_role == _IMAGE) | (q_role == _LATENT)
        keep = keep & ((kv_role != _IMAGE) | sees_image)
    return (keep & (q_role != _PAD)) | ((q_role == _PAD) & (kv_pos == q_pos))


def _query_offset(roles: torch.Tensor, query_length: int | None) -> int:
    kv_len = roles.shape[1]
    if query_length is None:
        return 0
    if not 0 < query_length <= kv_len:
        raise ValueError(f"query_length {query_length} must be in [1, {kv_len}] (the number of roles)")
    return kv_len - query_length


def bottleneck_mask(
    roles: torch.Tensor, stage: int | str, *, query_length: int | None = None, require_latents: bool = True
) -> torch.Tensor:
    """Dense boolean mask ``(B, 1, Sq, S)``, True where a query may attend a key.

    Args:
        roles: ``(B, S)`` integer tensor of :class:`Role` values, one per key position.
        stage: 1 / "bottleneck" or 2 / "causal".
        query_length: number of queries (the last positions); defaults to ``S``.
        require_latents: refuse stage-1 sequences whose image has no latent after it (see
            :func:`~latentforge.kernels.roles.validate_roles`); False only for the no-latents ablation.

    The result can be passed as a 4-D ``attention_mask`` to transformers models (used there unchanged).
    """
    st = parse_stage(stage)
    validate_roles(roles, st, require_latents=require_latents)
    return dense_mask_unchecked(roles, st, _query_offset(roles, query_length))


def dense_mask_unchecked(roles: torch.Tensor, stage: int, offset: int) -> torch.Tensor:
    """:func:`bottleneck_mask` without validation (no host syncs), for callers that validated once already;
    ``stage`` is 1 or 2 and ``offset`` the position of the first query."""
    kv_pos = torch.arange(roles.shape[1], device=roles.device)
    q_pos = kv_pos[offset:]
    q_role = roles[:, offset:, None]
    kv_role = roles[:, None, :]
    return _allowed(q_role, kv_role, q_pos[:, None], kv_pos[None, :], stage)[:, None]


def bottleneck_mask_mod(
    roles: torch.Tensor, stage: int | str, *, query_length: int | None = None
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` for the same rule as :func:`bottleneck_mask`.

    It closes over ``roles``; ``q_idx`` counts from the first query, which is position ``S - query_length``.
    Built with ``query_length=None`` it is also a transformers mask function
    ``(batch_idx, head_idx, q_idx, kv_idx)``: transformers passes absolute positions and adds its own offsets.
    """
    st = parse_stage(stage)
    validate_roles(roles, st)
    offset = _query_offset(roles, query_length)

    def mask_mod(b, h, q_idx, kv_idx):
        q_pos = q_idx + offset
        return _allowed(roles[b, q_pos], roles[b, kv_idx], q_pos, kv_idx, st)

    return mask_mod


def bottleneck_block_mask(
    roles: torch.Tensor, stage: int | str, block_size: int = 128, *, query_length: int | None = None
) -> BlockMask:
    """:class:`~torch.nn.attention.flex_attention.BlockMask` for flex_attention; blocks where every entry is
    masked (e.g. an image block seen from the answer in stage 1) are skipped by the kernel."""
    mask_mod = bottleneck_mask_mod(roles, stage, query_length=query_length)
    q_len = roles.shape[1] if query_length is None else query_length
    return create_block_mask(
        mask_mod, roles.shape[0], None, q_len, roles.shape[1], device=roles.device, BLOCK_SIZE=block_size
    )
