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
from internal_rl.envs.tasks import GridSpec, get_grid_spec, get_task_set, grid_task_sets

# Termination causes as integers, so that they fit a tensor; names match the gymnasium env's info.
CAUSES = ("", "success", "wrong_colour", "timeout")


def _check_bits(size: int) -> int:
    # Cell (r, c) is bit r * (size + 1) + c: the spare column of zeros per row lets a left/right
    # shift fall off the edge without masks, so one BFS step is four shifts and three ors.
    if size * (size + 1) > 63:
        raise ValueError(f"the bitmask search needs size * (size + 1) <= 63, got size {size}")
    return size + 1


def smallest_cells(keys: torch.Tensor, k: int) -> torch.Tensor:
    """``keys.topk(k, dim=1, largest=False, sorted=True).indices`` for keys in [0, 1), faster on the CPU.

    The k smallest of 49 keys in order: the same cells as a full argsort, at a fraction of its
    cost. On the CPU, numpy's vectorised int32 sort of ``key * 2**24 << 6 | column`` (exact for
    ``torch.rand``'s floats, which are multiples of 2**-24) is several times faster than
    ``topk``; rows where two of the k + 1 smallest keys tie (there ``topk``'s own order rules)
    or truncate to the same integer are taken from ``topk`` itself, so the result is the same.
    """
    width = keys.shape[1]
    if keys.device.type != "cpu" or width > 64:
        return keys.topk(k, dim=1, largest=False, sorted=True).indices
    columns = torch.arange(width, dtype=torch.int32)
    order = np.sort((((keys * 2**24).to(torch.int32) << 6) | columns).numpy(), axis=1)
    head = order[:, : min(k + 1, width)]
    key = head >> 6
    cells = torch.from_numpy((head[:, :k] & 63).astype(np.int64))
    tied = np.flatnonzero((key[:, 1:] == key[:, :-1]).any(axis=1))
    if len(tied):
        rows = torch.from_numpy(tied)
        cells[rows] = keys[rows].topk(k, dim=1, largest=False, sorted=True).indices
    return cells


def _search_legs(
    frontier: Any, free: Any, target: Any, leg: Any, lengths: Any, stride: int, steps: int, check_every: int
) -> None:
    """Breadth-first search of many legs at once on int64 cell bitmasks; sets ``lengths[leg]``.

    Works on torch tensors or numpy arrays alike (only operators, ``where`` and indexing). Each
    leg starts from the cells in ``frontier`` and may enter the cells in ``free`` (which must
    include its single-bit ``target``); its length is the step at which it enters the target,
    ``UNREACHABLE`` if it never does. Every ``check_every`` steps (the only host syncs) the
    legs that arrived or ran out of cells are dropped, so that the rare long legs do not keep
    the whole batch busy.
    """
    where = np.where if isinstance(frontier, np.ndarray) else torch.where
    waited = frontier & 0  # steps after which the target was still unvisited
    for _ in range(0, steps, check_every):
        pending = frontier & 0
        for _ in range(check_every):
            spread = frontier << 1
            spread |= frontier >> 1
            spread |= frontier << stride
            spread |= frontier >> stride
            spread &= free
            frontier = spread
            free ^= frontier
            pending += free & target  # the target's bit while it is unvisited, else 0
        waited += pending // target
        reached = (free & target) == 0
        # legs still searching get UNREACHABLE here and their length at a later check
        lengths[leg] = where(reached, waited + 1, UNREACHABLE)
        keep = ~reached & (frontier != 0)
        keep = np.flatnonzero(keep) if isinstance(keep, np.ndarray) else keep.nonzero().squeeze(1)
        if not len(keep):
            return
        leg, frontier, free, target, waited = (x[keep] for x in (leg, frontier, free, target, waited))


