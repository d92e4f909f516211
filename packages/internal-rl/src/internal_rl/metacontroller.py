"""The metacontroller (paper D.2, Eqs. 11-18, Tables A9/A10): a recurrent hypernetwork that
steers a frozen base model through its residual stream at layer L/2.

Per step t, with e_t the base model's residual at the controlled layer:

* history            h_t = GRU(e_t, h_{t-1})                         (Eq. 12, n_h 32)
* sequence embedder  s = f_emb(e_{1:T}), a bidirectional diagonal SSM  (Eq. 13, n_s 32, non-causal)
* encoder            mu_t, Sigma_t = f_enc(e_t, h_{t-1}, s_t)          (Eqs. 14-15, hidden 64)
* switching unit     beta_t = f_switch(e_t, h_{t-1}, z_{t-1}) in [0,1] (Eq. 16, causal)
* integration        z_t = beta_t z~_t + (1 - beta_t) z_{t-1}          (Eq. 17)
* decoder            U_t = f_hyp(z_t), rank 16 (grid) or full (ant)     (Eq. 18, hidden 32)
* control            e_t <- e_t + U_t e_t                               (Eq. 11)

Loss (Eq. 3 with λ = 0): action NLL of the controlled model + alpha * KL(N(mu_t, Sigma_t) || N(0, I)),
the KL *not* weighted by beta, and no switching regulariser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from internal_rl.backbone import Backbone


@dataclass
class MetacontrollerConfig:
    """Architecture. Defaults: the paper's grid metacontroller (Table A9)."""

    n_z: int = 8
    """Latent code size."""
    history_dim: int = 32
    """GRU history state n_h."""
    embed_dim: int = 32
    """Sequence-embedder width n_s."""
    embed_layers: int = 1
    """Layers of the bidirectional SSM embedder (the paper's L_emb is not stated)."""
    embed_decay_logits: tuple[float, float] = (-2.0, 4.0)
    """Range of the embedder's per-channel decay logits at init (decay a = sigmoid(logit), spread evenly
    over the channels; the paper does not describe its SSM). The default spans a = 0.12 (about one step of
    memory) to 0.98 (about 50 steps)."""
    embed_decay_trainable: bool = True
    """Whether the decays train. Fixed decays of (1.0, 2.2) (a = 0.73-0.90, 4-10 steps, about one leg of
    the small grid) keep the encoder from reading the next move off the following step, which on short
    legs is worth more per step than the subgoal (README, "the small grid")."""
    encoder_hidden: int = 64
    """Hidden size of the encoder MLP."""
    switch_hidden: int = 32
    """Hidden size of the switching-unit MLP (not stated; the paper only gives its inputs)."""
    decoder_hidden: int = 32
    """Hidden size of the hypernetwork decoder."""
    rank: int = 16
    """Rank of U (grid: 16); 0 means a full n_e x n_e matrix (ant)."""
    forced_switch: bool = False
    """Baseline: beta_t = 1 at every step (paper C.4.1)."""
    switch_init_bias: float = 0.0
    """Initial bias of the switching unit's output logit (0: beta starts near 0.5 everywhere; the paper
    does not say). Negative values start from sparse switching (-2: beta ~ 0.12), the regime the paper
    reports emerging, instead of a blend of old and new codes at every step."""


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, out))


