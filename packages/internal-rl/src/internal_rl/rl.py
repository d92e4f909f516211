"""Stage 4: internal RL (paper Algorithm 3, Eq. 10, Tables A13/A14).

The policy pi(z_t | e_{1:t}) is a 1-layer SSM over the residual observations of the internal
environment, acting only when the switching unit fires. The update is critic-free PPO-clip with
the trajectory-level advantage A = (R - mean R) / (std R + delta) over the batch (GRPO without
groups). The mean head starts at zero and the std at ``init_std`` (default 1), so the initial policy is
the metacontroller's prior N(0, I).

    internal-rl rl tiny --metacontroller-run runs/internal-rl/<discovery run>
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from internal_rl.backbone import RMSNorm
from internal_rl.envs.tasks import Task
from internal_rl.internal_env import BatchedInternalEnv
from latentforge.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from latentforge.configs import config_to_dict
from latentforge.runs import MetricsLogger, create_run_dir
from latentforge.seeding import seed_everything

CHECKPOINTS = "checkpoints"


def parse_tasks(spec: str | None) -> tuple[Task, ...] | None:
    """``"0-1 2-3"`` -> ``((0, 1), (2, 3))``; None or "" keeps the named task set."""
    if not spec:
        return None
    return tuple(tuple(int(c) for c in task.split("-")) for task in spec.split())


@dataclass
class PPOConfig:
    """Critic-free PPO-clip with the batch-normalised trajectory advantage (Eq. 10)."""

    lr: float = 3e-5
    """AdamW learning rate (Tables A13/A14; the paper scans 3e-6 .. 3e-4)."""
    weight_decay: float = 0.0
    clip: float = 0.2
    """PPO clip epsilon (not stated by the paper)."""
    update_epochs: int = 2
    """Passes over each batch (not stated by the paper)."""
    advantage_delta: float = 1e-3
    """delta in A = (R - mean) / (std + delta)."""
    grad_clip: float = 1.0


@dataclass
class RLConfig:
    """Internal RL on the post-training task. Defaults: paper Table A13 (grid)."""

    metacontroller_run: Path | None = None
    """Discovery run folder whose base model, decoder and switching unit form the environment."""
    compile_run: Path | None = None
    """Instead: a CompILE run folder (``internal-rl compile``); its decoder acts, switching every k steps."""
    label_run: Path | None = None
    """Instead: a label-driven controllers run (``internal-rl supervised``), the positive control: a code per
    true subgoal, switching at the true subgoal changes (``supervised.SubgoalCodes``; grid only)."""
    task_set: str = "posttrain"
    tasks: str = ""
    """Explicit tasks instead of ``task_set`` (e.g. "0-1" for an easy one)."""
    variant: str = "paper"
    """Grid only: member of the gridworld family the base model was pretrained on ("paper", "small")."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    policy_width: int = 256
    """Embedding of the 1-layer SSM policy."""
    init_std: float = 1.0
    """Standard deviation of the initial policy N(0, init_std^2 I); 1 is the metacontroller's prior. The paper
    does not state it."""
    steps: int = 100_000
    """Rollout + update iterations (Table A13 "train steps")."""
    batch_size: int = 1024
    """Episodes per iteration."""
    threshold: float = 0.5
    """beta_threshold of the Heaviside switch (not stated for RL; Fig. 7 counts with 0.5)."""
    switch_on_subgoal: bool = False
    """Grid only: also switch at every true subgoal boundary (for the label-driven positive control,
    which has no switching unit; the paper's internal RL switches by beta alone)."""
    horizon: int = 100
    log_every: int = 1
    checkpoint_every: int = 1000
    keep_checkpoints: int | None = 2
    seed: int = 0
    device: str = "auto"
    """Where a loaded metacontroller runs ('auto' = CUDA if available); the policy stays on the CPU."""
    num_threads: int = 0
    run_root: Path = Path("runs")
    exp_name: str = "internal-rl"
    resume: Path | None = None


def paper_grid_config() -> RLConfig:
    """Table A13: 1-layer SSM (256), 100K steps x batch 1024, AdamW 3e-5, wd 0, entropy 0."""
    return RLConfig()


def paper_ant_config() -> RLConfig:
    """Table A14: 51,200 steps x batch 256, AdamW 3e-5."""
    return RLConfig(steps=51_200, batch_size=256, horizon=500)


