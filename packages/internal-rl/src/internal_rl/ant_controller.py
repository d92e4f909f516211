"""A cheap goal-reaching controller for ant-pinpad, for CPU defaults (no training needed).

It walks with a parametric trot (per-leg sinusoids for hip and ankle) and re-plans the gait
parameters every ``replan_every`` steps by random shooting in a copy of the MuJoCo state:
each candidate gait is simulated ``plan_horizon`` steps and scored by the progress of the
torso towards the next waypoint (the next cell of a shortest grid-level path, or the target
colour's centre), with large penalties for falling, entering the wall cell or a wrong
colour. The paper's ant expert is a PPO policy (:mod:`internal_rl.ant_expert`); this is the
stand-in that makes ant data possible without a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from internal_rl.envs.ant import AntPinpadEnv
from internal_rl.envs.grid_paths import UNREACHABLE, action_costs, blocked_cells, distance_to, neighbour_table

# Actuators: hip_4, ankle_4, hip_1, ankle_1, hip_2, ankle_2, hip_3, ankle_3; legs 2 and 3 bend the other way.
_LEGS = (4, 1, 2, 3)
_ANKLE_SIGN = {1: 1.0, 2: -1.0, 3: -1.0, 4: 1.0}


def gait_action(t: int, params: np.ndarray) -> np.ndarray:
    """``params`` = (4 leg phases, hip amplitude, ankle amplitude, frequency, hip-ankle lag)."""
    phases, amp_hip, amp_ankle, freq, lag = params[:4], params[4], params[5], params[6], params[7]
    action = np.empty(8)
    for k, leg in enumerate(_LEGS):
        angle = freq * t + phases[leg - 1]
        action[2 * k] = amp_hip * np.sin(angle)
        action[2 * k + 1] = _ANKLE_SIGN[leg] * amp_ankle * np.sin(angle + lag)
    return np.clip(action, -1.0, 1.0)


class GaitMPCController:
    """Random-shooting MPC over trot parameters, run inside the env's own simulator."""

    def __init__(
        self,
        env: AntPinpadEnv,
        *,
        num_candidates: int = 16,
        plan_horizon: int = 20,
        replan_every: int = 5,
        seed: int = 0,
    ):
        self.env = env
        self.num_candidates, self.plan_horizon, self.replan_every = num_candidates, plan_horizon, replan_every
        self.rng = np.random.default_rng(seed)
        self.table = neighbour_table(env.grid_size)
        self._params: np.ndarray | None = None
        self._t = 0

    def reset(self) -> None:
        self._params, self._t = None, 0

    def _sample(self) -> np.ndarray:
        return np.concatenate(
            [
                self.rng.uniform(0, 2 * np.pi, 4),
                self.rng.uniform(0.3, 1.0, 2),
                self.rng.choice([0.5, 0.8, 1.0], 1),
                self.rng.choice([np.pi / 2, -np.pi / 2], 1),
            ]
        )

    def waypoint(self) -> np.ndarray:
        """Centre of the next cell on a shortest grid-level path (the target itself when adjacent)."""
        env = self.env
        assert env.layout is not None
        colour = env.task[min(env.progress, len(env.task) - 1)]
        target = int(env.layout.colour_cells[colour])
        n = env.grid_size * env.grid_size
        blocked = blocked_cells(env.layout.colour_cells, env.layout.wall_cells, colour, n)
        dist = distance_to(target, blocked, self.table)
        costs = action_costs(env.cell, dist, blocked, self.table)
        if costs.min() >= UNREACHABLE:
            return env.cell_centre(target)
        return env.cell_centre(int(self.table[env.cell, int(costs.argmin())]))

    def _score(self, params: np.ndarray, goal: np.ndarray) -> float:
        env = self.env
        assert env.layout is not None
        start = env.torso_xy
        forbidden = set(env.layout.wall_cells.tolist())
        target_colour = env.task[min(env.progress, len(env.task) - 1)]
        forbidden |= {int(c) for k, c in enumerate(env.layout.colour_cells) if k != target_colour}
        for h in range(self.plan_horizon):
            env.do_simulation(gait_action(self._t + h, params), env.frame_skip)
            if not env.is_healthy:
                return -100.0 + h
            if env.cell_of(env.torso_xy) in forbidden and env.cell_of(env.torso_xy) != env.cell:
                return -50.0 + h
        return float(np.linalg.norm(goal - start) - np.linalg.norm(goal - env.torso_xy))

    def _plan(self) -> np.ndarray:
        env = self.env
        qpos, qvel = env.data.qpos.copy(), env.data.qvel.copy()
        act, time = env.data.act.copy(), env.data.time
        goal = self.waypoint()
        candidates = [self._sample() for _ in range(self.num_candidates)]
        if self._params is not None:
            candidates[0] = self._params  # keep walking the same way if it still scores best
            candidates[1] = self._params + self.rng.normal(0, 0.2, 8) * np.array([1, 1, 1, 1, 0.3, 0.3, 0, 0])
        scores = []
        for params in candidates:
            env.set_state(qpos, qvel)
            env.data.act[:] = act
            scores.append(self._score(params, goal))
        env.set_state(qpos, qvel)
        env.data.act[:], env.data.time = act, time
        return candidates[int(np.argmax(scores))]

    def act(self) -> np.ndarray:
        if self._params is None or self._t % self.replan_every == 0:
            self._params = self._plan()
        action = gait_action(self._t, self._params)
        self._t += 1
        return action


def evaluate_controller(
    task_set: str = "pretrain", episodes: int = 10, seed: int = 0, **controller_kwargs: Any
) -> dict[str, Any]:
    """Success rate and termination causes of :class:`GaitMPCController` over ``episodes`` episodes."""
    env = AntPinpadEnv(task_set=task_set)
    controller = GaitMPCController(env, seed=seed, **controller_kwargs)
    causes: dict[str, int] = {}
    successes = 0
    for k in range(episodes):
        env.reset(seed=seed + k)
        controller.reset()
        done, info = False, {}
        while not done:
            _, _, terminated, truncated, info = env.step(controller.act())
            done = terminated or truncated
        causes[info["termination_cause"]] = causes.get(info["termination_cause"], 0) + 1
        successes += bool(info["success"])
    env.close()
    return {
        "task_set": task_set,
        "episodes": episodes,
        "success_rate": successes / episodes,
        "causes": causes,
    }
