"""Autoregressive base models over observation-action sequences (paper App. D.1).

Two sequence mixers share one residual-stream interface:

* ``transformer``: causal pre-norm Transformer with T5-style relative-position attention
  biases (32 buckets), the paper's gridworld model (6 x 256, 4 heads, ReLU MLP 512);
* ``hawk``: Griffin's recurrent block (causal conv + RG-LRU, no attention), the paper's
  ant model (8 x 256).

Token ``t`` embeds observation ``o_t`` (and, optionally, the previous action); the
residual stream ``e_{t,l}`` after block ``l`` feeds two heads that predict ``a_t`` and
``o_{t+1}``. The stream is addressable for the metacontroller (part 2):

>>> out = model(obs, control=lambda e: e @ U.T, control_layer=model.config.n_layers // 2,
...             return_residuals=True)

``control`` maps the residual at ``control_layer`` to an additive delta
(``e <- e + control(e)``, Eq. 1 / 11), and ``lower`` / ``upper`` split the model at a
layer so a caller can run the frozen halves separately (Algorithm 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Control = Callable[[torch.Tensor], torch.Tensor]
"""Maps a residual ``(B, T, n_e)`` to the delta added to it (``U e``)."""


@dataclass
class BackboneConfig:
    """Architecture of the base model. Defaults: the paper's gridworld Transformer (Table A4)."""

    obs_dim: int = 637
    """Size of one observation vector (637 for gridworld-pinpad)."""
    action_dim: int = 4
    """Number of discrete actions, or the size of a continuous action vector."""
    discrete_actions: bool = True
    """Categorical (softmax) action head if True, diagonal Gaussian otherwise."""
    obs_likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    """Next-observation likelihood: per-dimension Bernoulli for one-hot grids, learned-variance Gaussian for the ant."""
    arch: Literal["transformer", "hawk"] = "transformer"
    """Sequence mixer: causal Transformer (grid in the paper) or Hawk recurrent block (ant in the paper)."""
    n_layers: int = 6
    """Depth L (6 for the grid Transformer, 8 for the ant Hawk)."""
    d_model: int = 256
    """Residual width n_e."""
    n_heads: int = 4
    """Attention heads (Transformer) or block-diagonal gate heads of the RG-LRU (Hawk: 8)."""
    mlp_hidden: int = 512
    """Hidden size of the ReLU MLP in every block."""
    rel_pos_buckets: int = 32
    """Relative-position buckets of the attention bias (T5 style, causal)."""
    rel_pos_max_distance: int = 128
    """Distance beyond which all relative positions share the last (logarithmic) bucket."""
    lru_width: int = 256
    """Width of the RG-LRU state (Hawk only)."""
    conv_width: int = 4
    """Temporal width of Hawk's causal depthwise convolution (Griffin uses 4)."""
    scan_chunk: int = 16
    """Chunk length of Hawk's stable parallel scan; bigger is faster but uses chunk^2 memory."""
    init_scale: float = 0.1
    """Variance scaling of the weight init: std = sqrt(init_scale / fan_in)."""
    obs_embed_hidden: int = 0
    """Hidden width of a ReLU MLP embedding each observation (0: one linear map). The paper does not
    say how o_t is embedded; an MLP computes per-step conjunctions such as "the agent stands on
    colour k" before attention aggregates them, which a small linear-embedding model learns slowly."""
    grid_embed: Literal["flat", "egocentric"] = "flat"
    """Grid only. "flat" embeds the one-hot as one vector (the paper's observation, embedding unstated);
    "egocentric" also feeds the embedding the same one-hot re-centred on the agent (a (2G-1)^2 window,
    with a channel marking cells outside the grid), a fixed re-indexing with no parameters, so that
    "colour k is two cells up" is one input unit instead of a conjunction the network must learn."""
    grid_size: int = 0
    """G, needed by ``grid_embed="egocentric"`` to read the flat observation as G x G cells."""
    condition_on_prev_action: bool = False
    """Also embed a_{t-1} into token t. The paper conditions on o_{1:t} only, so off by default."""
    min_log_std: float = -5.0
    """Lower clamp of Gaussian log standard deviations (actions and observations)."""
    max_log_std: float = 2.0
    """Upper clamp of Gaussian log standard deviations."""

    def __post_init__(self) -> None:
        if self.arch not in ("transformer", "hawk"):
            raise ValueError(f"arch must be 'transformer' or 'hawk', got {self.arch!r}")
        if self.obs_likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"obs_likelihood must be 'bernoulli' or 'gaussian', got {self.obs_likelihood!r}")
        if self.n_layers < 1 or self.d_model < 1:
            raise ValueError("n_layers and d_model must be positive")
        if self.arch == "transformer" and self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.grid_embed not in ("flat", "egocentric"):
            raise ValueError(f"grid_embed must be 'flat' or 'egocentric', got {self.grid_embed!r}")
        if self.grid_size < 0 or (self.grid_size and self.obs_dim % (self.grid_size * self.grid_size)):
            raise ValueError(
                f"obs_dim {self.obs_dim} is not grid_size^2 = {self.grid_size}^2 times a channel count"
            )
        if self.arch == "hawk" and self.lru_width % self.n_heads:
            raise ValueError(f"lru_width {self.lru_width} is not divisible by n_heads {self.n_heads}")


