"""The ant expert: PPO on a privileged observation with a velocity-alignment reward (App. C.1.1).

The expert sees the ant-pinpad observation plus a 4-dim one-hot giving the cardinal direction
of the shortest grid-level path from the ant's cell to the next colour, and is rewarded, on
top of the task's sparse reward, by the dot product of the torso's planar velocity with that
direction. Only the plain observation is stored in datasets (:mod:`internal_rl.ant_data`).

Table A3 trains an SSM (depth 6, width 256) for 256,000 steps at batch 1024 with AdamW
(lr 3e-4, wd 0.03, betas 0.9/0.999, constant LR) and entropy regularisation 3e-4; those are
the defaults here. This trainer uses an MLP actor-critic (``depth`` x ``width``) instead of
the SSM: with the direction hint in the observation the task is Markov at the low level.
It is a GPU-scale job: ``AntExpertConfig.tiny()`` is the CPU smoke preset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from internal_rl.envs import ANT_ID, register_envs
from internal_rl.envs.grid_paths import UNREACHABLE, action_costs, blocked_cells, distance_to, neighbour_table

if TYPE_CHECKING:  # the ant env imports MuJoCo: grid-only commands of the CLI must not need it
    from internal_rl.envs.ant import AntPinpadEnv


@dataclass
class AntExpertConfig:
    """PPO for the ant expert (defaults: paper Table A3 where it gives a value)."""

    exp_name: str = "ant_expert"
    """Run name part: runs/internal-rl/internal-rl__<exp_name>__<seed>__<time>."""
    seed: int = 1
    """Seeds python, NumPy, torch and the envs."""
    task_set: str = "pretrain"
    """Task set the expert is trained on ("pretrain" = Table A2)."""
    num_updates: int = 256_000
    """PPO gradient steps (Table A3's 256,000 train steps)."""
    batch_size: int = 1024
    """Transitions per gradient step (Table A3)."""
    num_envs: int = 64
    """Parallel ant envs collecting rollouts (paper silent)."""
    rollout_steps: int = 128
    """Steps per env per rollout; num_envs * rollout_steps transitions per PPO iteration (paper silent)."""
    update_epochs: int = 4
    """Passes over each rollout (paper silent)."""
    depth: int = 6
    """Hidden layers of the actor and of the critic (Table A3 depth 6)."""
    width: int = 256
    """Hidden width (Table A3 n_e 256)."""
    lr: float = 3e-4
    """AdamW learning rate, constant (Table A3)."""
    weight_decay: float = 0.03
    """AdamW weight decay (Table A3)."""
    ent_coef: float = 3e-4
    """Entropy regularisation (Table A3)."""
    gamma: float = 0.99
    """Discount (paper silent)."""
    gae_lambda: float = 0.95
    """GAE lambda (paper silent)."""
    clip_coef: float = 0.2
    """PPO ratio clipping (paper silent)."""
    vf_coef: float = 0.5
    """Value loss weight (paper silent)."""
    max_grad_norm: float = 0.5
    """Gradient clipping (paper silent)."""
    velocity_reward_coef: float = 0.1
    """Per-step intrinsic reward = coef * <torso velocity (m/s), hint direction> (paper gives no scale)."""
    horizon: int = 500
    """Episode length (App. A.2)."""
    checkpoint_every: int = 1000
    """Save a checkpoint every this many gradient steps."""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """Torch device of the networks (MuJoCo always simulates on CPU)."""
    runs_root: str = "runs"
    """Where run folders go."""

    @classmethod
    def tiny(cls) -> AntExpertConfig:
        return cls(num_updates=4, batch_size=16, num_envs=2, rollout_steps=16, update_epochs=1, depth=2, width=32,
                   horizon=64, checkpoint_every=2, device="cpu")  # fmt: skip


def direction_hint(env: AntPinpadEnv) -> np.ndarray:
    """One-hot (4,) of the first move of a shortest grid-level path from the ant's cell to the next colour."""
    hint = np.zeros(4, dtype=np.float32)
    if env.layout is None or env.progress >= len(env.task):
        return hint
    colour = env.task[env.progress]
    cells = env.grid_size * env.grid_size
    table = neighbour_table(env.grid_size)
    blocked = blocked_cells(env.layout.colour_cells, env.layout.wall_cells, colour, cells)
    dist = distance_to(int(env.layout.colour_cells[colour]), blocked, table)
    costs = action_costs(env.cell, dist, blocked, table)
    if costs.min() < UNREACHABLE:
        hint[int(costs.argmin())] = 1.0
    return hint


class DirectionHintWrapper(gym.Wrapper):
    """Appends :func:`direction_hint` to the observation and adds the velocity-alignment reward."""

    def __init__(self, env: gym.Env, velocity_reward_coef: float = 0.1):
        from internal_rl.envs.ant import DIRECTIONS

        super().__init__(env)
        self._directions = DIRECTIONS
        self.coef = velocity_reward_coef
        low = np.concatenate([env.observation_space.low, np.zeros(4, np.float32)])
        high = np.concatenate([env.observation_space.high, np.ones(4, np.float32)])
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self._hint = np.zeros(4, np.float32)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._hint = direction_hint(self.env.unwrapped)
        info["plain_obs"] = obs
        return np.concatenate([obs, self._hint]), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        intrinsic = self.coef * float(np.dot(info["velocity"], self._hint @ self._directions))
        self._hint = direction_hint(self.env.unwrapped)
        info["plain_obs"] = obs
        info["intrinsic_reward"] = intrinsic
        return np.concatenate([obs, self._hint]), reward + intrinsic, terminated, truncated, info


def _mlp(inp: int, width: int, depth: int, out: int, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(depth):
        layers += [nn.Linear(inp if k == 0 else width, width), nn.Tanh()]
    layers.append(nn.Linear(width if depth else inp, out))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, np.sqrt(2))
            nn.init.zeros_(layer.bias)
    nn.init.orthogonal_(layers[-1].weight, out_gain)
    return nn.Sequential(*layers)


class AntExpertPolicy(nn.Module):
    """Gaussian actor with a state-independent log-std, and a critic."""

    def __init__(self, obs_dim: int, action_dim: int = 8, width: int = 256, depth: int = 6):
        super().__init__()
        self.actor = _mlp(obs_dim, width, depth, action_dim, 0.01)
        self.critic = _mlp(obs_dim, width, depth, 1, 1.0)
        self.log_std = nn.Parameter(torch.full((action_dim,), -0.5))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.actor(obs), self.log_std.exp().expand(obs.shape[0], -1))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        dist = self.distribution(obs)
        return dist.mean if deterministic else dist.sample()


