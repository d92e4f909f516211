"""Expert policies that produce the pretraining data (paper App. C.1.1).

Grid: the exact shortest-path policy by dynamic programming (BFS distances to the next colour
with every other colour and the walls as obstacles), choosing uniformly among tied optimal
moves; with probability ``epsilon`` per step the move is replaced by a uniformly random move
that does not end the episode (nor strand the agent: a move that leaves the next colour
unreachable, e.g. stepping off a just-visited colour that was the only bridge, is excluded). The batched version of the same expert lives in
:mod:`internal_rl.envs.grid_batched` next to the batched env whose tensors it reads.
"""

from __future__ import annotations

import numpy as np

from internal_rl.envs.grid import GridPinpadEnv
from internal_rl.envs.grid_paths import UNREACHABLE, action_costs, blocked_cells, distance_to


class GridExpert:
    """Shortest-path expert for one :class:`GridPinpadEnv` (pass the unwrapped env)."""

    def __init__(self, env: GridPinpadEnv, *, epsilon: float = 0.0, seed: int | None = None):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.env, self.epsilon = env, epsilon
        self.rng = np.random.default_rng(seed)
        self._cache: tuple[int, int, np.ndarray, np.ndarray] | None = None

    def _field(self) -> tuple[np.ndarray, np.ndarray]:
        env = self.env
        assert env.layout is not None, "reset the env first"
        key = (id(env.layout), env.progress)
        if self._cache is None or self._cache[:2] != key:
            colour = env.task[env.progress]
            n = env.size * env.size
            blocked = blocked_cells(env.layout.colour_cells, env.layout.wall_cells, colour, n)
            dist = distance_to(int(env.layout.colour_cells[colour]), blocked, env._table)
            self._cache = (*key, dist, blocked)
        return self._cache[2], self._cache[3]

    def action_costs(self) -> np.ndarray:
        """Moves to the next colour after taking each action now (``UNREACHABLE`` for no-ops and failures)."""
        dist, blocked = self._field()
        return action_costs(self.env.agent_cell, dist, blocked, self.env._table)

    def act(self) -> int:
        env = self.env
        costs = self.action_costs()
        if self.epsilon > 0 and self.rng.random() < self.epsilon:
            nxt = env._table[env.agent_cell]
            noop = (nxt == env.agent_cell) | env._wall[nxt]
            # A random move may not fail the task nor strand the agent behind the colour it stands on.
            return int(self.rng.choice(np.flatnonzero(noop | (costs < UNREACHABLE))))
        best = costs.min()
        if best >= UNREACHABLE:
            return int(self.rng.integers(4))  # unsolvable layout (require_solvable=False): any move
        return int(self.rng.choice(np.flatnonzero(costs == best)))
