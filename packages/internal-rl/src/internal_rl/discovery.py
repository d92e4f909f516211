"""Stage 3: train the metacontroller on clean expert data with the base model frozen (paper D.2, E.1).

Loss per real step: -ln p(a_t | o_{1:t}, z_{1:t}) + alpha * KL(N(mu_t, Sigma_t) || N(0, I)).
Baselines reuse this loop: ``meta.forced_switch`` (beta = 1, C.4.1) and ``cotrain`` (the base
model is trained jointly, C.4.2). Runs write ``config.json``, ``metrics.jsonl`` + TensorBoard,
resumable ``checkpoints/`` and ``results.json``; with ``latentforge-launch`` the metacontroller
is wrapped in DDP and every rank draws its own batches.

    internal-rl metacontroller tiny --base-run runs/internal-rl/<pretraining run>
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from internal_rl.backbone import Backbone, BackboneConfig
from internal_rl.metacontroller import (
    Metacontroller,
    MetacontrollerConfig,
    MetacontrollerOutput,
    control_layer,
)
from internal_rl.pretrain import (
    Batch,
    DataConfig,
    action_nll,
    load_backbone,
    load_data,
    make_optimizer,
    resolve_device,
)
from latentforge.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from latentforge.configs import config_from_dict, config_to_dict
from latentforge.distributed import init_distributed, unwrap_model, wrap_model
from latentforge.runs import MetricsLogger, create_run_dir
from latentforge.seeding import seed_everything

CHECKPOINTS = "checkpoints"
ALPHA_GRID = (0.0, 0.05, 0.1, 0.17, 0.3, 0.5, 1.0)
"""Tables A9/A10: the KL weights searched in the paper."""


@dataclass
class DiscoveryConfig:
    """Metacontroller training. Defaults: paper Table A9 (grid)."""

    base_run: Path | None = None
    """Pretraining run folder (or checkpoint) of the frozen base model."""
    meta: MetacontrollerConfig = field(default_factory=MetacontrollerConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(num_episodes=100_000, data_seed=2))
    """D*: clean expert data (epsilon 0), fresh layouts (data_seed differs from pretraining)."""
    alpha: float = 0.1
    """KL weight; the paper searches ALPHA_GRID and selects by downstream RL."""
    kl_free_steps: int = 0
    """Train this many first steps without the KL term (0: the paper's constant alpha from the start).
    The decoder starts at U = 0, so at first a code changes nothing and the KL alone pulls every code to
    the prior; on short CPU runs that collapse comes before the decoder learns to read the codes."""
    kl_warmup_steps: int = 0
    """After ``kl_free_steps``, raise the KL weight linearly from 0 to ``alpha`` over these steps."""
    steps: int = 64_000
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.03
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    """Global gradient-norm clip (the paper is silent; 0 disables)."""
    cotrain: bool = False
    """Baseline C.4.2: train the base model jointly with the metacontroller."""
    cotrain_from_scratch: bool = False
    """With ``cotrain``: re-initialise the base model first (the paper's grid co-training)."""
    switch_threshold: float = 0.5
    """beta above which a step counts as a switch in the reported statistics (Fig. 7 uses 0.5)."""
    switch_tolerance: int = 1
    """Steps by which a switch may miss a true subgoal change and still count in the alignment F1 (the
    paper labels alignment by eye; 0 on the small grid, whose legs are 3-4 steps long)."""
    log_every: int = 100
    eval_every: int = 2000
    checkpoint_every: int = 8000
    keep_checkpoints: int | None = 2
    eval_episodes: int = 256
    """Held-out episodes for the switch statistics (the last ones of the data)."""
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0
    run_root: Path = Path("runs")
    exp_name: str = "metacontroller"
    resume: Path | None = None
    """A run folder to continue from its latest checkpoint (same config)."""


def paper_grid_config() -> DiscoveryConfig:
    """Table A9: 64K steps, batch 512, AdamW 1e-3, wd 0.03, rank-16 U."""
    return DiscoveryConfig()


def paper_ant_config() -> DiscoveryConfig:
    """Table A10: 32K steps, batch 128, AdamW 3e-4, wd 0.03, full U."""
    from internal_rl.pretrain import ANT_ENV

    return DiscoveryConfig(
        meta=MetacontrollerConfig(rank=0),
        data=DataConfig(env_id=ANT_ENV, num_episodes=10_000, data_seed=2),
        steps=32_000,
        batch_size=128,
        lr=3e-4,
    )


def tiny_config() -> DiscoveryConfig:
    """CPU-sized grid run: 600 steps x 32 episodes on 2000 clean expert episodes."""
    return DiscoveryConfig(
        data=DataConfig(num_episodes=2000, data_seed=2),
        steps=600,
        batch_size=32,
        lr=1e-3,
        log_every=25,
        eval_every=200,
        checkpoint_every=200,
        eval_episodes=200,
    )


def small_config() -> DiscoveryConfig:
    """The CPU reproduction on the small grid: 600 steps x 64 episodes on 3000 clean expert episodes,
    alpha 0.1 reached after 150 steps without KL and a 150-step ramp, an embedder with fixed decays of
    4-10 steps (README: "the small grid")."""
    return DiscoveryConfig(
        meta=MetacontrollerConfig(embed_decay_logits=(1.0, 2.2), embed_decay_trainable=False),
        data=DataConfig(num_episodes=3000, data_seed=2, variant="small", expert_ties="first"),
        alpha=0.1,
        kl_free_steps=150,
        kl_warmup_steps=150,
        switch_tolerance=0,
        steps=600,
        batch_size=64,
        lr=2e-3,
        log_every=25,
        eval_every=200,
        checkpoint_every=600,
        eval_episodes=300,
    )


PRESETS = {
    "small": small_config,
    "tiny": tiny_config,
    "paper-grid": paper_grid_config,
    "paper-ant": paper_ant_config,
}


class ControlledModel(nn.Module):
    """The base model plus its metacontroller; one module so DDP and checkpoints see both."""

    def __init__(self, base: Backbone, meta: Metacontroller, *, cotrain: bool = False):
        super().__init__()
        self.base, self.meta, self.cotrain = base, meta, cotrain
        self.base.requires_grad_(cotrain)
        self.layer = control_layer(base)

    def forward(self, batch: Batch, lengths: torch.Tensor) -> tuple[Any, MetacontrollerOutput]:
        with torch.set_grad_enabled(self.cotrain and torch.is_grad_enabled()):
            e = self.base.lower(batch.obs, self.layer)
        out = self.meta(e, lengths)
        return self.base.upper(e + out.delta, self.layer), out


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def discovery_losses(
    model: nn.Module, batch: Batch, lengths: torch.Tensor, alpha: float
) -> dict[str, torch.Tensor]:
    """``total`` = action NLL + alpha * KL (per real step), plus the switch rate."""
    pred, out = model(batch, lengths)
    nll = action_nll(pred, batch.actions, batch.mask)
    kl = masked_mean(out.kl, batch.mask)
    later = batch.mask.clone()
    later[:, 0] = False  # beta_0 = 1 by construction
    return {
        "total": nll + alpha * kl,
        "action_nll": nll,
        "kl": kl,
        "beta_mean": masked_mean(out.beta, later),
    }


def kl_weight(cfg: DiscoveryConfig, step: int) -> float:
    """alpha at optimiser step ``step`` (0-based), with the optional linear warm-up."""
    step -= cfg.kl_free_steps
    if step < 0:
        return 0.0
    if cfg.kl_warmup_steps <= 0:
        return cfg.alpha
    return cfg.alpha * min(1.0, (step + 1) / cfg.kl_warmup_steps)


# -- switch statistics --------------------------------------------------------------------------
def boundaries(subgoals: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(E, T) bool: True at t >= 1 where the true subgoal differs from step t-1's."""
    b = torch.zeros_like(subgoals, dtype=torch.bool)
    b[:, 1:] = subgoals[:, 1:] != subgoals[:, :-1]
    return b & (torch.arange(subgoals.shape[1]) < lengths[:, None]) & (subgoals >= 0)


def alignment_f1(switches: torch.Tensor, truth: torch.Tensor, tolerance: int = 1) -> float:
    """F1 of predicted switch steps against true boundaries, a match within ``tolerance`` steps.

    Precision: share of switches near a true boundary; recall: share of boundaries near a switch.
    """

    def near(x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        for k in range(1, tolerance + 1):
            y[:, k:] |= x[:, :-k]
            y[:, :-k] |= x[:, k:]
        return y

    n_pred, n_true = int(switches.sum()), int(truth.sum())
    if n_pred == 0 or n_true == 0:
        return 0.0
    precision = float((switches & near(truth)).sum()) / n_pred
    recall = float((truth & near(switches)).sum()) / n_true
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def random_switches(
    switches: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The same number of switches per episode, placed uniformly at random over steps 1..len-1."""
    out = torch.zeros_like(switches)
    for i in range(len(lengths)):
        n, length = int(switches[i].sum()), int(lengths[i])
        if n and length > 1:
            pos = torch.randperm(length - 1, generator=generator)[: min(n, length - 1)] + 1
            out[i, pos] = True
    return out


def subgoal_codes(z: torch.Tensor, subgoals: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Mean code of every subgoal label: z (..., n_z), subgoals (...; -1 = none) -> (P, n_z).

    P is ``num_classes`` or the largest label + 1. A label that never occurs gets a NaN row, so a later
    use cannot mistake it for a real code.
    """
    keep = subgoals >= 0
    if not keep.any():
        raise ValueError("no labelled step: cannot average codes per subgoal")
    zk, yk = z[keep], subgoals[keep]
    count = torch.bincount(yk, minlength=num_classes or int(yk.max()) + 1).to(z.dtype)
    total = torch.zeros(len(count), z.shape[-1], dtype=z.dtype).index_add_(0, yk, zk)
    return total / count[:, None].where(count[:, None] > 0, torch.tensor(float("nan"), dtype=z.dtype))


def code_decodability(z: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """How well codes z (E, T, n_z) tell ``labels`` (E, T; -1 = none): nearest class mean, fitted on the
    first half of the episodes and scored on the second, against the majority label of the first half.

    Read with two labels it says what the codes stand for: the true subgoal (the paper's claim) or the
    current action (a code that only re-encodes primitive moves).
    """
    half = labels.shape[0] // 2
    test = labels[half:] >= 0
    classes = int(labels.max()) + 1
    if half == 0 or classes < 2 or not test.any() or not (labels[:half] >= 0).any():
        return float("nan"), float("nan")
    means = subgoal_codes(z[:half], labels[:half], classes)
    counts = torch.bincount(labels[:half][labels[:half] >= 0], minlength=classes)
    zt, yt = z[half:][test], labels[half:][test]
    distance = torch.cdist(zt, means.nan_to_num(0.0)).masked_fill(
        counts[None] == 0, float("inf")
    )  # unseen: never predicted
    accuracy = float((distance.argmin(1) == yt).float().mean())
    majority = float((yt == counts.argmax()).float().mean())
    return accuracy, majority


def previous_subgoals(subgoals: torch.Tensor) -> torch.Tensor:
    """The subgoal each step's segment followed: (E, T) labels (-1 = none) -> (E, T), -1 in the first segment."""
    prev = torch.full_like(subgoals, -1)
    last = torch.full_like(subgoals[:, 0], -1)
    for t in range(1, subgoals.shape[1]):
        changed = (subgoals[:, t] != subgoals[:, t - 1]) & (subgoals[:, t] >= 0) & (subgoals[:, t - 1] >= 0)
        last = torch.where(changed, subgoals[:, t - 1], last)
        prev[:, t] = torch.where(subgoals[:, t] >= 0, last, -1)
    return prev


def context_codes(z: torch.Tensor, subgoals: torch.Tensor, min_steps: int = 30) -> dict[str, float]:
    """Are codes absolute ("go to c") or relative to the context ("the first of the usual successors")?

    Averages the codes of every (previous subgoal, subgoal) pair with at least ``min_steps`` steps and
    returns the mean cosine between pairs that share the subgoal but not the previous one
    (``same_subgoal``) and between pairs that share the previous subgoal but not the subgoal
    (``same_context``). Absolute codes give a high ``same_subgoal``; codes that only pick among the
    successors the base model expects in each context give a low one, and a strongly negative
    ``same_context`` when two successors share an axis with opposite signs.
    """
    prev = previous_subgoals(subgoals)
    keys, means = [], []
    for p in range(-1, int(subgoals.max()) + 1):
        for c in range(int(subgoals.max()) + 1):
            mask = (prev == p) & (subgoals == c)
            if int(mask.sum()) >= min_steps:
                keys.append((p, c))
                means.append(z[mask].mean(0))
    if len(keys) < 2:
        return {"same_subgoal": float("nan"), "same_context": float("nan"), "pairs": len(keys)}
    unit = torch.nn.functional.normalize(torch.stack(means), dim=1)
    cos = unit @ unit.T
    same_subgoal, same_context = [], []
    for i, j in itertools.combinations(range(len(keys)), 2):
        if keys[i][1] == keys[j][1] and keys[i][0] != keys[j][0]:
            same_subgoal.append(float(cos[i, j]))
        elif keys[i][0] == keys[j][0] and keys[i][1] != keys[j][1]:
            same_context.append(float(cos[i, j]))

    def mean(x: list[float]) -> float:
        return sum(x) / len(x) if x else float("nan")

    return {"same_subgoal": mean(same_subgoal), "same_context": mean(same_context), "pairs": len(keys)}


@torch.no_grad()
def switch_statistics(
    model: ControlledModel,
    data: Any,
    device: torch.device,
    threshold: float = 0.5,
    seed: int = 0,
    tolerance: int = 1,
) -> dict[str, Any]:
    """Switches per episode, their alignment with true subgoal boundaries, and a random-segmentation control."""
    was = model.training
    model.eval()
    batch = Batch.from_trajectories(data.observations, data.actions, data.lengths, device)
    e = model.base.lower(batch.obs, model.layer)
    out = model.meta(e, data.lengths.to(device), sample=False)
    pred = model.base.upper(e + out.delta, model.layer)
    model.train(was)
    mask = batch.mask.cpu()
    beta = out.beta.cpu()
    switches = (beta >= threshold) & mask
    switches[:, 0] = False
    truth = boundaries(data.subgoals[:, : mask.shape[1]], data.lengths)
    rand = random_switches(switches, data.lengths, torch.Generator().manual_seed(seed))
    later = mask.clone()
    later[:, 0] = False
    quasi_binary = float((((beta < 0.1) | (beta > 0.9)) & later).sum()) / max(int(later.sum()), 1)
    steps = data.subgoals.shape[1]
    z = out.z[:, :steps].cpu()
    code_subgoal, subgoal_majority = code_decodability(z, data.subgoals)
    labelled = bool((data.subgoals >= 0).any())
    codes = subgoal_codes(z, data.subgoals) if labelled else None
    contexts = context_codes(z, data.subgoals) if labelled else {}
    code_action = action_majority = float("nan")
    if data.actions.ndim == 2:  # discrete actions (grid)
        code_action, action_majority = code_decodability(z, data.actions)
    return {
        "switches_per_episode": float(switches.sum()) / len(data),
        "true_boundaries_per_episode": float(truth.sum()) / len(data),
        "alignment_f1": alignment_f1(switches, truth, tolerance),
        "random_alignment_f1": alignment_f1(rand, truth, tolerance),
        "beta_quasi_binary": quasi_binary,
        "code_subgoal_accuracy": code_subgoal,
        "code_subgoal_majority": subgoal_majority,
        "code_action_accuracy": code_action,
        "code_action_majority": action_majority,
        "action_nll": float(action_nll(pred, batch.actions, batch.mask)),
        "kl": float(masked_mean(out.kl, batch.mask)),
        "beta": beta,
        "truth": truth,
        "subgoal_codes": codes,
        **{f"code_cosine_{k}": v for k, v in contexts.items() if k != "pairs"},
    }


# -- training -----------------------------------------------------------------------------------
@dataclass
class DiscoveryResult:
    run_dir: Path
    model: ControlledModel
    metrics: dict[str, float]


def build_model(base: Backbone, cfg: DiscoveryConfig) -> ControlledModel:
    if cfg.cotrain and cfg.cotrain_from_scratch:
        base = Backbone(base.config)
    return ControlledModel(base, Metacontroller(base.config.d_model, cfg.meta), cotrain=cfg.cotrain)


def load_metacontroller(run: str | Path, device: str | torch.device = "cpu") -> ControlledModel:
    """The base model + metacontroller of a discovery run folder or checkpoint."""
    run = Path(run)
    root = run / CHECKPOINTS if (run / CHECKPOINTS).is_dir() else run
    ckpt = root if (root / "state.json").is_file() else latest_checkpoint(root)
    if ckpt is None:
        raise FileNotFoundError(f"{run}: no metacontroller checkpoint found")
    try:
        extra = json.loads((ckpt / "state.json").read_text())["extra"]
        base_cfg = config_from_dict(BackboneConfig, extra["backbone"], where=f"{ckpt}/state.json:backbone")
        meta_cfg = config_from_dict(MetacontrollerConfig, extra["meta"], where=f"{ckpt}/state.json:meta")
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{ckpt}/state.json is not a metacontroller checkpoint: {exc}") from exc
    model = ControlledModel(Backbone(base_cfg), Metacontroller(base_cfg.d_model, meta_cfg))
    load_checkpoint(ckpt, model=model, restore_rng=False)
    return model.to(device).eval()


def train_metacontroller(
    cfg: DiscoveryConfig, data: Any = None, base: Backbone | None = None
) -> DiscoveryResult:
    """Train a metacontroller; ``data`` (Trajectories) and ``base`` override the config's sources."""
    dist_env = init_distributed(device=None if cfg.device == "auto" else cfg.device)
    device = dist_env.device if dist_env.is_distributed else resolve_device(cfg.device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if base is None:
        if cfg.base_run is None:
            raise ValueError("set base_run: the pretraining run whose model the metacontroller steers")
        base, _ = load_backbone(cfg.base_run, device)
    seed_everything(cfg.seed, per_rank=False)  # identical init on every rank
    model = build_model(base, cfg).to(device)
    seed_everything(cfg.seed)  # then per-rank batches and noise
    if data is None:
        data = load_data(dataclasses.replace(cfg.data, epsilon=0.0))
    n_eval = min(cfg.eval_episodes, len(data) // 5)
    train, held_out = data[: len(data) - n_eval], data[len(data) - n_eval :]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, cfg)
    wrapped = wrap_model(model, dist_env, "ddp", find_unused_parameters=cfg.meta.forced_switch)

    start = 0
    if cfg.resume is not None:
        run_dir = Path(cfg.resume)
        if latest_checkpoint(run_dir / CHECKPOINTS) is None:
            raise FileNotFoundError(f"{run_dir}: nothing to resume (no {CHECKPOINTS}/ with a checkpoint)")
        start = load_checkpoint(run_dir / CHECKPOINTS, model=model, optimizer=optimizer).step
    else:
        run_dir = create_run_dir(cfg.run_root, "internal-rl", cfg.exp_name, cfg.seed, config_to_dict(cfg))
        if dist_env.is_distributed:  # every rank must write into rank 0's folder
            names = [str(run_dir)]
            torch.distributed.broadcast_object_list(names, src=0)
            run_dir = Path(names[0])
    extra = {
        "backbone": config_to_dict(model.base.config),
        "meta": config_to_dict(cfg.meta),
        "alpha": cfg.alpha,
        "base_run": str(cfg.base_run),
    }
    metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    model.train()
    with MetricsLogger(run_dir) as log:
        for step in log.progress(
            range(start, cfg.steps), total=cfg.steps, initial=start, desc="metacontroller"
        ):
            idx = torch.randint(len(train), (cfg.batch_size,))
            part = train[idx]
            batch = Batch.from_trajectories(part.observations, part.actions, part.lengths, device)
            losses = discovery_losses(wrapped, batch, part.lengths.to(device), kl_weight(cfg, step))
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                log.log(done, **{f"losses/{k}": float(v.detach()) for k, v in losses.items()})
            if done % cfg.eval_every == 0 or done == cfg.steps:
                stats = switch_statistics(
                    model,
                    held_out,
                    device,
                    cfg.switch_threshold,
                    seed=cfg.seed,
                    tolerance=cfg.switch_tolerance,
                )
                metrics = {f"eval/{k}": v for k, v in stats.items() if isinstance(v, float)}
                log.log(done, **metrics)
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                save_checkpoint(
                    run_dir / CHECKPOINTS,
                    model=model,
                    step=done,
                    optimizer=optimizer,
                    extra=extra,
                    keep_last=cfg.keep_checkpoints,
                )
    result = {**metrics, "steps": cfg.steps, "seconds_this_session": time.perf_counter() - t0}
    if dist_env.is_main:
        (run_dir / "results.json").write_text(json.dumps(result, indent=2))
    del wrapped
    return DiscoveryResult(run_dir=run_dir, model=unwrap_model(model).eval(), metrics=result)
