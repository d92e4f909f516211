"""Gridworld-pinpad (paper App. A.1) as a gymnasium environment.

A 7x7 grid holds 8 uniquely coloured cells, 4 walls and the agent, placed at random without
overlap every episode. The agent must enter colours in the task's order within 100 steps;
entering any other colour ends the episode as a failure. The reward is 1 only on completing
the whole task. The observation is a per-cell one-hot over (8 colours, 4 walls, agent):
7 * 7 * 13 = 637 values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from internal_rl.envs.grid_paths import UNREACHABLE, neighbour_table, shortest_task_length
from internal_rl.envs.tasks import GridSpec, Task, get_grid_spec, get_task_set, grid_task_sets

PALETTE = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
    ],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class GridLayout:
    """Where everything is: cell indices ``row * size + col``."""

    colour_cells: np.ndarray  # (num_colours,) cell of colour k
    wall_cells: np.ndarray  # (num_walls,) cell of wall k (each wall has its own one-hot channel)
    agent_cell: int


def sample_layout(
    rng: np.random.Generator,
    task: Task,
    *,
    size: int = 7,
    num_colours: int = 8,
    num_walls: int = 4,
    horizon: int = 100,
    require_solvable: bool = True,
    max_tries: int = 1000,
    colour_cells: Sequence[int] | None = None,
) -> GridLayout:
    """Draw distinct cells for colours, walls and agent; optionally redraw until ``task`` fits in ``horizon``.

    With ``colour_cells`` the colours stay on those cells and only walls and agent are drawn.
    """
    for _ in range(max_tries):
        if colour_cells is None:
            cells = rng.permutation(size * size)[: num_colours + num_walls + 1]
        else:
            free = np.setdiff1d(np.arange(size * size), np.asarray(colour_cells))
            cells = np.concatenate([np.asarray(colour_cells), rng.permutation(free)[: num_walls + 1]])
        layout = GridLayout(
            colour_cells=cells[:num_colours].astype(np.int64),
            wall_cells=cells[num_colours : num_colours + num_walls].astype(np.int64),
            agent_cell=int(cells[-1]),
        )
        if not require_solvable:
            return layout
        moves = shortest_task_length(layout.colour_cells, layout.wall_cells, layout.agent_cell, task, size)
        if moves <= horizon:
            return layout
    raise RuntimeError(f"no solvable layout for task {task} in {max_tries} draws")


def observe(layout: GridLayout, agent_cell: int, size: int, num_colours: int, num_walls: int) -> np.ndarray:
    """The flat per-cell one-hot, cell-major: ``obs[cell * C + channel]``."""
    channels = num_colours + num_walls + 1
    grid = np.zeros((size * size, channels), dtype=np.float32)
    grid[layout.colour_cells, np.arange(num_colours)] = 1.0
    grid[layout.wall_cells, num_colours + np.arange(num_walls)] = 1.0
    grid[agent_cell, channels - 1] = 1.0
    return grid.reshape(-1)


class GridPinpadEnv(gym.Env):
    """Visit coloured cells in a task-specific order on a random 7x7 layout.

    ``reset(options={"task_id": k})`` picks task ``k`` of the task set (else uniformly at
    random); ``options={"layout": GridLayout}`` fixes the layout (tests, replays).
    ``info`` carries the pursued ``subgoal`` (colour pair, -1 once done), ``next_colour``,
    ``colours_visited``, ``subgoals_completed``, ``success`` and ``termination_cause``
    ("", "success", "wrong_colour" or "timeout").
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(
        self,
        task_set: str = "pretrain",
        *,
        variant: str | GridSpec = "paper",
        size: int | None = None,
        num_colours: int | None = None,
        num_walls: int | None = None,
        horizon: int | None = None,
        require_solvable: bool = True,
        render_mode: str | None = None,
        cell_pixels: int = 24,
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        spec = get_grid_spec(variant)
        size = spec.size if size is None else size
        num_colours = spec.num_colours if num_colours is None else num_colours
        num_walls = spec.num_walls if num_walls is None else num_walls
        horizon = spec.horizon if horizon is None else horizon
        if num_colours + num_walls + 1 > size * size:
            raise ValueError(
                f"{num_colours} colours + {num_walls} walls + agent do not fit a {size}x{size} grid"
            )
        if spec.colour_cells is not None and (size, num_colours) != (spec.size, spec.num_colours):
            raise ValueError("a variant with fixed colour_cells keeps its own size and number of colours")
        if num_colours > len(PALETTE):
            raise ValueError(f"at most {len(PALETTE)} colours can be drawn")
        self.grid_spec, self.variant = spec, variant if isinstance(variant, str) else "custom"
        self.task_set = task_set
        self.tasks = get_task_set(grid_task_sets(spec), task_set)
        if max(max(t) for t in self.tasks) >= num_colours:
            raise ValueError(f"task set {task_set!r} uses more than {num_colours} colours")
        self.size, self.num_colours, self.num_walls = size, num_colours, num_walls
        self.horizon, self.require_solvable = horizon, require_solvable
        self.render_mode, self.cell_pixels = render_mode, cell_pixels
        self.observation_space = gym.spaces.Box(
            0.0, 1.0, shape=(size * size * (num_colours + num_walls + 1),), dtype=np.float32
        )
        self.action_space = gym.spaces.Discrete(4)
        self._table = neighbour_table(size)
        self.layout: GridLayout | None = None
        self.task: Task = self.tasks[0]
        self.task_id = 0

    # -- state ---------------------------------------------------------------------------
    def _info(self, cause: str = "") -> dict[str, Any]:
        done = self.progress >= len(self.task)
        next_colour = -1 if done else self.task[self.progress]
        return {
            "task_id": self.task_id,
            "subgoal": -1 if done else self.grid_spec.subgoal_of(next_colour),
            "next_colour": next_colour,
            "colours_visited": self.progress,
            "subgoals_completed": self.progress // self.grid_spec.colours_per_subgoal,
            "success": bool(done),
            "termination_cause": cause,
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        self.task_id = int(options.get("task_id", self.np_random.integers(len(self.tasks))))
        self.task = self.tasks[self.task_id]
        layout = options.get("layout")
        if layout is None:
            layout = sample_layout(
                self.np_random,
                self.task,
                size=self.size,
                num_colours=self.num_colours,
                num_walls=self.num_walls,
                horizon=self.horizon,
                require_solvable=self.require_solvable,
                colour_cells=self.grid_spec.colour_cells,
            )
        self.layout = layout
        self.agent_cell = int(layout.agent_cell)
        self._colour_at = np.full(self.size * self.size, -1, dtype=np.int64)
        self._colour_at[layout.colour_cells] = np.arange(self.num_colours)
        self._wall = np.zeros(self.size * self.size, dtype=bool)
        self._wall[layout.wall_cells] = True
        self.progress, self.t = 0, 0
        info = self._info()
        info.update(
            colour_cells=layout.colour_cells.copy(),
            wall_cells=layout.wall_cells.copy(),
            agent_cell=self.agent_cell,
        )
        return self._observe(), info

    def _observe(self) -> np.ndarray:
        assert self.layout is not None
        return observe(self.layout, self.agent_cell, self.size, self.num_colours, self.num_walls)

    def step(self, action):
        if self.layout is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r}; expected an int in [0, 4)")
        target = int(self._table[self.agent_cell, int(action)])
        if self._wall[target]:
            target = self.agent_cell  # walls and the border are no-ops
        moved = target != self.agent_cell
        self.agent_cell = target
        self.t += 1
        reward, terminated, truncated, cause = 0.0, False, False, ""
        colour = int(self._colour_at[target])
        if moved and colour >= 0:
            if colour == self.task[self.progress]:
                self.progress += 1
                if self.progress == len(self.task):
                    reward, terminated, cause = 1.0, True, "success"
            else:
                terminated, cause = True, "wrong_colour"
        if not terminated and self.t >= self.horizon:
            truncated, cause = True, "timeout"
        return self._observe(), reward, terminated, truncated, self._info(cause)

    # -- rendering -------------------------------------------------------------------------
    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        assert self.layout is not None, "call reset() before render()"
        px, n = self.cell_pixels, self.size
        image = np.full((n * px, n * px, 3), 235, dtype=np.uint8)
        cell_colour = {int(c): PALETTE[k] for k, c in enumerate(self.layout.colour_cells)}
        cell_colour.update({int(c): np.array((70, 70, 70), np.uint8) for c in self.layout.wall_cells})
        for cell, rgb in cell_colour.items():
            r, c = divmod(cell, n)
            image[r * px : (r + 1) * px, c * px : (c + 1) * px] = rgb
        r, c = divmod(self.agent_cell, n)
        pad = px // 4
        image[r * px + pad : (r + 1) * px - pad, c * px + pad : (c + 1) * px - pad] = 0
        image[::px, :] = 200  # grid lines
        image[:, ::px] = 200
        return image

    def shortest_solution_length(self) -> int:
        """Fewest moves that solve the current task from the reset state (``UNREACHABLE`` if none)."""
        assert self.layout is not None
        return shortest_task_length(
            self.layout.colour_cells, self.layout.wall_cells, self.layout.agent_cell, self.task, self.size
        )


__all__ = ["UNREACHABLE", "GridLayout", "GridPinpadEnv", "observe", "sample_layout"]
