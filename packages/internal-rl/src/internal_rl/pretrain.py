"""Stage 1: pretrain the base model on unlabeled expert sequences (paper C.1.2, Tables A4/A5).

Loss per step: -ln p(a_t | o_{1:t}) - λ ln p(o_{t+1} | o_{1:t}), averaged over real steps.
Subgoal labels in the dataset are never read here. A run folder holds ``config.json``,
``metrics.jsonl`` + TensorBoard events, ``checkpoints/`` (resumable, see ``resume``) and
``results.json`` with the held-out metrics; :func:`load_backbone` rebuilds the model from
any of its checkpoints.

    internal-rl pretrain tiny                       # CPU default, about a minute
    internal-rl pretrain paper-grid --device cuda   # Table A4
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from internal_rl.backbone import Backbone, BackboneConfig, BackboneOutput, ant_backbone_config, shift_actions
from internal_rl.envs.tasks import get_grid_spec
from latentforge.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from latentforge.configs import config_from_dict, config_to_dict
from latentforge.runs import MetricsLogger, create_run_dir
from latentforge.seeding import seed_everything

GRID_ENV = "internal_rl/GridPinpad-v0"
ANT_ENV = "internal_rl/AntPinpad-v0"
CHECKPOINTS = "checkpoints"


@dataclass
class DataConfig:
    """Where the expert sequences come from."""

    env_id: str = GRID_ENV
    """Environment whose expert data is used (internal_rl/GridPinpad-v0 or internal_rl/AntPinpad-v0)."""
    data_dir: Path | None = None
    """A dataset folder written by ``internal-rl generate-data``; if unset, data is generated in memory."""
    num_episodes: int = 100_000
    """Episodes to generate when ``data_dir`` is unset (the paper does not state its dataset size)."""
    task_set: str = "pretrain"
    """Named task set to generate from (Table A1 / A2)."""
    expert_ties: str = "random"
    """Grid only: how the shortest-path expert breaks ties between optimal moves: "random" (the paper's
    stochastic expert) or "first" (deterministic given the next colour; see ``BatchedGridExpert``)."""
    variant: str = "paper"
    """Grid only: member of the gridworld family (``internal_rl.envs.tasks.GRID_SPECS``: "paper" 7 x 7,
    8 colours in pairs; "small" 5 x 5, 4 single-colour subgoals)."""
    epsilon: float = 0.0
    """Expert noise when generating (grid: random-move probability; paper default 0)."""
    data_seed: int = 0
    """Seed of the generated layouts and expert noise (independent of the training seed)."""
    eval_fraction: float = 0.05
    """Share of episodes held out (unseen layouts) for the evaluation metrics."""


@dataclass
class PretrainConfig:
    """Pretraining of the base model. Defaults: paper Table A4 (gridworld Transformer)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: BackboneConfig = field(default_factory=BackboneConfig)
    """Architecture; obs_dim / action_dim / discrete_actions are taken from the data."""
    obs_loss_coef: float = 0.01
    """λ, the weight of the next-observation NLL (grid: searched over [0, 0.01]; ant: 10)."""
    steps: int = 256_000
    """Optimiser steps."""
    batch_size: int = 1024
    """Episodes per step."""
    lr: float = 3e-4
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.03
    """AdamW weight decay (matrices only)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    length_buckets: int = 8
    """Draw ``length_buckets`` batches at once, sort their episodes by length and split them, so a
    batch pads to similar lengths (random batches pad ~1.5x at batch 32). 1 = independent batches."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (the paper is silent; 0 disables)."""
    eval_every: int = 2000
    """Steps between held-out evaluations."""
    log_every: int = 100
    """Steps between training-loss log rows."""
    checkpoint_every: int = 16_000
    """Steps between checkpoints (Table A6 probes the 16K/32K/64K/128K/256K ones)."""
    max_minutes: float | None = None
    """Wall-clock cap: stop at the first step past it (checkpointed and evaluated like the last step),
    for fixed-time runs such as a lent GPU; ``steps`` in results.json records how far it got."""
    tf32: bool = True
    """On CUDA, run float32 matmuls as TF32 (the loss needs no more precision; ~2x faster on Hopper)."""
    bf16: bool = True
    """On CUDA, run the forward pass and the losses under bf16 autocast (parameters, gradients and the
    optimiser stay float32). Ignored on the CPU, whose runs stay bit for bit what they were."""
    compile: bool = False
    """On CUDA, train through ``torch.compile(model)`` (checkpoints hold the uncompiled module's weights)."""
    fused_adamw: bool = True
    """On CUDA, AdamW's fused kernel (one launch for all parameters instead of a loop over them)."""
    rollout_episodes: int = 256
    """Grid only: fresh layouts the final model plays itself (``eval/rollout_success``); 0 skips."""
    keep_checkpoints: int | None = None
    """Checkpoints kept on disk (None keeps all, so probes can compare training stages)."""
    seed: int = 0
    """Seed of initialisation and batch sampling."""
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu' or 'cuda[:i]'."""
    num_threads: int = 0
    """CPU threads for torch (0 keeps torch's default; 1 avoids oversubscription on a busy machine)."""
    run_root: Path = Path("runs")
    """Runs are written to <run_root>/internal-rl/<run name>/."""
    exp_name: str = "pretrain"
    """Experiment name inside the run name."""
    resume: Path | None = None
    """A run folder to continue from its latest checkpoint (same config)."""


