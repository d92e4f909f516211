"""Gridworld-pinpad for thousands of environments in one torch call, and its batched expert.

Same rules, observation and info as :class:`internal_rl.envs.grid.GridPinpadEnv` (checked
step for step in the tests), with all state held as ``(num_envs, ...)`` tensors on one device.
Layouts are drawn with torch's generator, so a seed gives different layouts than the
gymnasium env; pass ``layouts=`` to :meth:`BatchedGridPinpad.reset` to replay exact ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from internal_rl.envs.grid_paths import UNREACHABLE, neighbour_table
from internal_rl.envs.tasks import GRID_TASK_SETS, get_task_set

# Termination causes as integers, so that they fit a tensor; names match the gymnasium env's info.
CAUSES = ("", "success", "wrong_colour", "timeout")


class BatchedGridPinpad:
    """``num_envs`` gridworld-pinpads stepped together.

    :meth:`step` returns ``(obs, reward, terminated, truncated, info)`` tensors. With
    ``autoreset=True`` finished envs are reset within the same call: the returned ``obs`` is
    then the new episode's first observation, and ``info["final_obs"]`` holds the last
    observations of the finished episodes, one row per ``info["final_env_ids"]`` (gymnasium's
    SAME_STEP convention). The observation tensor is the env's own buffer, updated in place
    (only the agent's one-hot moves): clone it to keep it past the next call.
    """

    def __init__(
        self,
        num_envs: int,
        task_set: str = "pretrain",
        *,
        size: int = 7,
        num_colours: int = 8,
        num_walls: int = 4,
        horizon: int = 100,
        require_solvable: bool = True,
        autoreset: bool = False,
        device: str | torch.device = "cpu",
        seed: int = 0,
        max_draws: int = 1000,
        layout_pool: int | None = None,
    ):
        self.max_draws = max_draws
        # Solvable layouts are drawn in big batches by a helper env (the rejection check costs
        # the same few dozen tensor ops for 10 envs or 10,000) and handed out as envs reset.
        self.layout_pool = max(1024, num_envs) if layout_pool is None else layout_pool
        self._pool: BatchedGridPinpad | None = None
        self._pool_next = 0
        self.num_envs, self.size, self.num_colours, self.num_walls = num_envs, size, num_colours, num_walls
        self.horizon, self.require_solvable, self.autoreset = horizon, require_solvable, autoreset
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        tasks = get_task_set(GRID_TASK_SETS, task_set)
        self.task_set = task_set
        longest = max(len(t) for t in tasks)
        self.tasks = torch.full((len(tasks), longest), -1, dtype=torch.long, device=self.device)
        for k, task in enumerate(tasks):
            self.tasks[k, : len(task)] = torch.tensor(task)
        self.task_lengths = torch.tensor([len(t) for t in tasks], device=self.device)
        self.num_cells = size * size
        self.channels = num_colours + num_walls + 1
        self.obs_dim = self.num_cells * self.channels
        self.table = torch.as_tensor(neighbour_table(size), device=self.device)
        self._moves = self.table != torch.arange(self.num_cells, device=self.device)[:, None]
        n, c = num_envs, self.num_cells
        long = dict(dtype=torch.long, device=self.device)
        self.colour_cells = torch.zeros(n, num_colours, **long)
        self.wall_cells = torch.zeros(n, num_walls, **long)
        self.colour_at = torch.full((n, c), -1, **long)
        self.wall = torch.zeros(n, c, dtype=torch.bool, device=self.device)
        self.agent = torch.zeros(n, **long)
        self.start = torch.zeros(n, **long)
        self.task_ids = torch.zeros(n, **long)
        self.layout_version = torch.zeros(n, **long)
        self.progress = torch.zeros(n, **long)
        self.t = torch.zeros(n, **long)
        self._obs = torch.zeros(n, self.obs_dim, device=self.device)
        self._task_flat = self.tasks.reshape(-1)
        self._task_length = torch.zeros(n, **long)

    # -- layouts ---------------------------------------------------------------------------
    def _draw(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        keys = torch.rand(count, self.num_cells, generator=self.generator, device=self.device)
        # the smallest 13 of 49 keys in order: the same cells as a full argsort, at a fraction of its cost
        k = self.num_colours + self.num_walls + 1
        cells = keys.topk(k, dim=1, largest=False, sorted=True).indices
        o, w = self.num_colours, self.num_walls
        return cells[:, :o], cells[:, o : o + w], cells[:, -1]

    def _place(
        self, ids: torch.Tensor, colours: torch.Tensor, walls: torch.Tensor, agent: torch.Tensor
    ) -> None:
        self.layout_version[ids] += 1  # lets cached per-layout data (the expert's fields) notice resets
        self.colour_cells[ids], self.wall_cells[ids] = colours, walls
        self.agent[ids], self.start[ids] = agent, agent
        colour_at = torch.full((len(ids), self.num_cells), -1, dtype=torch.long, device=self.device)
        colour_at.scatter_(1, colours, torch.arange(self.num_colours, device=self.device).expand_as(colours))
        self.colour_at[ids] = colour_at
        wall = torch.zeros(len(ids), self.num_cells, dtype=torch.bool, device=self.device)
        wall.scatter_(1, walls, True)
        self.wall[ids] = wall
        if self.layout_pool == 0:
            return  # a layout pool's envs are never observed: skip the 637-wide observation writes
        self._obs[ids] = 0.0
        flat, c = self._obs.view(-1), self.channels
        row = (ids * self.obs_dim)[:, None]
        flat[row + colours * c + torch.arange(self.num_colours, device=self.device)] = 1.0
        flat[row + walls * c + self.num_colours + torch.arange(self.num_walls, device=self.device)] = 1.0
        flat[row.squeeze(1) + agent * c + c - 1] = 1.0

    def reset(
        self,
        env_ids: torch.Tensor | None = None,
        *,
        task_ids: torch.Tensor | None = None,
        layouts: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Start new episodes for ``env_ids`` (all by default) and return every env's observation.

        ``layouts`` (keys ``colour_cells``, ``wall_cells``, ``agent_cell``, one row per reset env)
        fixes the layouts instead of drawing them.
        """
        ids = torch.arange(self.num_envs, device=self.device) if env_ids is None else env_ids.to(self.device)
        if task_ids is None and layouts is None and self.require_solvable and self.layout_pool > 0:
            task_ids, layouts = self._from_pool(len(ids))
        if task_ids is None:
            task_ids = torch.randint(
                len(self.tasks), (len(ids),), generator=self.generator, device=self.device
            )
        self.task_ids[ids] = task_ids.to(self.device)
        self._task_length[ids] = self.task_lengths[self.task_ids[ids]]
        self.progress[ids] = 0
        self.t[ids] = 0
        if layouts is not None:

            def as_t(key: str) -> torch.Tensor:
                value = layouts[key]
                if torch.is_tensor(value):  # no numpy round trip (the pool hands out tensors)
                    return value.to(self.device, torch.long)
                return torch.as_tensor(np.asarray(value), dtype=torch.long, device=self.device)

            self._place(ids, as_t("colour_cells"), as_t("wall_cells"), as_t("agent_cell").reshape(-1))
        else:
            pending = ids
            for _ in range(self.max_draws):
                self._place(pending, *self._draw(len(pending)))
                if not self.require_solvable:
                    break
                pending = pending[self.shortest_task_lengths(pending) > self.horizon]
                if not len(pending):
                    break
            else:
                raise RuntimeError(
                    f"no solvable layout within horizon {self.horizon} in {self.max_draws} draws"
                )
        return self.observe()

    def _from_pool(self, count: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
        while count > 0:
            if self._pool is None:
                seed = int(torch.randint(2**62, (1,), generator=self.generator, device=self.device))
                self._pool = BatchedGridPinpad(
                    self.layout_pool, self.task_set, size=self.size, num_colours=self.num_colours,
                    num_walls=self.num_walls, horizon=self.horizon, device=self.device, seed=seed,
                    max_draws=self.max_draws, layout_pool=0,
                )  # fmt: skip
                self._pool_next = self.layout_pool
            if self._pool_next >= self.layout_pool:
                self._pool.reset()
                self._pool_next = 0
            take = slice(self._pool_next, min(self._pool_next + count, self.layout_pool))
            pool = self._pool
            parts.append(
                (
                    pool.task_ids[take].clone(),
                    {
                        "colour_cells": pool.colour_cells[take],
                        "wall_cells": pool.wall_cells[take],
                        "agent_cell": pool.start[take],
                    },
                )
            )
            count -= take.stop - take.start
            self._pool_next = take.stop
        task_ids = torch.cat([p[0] for p in parts])
        layouts = {k: torch.cat([p[1][k] for p in parts]) for k in parts[0][1]}
        return task_ids, layouts

    def observe(self) -> torch.Tensor:
        """The (num_envs, obs_dim) observation buffer (updated in place by step and reset)."""
        return self._obs

    # -- shortest paths --------------------------------------------------------------------
    def distance_fields(self, ids: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        """(len(ids), cells) BFS moves to ``colours``' cells avoiding walls and other colours."""
        m, g = len(ids), self.size
        targets = self.colour_cells[ids].gather(1, colours[:, None])
        passable = (~self.wall[ids] & (self.colour_at[ids] < 0)).view(m, g, g)
        # Relax on a grid padded with UNREACHABLE so the four neighbours are plain shifted views.
        dist = torch.full((m, g + 2, g + 2), UNREACHABLE, dtype=torch.int32, device=self.device)
        inner = dist[:, 1:-1, 1:-1]
        flat = torch.full((m, g * g), UNREACHABLE, dtype=torch.int32, device=self.device)
        flat.scatter_(1, targets, 0)
        inner.copy_(flat.view(m, g, g))
        while True:
            around = torch.minimum(
                torch.minimum(dist[:, :-2, 1:-1], dist[:, 2:, 1:-1]),
                torch.minimum(dist[:, 1:-1, :-2], dist[:, 1:-1, 2:]),
            )
            new = torch.where(passable, torch.minimum(inner, around + 1), inner)
            if torch.equal(new, inner):
                return inner.reshape(m, g * g).long()
            inner.copy_(new)

    def action_costs(self, ids: torch.Tensor, dist: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """(len(ids), 4) moves to the target when taking each action from ``cells`` first."""
        nxt = self.table[cells]
        cost = dist.gather(1, nxt) + 1
        return torch.where(self._moves[cells], cost.clamp(max=UNREACHABLE), UNREACHABLE)

    def shortest_task_lengths(self, ids: torch.Tensor) -> torch.Tensor:
        """Fewest moves solving each env's whole task from its start (>= ``UNREACHABLE`` if impossible).

        Breadth-first search on 49-bit cell masks held in int64, all legs of all envs at once:
        one search step is a handful of shifts and ands on a vector, which keeps the
        solvability check of thousands of fresh layouts cheap.
        """
        g, device = self.size, self.device
        bits = torch.ones(self.num_cells, dtype=torch.long, device=device) << torch.arange(
            self.num_cells, device=device
        )
        full = (1 << self.num_cells) - 1
        col = torch.arange(self.num_cells, device=device) % g
        not_first_col, not_last_col = int(bits[col != 0].sum()), int(bits[col != g - 1].sum())
        colours = self.colour_cells[ids]
        walls = bits[self.wall_cells[ids]].sum(1)
        empty = full & ~walls & ~bits[colours].sum(1)
        tasks = self.tasks[self.task_ids[ids]]  # (n, L), -1 padded
        active = tasks >= 0
        target_cells = colours.gather(1, tasks.clamp(min=0))
        start_cells = torch.cat([self.start[ids, None], target_cells[:, :-1]], 1)
        target = bits[target_cells]
        allowed = empty[:, None] | target
        frontier = bits[start_cells]
        reached = frontier & ~target
        legs = torch.full(tasks.shape, UNREACHABLE, dtype=torch.long, device=device)
        for step in range(1, self.num_cells + 2):
            spread = (frontier >> g) | ((frontier << g) & full)
            spread |= ((frontier & not_first_col) >> 1) | ((frontier & not_last_col) << 1)
            frontier = spread & allowed & ~reached
            reached |= frontier
            hit = ((frontier & target) != 0) & (legs == UNREACHABLE)
            legs = torch.where(hit, step, legs)
            frontier &= ~target  # entering the target ends the leg
            if not ((frontier != 0) & (legs == UNREACHABLE)).any():
                break
        legs = torch.where(active, legs, 0)
        return legs.sum(1).clamp(max=UNREACHABLE)

    # -- dynamics --------------------------------------------------------------------------
    def next_colours(self) -> torch.Tensor:
        """(N,) colour each env must enter next (-1 once its task is done)."""
        index = self.task_ids * self.tasks.shape[1] + self.progress.clamp(max=self.tasks.shape[1] - 1)
        return torch.where(self.progress < self._task_length, self._task_flat[index], -1)

    def _info(self) -> dict[str, torch.Tensor]:
        nxt = self.next_colours()
        return {
            "task_id": self.task_ids.clone(),
            "subgoal": torch.where(nxt >= 0, nxt // 2, -1),
            "next_colour": nxt,
            "colours_visited": self.progress.clone(),
            "subgoals_completed": self.progress // 2,
            "success": self.progress >= self._task_length,
        }

    def step(self, actions: torch.Tensor):
        actions = actions.to(self.device, torch.long)
        target = self.next_colours()
        nxt = self.table[self.agent, actions]
        nxt = torch.where(self.wall.gather(1, nxt[:, None]).squeeze(1), self.agent, nxt)
        moved = nxt != self.agent
        agent_channel = self.channels - 1
        flat = self._obs.view(-1)
        rows = torch.arange(self.num_envs, device=self.device) * self.obs_dim + agent_channel
        flat[rows + self.agent * self.channels] = 0.0
        flat[rows + nxt * self.channels] = 1.0
        self.agent = nxt
        self.t += 1
        colour = self.colour_at.gather(1, nxt[:, None]).squeeze(1)
        entered = moved & (colour >= 0)
        correct = entered & (colour == target)
        self.progress += correct.long()
        success = correct & (self.progress == self._task_length)
        wrong = entered & ~correct
        terminated = success | wrong
        truncated = ~terminated & (self.t >= self.horizon)
        cause = torch.where(success, 1, torch.where(wrong, 2, torch.where(truncated, 3, 0)))
        obs = self.observe()
        info = self._info()
        info["termination_cause"] = cause
        if self.autoreset:
            done = (terminated | truncated).nonzero().squeeze(1)
            info["final_env_ids"] = done
            info["final_obs"] = obs[done].clone()
            if len(done):
                obs = self.reset(done)
        return obs, success.float(), terminated, truncated, info


class BatchedGridExpert:
    """The shortest-path DP expert of :class:`internal_rl.experts.GridExpert`, for a batched env."""

    def __init__(self, env: BatchedGridPinpad, *, epsilon: float = 0.0, seed: int = 0):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.env, self.epsilon = env, epsilon
        self.generator = torch.Generator(device=env.device).manual_seed(seed)
        self._dist = torch.zeros(env.num_envs, env.num_cells, dtype=torch.long, device=env.device)
        self._key = torch.full((env.num_envs, 3), -1, dtype=torch.long, device=env.device)

    def action_costs(self) -> torch.Tensor:
        env = self.env
        target = env.next_colours()
        key = torch.stack([target, env.progress, env.layout_version], dim=1)
        stale = ((key != self._key).any(dim=1) & (target >= 0)).nonzero().squeeze(1)
        if len(stale):
            self._dist[stale] = env.distance_fields(stale, target[stale])
            self._key[stale] = key[stale]
        ids = torch.arange(env.num_envs, device=env.device)
        return env.action_costs(ids, self._dist, env.agent)

    def act(self) -> torch.Tensor:
        env = self.env
        costs = self.action_costs()
        noise = torch.rand(costs.shape, generator=self.generator, device=env.device)
        # Integer costs plus noise in [0, 1): argmin picks uniformly among the tied optimal moves.
        actions = (costs.float() + noise).argmin(dim=1)
        if self.epsilon > 0:
            nxt = env.table[env.agent]
            noop = ~env._moves[env.agent] | env.wall.gather(1, nxt)
            # A random move may not fail the task nor strand the agent behind the colour it stands on.
            safe = noop | (costs < UNREACHABLE)
            pick = torch.where(
                safe, torch.rand(safe.shape, generator=self.generator, device=env.device), -1.0
            )
            explore = torch.rand(env.num_envs, generator=self.generator, device=env.device) < self.epsilon
            actions = torch.where(explore, pick.argmax(dim=1), actions)
        return actions


def generate_grid_trajectories(
    task_set: str = "pretrain",
    num_episodes: int = 1024,
    *,
    seed: int = 0,
    epsilon: float = 0.0,
    num_envs: int = 256,
    device: str | torch.device = "cpu",
    **env_kwargs: Any,
):
    """Expert episodes from the batched env, ``num_envs`` fresh episodes per wave."""
    from internal_rl.data import Trajectories
    from internal_rl.envs import GRID_ID

    num_envs = max(1, min(num_envs, num_episodes))
    env = BatchedGridPinpad(num_envs, task_set, device=device, seed=seed, **env_kwargs)
    expert = BatchedGridExpert(env, epsilon=epsilon, seed=seed + 1)
    waves: list[dict[str, torch.Tensor]] = []
    collected = 0
    while collected < num_episodes:
        obs = env.reset().to(torch.uint8)  # one-hots: exact in uint8, 4x less memory than float32
        layouts = {
            "colour_cells": env.colour_cells.clone(),
            "wall_cells": env.wall_cells.clone(),
            "agent_cell": env.agent.clone(),
        }
        observations, actions, subgoals = [obs], [], []
        info = env._info()
        alive = torch.ones(num_envs, dtype=torch.bool, device=env.device)
        lengths = torch.zeros(num_envs, dtype=torch.long, device=env.device)
        while alive.any():
            subgoals.append(torch.where(alive, info["subgoal"], -1))
            action = expert.act()
            obs, _, terminated, truncated, info = env.step(action)
            actions.append(torch.where(alive, action, -1))
            observations.append((obs * alive[:, None]).to(torch.uint8))
            lengths += alive.long()
            alive &= ~(terminated | truncated)
        waves.append(
            {
                "observations": torch.stack(observations, 1).cpu(),
                "actions": torch.stack(actions, 1).cpu(),
                "subgoals": torch.stack(subgoals, 1).cpu(),
                "lengths": lengths.cpu(),
                "task_ids": env.task_ids.clone().cpu(),
                "success": info["success"].cpu(),
                **{f"layout.{k}": v.cpu() for k, v in layouts.items()},
            }
        )
        collected += num_envs
    t = max(w["actions"].shape[1] for w in waves)

    def cat(key: str, pad: float) -> torch.Tensor:
        parts = []
        for w in waves:
            x = w[key]
            if x.ndim >= 2 and key in ("observations", "actions", "subgoals"):
                extra = t + (key == "observations") - x.shape[1]
                x = torch.cat([x, torch.full((x.shape[0], extra, *x.shape[2:]), pad, dtype=x.dtype)], 1)
            parts.append(x)
        return torch.cat(parts)[:num_episodes]

    trajectories = Trajectories(
        env_id=GRID_ID,
        observations=cat("observations", 0),
        actions=cat("actions", -1),
        lengths=cat("lengths", 0),
        subgoals=cat("subgoals", -1),
        task_ids=cat("task_ids", 0),
        success=cat("success", 0),
        task_set=task_set,
        layouts={k: cat(f"layout.{k}", 0) for k in ("colour_cells", "wall_cells", "agent_cell")},
    )
    return trajectories[:]  # trims the padding of episodes dropped from the last wave
