"""Seeding for python, NumPy and torch, with an offset per distributed rank."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, *, per_rank: bool = True, deterministic: bool = False) -> int:
    """Seed python's ``random``, NumPy's global generator and torch (CPU and CUDA).

    With ``per_rank`` the seed is offset by the torchrun ``RANK`` so that data-parallel
    workers draw different noise (nanoGPT's ``1337 + seed_offset``), while model
    initialisation that must agree across ranks should be done before wrapping with
    DDP, which broadcasts rank 0's parameters anyway.

    ``deterministic`` asks torch for deterministic kernels (slower; some ops then raise).
    Returns the seed actually used.
    """
    if per_rank:
        seed = seed + int(os.environ.get("RANK", "0"))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        # cuBLAS needs this for deterministic matmuls on CUDA >= 10.2.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return seed