class BidirectionalSSM(nn.Module):
    """Non-causal embedder: a diagonal linear recurrence run forwards and backwards over each sequence.

    Backward passes start at each sequence's own last real step (``lengths``), so padding
    never leaks into the embedding of real steps.
    """

    def __init__(
        self,
        inp: int,
        width: int,
        layers: int,
        decay_logits: tuple[float, float] = (-2.0, 4.0),
        trainable_decay: bool = True,
    ):
        super().__init__()
        self.inp = nn.Linear(inp, width)
        self.layers = nn.ModuleList()
        for _ in range(layers):
            layer = nn.Module()
            decay = torch.linspace(*decay_logits, width).repeat(2, 1)
            layer.decay_logit = nn.Parameter(decay, requires_grad=trainable_decay)
            layer.mix = nn.Linear(2 * width, width)
            self.layers.append(layer)

    @staticmethod
    def _reverse(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        idx = (lengths[:, None] - 1 - torch.arange(t, device=x.device)[None]).clamp(min=0)
        idx = torch.where(
            torch.arange(t, device=x.device)[None] < lengths[:, None],
            idx,
            torch.arange(t, device=x.device)[None],
        )
        return x.gather(1, idx[..., None].expand_as(x))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        t = h.shape[1]
        steps = torch.arange(t, device=h.device)
        lag = (steps[:, None] - steps[None, :]).clamp(min=0).to(h.dtype)  # (T, T): i - j
        causal = steps[:, None] >= steps[None, :]
        for layer in self.layers:
            # Time-invariant decays make the recurrence a causal convolution with kernel
            # (1 - a) a^k: one (T, T) matmul per channel instead of a sequential scan.
            log_a = F.logsigmoid(layer.decay_logit)  # (2, width)
            kernel = torch.where(causal[None, None], (lag[None, None] * log_a[..., None, None]).exp(), 0.0)
            kernel = kernel * (1 - log_a.exp())[..., None, None]  # (2, width, T, T)
            fwd = torch.einsum("cij,bjc->bic", kernel[0], h)
            hr = self._reverse(h, lengths)
            bwd = self._reverse(torch.einsum("cij,bjc->bic", kernel[1], hr), lengths)
            h = h + layer.mix(F.gelu(torch.cat([fwd, bwd], -1)))
        return h


@dataclass
class MetacontrollerOutput:
    delta: torch.Tensor
    """(B, T, n_e): U_t e_t, the additive control."""
    beta: torch.Tensor
    """(B, T) switching gate."""
    z: torch.Tensor
    """(B, T, n_z) integrated codes."""
    mu: torch.Tensor
    logvar: torch.Tensor
    kl: torch.Tensor
    """(B, T) KL(N(mu_t, Sigma_t) || N(0, I)) per step."""


class Metacontroller(nn.Module):
    """Encoder (training only) + causal switching unit + hypernetwork decoder."""

    def __init__(self, d_model: int, config: MetacontrollerConfig | None = None):
        super().__init__()
        cfg = self.config = config or MetacontrollerConfig()
        self.d_model = d_model
        self.history = nn.GRU(d_model, cfg.history_dim, batch_first=True)
        self.embedder = BidirectionalSSM(
            d_model, cfg.embed_dim, cfg.embed_layers, tuple(cfg.embed_decay_logits), cfg.embed_decay_trainable
        )
        self.encoder = _mlp(d_model + cfg.history_dim + cfg.embed_dim, cfg.encoder_hidden, 2 * cfg.n_z)
        self.switch = _mlp(d_model + cfg.history_dim + cfg.n_z, cfg.switch_hidden, 1)
        out = d_model * d_model if cfg.rank == 0 else 2 * d_model * cfg.rank
        self.decoder = _mlp(cfg.n_z, cfg.decoder_hidden, out)
        # U = 0 at initialisation, so training starts from the unchanged base model. For the
        # low-rank form only the right factor starts at zero (A @ 0 still passes gradient to B).
        last = self.decoder[-1]
        with torch.no_grad():
            if cfg.rank == 0:
                last.weight.zero_()
            else:
                half = d_model * cfg.rank
                last.weight[half:].zero_()
                last.weight[:half].normal_(0.0, 1.0 / math.sqrt(cfg.decoder_hidden))
            last.bias.zero_()
            self.switch[2].bias.fill_(cfg.switch_init_bias)

    # -- causal pieces (shared by training and the internal-RL environment) -------------------
    def controller(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """U_t = f_hyp(z): full (.., n_e, n_e) or low-rank factors A (.., n_e, r), B (.., r, n_e)."""
        out = self.decoder(z)
        n, r = self.d_model, self.config.rank
        if r == 0:
            return out.unflatten(-1, (n, n)), None
        a, b = out.split(n * r, -1)
        return a.unflatten(-1, (n, r)) / math.sqrt(r), b.unflatten(-1, (r, n))

    def matrix(self, z: torch.Tensor) -> torch.Tensor:
        """U_t as an explicit (.., n_e, n_e) matrix."""
        a, b = self.controller(z)
        return a if b is None else a @ b

    def control(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """U(z) e: a real matrix-vector product (low-rank as A (B e))."""
        a, b = self.controller(z)
        if b is None:
            return (a @ e.unsqueeze(-1)).squeeze(-1)
        return (a @ (b @ e.unsqueeze(-1))).squeeze(-1)

    def switch_prob(self, e: torch.Tensor, h_prev: torch.Tensor, z_prev: torch.Tensor) -> torch.Tensor:
        """beta_t = f_switch(e_t, h_{t-1}, z_{t-1}) in [0, 1]."""
        return self._switch_from(self._switch_context(e, h_prev), z_prev)

    def _switch_context(self, e: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        # The first layer split by input: the (e, h) part has no recurrence through z and is
        # computed for all steps at once; only the z part stays in the sequential loop.
        first = self.switch[0]
        n = self.d_model + self.config.history_dim
        return F.linear(torch.cat([e, h_prev], -1), first.weight[:, :n], first.bias)

    def _switch_from(self, context: torch.Tensor, z_prev: torch.Tensor) -> torch.Tensor:
        if self.config.forced_switch:
            return torch.ones(context.shape[:-1], device=context.device, dtype=context.dtype)
        first = self.switch[0]
        pre = context + F.linear(z_prev, first.weight[:, self.d_model + self.config.history_dim :])
        return torch.sigmoid(self.switch[2](F.relu(pre))).squeeze(-1)

    def step_history(self, e: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        """h_t = GRU(e_t, h_{t-1}) for one step: e (B, n_e), h (B, n_h)."""
        return self.history(e[:, None], h_prev[None].contiguous())[1][0]

    def histories(self, e: torch.Tensor) -> torch.Tensor:
        """h_{t-1} for every t of ``e`` (B, T, n_e): (B, T, n_h), h_0 = 0 first."""
        h, _ = self.history(e)
        return torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)

    def init_history(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch, self.config.history_dim, device=device)

    # -- training pass -------------------------------------------------------------------------
    def forward(
        self,
        e: torch.Tensor,
        lengths: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        sample: bool = True,
    ) -> MetacontrollerOutput:
        """Run over residuals ``e`` (B, T, n_e) of sequences of ``lengths``; z~ is reparameterised."""
        bsz, t, _ = e.shape
        cfg = self.config
        s = self.embedder(e, lengths)
        h_prev = self.histories(e)
        mu, logvar = self.encoder(torch.cat([e, h_prev, s], -1)).chunk(2, -1)
        logvar = logvar.clamp(-10.0, 4.0)
        if sample:
            noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z_tilde = mu + torch.exp(0.5 * logvar) * noise
        else:
            z_tilde = mu
        context = self._switch_context(e, h_prev)
        z = torch.zeros(bsz, cfg.n_z, device=e.device, dtype=e.dtype)
        betas, zs = [], []
        for i in range(t):
            # The first step always opens a segment: there is no previous code to keep.
            beta = (
                torch.ones(bsz, device=e.device, dtype=e.dtype)
                if i == 0
                else self._switch_from(context[:, i], z)
            )
            z = beta[:, None] * z_tilde[:, i] + (1 - beta[:, None]) * z
            betas.append(beta)
            zs.append(z)
        z_all = torch.stack(zs, 1)
        mu_all, logvar_all = mu, logvar
        kl = 0.5 * (mu_all.pow(2) + logvar_all.exp() - 1.0 - logvar_all).sum(-1)
        return MetacontrollerOutput(
            delta=self.control(z_all, e),
            beta=torch.stack(betas, 1),
            z=z_all,
            mu=mu_all,
            logvar=logvar_all,
            kl=kl,
        )


def control_layer(base: Backbone) -> int:
    """The paper's controlled layer, L/2."""
    return base.n_layers // 2