def make_env(task_set: str, horizon: int, coef: float):
    def thunk() -> gym.Env:
        register_envs()
        return DirectionHintWrapper(gym.make(ANT_ID, task_set=task_set, horizon=horizon), coef)

    return thunk


def train_ant_expert(config: AntExpertConfig) -> Path:
    """Train with PPO; returns the run folder (checkpoints under ``checkpoints/``)."""
    from latentforge.checkpoint import save_checkpoint
    from latentforge.runs import MetricsLogger, create_run_dir
    from latentforge.seeding import seed_everything

    seed_everything(config.seed)
    run_dir = create_run_dir(config.runs_root, "internal-rl", config.exp_name, config.seed, config)
    device = torch.device(config.device)
    envs = gym.vector.SyncVectorEnv(
        [
            make_env(config.task_set, config.horizon, config.velocity_reward_coef)
            for _ in range(config.num_envs)
        ],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    obs_dim = envs.single_observation_space.shape[0]
    policy = AntExpertPolicy(obs_dim, 8, config.width, config.depth).to(device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n, t_len = config.num_envs, config.rollout_steps
    obs_np, _ = envs.reset(seed=config.seed)
    obs = torch.as_tensor(obs_np, dtype=torch.float32, device=device)
    update, start = 0, time.time()
    returns_seen: list[float] = []
    successes: list[float] = []
    with MetricsLogger(run_dir) as log:
        bar = log.progress(total=config.num_updates, desc="ant expert")
        while update < config.num_updates:
            b_obs = torch.zeros(t_len, n, obs_dim, device=device)
            b_act = torch.zeros(t_len, n, 8, device=device)
            b_logp = torch.zeros(t_len, n, device=device)
            b_rew = torch.zeros(t_len, n, device=device)
            b_term = torch.zeros(t_len, n, device=device)
            b_val = torch.zeros(t_len, n, device=device)
            ep_return = np.zeros(n)
            for t in range(t_len):
                with torch.no_grad():
                    dist = policy.distribution(obs)
                    action = dist.sample()
                    b_logp[t] = dist.log_prob(action).sum(-1)
                    b_val[t] = policy.value(obs)
                b_obs[t], b_act[t] = obs, action
                next_obs, reward, term, trunc, info = envs.step(action.clamp(-1, 1).cpu().numpy())
                reward = reward.astype(np.float64)
                ep_return += reward
                done = term | trunc
                if trunc.any():
                    # Time-limit cut-offs are not terminal: bootstrap from the final observation.
                    final = torch.as_tensor(
                        np.stack(info["final_obs"][trunc]), dtype=torch.float32, device=device
                    )
                    with torch.no_grad():
                        reward[trunc] += config.gamma * policy.value(final).cpu().numpy()
                for k in np.flatnonzero(done):
                    returns_seen.append(float(ep_return[k]))
                    successes.append(float(info["final_info"]["success"][k]))
                    ep_return[k] = 0.0
                b_rew[t] = torch.as_tensor(reward, device=device)
                b_term[t] = torch.as_tensor(done, dtype=torch.float32, device=device)
                obs = torch.as_tensor(next_obs, dtype=torch.float32, device=device)
            with torch.no_grad():
                next_value = policy.value(obs)
                adv = torch.zeros_like(b_rew)
                last = torch.zeros(n, device=device)
                for t in reversed(range(t_len)):
                    nv = next_value if t == t_len - 1 else b_val[t + 1]
                    nonterminal = 1.0 - b_term[t]
                    delta = b_rew[t] + config.gamma * nv * nonterminal - b_val[t]
                    last = delta + config.gamma * config.gae_lambda * nonterminal * last
                    adv[t] = last
                ret = adv + b_val
            flat = {k: v.reshape(t_len * n, *v.shape[2:]) for k, v in
                    dict(obs=b_obs, act=b_act, logp=b_logp, adv=adv, ret=ret).items()}  # fmt: skip
            total = t_len * n
            for _ in range(config.update_epochs):
                perm = torch.randperm(total, device=device)
                for s in range(0, total, config.batch_size):
                    idx = perm[s : s + config.batch_size]
                    dist = policy.distribution(flat["obs"][idx])
                    logp = dist.log_prob(flat["act"][idx]).sum(-1)
                    ratio = (logp - flat["logp"][idx]).exp()
                    a = flat["adv"][idx]
                    a = (a - a.mean()) / (a.std() + 1e-8)
                    pg_loss = torch.max(
                        -a * ratio, -a * ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef)
                    ).mean()
                    v_loss = 0.5 * (policy.value(flat["obs"][idx]) - flat["ret"][idx]).pow(2).mean()
                    entropy = dist.entropy().sum(-1).mean()
                    loss = pg_loss + config.vf_coef * v_loss - config.ent_coef * entropy
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
                    optimizer.step()
                    update += 1
                    bar.update(1)
                    metrics: dict[str, Any] = {
                        "losses/policy_loss": pg_loss.item(),
                        "losses/value_loss": v_loss.item(),
                        "losses/entropy": entropy.item(),
                        "charts/SPS": update * config.batch_size / max(time.time() - start, 1e-9),
                    }
                    if returns_seen:
                        metrics["charts/episodic_return"] = float(np.mean(returns_seen[-100:]))
                        metrics["charts/success_rate"] = float(np.mean(successes[-100:]))
                    log.log(update, **metrics)
                    if update % config.checkpoint_every == 0 or update == config.num_updates:
                        save_checkpoint(run_dir / "checkpoints", model=policy, step=update, optimizer=optimizer,
                                        extra={"obs_dim": obs_dim, "width": config.width, "depth": config.depth})  # fmt: skip
                    if update >= config.num_updates:
                        break
                if update >= config.num_updates:
                    break
    envs.close()
    return run_dir


def load_ant_expert(path: str | Path, device: str = "cpu") -> AntExpertPolicy:
    """Rebuild a policy from a checkpoint folder (or a run's ``checkpoints/`` root)."""
    import json

    from latentforge.checkpoint import latest_checkpoint, load_checkpoint

    path = Path(path)
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    ckpt = path if (path / "state.json").is_file() else latest_checkpoint(path)
    if ckpt is None:
        raise FileNotFoundError(f"{path}: no ant expert checkpoint (expected state.json or step-* folders)")
    state_file = Path(ckpt) / "state.json"
    try:
        extra = json.loads(state_file.read_text())["extra"]
        policy = AntExpertPolicy(int(extra["obs_dim"]), 8, int(extra["width"]), int(extra["depth"]))
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{state_file}: not an ant expert checkpoint ({exc})") from exc
    load_checkpoint(ckpt, model=policy)
    return policy.to(device).eval()
