"""Ant-pinpad expert episodes, from the PPO expert or the cheap goal-reaching controller."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from internal_rl.data import Trajectories, _stack_episodes
from internal_rl.envs import ANT_ID
from internal_rl.envs.ant import AntPinpadEnv


def generate_ant_trajectories(
    task_set: str = "pretrain",
    num_episodes: int = 16,
    *,
    seed: int = 0,
    epsilon: float = 0.0,
    expert: str | os.PathLike | None = None,
    env_kwargs: dict[str, Any] | None = None,
    controller_kwargs: dict[str, Any] | None = None,
) -> Trajectories:
    """Roll out ``num_episodes`` episodes (one env; MuJoCo is CPU-bound).

    ``expert`` is a PPO expert checkpoint (run folder or checkpoint folder) or ``None`` for the
    :class:`~internal_rl.ant_controller.GaitMPCController`. ``epsilon`` = 0 uses the PPO
    policy's mean action (the paper's clean D*); > 0 samples from the policy, or adds Gaussian
    noise of that std to the controller's torques.
    """
    env = AntPinpadEnv(task_set=task_set, **(env_kwargs or {}))
    rng = np.random.default_rng(seed + 1)
    if expert is None:
        from internal_rl.ant_controller import GaitMPCController

        controller = GaitMPCController(env, seed=seed, **(controller_kwargs or {}))

        def policy(_obs: np.ndarray) -> np.ndarray:
            action = controller.act()
            if epsilon > 0:
                action = action + rng.normal(0.0, epsilon, action.shape)
            return np.clip(action, -1.0, 1.0)

        reset_policy = controller.reset
    else:
        from internal_rl.ant_expert import direction_hint, load_ant_expert

        net = load_ant_expert(expert)
        torch.manual_seed(seed)

        def policy(obs: np.ndarray) -> np.ndarray:
            x = torch.as_tensor(np.concatenate([obs, direction_hint(env)]), dtype=torch.float32)[None]
            return net.act(x, deterministic=epsilon == 0)[0].clamp(-1, 1).numpy()

        def reset_policy() -> None:
            return None

    episodes = []
    for k in range(num_episodes):
        obs, info = env.reset(seed=seed + k)
        reset_policy()
        layout = {key: np.asarray(info[key]) for key in ("colour_cells", "wall_cells", "agent_cell")}
        layout["start_xy"] = env.torso_xy
        observations, actions, subgoals = [obs], [], []
        done = False
        while not done:
            subgoals.append(info["subgoal"])
            action = policy(obs)
            obs, _, terminated, truncated, info = env.step(action)
            observations.append(obs)
            actions.append(action.astype(np.float32))
            done = terminated or truncated
        episodes.append((observations, actions, subgoals, info, layout))
    env.close()
    return _stack_episodes(ANT_ID, task_set, episodes)