@dataclass
class BackboneOutput:
    """Predictions for every token; Gaussian heads fill the ``*_log_std`` fields."""

    action_logits: torch.Tensor | None = None
    """(B, T, n_actions) for discrete actions."""
    action_mean: torch.Tensor | None = None
    """(B, T, action_dim) for continuous actions."""
    action_log_std: torch.Tensor | None = None
    obs_pred: torch.Tensor | None = None
    """(B, T, obs_dim): Bernoulli logits or Gaussian mean of o_{t+1}."""
    obs_log_std: torch.Tensor | None = None
    residuals: list[torch.Tensor] = field(default_factory=list)
    """``residuals[l]`` is e_l, the stream after ``l`` blocks (0 = embeddings), as seen downstream (i.e. after control)."""


def relative_position_bucket(
    relative_position: torch.Tensor, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """Causal T5 bucketing of ``key - query`` offsets (<= 0): exact for small, log-spaced for large."""
    distance = (-relative_position).clamp(min=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    scaled = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (scaled * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return torch.where(is_small, distance, large)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.relu(self.up(x)))


class RelativeCausalSelfAttention(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        # ``bias`` already holds -inf above the diagonal, so it is the whole mask.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out(y.transpose(1, 2).reshape(b, t, d))

    def step(self, x: torch.Tensor, cache: KVCache, bias: torch.Tensor) -> torch.Tensor:
        """One token ``x`` (B, 1, D) against the cached keys/values; ``bias`` (1, H, 1, t+1)."""
        b, _, d = x.shape
        q, k, v = self.qkv(x).view(b, 1, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        keys, values = cache.append(k, v)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias)
        return self.out(y.transpose(1, 2).reshape(b, 1, d))


class KVCache:
    """Keys and values of one attention layer, in a buffer that doubles when full (no per-step concat)."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add one step's (B, H, 1, hd) key and value; return the (B, H, t+1, hd) views so far."""
        if self.keys is None or self.values is None or self.length == self.keys.shape[2]:
            capacity = max(16, 2 * self.length)
            keys = k.new_zeros(*k.shape[:2], capacity, k.shape[-1])
            values = v.new_zeros(*v.shape[:2], capacity, v.shape[-1])
            if self.keys is not None and self.values is not None:
                keys[:, :, : self.length] = self.keys[:, :, : self.length]
                values[:, :, : self.length] = self.values[:, :, : self.length]
            self.keys, self.values = keys, values
        self.keys[:, :, self.length] = k[:, :, 0]
        self.values[:, :, self.length] = v[:, :, 0]
        self.length += 1
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]


class BlockDiagonalLinear(nn.Module):
    """Per-head linear maps, as Griffin's RG-LRU gates."""

    def __init__(self, width: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.weight = nn.Parameter(torch.empty(n_heads, width // n_heads, width // n_heads))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = x.unflatten(-1, (self.n_heads, -1))
        return torch.einsum("...hi,hij->...hj", xs, self.weight).flatten(-2) + self.bias


def linear_scan(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, chunk: int = 16
) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t along dim 1, for 0 <= a <= 1.

    Within a chunk the transfer weights exp(sum log a) are computed relative to each
    source step, so every exponent is <= 0 and nothing overflows (the naive cumprod /
    division trick does for long sequences); chunks are chained sequentially.
    """
    bsz, t, d = a.shape
    h = torch.zeros(bsz, d, dtype=a.dtype, device=a.device) if h0 is None else h0
    log_a = torch.log(a.clamp(min=1e-30))
    outs = []
    for start in range(0, t, chunk):
        la = log_a[:, start : start + chunk]
        bc = b[:, start : start + chunk]
        n = la.shape[1]
        cum = la.cumsum(1)  # (B, n, D): log prod a_{start..i}
        # weight of source s on target i (s <= i): prod a_{s+1..i} = exp(cum_i - cum_s)
        diff = cum.unsqueeze(2) - cum.unsqueeze(1)  # (B, i, s, D)
        mask = torch.ones(n, n, dtype=torch.bool, device=a.device).tril()
        w = torch.where(mask[None, :, :, None], diff, torch.full_like(diff, -torch.inf)).exp()
        hc = (w * bc.unsqueeze(1)).sum(2) + cum.exp() * h.unsqueeze(1)
        outs.append(hc)
        h = hc[:, -1]
    return torch.cat(outs, 1)


class RGLRU(nn.Module):
    """Real-gated linear recurrent unit (Griffin, De et al. 2024, Eqs. 1-4)."""

    c = 8.0

    def __init__(self, width: int, n_heads: int, chunk: int):
        super().__init__()
        self.chunk = chunk
        self.input_gate = BlockDiagonalLinear(width, n_heads)
        self.recurrence_gate = BlockDiagonalLinear(width, n_heads)
        # a = sigmoid(lambda) initialised so a^c lies in [0.9, 0.999] (Griffin's init).
        a_c = torch.empty(width).uniform_(0.9**2, 0.999**2).sqrt()
        a = a_c ** (1.0 / self.c)
        self.a_logit = nn.Parameter(torch.log(a / (1 - a)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.sigmoid(self.recurrence_gate(x))
        i = torch.sigmoid(self.input_gate(x))
        log_a = -self.c * r * F.softplus(-self.a_logit)  # c * r * log(sigmoid(lambda))
        a = log_a.exp()
        multiplier = torch.sqrt((1 - torch.exp(2 * log_a)).clamp(min=1e-12))
        return linear_scan(a, multiplier * i * x, chunk=self.chunk)

    def step(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step of the recurrence: ``x`` (B, W), previous state ``h`` (B, W) -> new state."""
        r = torch.sigmoid(self.recurrence_gate(x))
        i = torch.sigmoid(self.input_gate(x))
        log_a = -self.c * r * F.softplus(-self.a_logit)
        multiplier = torch.sqrt((1 - torch.exp(2 * log_a)).clamp(min=1e-12))
        return log_a.exp() * h + multiplier * i * x


class HawkMixer(nn.Module):
    """Griffin's recurrent block: GeLU gate branch times (causal conv -> RG-LRU) branch."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.lru_width)
        self.inp = nn.Linear(cfg.d_model, cfg.lru_width)
        self.conv = nn.Conv1d(
            cfg.lru_width, cfg.lru_width, cfg.conv_width, groups=cfg.lru_width, padding=cfg.conv_width - 1
        )
        self.lru = RGLRU(cfg.lru_width, cfg.n_heads, cfg.scan_chunk)
        self.out = nn.Linear(cfg.lru_width, cfg.d_model)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        t = x.shape[1]
        u = self.conv(self.inp(x).transpose(1, 2))[..., :t].transpose(1, 2)  # left padding only: causal
        return self.out(F.gelu(self.gate(x)) * self.lru(u))

    def step(self, x: torch.Tensor, state: HawkState, bias: torch.Tensor | None = None) -> torch.Tensor:
        """One token ``x`` (B, 1, D); updates ``state`` (conv inputs, RG-LRU state) in place."""
        u = self.inp(x[:, 0])  # (B, W)
        window = torch.cat([state.conv, u[:, None]], 1)  # the last conv_width inputs, oldest first
        weight = self.conv.weight[:, 0].t()  # (conv_width, W)
        conv = (window * weight).sum(1)
        if self.conv.bias is not None:
            conv = conv + self.conv.bias
        state.conv = window[:, 1:]
        state.h = self.lru.step(conv, state.h)
        return self.out(F.gelu(self.gate(x)) * state.h[:, None])


@dataclass
class HawkState:
    """One Hawk layer's recurrent state: the conv's previous inputs and the RG-LRU state."""

    conv: torch.Tensor
    """(B, conv_width - 1, lru_width), oldest first (zeros before the first step, as the conv's padding)."""
    h: torch.Tensor
    """(B, lru_width)."""


class Block(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.norm1 = RMSNorm(cfg.d_model)
        self.mixer: nn.Module = (
            RelativeCausalSelfAttention(cfg) if cfg.arch == "transformer" else HawkMixer(cfg)
        )
        self.norm2 = RMSNorm(cfg.d_model)
        self.mlp = MLP(cfg.d_model, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))

    def step(self, x: torch.Tensor, state: KVCache | HawkState, bias: torch.Tensor | None) -> torch.Tensor:
        x = x + self.mixer.step(self.norm1(x), state, bias)
        return x + self.mlp(self.norm2(x))


class EgocentricGrid(nn.Module):
    """The flat per-cell one-hot (cell-major, agent = last channel) re-centred on the agent.

    Output: ``[obs, window]`` where ``window`` is the (2G-1) x (2G-1) x (C+1) view with the agent at
    its centre; the extra channel is 1 outside the grid (the border, which blocks moves). No
    parameters: an index lookup, exact for one-hot inputs.
    """

    def __init__(self, grid_size: int, obs_dim: int):
        super().__init__()
        g = grid_size
        self.g, self.channels = g, obs_dim // (g * g)
        w = 2 * g - 1
        self.out_dim = obs_dim + w * w * (self.channels + 1)
        # source cell of window position (i, j) for an agent at cell a: (r_a + i - g + 1, c_a + j - g + 1)
        rows = torch.arange(g * g) // g
        cols = torch.arange(g * g) % g
        offs = torch.arange(w) - (g - 1)
        r = rows[:, None, None] + offs[None, :, None]
        c = cols[:, None, None] + offs[None, None, :]
        inside = (r >= 0) & (r < g) & (c >= 0) & (c < g)
        src = torch.where(inside, r * g + c, g * g)  # g*g: an "outside" cell appended below
        self.register_buffer("source", src.reshape(g * g, w * w), persistent=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[:-1]
        cells = obs.reshape(-1, self.g * self.g, self.channels)
        n = cells.shape[0]
        outside = torch.zeros(n, 1, self.channels + 1, dtype=obs.dtype, device=obs.device)
        outside[:, :, -1] = 1
        padded = torch.cat([F.pad(cells, (0, 1)), outside], 1)  # (N, g*g + 1, C + 1)
        agent = cells[..., -1].argmax(-1)  # padding steps (all zeros) read as cell 0: harmless
        src = self.source.index_select(0, agent)  # (N, w*w)
        window = padded.gather(1, src[..., None].expand(-1, -1, self.channels + 1))
        return torch.cat([obs, window.reshape(*lead, -1)], -1)


@dataclass
class BackboneState:
    """What :meth:`Backbone.step` carries between tokens: the step count and one state per block."""

    t: int
    """Tokens consumed so far (the next token's position)."""
    layers: list[KVCache | HawkState]
    """Per block: a :class:`KVCache` (Transformer) or a :class:`HawkState` (Hawk)."""


class Backbone(nn.Module):
    """The base model p_θ(a_t, o_{t+1} | o_{1:t}) with an addressable residual stream."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        layers: list[nn.Module] = []
        in_dim = config.obs_dim
        if config.grid_embed == "egocentric":
            if config.grid_size < 1:
                raise ValueError(
                    "grid_embed='egocentric' needs grid_size (G); pretraining reads it off the data"
                )
            layers.append(EgocentricGrid(config.grid_size, config.obs_dim))
            in_dim = layers[0].out_dim
        if config.obs_embed_hidden > 0:
            layers += [
                nn.Linear(in_dim, config.obs_embed_hidden),
                nn.ReLU(),
                nn.Linear(config.obs_embed_hidden, d),
            ]
        else:
            layers.append(nn.Linear(in_dim, d))
        # a bare Linear / the MLP Sequential keep the parameter names of earlier checkpoints
        self.obs_embed: nn.Module = layers[0] if len(layers) == 1 else nn.Sequential(*layers)
        if config.condition_on_prev_action:
            # index 0 = "no previous action" (first step, padding)
            self.action_embed: nn.Module = (
                nn.Embedding(config.action_dim + 1, d)
                if config.discrete_actions
                else nn.Linear(config.action_dim, d)
            )
        if config.arch == "transformer":
            self.rel_bias = nn.Embedding(config.rel_pos_buckets, config.n_heads)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.final_norm = RMSNorm(d)
        a_out = config.action_dim * (1 if config.discrete_actions else 2)
        self.action_head = nn.Linear(d, a_out)
        self.obs_head = nn.Linear(d, config.obs_dim)
        if config.obs_likelihood == "gaussian":
            self.obs_log_std = nn.Parameter(torch.zeros(config.obs_dim))
        self.reset_parameters()

    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=math.sqrt(self.config.init_scale / module.in_features))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, BlockDiagonalLinear):
                nn.init.normal_(module.weight, std=math.sqrt(self.config.init_scale / module.weight.shape[1]))
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=math.sqrt(self.config.init_scale))

    def _attention_bias(self, t: int, device: torch.device) -> torch.Tensor | None:
        if self.config.arch != "transformer":
            return None
        pos = torch.arange(t, device=device)
        rel = pos[None, :] - pos[:, None]  # key - query
        buckets = relative_position_bucket(rel, self.config.rel_pos_buckets, self.config.rel_pos_max_distance)
        bias = self.rel_bias(buckets).permute(2, 0, 1)  # (H, Tq, Tk)
        return bias.masked_fill(rel > 0, -torch.inf).unsqueeze(0)

    def embed(self, obs: torch.Tensor, prev_actions: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings e_0 of ``obs`` (B, T, obs_dim); ``prev_actions[:, t]`` is a_{t-1}."""
        if obs.dim() != 3 or obs.shape[-1] != self.config.obs_dim:
            raise ValueError(f"obs must be (B, T, {self.config.obs_dim}), got {tuple(obs.shape)}")
        x = self.obs_embed(obs)
        if self.config.condition_on_prev_action:
            if prev_actions is None:
                raise ValueError("this model embeds previous actions: pass prev_actions")
            if self.config.discrete_actions:
                x = x + self.action_embed(prev_actions.long().clamp(min=-1) + 1)
            else:
                x = x + self.action_embed(prev_actions)
        return x

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer <= self.n_layers:
            raise ValueError(f"layer must be in [0, {self.n_layers}], got {layer}")

    def lower(
        self,
        obs: torch.Tensor,
        layer: int,
        prev_actions: torch.Tensor | None = None,
        *,
        residuals: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The residual e_layer: embeddings run through the first ``layer`` blocks."""
        self._check_layer(layer)
        x = self.embed(obs, prev_actions)
        bias = self._attention_bias(x.shape[1], x.device)
        if residuals is not None:
            residuals.append(x)
        for block in self.blocks[:layer]:
            x = block(x, bias)
            if residuals is not None:
                residuals.append(x)
        return x

    def upper(
        self, residual: torch.Tensor, layer: int, *, residuals: list[torch.Tensor] | None = None
    ) -> BackboneOutput:
        """Run blocks ``layer+1..L`` on the residual e_layer and apply the heads."""
        self._check_layer(layer)
        x = residual
        bias = self._attention_bias(x.shape[1], x.device)
        for block in self.blocks[layer:]:
            x = block(x, bias)
            if residuals is not None:
                residuals.append(x)
        return self.heads(x)

    def heads(self, x: torch.Tensor) -> BackboneOutput:
        cfg = self.config
        h = self.final_norm(x)
        out = BackboneOutput()
        a = self.action_head(h)
        if cfg.discrete_actions:
            out.action_logits = a
        else:
            mean, log_std = a.chunk(2, dim=-1)
            out.action_mean = mean
            out.action_log_std = log_std.clamp(cfg.min_log_std, cfg.max_log_std)
        out.obs_pred = self.obs_head(h)
        if cfg.obs_likelihood == "gaussian":
            out.obs_log_std = self.obs_log_std.clamp(cfg.min_log_std, cfg.max_log_std).expand_as(out.obs_pred)
        return out

    # -- incremental inference -----------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> BackboneState:
        """An empty state for :meth:`step`: KV caches (Transformer) or zero conv/RG-LRU states (Hawk)."""
        weight = self.final_norm.weight
        device = weight.device if device is None else device
        cfg = self.config
        layers: list[KVCache | HawkState] = []
        for _ in range(cfg.n_layers):
            if cfg.arch == "transformer":
                layers.append(KVCache())
            else:
                dtype = weight.dtype
                conv = torch.zeros(batch_size, cfg.conv_width - 1, cfg.lru_width, device=device, dtype=dtype)
                layers.append(
                    HawkState(conv=conv, h=torch.zeros(batch_size, cfg.lru_width, device=device, dtype=dtype))
                )
        return BackboneState(t=0, layers=layers)

    def _step_bias(self, t: int, device: torch.device) -> torch.Tensor | None:
        """(1, H, 1, t+1) attention bias of query ``t`` over keys ``0..t`` (all in the past: no mask)."""
        if self.config.arch != "transformer":
            return None
        rel = torch.arange(t + 1, device=device) - t
        buckets = relative_position_bucket(rel, self.config.rel_pos_buckets, self.config.rel_pos_max_distance)
        return self.rel_bias(buckets).t()[None, :, None, :]

    def step(
        self,
        obs_t: torch.Tensor,
        state: BackboneState,
        control: Control | None = None,
        control_layer: int | None = None,
        return_residuals: bool = False,
        *,
        prev_action: torch.Tensor | None = None,
    ) -> tuple[BackboneOutput, BackboneState]:
        """Consume one observation ``obs_t`` (B, obs_dim) and predict a_t, o_{t+1} from o_{1:t}.

        Equals :meth:`forward` on the whole sequence at this position (tested), at O(t) cost per
        token (Transformer) or O(1) (Hawk). ``control`` gets the (B, 1, n_e) residual at
        ``control_layer`` and returns its delta, as in :meth:`forward`. ``prev_action`` (B,) or
        (B, action_dim) is a_{t-1}, needed only by models with ``condition_on_prev_action``.
        The returned state is ``state`` updated in place.
        """
        if obs_t.dim() != 2:
            raise ValueError(f"obs_t must be (B, {self.config.obs_dim}), got {tuple(obs_t.shape)}")
        if control is not None and control_layer is None:
            raise ValueError("control needs control_layer (the paper uses n_layers // 2)")
        if control_layer is not None:
            self._check_layer(control_layer)
        prev = None if prev_action is None else prev_action[:, None]
        x = self.embed(obs_t[:, None], prev)
        bias = self._step_bias(state.t, x.device)
        residuals: list[torch.Tensor] = []

        def visit(layer: int, x: torch.Tensor) -> torch.Tensor:
            if control is not None and layer == control_layer:
                delta = control(x)
                if delta.shape != x.shape:
                    raise ValueError(
                        f"control returned shape {tuple(delta.shape)}, expected {tuple(x.shape)}"
                    )
                x = x + delta
            if return_residuals:
                residuals.append(x)
            return x

        x = visit(0, x)
        for layer, (block, layer_state) in enumerate(zip(self.blocks, state.layers, strict=True), start=1):
            x = visit(layer, block.step(x, layer_state, bias))
        state.t += 1
        out = self.heads(x)
        out.residuals = residuals
        return out, state

    def forward(
        self,
        obs: torch.Tensor,
        prev_actions: torch.Tensor | None = None,
        *,
        control: Control | None = None,
        control_layer: int | None = None,
        return_residuals: bool = False,
    ) -> BackboneOutput:
        """Predict a_t and o_{t+1} for every token of ``obs`` (B, T, obs_dim).

        With ``control``, the residual after ``control_layer`` blocks becomes
        ``e + control(e)`` before the remaining blocks see it. ``return_residuals``
        fills ``output.residuals`` with all L+1 streams (post-control at the control layer).
        """
        if control is not None and control_layer is None:
            raise ValueError("control needs control_layer (the paper uses n_layers // 2)")
        layer = self.n_layers if control_layer is None else control_layer
        residuals: list[torch.Tensor] | None = [] if return_residuals else None
        x = self.lower(obs, layer, prev_actions, residuals=residuals)
        if control is not None:
            delta = control(x)
            if delta.shape != x.shape:
                raise ValueError(f"control returned shape {tuple(delta.shape)}, expected {tuple(x.shape)}")
            x = x + delta
            if residuals is not None:
                residuals[-1] = x
        out = self.upper(x, layer, residuals=residuals)
        if residuals is not None:
            out.residuals = residuals
        return out


def shift_actions(actions: torch.Tensor, discrete: bool) -> torch.Tensor:
    """a_{t-1} aligned with token t (the first token gets a "none" action: -1 or zeros)."""
    first = torch.full_like(actions[:, :1], -1) if discrete else torch.zeros_like(actions[:, :1])
    return torch.cat([first, actions[:, :-1]], 1)


def grid_backbone_config(**overrides: object) -> BackboneConfig:
    """Paper Table A4: gridworld Transformer, 6 x 256, 4 heads, MLP 512."""
    return BackboneConfig(**overrides)  # type: ignore[arg-type]


def ant_backbone_config(**overrides: object) -> BackboneConfig:
    """Paper Table A5: ant Hawk, 8 x 256, LRU 256 with 8 heads, MLP 512."""
    base: dict[str, object] = dict(
        action_dim=8,
        discrete_actions=False,
        obs_likelihood="gaussian",
        arch="hawk",
        n_layers=8,
        n_heads=8,
    )
    base.update(overrides)
    return BackboneConfig(**base)  # type: ignore[arg-type]
