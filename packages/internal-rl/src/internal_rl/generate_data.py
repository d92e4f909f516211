"""The ``internal-rl generate-data`` command: expert datasets written as shards under a run folder."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from internal_rl.data import Trajectories, generate_trajectories
from internal_rl.envs import ANT_ID, GRID_ID


@dataclass
class GenerateDataConfig:
    """Expert data generation (the paper does not state the dataset size: choose ``num_episodes``)."""

    env: Literal["grid", "ant"] = "grid"
    """Gridworld-pinpad (DP expert) or ant-pinpad (PPO expert checkpoint, or the gait-MPC controller)."""
    task_set: str = "pretrain"
    """Named task set: "pretrain" (Tables A1/A2) or "posttrain"."""
    num_episodes: int = 4096
    """Episodes to generate."""
    seed: int = 0
    """Seeds layouts, tasks and expert noise."""
    epsilon: float = 0.0
    """Grid: per-step random-move probability (paper default 0, Fig. A2 sweeps up to 0.2). Ant: 0 = mean action
    of the PPO expert (clean D*), > 0 = sampled actions / controller torque noise std."""
    num_envs: int = 1024
    """Grid envs stepped together in the batched torch env."""
    chunk: int = 4096
    """Episodes generated per progress-bar tick (ant: use small chunks, it runs one MuJoCo env)."""
    shard_size: int = 4096
    """Episodes per safetensors shard."""
    expert: str | None = None
    """Ant only: PPO expert run or checkpoint folder; unset = the cheap gait-MPC controller."""
    device: str = "cpu"
    """Torch device of the batched grid env."""
    out: str | None = None
    """Dataset folder; default <run folder>/data."""
    exp_name: str = "data"
    """Run name part: runs/internal-rl/internal-rl__<exp_name>__<seed>__<time>."""
    runs_root: str = "runs"
    """Where run folders go."""


def generate_data(config: GenerateDataConfig) -> Path:
    """Generate, log success rate and lengths, save; returns the dataset folder."""
    from latentforge.runs import MetricsLogger, create_run_dir
    from latentforge.seeding import seed_everything

    if config.num_episodes < 1 or config.chunk < 1:
        raise ValueError("num_episodes and chunk must be >= 1")
    seed_everything(config.seed)
    env_id = GRID_ID if config.env == "grid" else ANT_ID
    run_dir = create_run_dir(config.runs_root, "internal-rl", config.exp_name, config.seed, config)
    out = Path(config.out) if config.out else run_dir / "data"
    parts: list[Trajectories] = []
    done, start = 0, time.time()
    with MetricsLogger(run_dir) as log:
        bar = log.progress(total=config.num_episodes, desc=f"generate {config.env}")
        while done < config.num_episodes:
            n = min(config.chunk, config.num_episodes - done)
            part = generate_trajectories(
                env_id,
                config.task_set,
                num_episodes=n,
                seed=config.seed + done,  # distinct, reproducible layouts per chunk
                epsilon=config.epsilon,
                num_envs=config.num_envs,
                device=config.device,
                expert=config.expert,
            )
            parts.append(part)
            done += n
            bar.update(n)
            log.log(
                done,
                **{
                    "data/success_rate": part.success.float().mean().item(),
                    "data/mean_length": part.lengths.float().mean().item(),
                    "charts/episodes_per_s": done / max(time.time() - start, 1e-9),
                },
            )
    data = parts[0] if len(parts) == 1 else _concat(parts)
    data.save(out, shard_size=config.shard_size)
    print(
        f"{len(data)} episodes, success {data.success.float().mean():.3f}, mean length {data.lengths.float().mean():.1f}"
    )
    print(f"dataset: {out}")
    return out


def _concat(parts: list[Trajectories]) -> Trajectories:
    t = max(p.subgoals.shape[1] for p in parts)

    def pad(x: torch.Tensor, steps: int, value: float) -> torch.Tensor:
        extra = steps - x.shape[1]
        return torch.cat([x, torch.full((x.shape[0], extra, *x.shape[2:]), value, dtype=x.dtype)], 1)

    discrete = parts[0].is_discrete
    return Trajectories(
        env_id=parts[0].env_id,
        observations=torch.cat([pad(p.observations, t + 1, 0) for p in parts]),
        actions=torch.cat([pad(p.actions, t, -1 if discrete else 0) for p in parts]),
        lengths=torch.cat([p.lengths for p in parts]),
        subgoals=torch.cat([pad(p.subgoals, t, -1) for p in parts]),
        task_ids=torch.cat([p.task_ids for p in parts]),
        success=torch.cat([p.success for p in parts]),
        task_set=parts[0].task_set,
        layouts={k: torch.cat([p.layouts[k] for p in parts]) for k in parts[0].layouts},
    )