def paper_grid_config() -> PretrainConfig:
    """Table A4: gridworld Transformer 6 x 256, 256K steps x batch 1024, λ = 0.01; 400K episodes."""
    # The paper does not give its dataset size. On an H200, 100K episodes overfit from ~1.2K steps
    # (held-out accuracy peaks at 0.66, then falls); 400K were still improving at 5K steps (0.75).
    return PretrainConfig(data=DataConfig(num_episodes=400_000))


def paper_ant_config() -> PretrainConfig:
    """Table A5: ant Hawk 8 x 256, 204.8K steps x batch 512, λ = 10."""
    return PretrainConfig(
        data=DataConfig(env_id=ANT_ENV),
        model=ant_backbone_config(),
        obs_loss_coef=10.0,
        steps=204_800,
        batch_size=512,
        checkpoint_every=25_600,
    )


def tiny_config() -> PretrainConfig:
    """A CPU-sized grid run: 4 x 64 Transformer with an MLP observation embedding, 3000 steps on 20K episodes."""
    # Fewer episodes overfit: with 2700 training layouts held-out accuracy peaks at ~0.51 and falls.
    # The MLP embedding gave 0.594 against 0.565 for the linear one at 3000 steps (README).
    return PretrainConfig(
        data=DataConfig(num_episodes=20_000, eval_fraction=0.03),
        model=BackboneConfig(n_layers=4, d_model=64, n_heads=4, mlp_hidden=128, obs_embed_hidden=256),
        steps=3000,
        batch_size=32,
        lr=1e-3,
        eval_every=500,
        log_every=25,
        checkpoint_every=500,
        keep_checkpoints=None,
    )


def small_config() -> PretrainConfig:
    """The CPU reproduction's base model: the small 5 x 5 grid (``variant="small"``) with the deterministic
    tie-breaking expert, a 4 x 64 Transformer with a linear embedding of the observation and of the grid
    re-centred on the agent; 12000 steps x 64 on 50K episodes (README: "the small grid")."""
    # Linear subgoal probes stay at chance until ~4K steps and reach ~0.41 (chance 0.27) at mid-depth by
    # 12K; label-driven controllers steer the 12K model to the post-training task, not the 4K one (README).
    return PretrainConfig(
        data=DataConfig(num_episodes=50_000, eval_fraction=0.02, variant="small", expert_ties="first"),
        model=BackboneConfig(n_layers=4, d_model=64, n_heads=4, mlp_hidden=128, grid_embed="egocentric"),
        steps=12_000,
        batch_size=64,
        lr=1e-3,
        eval_every=2000,
        log_every=50,
        checkpoint_every=4000,
        rollout_episodes=1024,
    )


