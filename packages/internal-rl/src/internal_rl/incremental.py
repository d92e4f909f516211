"""One-token-at-a-time stepping of a base model split at a layer, for rollouts (Algorithm 1).

Rollouts interleave the two halves of the frozen model with an environment: e_t = lower(o_{1:t}),
then the controlled upper half acts on e_t + U_t e_t. For the Transformer this keeps per-layer
key/value caches, so a step costs O(t) instead of re-running the whole prefix; the result equals
the full-sequence forward pass (tested). Other mixers (Hawk) fall back to re-running the prefix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from internal_rl.backbone import Backbone, BackboneOutput, relative_position_bucket


class IncrementalBackbone:
    """Caches for ``batch`` sequences of at most ``max_len`` tokens of ``model`` split at ``layer``."""

    def __init__(self, model: Backbone, batch: int, max_len: int, layer: int):
        if model.config.condition_on_prev_action:
            raise ValueError("incremental stepping does not support condition_on_prev_action models")
        self.model, self.layer, self.max_len = model, layer, max_len
        cfg = model.config
        device = next(model.parameters()).device
        self.cached = cfg.arch == "transformer"
        self.t = 0
        if self.cached:
            dh = cfg.d_model // cfg.n_heads
            shape = (cfg.n_layers, batch, cfg.n_heads, max_len, dh)
            self.keys = torch.zeros(shape, device=device)
            self.values = torch.zeros(shape, device=device)
        else:
            self.obs = torch.zeros(batch, max_len, cfg.obs_dim, device=device)
            self.controlled = torch.zeros(batch, max_len, cfg.d_model, device=device)

    def _bias(self) -> torch.Tensor:
        model, t = self.model, self.t
        rel = torch.arange(t + 1, device=self.keys.device) - t  # key - query, all <= 0
        buckets = relative_position_bucket(
            rel, model.config.rel_pos_buckets, model.config.rel_pos_max_distance
        )
        return model.rel_bias(buckets).t()[None, :, None, :]  # (1, H, 1, t+1)

    def _block(
        self, index: int, x: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor | None
    ) -> torch.Tensor:
        block = self.model.blocks[index]
        attn = block.mixer
        b, d = x.shape
        h = attn.n_heads
        q, k, v = attn.qkv(block.norm1(x)).view(b, 3, h, d // h).unbind(1)
        sel = slice(None) if rows is None else rows
        self.keys[index, sel, :, self.t] = k
        self.values[index, sel, :, self.t] = v
        keys = self.keys[index, sel, :, : self.t + 1]
        values = self.values[index, sel, :, : self.t + 1]
        scores = (q.unsqueeze(2) @ keys.transpose(-1, -2)) / math.sqrt(d // h) + bias  # (B, H, 1, t+1)
        y = (F.softmax(scores, -1) @ values).reshape(b, d)
        x = x + attn.out(y)
        return x + block.mlp(block.norm2(x))

    @torch.no_grad()
    def lower(self, obs: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """e_t at the split layer for the next token ``obs`` (B, obs_dim).

        ``rows`` restricts the work to those sequences (``obs`` then has one row per entry);
        the others' caches keep stale entries and must not be read again.
        """
        if self.t >= self.max_len:
            raise RuntimeError(f"more than max_len={self.max_len} tokens")
        if not self.cached:
            sel = slice(None) if rows is None else rows
            self.obs[sel, self.t] = obs
            return self.model.lower(self.obs[sel, : self.t + 1], self.layer)[:, -1]
        x = self.model.embed(obs[:, None])[:, 0]
        bias = self._bias()
        for i in range(self.layer):
            x = self._block(i, x, bias, rows)
        return x

    @torch.no_grad()
    def upper(self, controlled: torch.Tensor, rows: torch.Tensor | None = None) -> BackboneOutput:
        """Heads for the current token from its (controlled) residual (B, n_e); advances time."""
        if not self.cached:
            sel = slice(None) if rows is None else rows
            self.controlled[sel, self.t] = controlled
            out = self.model.upper(self.controlled[sel, : self.t + 1], self.layer)
            out = BackboneOutput(
                **{k: (v[:, -1:] if torch.is_tensor(v) else v) for k, v in out.__dict__.items()}
            )
        else:
            x = controlled
            bias = self._bias()
            for i in range(self.layer, self.model.n_layers):
                x = self._block(i, x, bias, rows)
            out = self.model.heads(x[:, None])
        self.t += 1
        return out