def tiny_config() -> RLConfig:
    """CPU-sized: 40 iterations x 64 episodes; lr 3e-4 (the top of the paper's scan: few updates)."""
    return RLConfig(
        ppo=PPOConfig(lr=3e-4),
        policy_width=64,
        steps=40,
        batch_size=64,
        checkpoint_every=10,
    )


def small_config() -> RLConfig:
    """The CPU reproduction on the small grid's post-training task 0-1-2-3 (horizon 40): 150 iterations x
    128 episodes (19,200 episodes per run: the label-driven control takes off after 5,000-15,000; a run
    takes 10-90 s here; README, "Fifth search")."""
    return RLConfig(
        variant="small",
        horizon=40,
        ppo=PPOConfig(lr=1e-3),
        policy_width=64,
        steps=150,
        batch_size=128,
        checkpoint_every=50,
    )


PRESETS = {
    "small": small_config,
    "tiny": tiny_config,
    "paper-grid": paper_grid_config,
    "paper-ant": paper_ant_config,
}


class SSMPolicy(nn.Module):
    """pi(z | e_{1:t}): one diagonal linear-recurrence layer + MLP, Gaussian head over z."""

    def __init__(self, obs_dim: int, n_z: int, width: int = 256, init_std: float = 1.0):
        super().__init__()
        self.width = width
        self.inp = nn.Linear(obs_dim, width)
        self.decay_logit = nn.Parameter(torch.linspace(-2.0, 4.0, width))
        self.norm = RMSNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, width))
        self.mean = nn.Linear(width, n_z)
        nn.init.zeros_(self.mean.weight)
        nn.init.zeros_(self.mean.bias)
        if init_std <= 0:
            raise ValueError(f"init_std must be positive, got {init_std}")
        self.log_std = nn.Parameter(torch.full((n_z,), math.log(init_std)))

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch, self.width, device=device)

    def step(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean of z, new state) for one abstract step."""
        a = torch.sigmoid(self.decay_logit)
        state = a * state + (1 - a) * self.inp(obs)
        y = state + self.mlp(self.norm(state))
        return self.mean(y), state

    def log_prob(self, mean: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Normal(mean, self.log_std.exp()).log_prob(z).sum(-1)


@dataclass
class Rollout:
    """A batch of episodes at the abstract timescale: decision k of episode b."""

    obs: torch.Tensor  # (B, K, n_e)
    actions: torch.Tensor  # (B, K, n_z)
    log_probs: torch.Tensor  # (B, K)
    mask: torch.Tensor  # (B, K) real decisions
    returns: torch.Tensor  # (B,)
    primitive_steps: torch.Tensor  # (B,) episode lengths
    decisions: torch.Tensor  # (B,)
    extras: dict[str, Any] = field(default_factory=dict)


def _pad_stack(rows: list[list[torch.Tensor]], shape: tuple[int, ...]) -> torch.Tensor:
    k = max(1, max(len(r) for r in rows))
    out = torch.zeros(len(rows), k, *shape)
    for b, r in enumerate(rows):
        if r:
            out[b, : len(r)] = torch.stack(r)
    return out


@torch.no_grad()
def collect(env: Any, policy: SSMPolicy, generator: torch.Generator) -> Rollout:
    """Run every env of ``env`` to the end of its episode with ``policy``."""
    n = env.num_envs
    # The policy and the stored batch live on the CPU; only the environment's model may be on a GPU.
    e = env.reset().cpu()
    state = policy.init_state(n)
    obs_rows: list[list[torch.Tensor]] = [[] for _ in range(n)]
    act_rows: list[list[torch.Tensor]] = [[] for _ in range(n)]
    lp_rows: list[list[torch.Tensor]] = [[] for _ in range(n)]
    returns = torch.zeros(n)
    while not bool(env.done.all()):
        need = (env.needs_action & ~env.done).nonzero().squeeze(1)
        z = torch.zeros(n, env.n_z)
        if len(need):
            mean, new_state = policy.step(e[need], state[need])
            state[need] = new_state
            std = policy.log_std.exp()
            sample = mean + std * torch.randn(mean.shape, generator=generator)
            lp = policy.log_prob(mean, sample)
            z[need] = sample
            for j, b in enumerate(need.tolist()):
                obs_rows[b].append(e[b].clone())
                act_rows[b].append(sample[j])
                lp_rows[b].append(lp[j])
        e, reward, _, _ = env.step(z)
        e = e.cpu()
        returns += reward.cpu()
    lengths = [len(r) for r in obs_rows]
    mask = torch.arange(max(1, max(lengths)))[None] < torch.tensor(lengths)[:, None]
    return Rollout(
        obs=_pad_stack(obs_rows, (env.d_model,)),
        actions=_pad_stack(act_rows, (env.n_z,)),
        log_probs=_pad_stack([[x.reshape(()) for x in r] for r in lp_rows], ()),
        mask=mask,
        returns=returns,
        primitive_steps=env.lengths.cpu(),
        decisions=torch.tensor(lengths),
        extras={"success": env.success.cpu(), "betas": env.betas.cpu(), "subgoals": env.subgoals.cpu()},
    )


def trajectory_advantages(returns: torch.Tensor, delta: float = 1e-3) -> torch.Tensor:
    """Eq. 10: (R - mean R) / (std R + delta) over the batch."""
    return (returns - returns.mean()) / (returns.std(unbiased=False) + delta)


def ppo_loss(
    new_lp: torch.Tensor, old_lp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, clip: float
) -> torch.Tensor:
    """Clipped surrogate, one advantage per trajectory broadcast over its decisions."""
    ratio = (new_lp - old_lp).exp()
    a = adv[:, None]
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a)
    return -(surrogate * mask).sum() / mask.sum().clamp(min=1)


def policy_log_probs(policy: SSMPolicy, rollout: Rollout) -> torch.Tensor:
    state = policy.init_state(rollout.obs.shape[0])
    out = []
    for k in range(rollout.obs.shape[1]):
        mean, new_state = policy.step(rollout.obs[:, k], state)
        state = torch.where(rollout.mask[:, k, None], new_state, state)
        out.append(policy.log_prob(mean, rollout.actions[:, k]))
    return torch.stack(out, 1)


def ppo_update(
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    cfg: PPOConfig,
    log_probs_fn: Callable[[nn.Module, Rollout], torch.Tensor],
) -> dict[str, float]:
    """``update_epochs`` full-batch PPO-clip steps; ``log_probs_fn`` recomputes log pi of the stored actions."""
    adv = trajectory_advantages(rollout.returns, cfg.advantage_delta)
    stats: dict[str, float] = {}
    if float(rollout.returns.std()) == 0.0:
        return {"loss": 0.0, "skipped": 1.0}  # every advantage is zero: nothing to learn from
    params = [p for p in policy.parameters() if p.requires_grad]
    for _ in range(cfg.update_epochs):
        new_lp = log_probs_fn(policy, rollout)
        loss = ppo_loss(new_lp, rollout.log_probs, adv, rollout.mask, cfg.clip)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        with torch.no_grad():
            ratio = (new_lp - rollout.log_probs).exp()
            clipped = ((ratio - 1).abs() > cfg.clip) & rollout.mask
        stats = {
            "loss": float(loss.detach()),
            "clip_fraction": float(clipped.sum()) / max(int(rollout.mask.sum()), 1),
        }
    return stats


# -- training loop (shared by internal RL and the baselines) ---------------------------------------
@dataclass
class RLResult:
    run_dir: Path
    success: list[float]
    """On-policy success rate of every iteration's batch."""
    episodes: list[int]
    """Cumulative episodes after each iteration."""
    metrics: dict[str, float]


