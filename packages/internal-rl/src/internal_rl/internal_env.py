"""The internal-RL environment (paper Algorithms 1-2): actions are latent codes z, observations
are residual activations e_{t,l}, and one step runs primitive steps of the frozen base model
controlled by U(z) until the thresholded switching unit fires.

:class:`BatchedInternalEnv` runs many grids (the batched torch env) with the base model in one
batch; :class:`InternalGridEnv` is the single-env gymnasium view of it (passes ``check_env``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from internal_rl.envs.grid_batched import BatchedGridPinpad
from internal_rl.envs.tasks import Task
from internal_rl.incremental import IncrementalBackbone


def _set_tasks(grid: BatchedGridPinpad, tasks: tuple[Task, ...]) -> None:
    longest = max(len(t) for t in tasks)
    grid.tasks = torch.full((len(tasks), longest), -1, dtype=torch.long, device=grid.device)
    for k, task in enumerate(tasks):
        grid.tasks[k, : len(task)] = torch.tensor(task)
    grid.task_lengths = torch.tensor([len(t) for t in tasks], device=grid.device)
    grid._task_flat = grid.tasks.reshape(-1)
    grid.task_set = "custom"


class TaskGrid(BatchedGridPinpad):
    """A batched grid on explicit ``tasks`` (e.g. a short, easy one) instead of a named task set.

    The env package only knows its named sets; this swaps in another task table and draws
    solvable layouts for it with a second, unobserved grid on the same tasks.
    """

    def __init__(self, num_envs: int, tasks: tuple[Task, ...], *, seed: int = 0, **kwargs: Any):
        kwargs.pop("layout_pool", None)
        super().__init__(num_envs, "pretrain", seed=seed, layout_pool=num_envs, **kwargs)
        _set_tasks(self, tasks)
        self._drawer = BatchedGridPinpad(num_envs, "pretrain", seed=seed + 1, layout_pool=0, **kwargs)
        _set_tasks(self._drawer, tasks)

    def reset(self, env_ids=None, *, task_ids=None, layouts=None):  # type: ignore[override]
        if layouts is None and task_ids is None:
            n = self.num_envs if env_ids is None else len(env_ids)
            self._drawer.reset()
            task_ids = self._drawer.task_ids[:n].clone()
            layouts = {
                "colour_cells": self._drawer.colour_cells[:n].clone(),
                "wall_cells": self._drawer.wall_cells[:n].clone(),
                "agent_cell": self._drawer.start[:n].clone(),
            }
        return super().reset(env_ids, task_ids=task_ids, layouts=layouts)


def make_grid(
    num_envs: int,
    task_set: str = "posttrain",
    *,
    tasks: tuple[Task, ...] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    **kwargs: Any,
) -> BatchedGridPinpad:
    """A batched grid on a named task set, or on explicit ``tasks``."""
    if tasks is None:
        return BatchedGridPinpad(num_envs, task_set, seed=seed, device=device, **kwargs)
    return TaskGrid(num_envs, tasks, seed=seed, device=device, **kwargs)


class BatchedInternalEnv:
    """``num_envs`` internal environments sharing one frozen base model and metacontroller.

    ``reset()`` returns e (N, n_e); every env then needs a code. ``step(z)`` hands ``z[i]`` to
    every env ``i`` in ``needs_action`` and runs primitive steps for all unfinished envs until at
    least one of them either fires its switch (beta >= threshold) or finishes. It returns
    ``(e, reward, done, info)`` where ``info["decided"]`` marks the envs whose abstract step
    ended in this call; ``reward`` and ``info["primitive_steps"]`` are what those envs
    accumulated since their last code (zero for the others). ``layout`` (keys ``colour_cells``,
    ``wall_cells``, ``agent_cell``) fixes one layout and task 0 for every episode. ``control_gain``
    scales the controller (e + gain U(z) e; 0 is the base model alone), for diagnostics only.
    ``switch_on_subgoal`` also fires the switch whenever the task's next colour changes (the true
    subgoal boundary), for controllers without a switching unit (the label-driven ones).

    The grids of finished episodes keep stepping with the batch (their moves are ignored), so
    read episode outcomes from ``success`` and ``colours``, which freeze when an episode ends,
    never from ``grid.progress``.
    """

    def __init__(
        self,
        model: Any,
        num_envs: int,
        task_set: str = "posttrain",
        *,
        tasks: tuple[Task, ...] | None = None,
        threshold: float = 0.5,
        seed: int = 0,
        greedy: bool = False,
        horizon: int = 100,
        layout: dict[str, Any] | None = None,
        variant: str = "paper",
        control_gain: float = 1.0,
        switch_on_subgoal: bool = False,
    ):
        self.base, self.meta, self.layer = model.base, model.meta, model.layer
        # e + gain * U(z) e. The paper's environment is gain 1; other gains only serve diagnostics
        # (internal_rl.steering: do the codes point the right way but push too weakly?).
        self.control_gain = control_gain
        self.switch_on_subgoal = switch_on_subgoal
        self.variant = variant
        self.layout = layout
        self.device = next(self.base.parameters()).device
        self.num_envs, self.threshold, self.greedy, self.horizon = num_envs, threshold, greedy, horizon
        self.task_set, self.tasks = task_set, tasks
        self.seed(seed)

    def seed(self, seed: int) -> None:
        # A layout pool of exactly one batch: every reseeded rollout draws only the layouts it uses.
        self.grid = make_grid(
            self.num_envs, self.task_set, tasks=self.tasks, seed=seed, device=self.device,
            horizon=self.horizon, layout_pool=self.num_envs, variant=self.variant,
        )  # fmt: skip
        self.generator = torch.Generator(device=self.device).manual_seed(seed + 1)

    @property
    def n_z(self) -> int:
        return self.meta.config.n_z

    @property
    def d_model(self) -> int:
        return self.base.config.d_model

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) primitive steps each episode has taken so far."""
        return (self.actions >= 0).sum(1)

    def reached(self, longest: int) -> list[int]:
        """Episodes that entered at least k colours of their task in order, for k = 0 .. ``longest``."""
        return [int((self.colours >= k).sum()) for k in range(longest + 1)]

    @torch.no_grad()
    def reset(self) -> torch.Tensor:
        n = self.num_envs
        if self.layout is None:
            obs = self.grid.reset().clone()
        else:  # one fixed layout (and task 0) for every episode: an easy, bandit-like problem
            rows = {k: torch.as_tensor(v).reshape(1, -1).expand(n, -1) for k, v in self.layout.items()}
            obs = self.grid.reset(task_ids=torch.zeros(n, dtype=torch.long), layouts=rows).clone()
        self.stepper = IncrementalBackbone(self.base, n, self.horizon + 1, self.layer)
        self.e = self.stepper.lower(obs)
        self.h = self.meta.init_history(n, self.device)
        self.z = torch.zeros(n, self.n_z, device=self.device)
        self.needs_action = torch.ones(n, dtype=torch.bool, device=self.device)
        self.done = torch.zeros(n, dtype=torch.bool, device=self.device)
        self.success = torch.zeros(n, dtype=torch.bool, device=self.device)
        self.colours = torch.zeros(n, dtype=torch.long, device=self.device)
        self.acc_reward = torch.zeros(n, device=self.device)
        self.acc_steps = torch.zeros(n, dtype=torch.long, device=self.device)
        self.t = 0
        self.actions = torch.full((n, self.horizon), -1, dtype=torch.long, device=self.device)
        self.betas = torch.zeros(n, self.horizon + 1, device=self.device)
        self.switch_steps = torch.zeros(n, self.horizon + 1, dtype=torch.bool, device=self.device)
        self.subgoals = torch.full((n, self.horizon + 1), -1, dtype=torch.long, device=self.device)
        self.subgoals[:, 0] = self.grid._info()["subgoal"]
        self.switch_steps[:, 0] = True
        self.betas[:, 0] = 1.0
        return self.e.clone()

    @torch.no_grad()
    def step(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        if self.done.all():
            raise RuntimeError("every episode is over: call reset()")
        take = self.needs_action & ~self.done
        self.z = torch.where(take[:, None], z.to(self.device, torch.float32), self.z)
        self.needs_action &= ~take
        decided = torch.zeros_like(self.done)
        while True:
            active = ~self.done
            rows = active.nonzero().squeeze(1)  # finished episodes drop out of the model's batch
            e = self.e[rows]
            out = self.stepper.upper(e + self.control_gain * self.meta.control(self.z[rows], e), rows)
            logits = out.action_logits[:, -1]
            if self.greedy:
                chosen = logits.argmax(-1)
            else:
                chosen = torch.multinomial(torch.softmax(logits, -1), 1, generator=self.generator).squeeze(1)
            action = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
            action[rows] = chosen
            self.actions[:, self.t] = torch.where(active, action, -1)
            obs, reward, terminated, truncated, info = self.grid.step(action)
            self.acc_reward += reward * active
            self.acc_steps += active.long()
            self.success |= active & info["success"]
            self.colours = torch.where(active, info["colours_visited"], self.colours)
            self.h[rows] = self.meta.step_history(e, self.h[rows])
            self.t += 1
            finished = active & (terminated | truncated)
            self.done |= finished
            self.subgoals[:, self.t] = torch.where(self.done, -1, info["subgoal"])
            fired = torch.zeros_like(self.done)
            if not self.done.all():
                rows = (~self.done).nonzero().squeeze(1)
                self.e[rows] = self.stepper.lower(obs[rows], rows)
                beta = self.meta.switch_prob(self.e[rows], self.h[rows], self.z[rows])
                self.betas[rows, self.t] = beta
                fired[rows] = beta >= self.threshold
                if self.switch_on_subgoal:
                    fired[rows] |= self.subgoals[rows, self.t] != self.subgoals[rows, self.t - 1]
                self.switch_steps[:, self.t] = fired
            self.needs_action |= fired
            decided |= fired | finished
            if decided.any():
                break
        reward = torch.where(decided, self.acc_reward, 0.0)
        steps = torch.where(decided, self.acc_steps, 0)
        self.acc_reward = torch.where(decided, 0.0, self.acc_reward)
        self.acc_steps = torch.where(decided, 0, self.acc_steps)
        info = {"decided": decided, "primitive_steps": steps, "success": self.success.clone(), "t": self.t}
        return self.e.clone(), reward, self.done.clone(), info


@torch.no_grad()
def prior_exploration(
    model: Any,
    episodes: int,
    task_set: str = "posttrain",
    *,
    tasks: tuple[Task, ...] | None = None,
    threshold: float = 0.5,
    horizon: int = 100,
    variant: str = "paper",
    seed: int = 0,
    scale: float = 1.0,
) -> dict[str, Any]:
    """Play codes drawn from N(0, scale^2 I) at every switch: what internal RL's first policy explores
    (``scale`` = ``RLConfig.init_std``; 1 is the metacontroller's prior).

    Returns the success rate and ``reached[k]``, the number of episodes that entered at least ``k``
    colours of their task in order (k = 0 .. task length), so ``reached[k] / reached[k - 1]`` is how
    often a random code carries an episode through its k-th colour once it got that far.
    """
    env = BatchedInternalEnv(model, episodes, task_set, tasks=tasks, threshold=threshold, seed=seed,
                             horizon=horizon, variant=variant)  # fmt: skip
    env.reset()
    generator = torch.Generator().manual_seed(seed)
    while not env.done.all():
        env.step(scale * torch.randn(episodes, env.n_z, generator=generator))
    longest = int(env.grid.task_lengths.max())
    return {
        "episodes": episodes,
        "scale": scale,
        "success": float(env.success.float().mean()),
        "reached": env.reached(longest),
    }


class InternalGridEnv(gym.Env):
    """Gymnasium view of one internal environment: action z in Box(n_z), observation e_{t,l}.

    ``info["primitive_steps"]`` is the number of base-model steps the abstract step ran;
    ``info["success"]`` the underlying episode's outcome.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, model: Any, task_set: str = "posttrain", *, tasks: tuple[Task, ...] | None = None,
                 threshold: float = 0.5, greedy: bool = False, horizon: int = 100,
                 variant: str = "paper"):  # fmt: skip
        super().__init__()
        self.inner = BatchedInternalEnv(
            model,
            1,
            task_set,
            tasks=tasks,
            threshold=threshold,
            greedy=greedy,
            horizon=horizon,
            variant=variant,
        )
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.inner.d_model,), np.float32)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (self.inner.n_z,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31))
        self.inner.seed(seed)
        e = self.inner.reset()
        return e[0].cpu().numpy().astype(np.float32), {"primitive_steps": 0}

    def step(self, action):
        z = torch.as_tensor(np.asarray(action, dtype=np.float32)).reshape(1, -1)
        e, reward, done, info = self.inner.step(z)
        terminated = (bool(done[0]) and self.inner.t < self.inner.horizon) or bool(info["success"][0])
        truncated = bool(done[0]) and not terminated
        return (
            e[0].cpu().numpy().astype(np.float32),
            float(reward[0]),
            terminated,
            truncated,
            {"primitive_steps": int(info["primitive_steps"][0]), "success": bool(info["success"][0])},
        )
