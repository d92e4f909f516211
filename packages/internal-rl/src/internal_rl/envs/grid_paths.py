"""Shortest paths on the pinpad grid, shared by layout sampling and the DP expert.

Entering a colour that is not the next one ends the episode, so every colour cell except the
target is an obstacle, like the walls. Bumping into a wall or the border is a no-op, and a
colour counts only when entered from another cell, which is why "cost to go" is measured
from the agent's cell by taking at least one real move.
"""

from __future__ import annotations

from collections import deque

import numpy as np

# Action k moves by MOVES[k] = (d_row, d_col): up, right, down, left.
MOVES = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)], dtype=np.int64)
UNREACHABLE = 10**6


def neighbour_table(size: int) -> np.ndarray:
    """``table[cell, action]``: the cell a move leads to on an empty grid (itself at the border)."""
    rows, cols = np.divmod(np.arange(size * size), size)
    table = np.empty((size * size, len(MOVES)), dtype=np.int64)
    for a, (dr, dc) in enumerate(MOVES):
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
        table[:, a] = np.where(inside, r * size + c, np.arange(size * size))
    return table


def distance_to(target: int, blocked: np.ndarray, table: np.ndarray) -> np.ndarray:
    """BFS moves from every cell to ``target`` through unblocked cells (``UNREACHABLE`` if none).

    ``blocked`` marks walls and forbidden colours; the target itself is never blocked.
    """
    dist = np.full(len(blocked), UNREACHABLE, dtype=np.int64)
    dist[target] = 0
    queue = deque([target])
    while queue:
        cell = queue.popleft()
        # Moves are symmetric, so the cells that reach ``cell`` in one move are its neighbours.
        for nxt in table[cell]:
            if nxt != cell and not blocked[nxt] and dist[nxt] == UNREACHABLE:
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    return dist


def action_costs(cell: int, dist: np.ndarray, blocked: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Moves to reach the target when taking each action first; no-ops and forbidden moves cost ``UNREACHABLE``."""
    nxt = table[cell]
    ok = (nxt != cell) & ~blocked[nxt]
    return np.where(ok, 1 + dist[nxt], UNREACHABLE)


def blocked_cells(
    colour_cells: np.ndarray, wall_cells: np.ndarray, target_colour: int, num_cells: int
) -> np.ndarray:
    """Walls and every colour cell other than the target's."""
    blocked = np.zeros(num_cells, dtype=bool)
    blocked[wall_cells] = True
    blocked[colour_cells] = True
    blocked[colour_cells[target_colour]] = False
    return blocked


def shortest_task_length(
    colour_cells: np.ndarray, wall_cells: np.ndarray, agent_cell: int, task: tuple[int, ...], size: int
) -> int:
    """Fewest moves that visit ``task``'s colours in order (``UNREACHABLE`` if impossible).

    Greedy per colour is optimal: after each visit the agent stands on that colour's cell
    whatever route it took, so the legs are independent.
    """
    table = neighbour_table(size)
    total, cell = 0, agent_cell
    for colour in task:
        blocked = blocked_cells(colour_cells, wall_cells, colour, size * size)
        dist = distance_to(int(colour_cells[colour]), blocked, table)
        leg = int(action_costs(cell, dist, blocked, table).min())
        if leg >= UNREACHABLE:
            return UNREACHABLE
        total += leg
        cell = int(colour_cells[colour])
    return total
