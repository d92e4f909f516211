"""Run transformers models under the LIVR bottleneck without copying their modeling code.

``register_transformers_bottleneck()`` adds one name to *both* of transformers' registries:

- ``AttentionInterface``: an attention function that builds the bottleneck mask from the ``roles`` (and
  ``stage``) keyword arguments the caller passes to the model's ``forward`` / ``generate``; transformers forwards
  unknown keyword arguments from the top-level model through every decoder layer to the attention function.
- ``AttentionMaskInterface``: the SDPA mask builder with the ``is_causal`` shortcut disabled. Without an entry
  there transformers builds *no* mask at all for an unknown name (``_preprocess_mask_arguments``) and causality
  and padding would silently disappear whenever ``roles`` is missing.

Inside the attention function the role mask is AND-ed with the causal/padding mask transformers built from the
ordinary 2-D ``attention_mask``, and then runs SDPA. Without ``roles`` it behaves exactly like ``"sdpa"``.

Which integration livr should use: **this registry name**, set on the language model only, e.g.
``attn_implementation={"text_config": "latentforge_bottleneck", "vision_config": "sdpa"}`` for Qwen2.5-VL /
Qwen3-VL (a plain string is fine for text-only models), and ``model(..., roles=roles, stage=1)``. Why, checked
against transformers 5.24:

- The alternatives put the bottleneck into ``attention_mask`` itself: a dense 4-D mask from
  :func:`~latentforge.kernels.bottleneck_mask` (with ``"sdpa"``/``"eager"``) or a ``BlockMask`` from
  :func:`~latentforge.kernels.bottleneck_block_mask` (with ``"flex_attention"``). ``create_causal_mask``
  passes such masks through unchanged, which is fine for text-only LMs and teacher-forced training. But
  Qwen2.5-VL's ``compute_3d_position_ids`` / ``get_rope_index`` read the 2-D ``attention_mask`` to place the
  multimodal RoPE positions (``attention_mask[b].bool()`` indexing, ``cumsum`` while decoding); given a 4-D
  mask they raise ``IndexError`` (tested), so that route also needs hand-computed ``position_ids``. With the
  registry the 2-D padding mask stays 2-D and mRoPE works unchanged, in ``forward`` and in ``generate``
  (tested on a tiny Qwen2.5-VL). Note that transformers 5.24 computes 3-D positions only when
  ``mm_token_type_ids`` (1 at image tokens) is passed; without it the text positions are silently 1-D.
- Generation: with a KV cache the queries are only the newest positions. The 4-D-mask route would need a new
  mask, sized to the grown cache, at every step, which ``generate`` does not do. Here the function sees the
  query and key lengths of each call, aligns queries to the *last* positions (DynamicCache, generate's
  default), and treats positions past the end of ``roles`` as ``Role.ANSWER`` (generated tokens are answer
  tokens). ``generate`` rejects keyword arguments its model's ``forward`` does not name, so for generation
  wrap the call instead: ``with bottleneck_roles(prompt_roles, stage=1): model.generate(...)``. Pre-allocated static caches
  (``cache_implementation="static"``) do not fit this alignment and are not supported.
- The vision tower also receives the forwarded kwargs; its (non-causal) attention modules are passed to plain
  SDPA untouched. FlashAttention-2 cannot take a 4-D mask at all, so it is no option for stage 1.
- Speed: the kernel is chosen by ``register_transformers_bottleneck(backend=...)`` as in
  :func:`~latentforge.kernels.bottleneck_attention.resolve_backend`: with ``"auto"`` (the default) calls with as
  many queries as keys on CUDA (training, prefill) run the mask-free ``split`` route (two causal SDPA calls,
  :mod:`.bottleneck_split`); everything else (CPU, decoding, dropout > 0, ``backend="reference"``) runs SDPA with
  the dense boolean mask AND-ed with transformers' padding mask, as before. ``backend="split"`` forces the split
  route wherever it applies (also on CPU). The split route takes the padding from ``roles`` and checks, once
  per forward, that every key the padding mask hides is ``Role.PAD`` (``ValueError`` otherwise). The 4-D mask
  transformers' mask registry builds once per forward is still built (it cannot see ``roles``); the split
  kernels never read it beyond that check. GPU timings of the split route are owed (see
  :mod:`.bottleneck_attention`).

``roles`` must mark padding as ``Role.PAD`` where the 2-D ``attention_mask`` is 0 (the rows of padding queries
then attend only to themselves; their outputs are meaningless).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch

from latentforge.kernels.bottleneck_attention import reference_attention, resolve_backend
from latentforge.kernels.bottleneck_mask import dense_mask_unchecked
from latentforge.kernels.bottleneck_split import split_bottleneck_attention
from latentforge.kernels.roles import Role, parse_stage, validate_roles

DEFAULT_NAME = "latentforge_bottleneck"
_ACTIVE: ContextVar[tuple[torch.Tensor, int, bool] | None] = ContextVar(
    "latentforge_bottleneck_roles", default=None
)


@contextlib.contextmanager
def bottleneck_roles(
    roles: torch.Tensor, stage: int | str, *, require_latents: bool = True
) -> Iterator[None]:
    """Make ``roles``/``stage`` (and ``require_latents``) the default for the registered attention inside the block.

    For ``generate``, which refuses unknown keyword arguments; ``roles=``/``stage=`` passed to a model call
    take precedence. Context-local (``contextvars``), so concurrent threads do not see each other's roles.
    """
    st = parse_stage(stage)
    validate_roles(roles, st, require_latents=require_latents)
    token = _ACTIVE.set((roles, st, require_latents))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _roles_for_keys(roles: torch.Tensor, kv_len: int) -> torch.Tensor:
    if roles.ndim != 2:
        raise ValueError(f"roles must have shape (batch, seq), got shape {tuple(roles.shape)}")
    if roles.shape[1] > kv_len:
        raise ValueError(
            f"roles cover {roles.shape[1]} positions but the attention sees only {kv_len} keys; pass the roles "
            "of the tokens seen so far (prompt roles are enough during generate)"
        )
    if roles.shape[1] < kv_len:
        extra = torch.full((roles.shape[0], kv_len - roles.shape[1]), int(Role.ANSWER), dtype=roles.dtype)
        roles = torch.cat([roles, extra.to(roles.device)], dim=1)
    return roles


def bottleneck_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    *,
    backend: str = "reference",
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: ``(B, H, Sq, D)`` inputs, ``(B, Sq, H, D)`` output, no weights.

    ``backend`` is bound by :func:`register_transformers_bottleneck`; only ``split`` (where it resolves so and
    dropout is off) changes the kernel, every other choice runs the dense-mask path."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    roles = kwargs.pop("roles", None)
    stage = kwargs.pop("stage", None)
    require_latents = kwargs.pop("require_latents", True)
    if roles is None and (active := _ACTIVE.get()) is not None:
        roles, stage, require_latents = active
    if roles is None or not getattr(module, "is_causal", True):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if stage is None:
        raise ValueError("roles were passed without stage: call the model with stage=1 or stage=2 as well")
    if roles.shape[0] != query.shape[0]:
        raise ValueError(f"roles batch {roles.shape[0]} != batch {query.shape[0]} of the attention inputs")
    q_len, kv_len = query.shape[2], key.shape[2]
    full_roles = _roles_for_keys(roles.to(query.device), kv_len)
    st = parse_stage(stage)
    # Validation reads values back to the host; once per forward (layer 0) is enough, the roles are shared.
    first_layer = getattr(module, "layer_idx", 0) == 0
    if first_layer:
        validate_roles(full_roles, st, require_latents=require_latents)
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    which = resolve_backend(backend, query.device, training=training, keys=kv_len, queries=q_len)
    if which == "split" and dropout == 0.0:
        if first_layer and attention_mask is not None:
            _check_padding_is_marked(attention_mask, full_roles)
        # The caller's roles tensor itself when it covers every key: the same object in every layer, so the
        # split plan (a host read-back) is made once per forward, wherever the roles live.
        plan_roles = roles if roles.shape[1] == kv_len else full_roles
        out = split_bottleneck_attention(query, key, value, plan_roles, st, scaling)
        return out.transpose(1, 2).contiguous(), None
    mask = dense_mask_unchecked(full_roles, st, kv_len - q_len)
    if attention_mask is not None:
        allowed = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
        mask = mask & allowed[..., -kv_len:]
        # Padding queries lose even their own key to the padding mask; keep the diagonal so no row is empty.
        q_pos = torch.arange(kv_len - q_len, kv_len, device=mask.device)[:, None]
        diag = q_pos == torch.arange(kv_len, device=mask.device)[None, :]
        mask = mask | (~mask.any(-1, keepdim=True) & diag)
    out = reference_attention(query, key, value, mask, scale=scaling, dropout_p=dropout)
    return out.transpose(1, 2).contiguous(), None


def _materialized_sdpa_mask(*args: Any, **kwargs: Any):
    from transformers.masking_utils import sdpa_mask

    # The attention function AND-s its role mask into this one, so it must exist (no is_causal shortcut).
    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


def _check_padding_is_marked(attention_mask: torch.Tensor, roles: torch.Tensor) -> None:
    # The last query row of transformers' causal+padding mask sees every key that is not padding.
    last = attention_mask[:, 0, -1, -roles.shape[1] :]
    visible = last if last.dtype == torch.bool else last == 0
    bad = (~visible & (roles != int(Role.PAD))).any(-1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"rows {bad}: the attention_mask hides keys that roles do not mark Role.PAD; the split route takes "
            "the padding from roles, so mark every padding position Role.PAD"
        )


def register_transformers_bottleneck(name: str = DEFAULT_NAME, backend: str = "auto") -> str:
    """Register the bottleneck under ``name`` in transformers' attention and mask registries; returns ``name``.

    Then load or build a model with ``attn_implementation=name`` (or, for VLMs, a dict setting it on
    ``text_config`` only) and call it with ``roles=(B, S) Role tensor`` and ``stage=1|2``. See the module
    docstring for why this is the route livr should take rather than a 4-D mask or a flex BlockMask.
    ``backend``: "auto" (split on CUDA for full-length calls, the dense mask otherwise), "split" or
    "reference" (the dense mask always); registering a name again rebinds it. Idempotent.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    if backend not in ("auto", "reference", "split"):
        raise ValueError(
            f"backend {backend!r} for the transformers route: expected 'auto', 'reference' or 'split'"
        )
    fn = functools.partial(bottleneck_attention_forward, backend=backend)
    functools.update_wrapper(fn, bottleneck_attention_forward)
    AttentionInterface.register(name, fn)
    AttentionMaskInterface.register(name, _materialized_sdpa_mask)
    return name
