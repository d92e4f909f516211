"""Per-token roles that drive the LIVR bottleneck mask, and their validation."""

from __future__ import annotations

import enum

import torch


class Role(enum.IntEnum):
    """What a position holds. Computed from token ids by the caller, so any chat template and any number of
    images per sequence work; the values are stable and may be stored in datasets."""

    PROMPT = 0
    IMAGE = 1
    LATENT = 2
    ANSWER = 3
    PAD = 4


STAGES = {1: 1, 2: 2, "bottleneck": 1, "causal": 2}


def parse_stage(stage: int | str) -> int:
    """Return 1 (bottleneck) or 2 (causal) for ``stage`` given as 1, 2, "bottleneck" or "causal"."""
    if isinstance(stage, bool) or stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: expected 1 / 'bottleneck' or 2 / 'causal'")
    return STAGES[stage]


def validate_roles(
    roles: torch.Tensor, stage: int, seq_len: int | None = None, *, require_latents: bool = True
) -> None:
    """Raise a ``ValueError`` naming the problem if ``roles`` cannot describe a batch of sequences.

    Checks: 2-D integer tensor, optional length, only known role values and, for stage 1, that every
    sequence holding image tokens has a latent token after its last image token (otherwise the answer
    would be cut off from the image entirely). ``require_latents=False`` lifts that last check for the one
    caller that wants it: the paper's "bottleneck mask without latents" ablation, where stage 1 is blind.
    """
    if not isinstance(roles, torch.Tensor):
        raise TypeError(f"roles must be a torch.Tensor, got {type(roles).__name__}")
    if roles.dtype == torch.bool or roles.is_floating_point() or roles.is_complex():
        raise ValueError(f"roles must have an integer dtype (torch.long), got {roles.dtype}")
    if roles.ndim != 2:
        raise ValueError(f"roles must have shape (batch, seq), got shape {tuple(roles.shape)}")
    if seq_len is not None and roles.shape[1] != seq_len:
        raise ValueError(f"roles cover {roles.shape[1]} positions but the keys/values have {seq_len}")
    if roles.numel() == 0:
        return
    lo, hi = int(roles.min()), int(roles.max())
    if lo < min(Role) or hi > max(Role):
        bad = lo if lo < min(Role) else hi
        raise ValueError(f"unknown role value {bad}: valid roles are {[f'{r.name}={int(r)}' for r in Role]}")
    if stage == 1 and require_latents:
        pos = torch.arange(roles.shape[1], device=roles.device).expand_as(roles)
        last_image = torch.where(roles == Role.IMAGE, pos, -1).amax(dim=1)
        last_latent = torch.where(roles == Role.LATENT, pos, -1).amax(dim=1)
        bad_rows = ((last_image >= 0) & (last_latent < last_image)).nonzero().flatten().tolist()
        if bad_rows:
            raise ValueError(
                f"stage 1 (bottleneck): sequences {bad_rows} hold image tokens but no latent token after the "
                "last image token, so no visual information could reach the answer"
            )
