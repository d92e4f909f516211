"""Ant-pinpad (paper App. A.2): the MuJoCo ant must walk onto coloured floor cells in order.

A 4x4 grid of ``cell_size`` metre cells holds 4 colours and 1 wall cell. The episode ends
when the torso centre enters the wall cell ("wall"), when the torso height leaves
[0.2, 1.0] ("fell"), on entering a colour that is not the next one ("wrong_colour"), on
success (reward 1) or after 500 steps ("timeout", truncation).

Observation (float32): symlog of the ant's proprioception (``qpos[2:]``, ``qvel``: 27),
the torso's global x, y divided by the arena half-width (2), each colour cell's and wall
cell's centre relative to the torso, in the same units (2 * (4 + 1)), and the torso's
position inside its current cell scaled to [-1, 1] (2): 41 values with the defaults.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from internal_rl.envs.ant_xml import TILE_RGBA, ant_pinpad_xml
from internal_rl.envs.grid import PALETTE, GridLayout, sample_layout
from internal_rl.envs.tasks import ANT_TASK_SETS, Task, get_task_set

# Grid action k moves by (d_row, d_col) = MOVES[k]; rows grow towards -y, so in the world:
DIRECTIONS = np.array([(0.0, 1.0), (1.0, 0.0), (0.0, -1.0), (-1.0, 0.0)])


def symlog(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


class AntPinpadEnv(AntEnv):
    """Gymnasium's Ant-v5 robot with the pinpad task layer; ``info`` mirrors the grid env's."""

    def __init__(
        self,
        task_set: str = "pretrain",
        *,
        grid_size: int = 4,
        num_colours: int = 4,
        num_walls: int = 1,
        cell_size: float = 2.0,
        horizon: int = 500,
        frame_skip: int = 5,
        healthy_z_range: tuple[float, float] = (0.2, 1.0),
        reset_noise_scale: float = 0.1,
        require_solvable: bool = True,
        render_mode: str | None = None,
        width: int = 240,
        height: int = 240,
    ):
        self.task_set = task_set
        self.tasks = get_task_set(ANT_TASK_SETS, task_set)
        if num_colours + num_walls + 1 > grid_size * grid_size:
            raise ValueError(
                f"{num_colours} colours + {num_walls} walls + start do not fit a {grid_size}^2 grid"
            )
        self.grid_size, self.num_colours, self.num_walls = grid_size, num_colours, num_walls
        self.cell_size, self.horizon, self.require_solvable = cell_size, horizon, require_solvable
        self.half = grid_size * cell_size / 2
        fd, path = tempfile.mkstemp(suffix=".xml", prefix="ant_pinpad_")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(ant_pinpad_xml(grid_size, cell_size, num_walls))
            super().__init__(
                xml_file=path,
                frame_skip=frame_skip,
                healthy_z_range=healthy_z_range,
                reset_noise_scale=reset_noise_scale,
                include_cfrc_ext_in_observation=False,
                render_mode=render_mode,
                width=width,
                height=height,
                camera_name="overview",
                default_camera_config=None,
            )
        finally:
            os.unlink(path)
        self._tile_ids = [self.model.geom(f"tile_{k}").id for k in range(grid_size * grid_size)]
        self._wall_ids = [self.model.geom(f"wall_{k}").id for k in range(num_walls)]
        self._tile_rgba = np.array([float(v) for v in TILE_RGBA.split()])
        obs_dim = 27 + 2 + 2 * (num_colours + num_walls) + 2
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float32)
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": int(np.round(1.0 / self.dt))}
        self.layout: GridLayout | None = None
        self.task: Task = self.tasks[0]
        self.task_id, self.progress, self.t, self.cell = 0, 0, 0, 0
        self._options: dict[str, Any] = {}

    # -- geometry --------------------------------------------------------------------------
    def cell_centre(self, cell: int | np.ndarray) -> np.ndarray:
        row, col = np.divmod(np.asarray(cell), self.grid_size)
        return np.stack(
            [(col + 0.5) * self.cell_size - self.half, self.half - (row + 0.5) * self.cell_size], -1
        )

    def cell_of(self, xy: np.ndarray) -> int:
        col = int(np.clip((xy[0] + self.half) // self.cell_size, 0, self.grid_size - 1))
        row = int(np.clip((self.half - xy[1]) // self.cell_size, 0, self.grid_size - 1))
        return row * self.grid_size + col

    @property
    def torso_xy(self) -> np.ndarray:
        return self.data.qpos[:2].copy()

    # -- gymnasium API ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._options = options or {}
        return super().reset(seed=seed, options=options)

    def reset_model(self) -> np.ndarray:
        rng = self.np_random
        self.task_id = int(self._options.get("task_id", rng.integers(len(self.tasks))))
        self.task = self.tasks[self.task_id]
        layout = self._options.get("layout")
        if layout is None:
            layout = sample_layout(
                rng,
                self.task,
                size=self.grid_size,
                num_colours=self.num_colours,
                num_walls=self.num_walls,
                horizon=self.horizon,
                require_solvable=self.require_solvable,
            )
        self.layout = layout
        for tile in self._tile_ids:
            self.model.geom_rgba[tile] = self._tile_rgba
        for colour, cell in enumerate(layout.colour_cells):
            self.model.geom_rgba[self._tile_ids[cell], :3] = PALETTE[colour] / 255.0
        for k, cell in enumerate(layout.wall_cells):
            self.model.geom_pos[self._wall_ids[k], :2] = self.cell_centre(cell)
        # Torso anywhere inside the start cell, random yaw, joints and velocities within +-noise.
        noise = self._reset_noise_scale
        qpos = self.init_qpos + rng.uniform(-noise, noise, size=self.model.nq)
        qvel = self.init_qvel + rng.uniform(-noise, noise, size=self.model.nv)
        start = self._options.get("start_xy")
        if start is None:
            start = self.cell_centre(layout.agent_cell) + rng.uniform(-0.5, 0.5, 2) * self.cell_size * 0.9
        yaw = float(self._options.get("yaw", rng.uniform(-np.pi, np.pi)))
        qpos[:2] = start
        qpos[2] = self.init_qpos[2]
        qpos[3:7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        self.set_state(qpos, qvel)
        self.progress, self.t = 0, 0
        self.cell = self.cell_of(self.torso_xy)
        return self._get_obs()

    def _get_obs(self) -> np.ndarray:
        assert self.layout is not None
        xy = self.torso_xy
        proprio = symlog(np.concatenate([self.data.qpos[2:], self.data.qvel]))
        targets = self.cell_centre(np.concatenate([self.layout.colour_cells, self.layout.wall_cells]))
        relative = (targets - xy) / self.half
        local = (xy - self.cell_centre(self.cell_of(xy))) / (self.cell_size / 2)
        return np.concatenate([proprio, xy / self.half, relative.reshape(-1), local]).astype(np.float32)

    def _info(self, cause: str = "") -> dict[str, Any]:
        done = self.progress >= len(self.task)
        return {
            "task_id": self.task_id,
            "subgoal": -1 if done else self.task[self.progress],
            "next_colour": -1 if done else self.task[self.progress],
            "colours_visited": self.progress,
            "subgoals_completed": self.progress,
            "success": bool(done),
            "termination_cause": cause,
            "cell": self.cell,
            "x_position": float(self.data.qpos[0]),
            "y_position": float(self.data.qpos[1]),
        }

    def _get_reset_info(self) -> dict[str, Any]:
        assert self.layout is not None
        info = self._info()
        info.update(
            colour_cells=self.layout.colour_cells.copy(),
            wall_cells=self.layout.wall_cells.copy(),
            agent_cell=int(self.layout.agent_cell),
        )
        return info

    def step(self, action):
        if self.layout is None:
            raise RuntimeError("call reset() before step()")
        xy_before = self.torso_xy
        self.do_simulation(np.asarray(action, dtype=np.float64), self.frame_skip)
        self.t += 1
        cell = self.cell_of(self.torso_xy)
        moved, self.cell = cell != self.cell, cell
        reward, terminated, truncated, cause = 0.0, False, False, ""
        colour = np.flatnonzero(self.layout.colour_cells == cell)
        if cell in self.layout.wall_cells:
            terminated, cause = True, "wall"
        elif not self.is_healthy:
            terminated, cause = True, "fell"
        elif moved and len(colour):
            if int(colour[0]) == self.task[self.progress]:
                self.progress += 1
                if self.progress == len(self.task):
                    reward, terminated, cause = 1.0, True, "success"
            else:
                terminated, cause = True, "wrong_colour"
        if not terminated and self.t >= self.horizon:
            truncated, cause = True, "timeout"
        info = self._info(cause)
        info["velocity"] = (self.torso_xy - xy_before) / self.dt
        return self._get_obs(), reward, terminated, truncated, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return super().render()