def tiny_ant_config() -> PretrainConfig:
    """A CPU-sized ant run: 4 x 64 Hawk on 16 controller episodes (point --data.data-dir at more)."""
    # The CPU goal-reaching controller plans with MuJoCo look-ahead: tens of seconds per episode.
    return PretrainConfig(
        data=DataConfig(env_id=ANT_ENV, num_episodes=16, eval_fraction=0.125),
        model=ant_backbone_config(n_layers=4, d_model=64, n_heads=4, mlp_hidden=128, lru_width=64),
        obs_loss_coef=10.0,
        steps=200,
        batch_size=8,
        lr=1e-3,
        eval_every=100,
        log_every=10,
        checkpoint_every=100,
    )


PRESETS = {
    "small": small_config,
    "tiny": tiny_config,
    "tiny-ant": tiny_ant_config,
    "paper-grid": paper_grid_config,
    "paper-ant": paper_ant_config,
}


# -- likelihoods -------------------------------------------------------------------------------
def step_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(E, T) bool, True on real action steps."""
    return torch.arange(steps, device=lengths.device) < lengths[:, None]


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Per-step NLL of a diagonal Gaussian, summed over the last dim."""
    z = (x - mean) * torch.exp(-log_std)
    return (0.5 * z.pow(2) + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)


