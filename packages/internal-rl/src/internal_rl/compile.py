"""The CompILE baseline (Kipf et al. 2019) as adapted by the paper (C.4.3, Tables A11/A12).

CompILE replaces the metacontroller: it segments each expert sequence into at most M pieces,
infers one Gaussian code z_m per piece, and the same hypernetwork decoder as the metacontroller
turns the per-step code into the control U_t e_t of the frozen base model at layer L/2.

Per sequence of length T, for m = 0..M-1 (the CompILE recursion):

* started_m[t]   = prod_{j<m} P(e_j < t)       soft "all previous segments have ended"
* encoder        h^m = f_enc(o * started_m)    a trainable copy of the base model's layers 0..L/2,
                                               fed only the observations from the segment's start
* boundary       e_m ~ GumbelSoftmax(f_b(h^m)) over end positions t in [e_{m-1}, T-1]
                                               (e_{M-1} = T-1 is forced)
* segment mask   s_m[t] = started_m[t] * P(e_m >= t)   (telescopes: sum_m s_m[t] = 1 on real steps)
* latent         z_m ~ N(mu, sigma) = f_z(sum_t s_m[t] h^m_t / sum_t s_m[t])
* controller     z_t = sum_m s_m[t] z_m,  e_t <- e_t + U(z_t) e_t

Loss: action NLL of the controlled base model + alpha_z KL(N(mu, sigma) || N(0, I))
+ alpha_b KL(q(e_m) || truncated Poisson(rate) over the segment length), all per real step.

Choices the paper leaves open (documented where they are made): the end-inclusive boundary
convention, mean-pooling for z (the paper's encoder is a Transformer, so the LSTM's "state at
the segment end" has no direct counterpart), and the length prior measured from the previous
boundary and renormalised over each sequence's feasible lengths.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from internal_rl.backbone import Backbone, BackboneOutput, shift_actions
from internal_rl.discovery import alignment_f1, boundaries, random_switches
from internal_rl.metacontroller import Metacontroller, MetacontrollerConfig, control_layer
from internal_rl.pretrain import Batch, action_nll, make_optimizer, resolve_device

NEG_INF = -1e9
"""Logit of an impossible boundary: finite, so softmax and its gradient stay NaN-free."""


@dataclass
class CompileConfig:
    """CompILE module and training. Defaults: the paper's grid setting (Table A11)."""

    max_segments: int = 4
    """M, the maximum number of segments per sequence."""
    prior_rate: float = 10.0
    """Rate of the Poisson prior on segment length ("prior switching rate")."""
    temperature: float = 1.0
    """Gumbel-softmax temperature of the boundary samples; the paper searches {0.5, 1}."""
    n_z: int = 8
    """Size of each segment's Gaussian code z_m."""
    head_hidden: int = 32
    """Width of the one-hidden-layer MLP heads (boundary logits and z statistics), n_h."""
    rank: int = 16
    """Rank of U; 0 means a full n_e x n_e matrix (the ant, Table A12)."""
    decoder_hidden: int = 32
    """Hidden size of the hypernetwork decoder (as the metacontroller's)."""
    alpha_z: float = 0.1
    """Weight of KL_z; the paper searches {0.003, 0.01, 0.03, 0.1, 0.3, 1}."""
    alpha_b: float = 0.1
    """Weight of KL_b; searched over the same set as alpha_z."""
    init_from_base: bool = True
    """Start the encoder from the pretrained base model's first half (the paper does, to shorten training)."""
    steps: int = 32_000
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.03
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    """Global gradient-norm clip (not stated in the paper; the metacontroller uses the same; 0 disables)."""
    log_every: int = 100
    """Steps between entries of the metrics history."""
    seed: int = 0
    device: str = "auto"


def paper_ant_compile_config() -> CompileConfig:
    """Table A12: as the grid, with a full linear controller, batch 128 and lr 3e-4."""
    return CompileConfig(rank=0, batch_size=128, lr=3e-4)


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, out))