class BatchedGridPinpad:
    """``num_envs`` gridworld-pinpads stepped together.

    :meth:`step` returns ``(obs, reward, terminated, truncated, info)`` tensors. With
    ``autoreset=True`` finished envs are reset within the same call: the returned ``obs`` is
    then the new episode's first observation, and ``info["final_obs"]`` holds the last
    observations of the finished episodes, one row per ``info["final_env_ids"]`` (gymnasium's
    SAME_STEP convention). The observation tensor is the env's own buffer, updated in place
    (only the agent's one-hot moves): clone it to keep it past the next call.
    """

    # Solvability checks of at most this many task legs run on the host when the env is on a
    # GPU (see ``_task_lengths``); 0 keeps every check on the device.
    host_search_max_legs: int = 8192

    def __init__(
        self,
        num_envs: int,
        task_set: str = "pretrain",
        *,
        variant: str | GridSpec = "paper",
        size: int | None = None,
        num_colours: int | None = None,
        num_walls: int | None = None,
        horizon: int | None = None,
        require_solvable: bool = True,
        autoreset: bool = False,
        device: str | torch.device = "cpu",
        seed: int = 0,
        max_draws: int = 1000,
        layout_pool: int | None = None,
    ):
        spec = get_grid_spec(variant)
        size = spec.size if size is None else size
        num_colours = spec.num_colours if num_colours is None else num_colours
        num_walls = spec.num_walls if num_walls is None else num_walls
        horizon = spec.horizon if horizon is None else horizon
        self.grid_spec, self.variant = spec, variant if isinstance(variant, str) else "custom"
        self._per_subgoal = spec.colours_per_subgoal
        if spec.colour_cells is not None and (size, num_colours) != (spec.size, spec.num_colours):
            raise ValueError("a variant with fixed colour_cells keeps its own size and number of colours")
        self._fixed_colours = (
            None
            if spec.colour_cells is None
            else torch.tensor(spec.colour_cells, dtype=torch.long, device=torch.device(device))
        )
        self.max_draws = max_draws
        # Solvable layouts are drawn in big batches (rejection sampling costs the same few dozen
        # tensor ops for 10 layouts or 10,000) with their own generator, and handed out as envs
        # reset. The pool's generator is seeded from this env's on first use.
        self.layout_pool = max(1024, num_envs) if layout_pool is None else layout_pool
        self._pool_generator: torch.Generator | None = None
        self._pool_task_ids = torch.zeros(0, dtype=torch.long)
        self._pool_cells = torch.zeros(0, num_colours + num_walls + 1, dtype=torch.long)
        self._pool_next = 0
        self.num_envs, self.size, self.num_colours, self.num_walls = num_envs, size, num_colours, num_walls
        self.horizon, self.require_solvable, self.autoreset = horizon, require_solvable, autoreset
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        tasks = get_task_set(grid_task_sets(spec), task_set)
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
        # Flat-index helpers: per-step lookups are 1-D index_selects (2-D indexing, gather and
        # take cost several times more per call on the CPU).
        self._table_flat = self.table.reshape(-1)
        self._cell_rows = torch.arange(n, **long) * c
        self._agent_slots = torch.arange(n, **long) * self.obs_dim + self.channels - 1
        self._agent_off, self._agent_on = (
            torch.zeros(n, device=self.device),
            torch.ones(n, device=self.device),
        )
        self._colour_ids = torch.arange(num_colours, **long)
        # channel of each of the 13 placed things: colours, walls, then the agent
        self._channel_of = torch.arange(self.channels, **long)
        self._stride = _check_bits(size)
        cell_ids = torch.arange(c, **long)
        rows, cols = cell_ids // size, cell_ids % size
        self._bits = torch.ones(c, **long) << (rows * self._stride + cols)
        self._board = int(self._bits.sum())
        self._bits_host = self._bits.cpu()

    # -- layouts ---------------------------------------------------------------------------
    def _draw_cells(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """(count, 13) distinct cells: colours, walls, then the agent."""
        keys = torch.rand(count, self.num_cells, generator=generator, device=self.device)
        if self._fixed_colours is None:
            return smallest_cells(keys, self.channels)
        # Fixed colours: keys above 1 keep their cells out of the draw for walls and agent.
        keys[:, self._fixed_colours] = 2.0
        rest = smallest_cells(keys, self.channels - self.num_colours)
        return torch.cat([self._fixed_colours.expand(count, -1), rest], 1)

    def _draw_solvable(self, task_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(len(task_ids), 13) cells, redrawing rows whose task does not fit the horizon.

        Draws ``rand`` for the rows still pending in each round, in row order: the same random
        stream, hence the same layouts, as placing and checking every round's draw.
        """
        cells = self._draw_cells(len(task_ids), generator)
        if not self.require_solvable:
            return cells
        tasks = self.tasks.index_select(0, task_ids)
        pending = torch.arange(len(task_ids), device=self.device)
        drawn = cells
        for draw in range(1, self.max_draws + 1):
            rejected = (self._task_lengths(drawn, tasks) > self.horizon).nonzero().squeeze(1)
            if not len(rejected):
                return cells
            if draw == self.max_draws:
                break
            pending, tasks = pending.index_select(0, rejected), tasks.index_select(0, rejected)
            drawn = self._draw_cells(len(pending), generator)
            cells.index_copy_(0, pending, drawn)
        raise RuntimeError(f"no solvable layout within horizon {self.horizon} in {self.max_draws} draws")

    def _place(self, ids: torch.Tensor, cells: torch.Tensor) -> None:
        """Lay out envs ``ids`` from (len(ids), 13) cells: colours, walls, then the agent.

        Only the old layout's entries are cleared (the lookup tables and the observation always
        mirror ``colour_cells``, ``wall_cells`` and ``agent``): rewriting whole 49- and 637-wide
        rows would cost more than the rest of a reset.
        """
        o, w = self.num_colours, self.num_walls
        colours, walls, agent = cells[:, :o], cells[:, o : o + w], cells[:, -1]
        old = torch.cat(
            [
                x.index_select(0, ids).view(len(ids), -1)
                for x in (self.colour_cells, self.wall_cells, self.agent)
            ],
            1,
        )
        # positions on the flat (env, cell) boards; the observation's are board * channels + channel
        board = (ids * self.num_cells)[:, None]
        old, new = board + old, board + cells
        colour_at, wall = self.colour_at.view(-1), self.wall.view(-1)
        colour_at.index_fill_(0, old[:, :o].reshape(-1), -1)
        colour_at.index_copy_(0, new[:, :o].reshape(-1), self._colour_ids.expand_as(colours).reshape(-1))
        wall.index_fill_(0, old[:, o : o + w].reshape(-1), False)
        wall.index_fill_(0, new[:, o : o + w].reshape(-1), True)
        if self.layout_pool != 0:  # a drawing helper's envs are never observed
            obs = self._obs.view(-1)
            obs.index_fill_(0, (old * self.channels + self._channel_of).view(-1), 0.0)
            obs.index_fill_(0, (new * self.channels + self._channel_of).view(-1), 1.0)
        # lets cached per-layout data (the expert's fields) notice resets
        self.layout_version.index_add_(0, ids, torch.ones_like(ids))
        self.colour_cells.index_copy_(0, ids, colours)
        self.wall_cells.index_copy_(0, ids, walls)
        self.agent.index_copy_(0, ids, agent)
        self.start.index_copy_(0, ids, agent)

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
        if env_ids is None:
            ids = torch.arange(self.num_envs, device=self.device)
        else:
            ids = env_ids.to(self.device, torch.long)
        cells = None
        if task_ids is None and layouts is None and self.require_solvable and self.layout_pool > 0:
            task_ids, cells = self._from_pool(len(ids))
        if task_ids is None:
            task_ids = torch.randint(
                len(self.tasks), (len(ids),), generator=self.generator, device=self.device
            )
        task_ids = task_ids.to(self.device, torch.long)
        self.task_ids.index_copy_(0, ids, task_ids)
        self._task_length.index_copy_(0, ids, self.task_lengths[task_ids])
        self.progress.index_fill_(0, ids, 0)
        self.t.index_fill_(0, ids, 0)
        if layouts is not None:

            def as_t(key: str) -> torch.Tensor:
                value = layouts[key]
                if torch.is_tensor(value):
                    return value.to(self.device, torch.long)
                return torch.as_tensor(np.asarray(value), dtype=torch.long, device=self.device)

            agent = as_t("agent_cell").reshape(-1, 1)
            cells = torch.cat([as_t("colour_cells"), as_t("wall_cells"), agent], 1)
        elif cells is None:
            cells = self._draw_solvable(task_ids, self.generator)
        self._place(ids, cells)
        return self.observe()

    def _from_pool(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        while count > 0:
            if self._pool_generator is None:
                seed = int(torch.randint(2**62, (1,), generator=self.generator, device=self.device))
                self._pool_generator = torch.Generator(device=self.device).manual_seed(seed)
                self._pool_next = self.layout_pool
            if self._pool_next >= self.layout_pool:
                self._pool_task_ids = torch.randint(
                    len(self.tasks), (self.layout_pool,), generator=self._pool_generator, device=self.device
                )
                self._pool_cells = self._draw_solvable(self._pool_task_ids, self._pool_generator)
                self._pool_next = 0
            take = slice(self._pool_next, min(self._pool_next + count, self.layout_pool))
            parts.append((self._pool_task_ids[take], self._pool_cells[take]))
            count -= take.stop - take.start
            self._pool_next = take.stop
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

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
        """Fewest moves solving each env's whole task from its start (>= ``UNREACHABLE`` if impossible)."""
        return self.task_lengths_of(
            self.colour_cells[ids], self.wall_cells[ids], self.start[ids], self.tasks[self.task_ids[ids]]
        )

    def task_lengths_of(
        self,
        colour_cells: torch.Tensor,
        wall_cells: torch.Tensor,
        start: torch.Tensor,
        tasks: torch.Tensor,
        check_every: int = 8,
    ) -> torch.Tensor:
        """Fewest moves solving ``tasks`` ((n, L) colours, -1 padded) on the given layouts.

        Breadth-first search on cell bitmasks held in int64, every leg of every layout at once
        (after each colour the agent stands on it, so the legs are independent). One search
        step is four shifts, five bitwise ops and an add on a vector; every ``check_every``
        steps (the only host syncs) the legs that reached their colour or ran out of cells are
        dropped, so the rare long legs do not keep the whole batch busy.
        """
        cells = torch.cat([colour_cells, wall_cells, start.reshape(-1, 1)], 1)
        return self._task_lengths(cells, tasks, check_every)

    def _task_lengths(self, cells: torch.Tensor, tasks: torch.Tensor, check_every: int = 8) -> torch.Tensor:
        """:meth:`task_lengths_of` on (n, 13) cells: colours, walls, then the start."""
        stride = self._stride
        n, legs_per_task = tasks.shape
        if cells.device.type != "cpu" and n * legs_per_task <= self.host_search_max_legs:
            # On a GPU each search step is a dozen kernel launches whatever the batch size: the
            # small rejection rounds are cheaper searched on the host (one copy each way).
            return self._task_lengths(cells.cpu(), tasks.cpu(), check_every).to(cells.device)
        active = tasks >= 0
        bit = (self._bits_host if cells.device.type == "cpu" else self._bits).take(cells)
        empty = self._board - bit[:, :-1].sum(1)  # distinct bits: subtracting them clears them
        target = bit.gather(1, tasks.clamp(min=0))  # colour k is column k
        origin = torch.cat([bit[:, -1:], target[:, :-1]], 1)
        # Cells a leg may still enter: empty ones and its target, not the one it starts on.
        free = (empty[:, None] & ~origin) | target
        lengths = torch.where(active, UNREACHABLE, 0).view(-1)
        leg = active.view(-1).nonzero().squeeze(1)
        frontier, free, target = (x.view(-1).index_select(0, leg) for x in (origin, free, target))
        searched = (frontier, free, target, leg, lengths)
        if lengths.device.type == "cpu":
            # numpy shares the memory and costs ~1 us per op instead of torch's ~5: the search is
            # dozens of ops on small vectors, and the rejection rounds' vectors are tiny
            searched = tuple(x.numpy() for x in searched)
        _search_legs(*searched, stride, self.num_cells + 1, check_every)
        return lengths.view(n, legs_per_task).sum(1).clamp(max=UNREACHABLE)

    # -- dynamics --------------------------------------------------------------------------
    def next_colours(self) -> torch.Tensor:
        """(N,) colour each env must enter next (-1 once its task is done)."""
        index = self.task_ids * self.tasks.shape[1] + self.progress.clamp(max=self.tasks.shape[1] - 1)
        return torch.where(self.progress < self._task_length, self._task_flat.index_select(0, index), -1)

    def _info(self) -> dict[str, torch.Tensor]:
        nxt = self.next_colours()
        return {
            "task_id": self.task_ids.clone(),
            "subgoal": nxt // self._per_subgoal,  # floor division keeps the -1 of a finished task
            "next_colour": nxt,
            "colours_visited": self.progress.clone(),
            "subgoals_completed": self.progress // self._per_subgoal,
            "success": self.progress >= self._task_length,
        }

    def step(self, actions: torch.Tensor):
        actions = actions.to(self.device, torch.long)
        target = self.next_colours()
        agent, rows = self.agent, self._cell_rows
        # 1-D index_select: several times cheaper on CPU than 2-D indexing, gather or take
        nxt = self._table_flat.index_select(0, agent * 4 + actions)
        cell = rows + nxt
        nxt = torch.where(self.wall.view(-1).index_select(0, cell), agent, nxt)
        moved = nxt != agent
        flat = self._obs.view(-1)
        # scatter_ from a tensor: as fast as index_fill_ on one thread, and not split across
        # threads (on a busy machine a split op can wait a whole time slice for its other half)
        flat.scatter_(0, self._agent_slots + agent * self.channels, self._agent_off)
        flat.scatter_(0, self._agent_slots + nxt * self.channels, self._agent_on)
        self.agent = nxt
        self.t += 1
        # the colour where the move would lead: a blocked move does not count anyway
        colour = self.colour_at.view(-1).index_select(0, cell)
        entered = moved & (colour >= 0)
        correct = entered & (colour == target)
        self.progress += correct
        success = correct & (self.progress == self._task_length)
        wrong = entered ^ correct
        terminated = success | wrong
        truncated = (self.t >= self.horizon) & ~terminated
        # the three causes exclude each other: 1 success, 2 wrong colour, 3 timeout, else 0
        cause = success.long() + 2 * wrong + 3 * truncated
        obs = self.observe()
        info = self._info()
        info["termination_cause"] = cause
        if self.autoreset:
            done = (terminated | truncated).nonzero().squeeze(1)
            info["final_env_ids"] = done
            info["final_obs"] = obs.index_select(0, done)
            if len(done):
                obs = self.reset(done)
        return obs, success.float(), terminated, truncated, info


class BatchedGridExpert:
    """The shortest-path DP expert of :class:`internal_rl.experts.GridExpert`, for a batched env.

    ``ties="random"`` (the paper's stochastic shortest-path expert) draws uniformly among tied
    optimal moves; ``"first"`` takes the first of them (up, right, down, left), so that given its
    next colour the expert's moves are determined: the only choice left in the data is the subgoal.
    """

    def __init__(self, env: BatchedGridPinpad, *, epsilon: float = 0.0, seed: int = 0, ties: str = "random"):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        if ties not in ("random", "first"):
            raise ValueError(f"ties must be 'random' or 'first', got {ties!r}")
        self.env, self.epsilon, self.ties = env, epsilon, ties
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
        if self.ties == "first":  # argmin returns the first tied move: up, right, down, left
            actions = costs.argmin(dim=1)
        else:
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
    ties: str = "random",
    **env_kwargs: Any,
):
    """Expert episodes from the batched env, ``num_envs`` fresh episodes per wave (``ties``: see
    :class:`BatchedGridExpert`)."""
    from internal_rl.data import Trajectories
    from internal_rl.envs import GRID_ID

    num_envs = max(1, min(num_envs, num_episodes))
    env = BatchedGridPinpad(num_envs, task_set, device=device, seed=seed, **env_kwargs)
    expert = BatchedGridExpert(env, epsilon=epsilon, seed=seed + 1, ties=ties)
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