def action_nll(out: BackboneOutput, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean -ln p(a_t | o_{1:t}) over ``mask``; the metacontroller reuses this on controlled outputs."""
    if out.action_logits is not None:
        per_step = F.cross_entropy(
            out.action_logits.flatten(0, 1), actions.clamp(min=0).flatten(), reduction="none"
        ).view(actions.shape)
    else:
        assert out.action_mean is not None and out.action_log_std is not None
        per_step = gaussian_nll(actions, out.action_mean, out.action_log_std)
    return _masked_mean(per_step, mask)


def observation_nll(
    out: BackboneOutput, next_obs: torch.Tensor, mask: torch.Tensor, likelihood: str
) -> torch.Tensor:
    """Mean -ln p(o_{t+1} | o_{1:t}) over ``mask``, summed over observation dims."""
    assert out.obs_pred is not None
    if likelihood == "bernoulli":
        per_step = F.binary_cross_entropy_with_logits(out.obs_pred, next_obs, reduction="none").sum(-1)
    else:
        assert out.obs_log_std is not None
        per_step = gaussian_nll(next_obs, out.obs_pred, out.obs_log_std)
    return _masked_mean(per_step, mask)


@dataclass
class Batch:
    """Model-ready tensors: ``obs`` (B, T, D) are o_1..o_T, ``next_obs`` o_2..o_{T+1}."""

    obs: torch.Tensor
    next_obs: torch.Tensor
    actions: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def from_trajectories(
        cls, observations: torch.Tensor, actions: torch.Tensor, lengths: torch.Tensor, device: torch.device
    ) -> Batch:
        t = max(int(lengths.max()), 1)
        obs = observations[:, : t + 1].to(device, torch.float32)
        return cls(
            obs=obs[:, :t],
            next_obs=obs[:, 1 : t + 1],
            actions=actions[:, :t].to(device),
            mask=step_mask(lengths.to(device), t),
        )


def model_inputs(model: Backbone, batch: Batch) -> dict[str, Any]:
    """Keyword arguments of ``model(...)`` for ``batch`` (previous actions only if the model uses them)."""
    if model.config.condition_on_prev_action:
        return {"prev_actions": shift_actions(batch.actions, model.config.discrete_actions)}
    return {}


def sequence_losses(model: Backbone, batch: Batch, obs_loss_coef: float) -> dict[str, torch.Tensor]:
    """``total`` = action NLL + λ · next-observation NLL, plus both terms and the action accuracy."""
    out = model(batch.obs, **model_inputs(model, batch))
    a_nll = action_nll(out, batch.actions, batch.mask)
    o_nll = observation_nll(out, batch.next_obs, batch.mask, model.config.obs_likelihood)
    losses = {"total": a_nll + obs_loss_coef * o_nll, "action_nll": a_nll, "obs_nll": o_nll}
    if out.action_logits is not None:
        correct = (out.action_logits.argmax(-1) == batch.actions).float()
        losses["action_accuracy"] = _masked_mean(correct, batch.mask)
    else:
        assert out.action_mean is not None
        losses["action_mse"] = _masked_mean((out.action_mean - batch.actions).pow(2).mean(-1), batch.mask)
    return losses


def batch_indices(lengths: torch.Tensor, step: int, batch_size: int, buckets: int, seed: int) -> torch.Tensor:
    """Training episodes of optimiser step ``step``: uniform draws, grouped by length within a bucket.

    Steps ``k*buckets .. (k+1)*buckets - 1`` share one draw of ``buckets * batch_size`` episodes
    (from a generator seeded by ``seed`` and ``k``, so a resumed run draws the same batches),
    sorted by length and cut into consecutive batches, served in a shuffled order.
    """
    group, within = divmod(step, max(1, buckets))
    gen = torch.Generator().manual_seed(seed * 1_000_003 + group)
    n = max(1, buckets)
    idx = torch.randint(len(lengths), (n * batch_size,), generator=gen)
    idx = idx[lengths[idx].argsort(stable=True)]
    order = torch.randperm(n, generator=gen)
    return idx.view(n, batch_size)[order[within]]


# -- data ----------------------------------------------------------------------------------------
def load_data(cfg: DataConfig) -> Any:
    """The dataset folder, or freshly generated expert episodes (``internal_rl.data.Trajectories``)."""
    from internal_rl.data import Trajectories, generate_trajectories

    if cfg.data_dir is not None:
        data = Trajectories.load(cfg.data_dir)
        if data.env_id != cfg.env_id:
            raise ValueError(f"{cfg.data_dir} holds {data.env_id} data but data.env_id is {cfg.env_id}")
        return data
    return generate_trajectories(
        cfg.env_id,
        cfg.task_set,
        num_episodes=cfg.num_episodes,
        seed=cfg.data_seed,
        epsilon=cfg.epsilon,
        num_envs=min(cfg.num_episodes, 1024),
        env_kwargs={"variant": cfg.variant} if cfg.env_id == GRID_ENV else None,
        **({"ties": cfg.expert_ties} if cfg.env_id == GRID_ENV else {}),
    )


def split_data(data: Any, eval_fraction: float) -> tuple[Any, Any]:
    """(train, held-out): the last ``eval_fraction`` of episodes (unseen layouts) are held out."""
    n = len(data)
    n_eval = min(max(1, round(n * eval_fraction)), n - 1) if eval_fraction > 0 else 0
    if n - n_eval < 1:
        raise ValueError(f"need at least 2 episodes to hold some out, got {n}")
    return data[: n - n_eval], (data[n - n_eval :] if n_eval else None)


def model_config_for(data: Any, model: BackboneConfig) -> BackboneConfig:
    """``model`` with the input/output sizes of ``data`` (and the grid side, read off its layouts)."""
    if model.grid_embed == "egocentric" and model.grid_size == 0 and "colour_cells" in data.layouts:
        channels = data.layouts["colour_cells"].shape[1] + data.layouts["wall_cells"].shape[1] + 1
        grid_size = math.isqrt(data.observations.shape[-1] // channels)
        model = dataclasses.replace(model, obs_dim=data.observations.shape[-1], grid_size=grid_size)
    if data.is_discrete:
        n_actions = int(data.actions.max()) + 1
        action_dim = max(model.action_dim, n_actions) if model.discrete_actions else n_actions
        return dataclasses.replace(
            model, obs_dim=data.observations.shape[-1], action_dim=action_dim, discrete_actions=True
        )
    return dataclasses.replace(
        model, obs_dim=data.observations.shape[-1], action_dim=data.actions.shape[-1], discrete_actions=False
    )


@torch.no_grad()
def evaluate(
    model: Backbone, data: Any, obs_loss_coef: float, device: torch.device, batch_size: int = 256
) -> dict:
    """Step-weighted held-out metrics over every episode of ``data``."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    steps = 0
    for start in range(0, len(data), batch_size):
        part = data[start : start + batch_size]
        batch = Batch.from_trajectories(part.observations, part.actions, part.lengths, device)
        n = int(batch.mask.sum())
        for key, value in sequence_losses(model, batch, obs_loss_coef).items():
            sums[key] = sums.get(key, 0.0) + float(value) * n
        steps += n
    model.train(was_training)
    return {key: value / max(steps, 1) for key, value in sums.items()}


@torch.no_grad()
def grid_rollout_success(
    model: Backbone,
    num_episodes: int = 256,
    *,
    task_set: str = "pretrain",
    variant: str = "paper",
    seed: int = 12345,
    greedy: bool = True,
    device: torch.device | str = "cpu",
    env: Any = None,
) -> dict[str, float]:
    """Let the base model act in fresh grid layouts (cached ``Backbone.step``), as the paper's agent would.

    Returns the task success rate, the mean number of colours entered in the task's order, and the
    share of episodes ended by a wrong colour. This is the direct check that the model steers to the
    right colours, which held-out action accuracy (bounded by the expert's random tie-breaking) only
    measures indirectly; compare with :func:`imitator_reference`. ``env`` (a ``BatchedGridPinpad``
    with ``num_episodes`` envs) replaces the freshly drawn one.
    """
    from internal_rl.envs.grid_batched import BatchedGridPinpad

    was_training = model.training
    model.eval()
    device = torch.device(device)
    if env is None:
        env = BatchedGridPinpad(num_episodes, task_set, variant=variant, device=device, seed=seed)
        env.reset()
    obs = env.observe()
    state = model.init_state(num_episodes, device)
    gen = torch.Generator(device=device).manual_seed(seed)
    alive = torch.ones(num_episodes, dtype=torch.bool, device=device)
    success = torch.zeros_like(alive)
    wrong = torch.zeros_like(alive)
    colours = torch.zeros(num_episodes, device=device)
    prev = torch.full((num_episodes,), -1, dtype=torch.long, device=device)
    with torch.no_grad():
        while alive.any():
            kwargs = {"prev_action": prev} if model.config.condition_on_prev_action else {}
            out, state = model.step(obs.float(), state, **kwargs)
            logits = out.action_logits[:, 0]
            action = (
                logits.argmax(-1) if greedy else torch.multinomial(logits.softmax(-1), 1, generator=gen)[:, 0]
            )
            obs, _, terminated, truncated, info = env.step(action)
            prev = action
            cause = info["termination_cause"]
            colours = torch.where(alive, info["colours_visited"].float(), colours)
            success |= alive & (cause == 1)
            wrong |= alive & (cause == 2)
            alive &= ~(terminated | truncated)
    model.train(was_training)
    return {
        "rollout_success": float(success.float().mean()),
        "rollout_colours": float(colours.mean()),
        "rollout_wrong_colour": float(wrong.float().mean()),
    }


def imitator_reference(tasks: tuple[tuple[int, ...], ...]) -> dict[str, float]:
    """What a *perfect* imitator of the pretraining data scores in :func:`grid_rollout_success`.

    The task is not in the observation: a model that reproduces the data exactly walks the colour
    sequence of a task drawn like the data's (uniform over ``tasks``), independently of the episode's
    own task. It succeeds when the two agree (probability sum_k p_k^2 = 1 / #tasks for distinct tasks)
    and enters on average sum_j P(first j colours agree) colours in order. An expert, which knows
    the task, scores 1 and ``len(task)``.
    """
    p = 1.0 / len(tasks)
    longest = max(len(t) for t in tasks)
    colours = 0.0
    for j in range(1, longest + 1):
        prefixes: dict[tuple[int, ...], float] = {}
        for task in tasks:
            if len(task) >= j:
                prefixes[task[:j]] = prefixes.get(task[:j], 0.0) + p
        colours += sum(q * q for q in prefixes.values())
    full: dict[tuple[int, ...], float] = {}
    for task in tasks:
        full[task] = full.get(task, 0.0) + p
    return {"imitator_success": sum(q * q for q in full.values()), "imitator_colours": colours}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, cfg: Any, *, fused: bool = False) -> torch.optim.AdamW:
    """AdamW over the trainable parameters with weight decay on matrices only (nanoGPT's split);
    ``cfg`` is any config with ``lr``, ``betas`` and ``weight_decay`` (pretraining, discovery, CompILE);
    ``fused`` selects the fused CUDA kernel (parameters on a GPU only)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **({"fused": True} if fused else {}))


# -- checkpoints ---------------------------------------------------------------------------------
def load_backbone(path: str | Path, device: str | torch.device = "cpu") -> tuple[Backbone, dict]:
    """The base model of a pretraining run folder or one of its checkpoints, and its checkpoint extras."""
    path = Path(path)
    root = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    ckpt = root if (root / "state.json").is_file() else latest_checkpoint(root)
    if ckpt is None:
        raise FileNotFoundError(f"{path}: no pretraining checkpoint found (looked in {root})")
    try:
        extra = json.loads((ckpt / "state.json").read_text())["extra"]
        model_cfg = config_from_dict(BackboneConfig, extra["backbone"], where=f"{ckpt}/state.json:backbone")
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{ckpt}/state.json is not a pretraining checkpoint (no backbone config): {exc}"
        ) from exc
    model = Backbone(model_cfg)
    state = load_checkpoint(ckpt, model=model, restore_rng=False)
    return model.to(device).eval(), {**state.extra, "step": state.step, "path": str(state.path)}


@dataclass
class PretrainResult:
    run_dir: Path
    model: Backbone
    metrics: dict[str, float]
    """Held-out metrics at the end (``eval/...``), plus the step count and throughput."""


def pretrain(cfg: PretrainConfig, data: Any = None) -> PretrainResult:
    """Train a base model; ``data`` (Trajectories) overrides ``cfg.data`` when given."""
    device = resolve_device(cfg.device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    if data is None:
        data = load_data(cfg.data)
    train, held_out = split_data(data, cfg.data.eval_fraction)
    train_lengths = train.lengths  # batch_indices draws on the CPU, whatever the data's device
    if device.type == "cuda":
        # one copy to the GPU (uint8 one-hots: ~19 GB at paper-grid's 400K episodes) instead of a
        # ~50 MB gather and host-to-device copy per step
        train = train.to(device)
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    model_cfg = model_config_for(data, cfg.model)
    model = Backbone(model_cfg).to(device)
    cuda = device.type == "cuda"
    optimizer = make_optimizer(model, cfg, fused=cuda and cfg.fused_adamw)
    # the compiled module only runs the steps; checkpoints, evaluation and rollouts use ``model``
    train_model = torch.compile(model) if cuda and cfg.compile else model

    start = 0
    if cfg.resume is not None:
        run_dir = Path(cfg.resume)
        if latest_checkpoint(run_dir / CHECKPOINTS) is None:
            raise FileNotFoundError(f"{run_dir}: nothing to resume (no {CHECKPOINTS}/ with a checkpoint)")
        start = load_checkpoint(run_dir / CHECKPOINTS, model=model, optimizer=optimizer).step
    else:
        run_dir = create_run_dir(cfg.run_root, "internal-rl", cfg.exp_name, cfg.seed, config_to_dict(cfg))
    extra = {"backbone": config_to_dict(model_cfg), "env_id": data.env_id, "obs_loss_coef": cfg.obs_loss_coef}

    def checkpoint(step: int) -> None:
        save_checkpoint(
            run_dir / CHECKPOINTS,
            model=model,
            step=step,
            optimizer=optimizer,
            extra=extra,
            keep_last=cfg.keep_checkpoints,
        )

    metrics: dict[str, float] = {}
    tokens = 0
    t0 = time.perf_counter()
    deadline = None if cfg.max_minutes is None else t0 + 60.0 * cfg.max_minutes
    done = start
    model.train()
    with MetricsLogger(run_dir) as log:
        if start == 0:
            log.log_text("config", "```\n" + json.dumps(config_to_dict(cfg), indent=2, default=str) + "\n```")
        for step in log.progress(range(start, cfg.steps), total=cfg.steps, initial=start, desc="pretrain"):
            idx = batch_indices(train_lengths, step, cfg.batch_size, cfg.length_buckets, cfg.seed)
            part = train[idx]
            batch = Batch.from_trajectories(part.observations, part.actions, part.lengths, device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and cfg.bf16):
                losses = sequence_losses(train_model, batch, cfg.obs_loss_coef)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            tokens += int(batch.mask.sum())
            done = step + 1
            last = done == cfg.steps or (deadline is not None and time.perf_counter() > deadline)
            if done % cfg.log_every == 0 or last:
                elapsed = time.perf_counter() - t0
                log.log(
                    done,
                    **{f"losses/{k}": float(v.detach()) for k, v in losses.items()},
                    **{"charts/tokens_per_s": tokens / max(elapsed, 1e-9)},
                )
            if held_out is not None and (done % cfg.eval_every == 0 or last):
                metrics = {
                    f"eval/{k}": v for k, v in evaluate(model, held_out, cfg.obs_loss_coef, device).items()
                }
                log.log(done, **metrics)
            if done % cfg.checkpoint_every == 0 or last:
                checkpoint(done)
            if last:
                break
    elapsed = time.perf_counter() - t0
    # (synthetic test data may use the grid id with another observation size: nothing to play then)
    if (
        data.env_id == GRID_ENV
        and cfg.rollout_episodes > 0
        and model_cfg.obs_dim == get_grid_spec(cfg.data.variant).obs_dim
    ):
        from internal_rl.envs.tasks import get_task_set, grid_task_sets

        play = dict(task_set=cfg.data.task_set, variant=cfg.data.variant, seed=cfg.data.data_seed + 12345)
        rollout = grid_rollout_success(model, cfg.rollout_episodes, device=device, **play)
        sampled = grid_rollout_success(model, cfg.rollout_episodes, device=device, greedy=False, **play)
        tasks = get_task_set(grid_task_sets(cfg.data.variant), cfg.data.task_set)
        metrics.update({f"eval/{k}": v for k, v in rollout.items()})
        metrics.update({f"eval/{k}_sampled": v for k, v in sampled.items()})
        metrics.update({f"eval/{k}": v for k, v in imitator_reference(tasks).items()})
    result = {
        **metrics,
        "steps": done,
        "train_episodes": len(train),
        "held_out_episodes": 0 if held_out is None else len(held_out),
        "tokens_per_s_this_session": tokens / max(elapsed, 1e-9),
    }
    (run_dir / "results.json").write_text(json.dumps(result, indent=2))
    return PretrainResult(run_dir=run_dir, model=model.eval(), metrics=result)