def run_rl_loop(
    cfg: RLConfig,
    policy: nn.Module,
    collect_fn: Callable[[int, torch.Generator], Rollout],
    log_probs_fn: Callable[[nn.Module, Rollout], torch.Tensor],
    *,
    extra: dict[str, Any] | None = None,
) -> RLResult:
    """Iterate rollout + PPO update with checkpoints; ``collect_fn(iteration, generator)`` rolls out.

    Each iteration's environment seed and sampling generator derive from (seed, iteration), so a
    resumed run continues with exactly the episodes an uninterrupted one would have seen.
    """
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.ppo.lr, weight_decay=cfg.ppo.weight_decay)
    start = 0
    history: dict[str, list] = {"success": [], "episodes": [], "decisions": [], "primitive_steps": []}
    if cfg.resume is not None:
        run_dir = Path(cfg.resume)
        if latest_checkpoint(run_dir / CHECKPOINTS) is None:
            raise FileNotFoundError(f"{run_dir}: nothing to resume (no {CHECKPOINTS}/ with a checkpoint)")
        state = load_checkpoint(run_dir / CHECKPOINTS, model=policy, optimizer=optimizer)
        start = state.step
        history = {k: list(v) for k, v in state.extra["history"].items()}
    else:
        run_dir = create_run_dir(cfg.run_root, "internal-rl", cfg.exp_name, cfg.seed, config_to_dict(cfg))
    t0 = time.perf_counter()
    with MetricsLogger(run_dir) as log:
        for it in log.progress(range(start, cfg.steps), total=cfg.steps, initial=start, desc=cfg.exp_name):
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + it)
            rollout = collect_fn(it, generator)
            stats = ppo_update(policy, optimizer, rollout, cfg.ppo, log_probs_fn)
            success = float(rollout.returns.mean())
            history["success"].append(success)
            history["episodes"].append((it + 1) * cfg.batch_size)
            history["decisions"].append(float(rollout.decisions.float().mean()))
            history["primitive_steps"].append(float(rollout.primitive_steps.float().mean()))
            done = it + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                log.log(
                    done,
                    **{"charts/success": success, "charts/episodes": done * cfg.batch_size},
                    **{"charts/decisions_per_episode": history["decisions"][-1]},
                    **{"charts/primitive_steps_per_episode": history["primitive_steps"][-1]},
                    **{f"losses/{k}": v for k, v in stats.items()},
                )
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                save_checkpoint(
                    run_dir / CHECKPOINTS,
                    model=policy,
                    step=done,
                    optimizer=optimizer,
                    extra={**(extra or {}), "history": history},
                    keep_last=cfg.keep_checkpoints,
                )
    s = history["success"]
    k = max(1, len(s) // 4)
    metrics = {
        "initial_success": sum(s[:k]) / k,
        "final_success": sum(s[-k:]) / k,
        "episodes": history["episodes"][-1] if history["episodes"] else 0,
        "seconds_this_session": time.perf_counter() - t0,
    }
    (run_dir / "results.json").write_text(json.dumps({**metrics, "history": history}, indent=2))
    return RLResult(run_dir=run_dir, success=s, episodes=history["episodes"], metrics=metrics)


def _ant_env(*args: Any, **kwargs: Any) -> Any:
    from internal_rl.internal_ant_env import BatchedInternalAntEnv  # MuJoCo only when an ant is trained

    return BatchedInternalAntEnv(*args, **kwargs)


def train_internal_rl(cfg: RLConfig, model: Any = None) -> RLResult:
    """Internal RL on the codes of a trained metacontroller (``model`` overrides ``cfg.metacontroller_run``)."""
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if model is None:
        from internal_rl.pretrain import resolve_device

        sources = (cfg.metacontroller_run, cfg.compile_run, cfg.label_run)
        if sum(run is not None for run in sources) != 1:
            raise ValueError(
                "set one of metacontroller_run, compile_run or label_run: the run whose decoder acts"
            )
        if cfg.label_run is not None:
            from internal_rl.supervised import load_label_codes

            model = load_label_codes(cfg.label_run, resolve_device(cfg.device))
            cfg = dataclasses.replace(cfg, switch_on_subgoal=True)  # the codes have no switching unit
        elif cfg.compile_run is not None:
            from internal_rl.compile_rl import load_compile_controlled

            model = load_compile_controlled(cfg.compile_run, resolve_device(cfg.device))
        else:
            from internal_rl.discovery import load_metacontroller

            model = load_metacontroller(cfg.metacontroller_run, resolve_device(cfg.device))
    model.eval().requires_grad_(False)
    seed_everything(cfg.seed)
    policy = SSMPolicy(model.base.config.d_model, model.meta.config.n_z, cfg.policy_width, cfg.init_std)
    # the base model's action head says which world it was pretrained on: softmax -> grid, Gaussian -> ant
    make_env = BatchedInternalEnv if model.base.config.discrete_actions else _ant_env
    env = make_env(
        model, cfg.batch_size, cfg.task_set, tasks=parse_tasks(cfg.tasks), threshold=cfg.threshold,
        horizon=cfg.horizon, **({"variant": cfg.variant, "switch_on_subgoal": cfg.switch_on_subgoal}
           if model.base.config.discrete_actions else {}),
    )  # fmt: skip

    def collect_fn(iteration: int, generator: torch.Generator) -> Rollout:
        env.seed(cfg.seed * 1_000_003 + iteration)
        return collect(env, policy, generator)

    return run_rl_loop(
        cfg,
        policy,
        collect_fn,
        policy_log_probs,
        extra={
            "metacontroller_run": str(cfg.metacontroller_run),
            "compile_run": str(cfg.compile_run),
            "label_run": str(cfg.label_run),
        },
    )