def poisson_length_log_prior(
    prev_end: torch.Tensor, lengths: torch.Tensor, steps: int, rate: float
) -> torch.Tensor:
    """(B, T) log prior over the end position t of a segment that follows the one ending at ``prev_end``.

    The segment length is k = t - prev_end (``prev_end`` = -1 for the first segment), scored by
    Poisson(rate) and renormalised over the feasible ends t in [max(prev_end, 0), length - 1];
    infeasible ends get NEG_INF. CompILE's official code truncates the Poisson to the padded
    length instead; the per-sequence support is the exact truncation.
    """
    t = torch.arange(steps, device=lengths.device)
    k = (t[None] - prev_end[:, None]).to(torch.float32)
    log_pmf = k * math.log(rate) - rate - torch.lgamma(k.clamp(min=0) + 1)
    feasible = (t[None] >= prev_end.clamp(min=0)[:, None]) & (t[None] < lengths[:, None])
    return torch.log_softmax(torch.where(feasible, log_pmf, NEG_INF), -1)


def categorical_kl(logits: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """KL(softmax(logits) || exp(log_prior)) over the last dim, 0 log 0 counted as 0."""
    log_q = torch.log_softmax(logits, -1)
    q = log_q.exp()
    return torch.where(q > 0, q * (log_q - log_prior), 0.0).sum(-1)


@dataclass
class CompileOutput:
    pred: BackboneOutput
    """The controlled base model's predictions."""
    delta: torch.Tensor
    """(B, T, n_e) U(z_t) e_t."""
    z: torch.Tensor
    """(B, T, n_z) per-step code sum_m s_m[t] z_m."""
    segment_z: torch.Tensor
    """(B, M, n_z) the sampled (training) or mean (eval) code of each segment."""
    mu: torch.Tensor
    """(B, M, n_z)."""
    logvar: torch.Tensor
    """(B, M, n_z)."""
    boundary_logits: torch.Tensor
    """(B, M, T) masked boundary logits (the last segment's is a point mass at T-1)."""
    boundaries: torch.Tensor
    """(B, M, T) Gumbel-softmax samples (training) or one-hot argmax (eval) of the end positions."""
    ends: torch.Tensor
    """(B, M) hard end positions (argmax of ``boundaries``), inclusive."""
    masks: torch.Tensor
    """(B, M, T) soft segment masks s_m[t]."""
    kl_z: torch.Tensor
    """(B,) sum over segments of KL(N(mu_m, sigma_m) || N(0, I))."""
    kl_b: torch.Tensor
    """(B,) sum over the M-1 free boundaries of KL(q(e_m) || length prior)."""


class CompileModel(nn.Module):
    """Frozen base model + CompILE encoder, heads and the metacontroller's hypernetwork decoder."""

    def __init__(self, base: Backbone, config: CompileConfig | None = None):
        super().__init__()
        cfg = self.config = config or CompileConfig()
        if cfg.max_segments < 1:
            raise ValueError("max_segments must be >= 1")
        self.base = base
        self.base.requires_grad_(False)
        self.layer = control_layer(base)
        if self.layer < 1:
            raise ValueError("the base model needs >= 2 layers: the encoder copies layers 0..L/2")
        d = base.config.d_model
        # The encoder is the base model's architecture cut at L/2 (Table A11): a Backbone of
        # L/2 blocks whose heads are never used, so they are removed from the parameter set.
        self.encoder = Backbone(dataclasses.replace(base.config, n_layers=self.layer))
        for name in ("final_norm", "action_head", "obs_head", "obs_log_std"):
            if hasattr(self.encoder, name):
                delattr(self.encoder, name)
        if cfg.init_from_base:
            self.encoder.load_state_dict(
                {k: v for k, v in base.state_dict().items() if k in self.encoder.state_dict()}
            )
        self.head_b = _mlp(d, cfg.head_hidden, 1)
        self.head_z = _mlp(d, cfg.head_hidden, 2 * cfg.n_z)
        # The decoder is the metacontroller's (Eq. 18, U = 0 at init); its inference parts are
        # replaced by CompILE's, so they are dropped rather than left as dead parameters.
        self.decoder = Metacontroller(
            d, MetacontrollerConfig(n_z=cfg.n_z, rank=cfg.rank, decoder_hidden=cfg.decoder_hidden)
        )
        for name in ("history", "embedder", "encoder", "switch"):
            delattr(self.decoder, name)

    def train(self, mode: bool = True) -> CompileModel:
        super().train(mode)
        self.base.eval()  # frozen: whatever the module mode, the base model is evaluated as pretrained
        return self

    def _prev_actions(self, model: Backbone, actions: torch.Tensor | None) -> torch.Tensor | None:
        if not model.config.condition_on_prev_action:
            return None
        if actions is None:
            raise ValueError("the base model embeds previous actions: pass actions")
        return shift_actions(actions, model.config.discrete_actions)

    def forward(
        self,
        obs: torch.Tensor,
        lengths: torch.Tensor,
        actions: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> CompileOutput:
        """Segment ``obs`` (B, T, obs_dim) of ``lengths`` and run the controlled base model.

        In training mode boundaries are Gumbel-softmax samples and z is reparameterised; in eval
        mode both are their modes (argmax boundaries, z = mu). ``actions`` are needed only by base
        models that embed the previous action.
        """
        cfg = self.config
        bsz, steps, _ = obs.shape
        dev = obs.device
        lengths = lengths.to(dev).clamp(min=1, max=steps)
        t = torch.arange(steps, device=dev)
        real = t[None] < lengths[:, None]
        prev = self._prev_actions(self.base, actions)
        sample = self.training

        started = torch.ones(bsz, steps, device=dev, dtype=obs.dtype)
        prev_end = torch.full((bsz,), -1, device=dev, dtype=torch.long)
        logits_all, samples, ends, masks, mus, logvars, zs = [], [], [], [], [], [], []
        kl_b = torch.zeros(bsz, device=dev, dtype=obs.dtype)
        for m in range(cfg.max_segments):
            # As CompILE re-runs its LSTM from each segment's start, the encoder sees only the
            # observations the previous segments have (softly) not yet consumed.
            h = self.encoder.lower(obs * started[..., None], self.layer, prev)
            feasible = (t[None] >= prev_end.clamp(min=0)[:, None]) & real
            if m == cfg.max_segments - 1:
                last = F.one_hot(lengths - 1, steps).to(obs.dtype)
                logits = torch.where(last > 0, 0.0, NEG_INF)
                b = last
            else:
                logits = torch.where(feasible, self.head_b(h).squeeze(-1), NEG_INF)
                if sample:
                    u = torch.rand(logits.shape, generator=generator, device=dev, dtype=logits.dtype)
                    gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
                    b = torch.softmax((logits + gumbel) / cfg.temperature, -1)
                else:
                    b = F.one_hot(logits.argmax(-1), steps).to(obs.dtype)
                log_prior = poisson_length_log_prior(prev_end, lengths, steps, cfg.prior_rate)
                kl_b = kl_b + categorical_kl(logits, log_prior)
            # P(e_m < t) from the (soft) sample; the segment covers t while e_m >= t. The clamp
            # removes rounding past 1, which would make the next mask slightly negative.
            ended = (torch.cumsum(b, -1) - b).clamp(0.0, 1.0)
            mask = started * (1.0 - ended)
            pooled = (mask[..., None] * h).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-6)
            mu, logvar = self.head_z(pooled).chunk(2, -1)
            logvar = logvar.clamp(-10.0, 4.0)
            if sample:
                noise = torch.randn(mu.shape, generator=generator, device=dev, dtype=mu.dtype)
                z = mu + torch.exp(0.5 * logvar) * noise
            else:
                z = mu
            started = started * ended
            prev_end = b.argmax(-1)
            logits_all.append(logits)
            samples.append(b)
            ends.append(prev_end)
            masks.append(mask)
            mus.append(mu)
            logvars.append(logvar)
            zs.append(z)

        mask_all = torch.stack(masks, 1)
        segment_z = torch.stack(zs, 1)
        z_t = torch.einsum("bmt,bmz->btz", mask_all, segment_z)
        mu_all, logvar_all = torch.stack(mus, 1), torch.stack(logvars, 1)
        kl_z = 0.5 * (mu_all.pow(2) + logvar_all.exp() - 1.0 - logvar_all).sum((1, 2))
        with torch.no_grad():
            e = self.base.lower(obs, self.layer, prev)
        delta = self.decoder.control(z_t, e)
        pred = self.base.upper(e + delta, self.layer)
        return CompileOutput(
            pred=pred,
            delta=delta,
            z=z_t,
            segment_z=segment_z,
            mu=mu_all,
            logvar=logvar_all,
            boundary_logits=torch.stack(logits_all, 1),
            boundaries=torch.stack(samples, 1),
            ends=torch.stack(ends, 1),
            masks=mask_all,
            kl_z=kl_z,
            kl_b=kl_b,
        )


def compile_losses(
    model: CompileModel, batch: Batch, lengths: torch.Tensor, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """``total`` = action NLL + alpha_z KL_z + alpha_b KL_b, each per real step of the batch.

    The KLs are per sequence, so they are summed over the batch and divided by its real steps:
    ``total`` is then the batch's negative ELBO per step, on the metacontroller's scale.
    """
    out = model(batch.obs, lengths, batch.actions, generator=generator)
    nll = action_nll(out.pred, batch.actions, batch.mask)
    n_steps = batch.mask.sum().clamp(min=1)
    kl_z = out.kl_z.sum() / n_steps
    kl_b = out.kl_b.sum() / n_steps
    cfg = model.config
    segments = (out.masks.sum(-1) > 0.5).float().sum(1).mean()
    return {
        "total": nll + cfg.alpha_z * kl_z + cfg.alpha_b * kl_b,
        "action_nll": nll,
        "kl_z": kl_z,
        "kl_b": kl_b,
        "segments_per_episode": segments,
    }


@torch.no_grad()
def segment_switches(model: CompileModel, batch: Batch) -> torch.Tensor:
    """(B, T) bool: True at the first step of every segment after the first (argmax boundaries).

    Empty segments add no switch, and a switch is never at step 0 or past the sequence end, so
    the result compares directly with :func:`internal_rl.discovery.boundaries` via ``alignment_f1``.
    """
    was = model.training
    model.eval()
    lengths = batch.mask.sum(1)
    out = model(batch.obs, lengths, batch.actions)
    model.train(was)
    bsz, steps = batch.mask.shape
    starts = out.ends[:, :-1] + 1  # the last segment ends at the sequence end: no switch after it
    valid = starts < lengths[:, None]
    switches = torch.zeros(bsz, steps + 1, dtype=torch.bool, device=batch.mask.device)
    switches.scatter_(1, torch.where(valid, starts, steps), True)
    return switches[:, :steps]


def compile_switch_statistics(
    model: CompileModel, data: Any, seed: int = 0, tolerance: int = 1
) -> dict[str, float]:
    """Switches per episode and their alignment with the true subgoal boundaries of ``data``.

    The same statistics as the metacontroller's evaluation, with a random-placement control
    that keeps each episode's number of switches.
    """
    device = next(model.parameters()).device
    batch = Batch.from_trajectories(data.observations, data.actions, data.lengths, device)
    switches = segment_switches(model, batch).cpu()
    truth = boundaries(data.subgoals[:, : switches.shape[1]], data.lengths)
    rand = random_switches(switches, data.lengths, torch.Generator().manual_seed(seed))
    return {
        "switches_per_episode": float(switches.sum()) / len(data),
        "true_boundaries_per_episode": float(truth.sum()) / len(data),
        "alignment_f1": alignment_f1(switches, truth, tolerance),
        "random_alignment_f1": alignment_f1(rand, truth, tolerance),
    }


def train_compile(
    cfg: CompileConfig,
    base: Backbone,
    data: Any,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> tuple[CompileModel, list[dict[str, float]]]:
    """Train CompILE on ``data`` (Trajectories) against the frozen ``base``.

    Returns the model (eval mode) and one history entry every ``log_every`` steps (and at the
    last), with the batch's losses and the elapsed seconds; ``on_log`` receives each entry as
    it is made (a run folder's live metrics).
    """
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = CompileModel(base, cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    noise = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    model.train()
    for step in range(cfg.steps):
        idx = torch.randint(len(data), (cfg.batch_size,), generator=generator)
        part = data[idx]
        batch = Batch.from_trajectories(part.observations, part.actions, part.lengths, device)
        losses = compile_losses(model, batch, part.lengths.to(device), generator=noise)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps or step == 0:
            row = {"step": float(done), **{k: float(v.detach()) for k, v in losses.items()}}
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            if on_log is not None:
                on_log(row)
    return model.eval(), history
