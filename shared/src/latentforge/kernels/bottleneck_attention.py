"""Attention under the LIVR bottleneck mask, with interchangeable backends.

Backends:

- ``reference``: ``F.scaled_dot_product_attention`` with the dense mask from :func:`bottleneck_mask`. The
  ground truth; forward and backward on every device.
- ``flex``: ``flex_attention`` with the :func:`bottleneck_block_mask`, so fully masked blocks are skipped.
  Compiled on CUDA. On CPU PyTorch runs it unfused and forward-only (no backward), so it is for checks there.
- ``split``: no mask at all; two ``is_causal=True`` SDPA calls (the sequence without padding, and the sequence
  without padding and image tokens) whose rows are assembled exactly (:mod:`.bottleneck_split`). Forward and
  backward on every device, through PyTorch's fused causal kernels (FlashAttention or cuDNN on CUDA, as SDPA
  picks).
- ``auto``: on CUDA, ``split`` whenever there are as many queries as keys (training, prefill); with fewer
  queries (decoding with a KV cache) ``flex``, except for training below :data:`FLEX_TRAINING_MIN_KEYS` keys,
  where ``reference`` is faster. ``reference`` on CPU (the ground truth, and the path the CPU pipelines were
  measured with; ``split`` is an explicit choice there).

Why ``split`` is the CUDA default, and what is still owed: measured on an H200 (``benchmarks/results/
nvidia-h200.md``, bf16, stage 1), flex's forward is 1.1-1.5x the dense reference at 1K-4K tokens and 3.0x at
16K, but its forward+backward is 0.35-0.84x up to 4K and 1.17-1.52x at 16K. The dense-mask reference computes
every (query, key) pair of the ``S x S`` square with the memory-efficient kernel; ``split`` hands the fused
causal kernels only two triangles, 1.05-1.12x the allowed pairs in those layouts (density ~0.3, so ~1/3 of the
square), so it is expected to beat both at every benchmarked length, forward and backward. That expectation
is not a measurement: the H200 rerun of ``tools/bench.py`` (``split`` and ``causal`` rows, through
``tools/gpu_checks.sh``) is owed, and the rule above is to be revisited with it. On CPU (fp32, 512-2048 tokens,
a shared 2-core EPYC, ``benchmarks/results/cpu.md``) ``split`` measured 1.29-2.30x the reference forward and
forward+backward, at 72-89% of the dense-causal rate; CPU ``auto`` stays ``reference`` all the same, so the CPU
pipelines keep the numerics they were measured with (pass ``backend="split"`` to take the speed-up).

No hand-written Triton attention kernel: ``split`` reuses the fused causal kernels, and flex covers the rest.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from latentforge.kernels.bottleneck_mask import bottleneck_block_mask, bottleneck_mask
from latentforge.kernels.bottleneck_split import split_bottleneck_attention
from latentforge.kernels.roles import parse_stage, validate_roles

BACKENDS = ("auto", "reference", "flex", "split")
FLEX_TRAINING_MIN_KEYS = 16384
"""``auto`` trains with flex only from this many keys on (H200: flex fwd+bwd is slower at 4K, faster at 16K)."""


@functools.cache
def _compiled_flex():
    # Default dynamic shapes: training batches vary in length, and a static compile per length would thrash.
    return torch.compile(flex_attention)


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"q, k, v must be (batch, heads, seq, head_dim); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape != v.shape:
        raise ValueError(f"k and v shapes differ: {tuple(k.shape)} vs {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch or head_dim")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of key/value heads ({k.shape[1]})")
    if q.shape[2] > k.shape[2]:
        raise ValueError(f"more queries ({q.shape[2]}) than keys ({k.shape[2]})")


def resolve_backend(
    backend: str, device: torch.device, *, training: bool = False, keys: int = 0, queries: int | None = None
) -> str:
    """The concrete backend ``backend`` means on ``device``, for a call that needs gradients (``training``)
    with ``queries`` query positions (default: as many as keys) over ``keys`` key positions."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}: expected one of {BACKENDS}")
    if backend == "auto":
        if device.type != "cuda":
            return "reference"
        if queries is None or queries == keys:
            return "split"
        if training and keys < FLEX_TRAINING_MIN_KEYS:
            return "reference"
        return "flex"
    return backend


def bottleneck_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    roles: torch.Tensor,
    stage: int | str,
    *,
    backend: str = "auto",
    scale: float | None = None,
) -> torch.Tensor:
    """Attention where position ``i`` may attend position ``j`` as :func:`bottleneck_mask` says.

    Args:
        q: ``(B, Hq, Sq, D)`` queries; ``Sq <= S``, and the queries are the last ``Sq`` positions.
        k, v: ``(B, Hkv, S, D)``; grouped-query attention when ``Hkv < Hq`` (``Hq % Hkv == 0``).
        roles: ``(B, S)`` integer tensor of :class:`~latentforge.kernels.Role` values.
        stage: 1 / "bottleneck" or 2 / "causal".
        backend: "auto", "reference", "flex" or "split" (see the module docstring).
        scale: softmax scale, default ``1/sqrt(D)``.

    Returns:
        ``(B, Hq, Sq, D)``. Rows at padding queries attend only to themselves and carry no meaning.
    """
    _check_qkv(q, k, v)
    st = parse_stage(stage)
    if isinstance(roles, torch.Tensor) and roles.device != q.device:
        raise ValueError(f"roles are on {roles.device} but q is on {q.device}")
    validate_roles(roles, st, seq_len=k.shape[2])
    if roles.shape[0] != q.shape[0]:
        raise ValueError(f"roles batch {roles.shape[0]} != q batch {q.shape[0]}")
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    which = resolve_backend(backend, q.device, training=training, keys=k.shape[2], queries=q.shape[2])
    if which == "split":
        return split_bottleneck_attention(q, k, v, roles, st, scale)
    if which == "reference":
        return reference_attention(q, k, v, bottleneck_mask(roles, st, query_length=q.shape[2]), scale)
    if q.device.type == "cpu" and training:
        raise RuntimeError("backend='flex' has no backward on CPU in PyTorch; use backend='reference' there")
    return flex_bottleneck_attention(
        q, k, v, bottleneck_block_mask(roles, st, query_length=q.shape[2]), scale
    )


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """SDPA with a dense boolean mask (the ``reference`` backend once the mask exists; used by the benchmark)."""
    if q.shape[1] != k.shape[1] and q.device.type == "cuda":
        # SDPA's fused GPU kernels do not all take enable_gqa together with a mask; repeating the k/v heads
        # keeps the memory-efficient kernel instead of the math fallback that materialises the scores.
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    gqa = q.shape[1] != k.shape[1]
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale, enable_gqa=gqa
    )


def flex_bottleneck_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask, scale: float | None = None
) -> torch.Tensor:
    """flex_attention with a prebuilt BlockMask (the ``flex`` backend once the mask exists)."""
    gqa = q.shape[1] != k.shape[1]
    if q.device.type == "cuda":
        return _compiled_flex()(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa)
    with warnings.catch_warnings():
        # Unfused on CPU is the documented, intended use here (correctness checks); the warning is noise.
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa)
