"""Ant-pinpad: gymnasium contract, terminations (fall, wall, colours) and headless rendering."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("MUJOCO_GL", "egl")  # headless; must be set before mujoco creates a context

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from internal_rl.envs import ANT_ID, register_envs
from internal_rl.envs.ant import AntPinpadEnv
from internal_rl.envs.grid import GridLayout

register_envs()

# 4x4 cells of 2 m: colours 0..3 on the top row, the wall at row 2 col 0, start at row 1 col 0.
LAYOUT = GridLayout(colour_cells=np.array([0, 1, 2, 3]), wall_cells=np.array([8]), agent_cell=4)


def teleport(env: AntPinpadEnv, cell: int) -> None:
    qpos, qvel = env.data.qpos.copy(), env.data.qvel.copy()
    qpos[:2] = env.cell_centre(cell)
    env.set_state(qpos, qvel * 0)


@pytest.fixture
def env():
    e = AntPinpadEnv(task_set="posttrain")
    e.reset(seed=0, options={"task_id": 0, "layout": LAYOUT, "start_xy": e.cell_centre(4)})
    yield e
    e.close()


@pytest.mark.parametrize("task_set", ["pretrain", "posttrain"])
def test_check_env_passes(task_set):
    e = gym.make(ANT_ID, task_set=task_set)
    check_env(e.unwrapped, skip_render_check=True)
    obs, info = e.reset(seed=1)
    assert obs.shape == (41,) and obs.dtype == np.float32 and np.isfinite(obs).all()
    cells = np.concatenate([info["colour_cells"], info["wall_cells"], [info["agent_cell"]]])
    assert len(set(cells.tolist())) == 6 and info["cell"] == info["agent_cell"]
    e.close()


def test_observation_parts(env):
    obs = env._get_obs()
    xy = env.data.qpos[:2]
    assert np.allclose(obs[27:29], xy / 4.0, atol=1e-6)
    # colour 0 at cell 0, centre (-3, 3): relative position in arena half-widths
    assert np.allclose(obs[29:31], (np.array([-3.0, 3.0]) - xy) / 4.0, atol=1e-6)
    assert np.all(np.abs(obs[-2:]) <= 1.0)


def test_terminates_when_the_torso_leaves_the_height_range(env):
    _, _, terminated, _, _ = env.step(np.zeros(8))
    assert not terminated  # resting on its legs is healthy
    qpos = env.data.qpos.copy()
    qpos[2] = 1.5  # thrown above the healthy range [0.2, 1.0]
    env.set_state(qpos, env.data.qvel * 0)
    _, reward, terminated, truncated, info = env.step(np.zeros(8))
    assert terminated and not truncated and reward == 0 and info["termination_cause"] == "fell"


def test_terminates_when_entering_the_wall_cell(env):
    teleport(env, 8)
    _, _, terminated, _, info = env.step(np.zeros(8))
    assert terminated and info["termination_cause"] == "wall"


def test_colours_in_order_succeed_and_wrong_colour_fails(env):
    for k, cell in enumerate([0, 1, 2]):
        teleport(env, cell)
        _, reward, terminated, _, info = env.step(np.zeros(8))
        assert not terminated and info["colours_visited"] == k + 1 and info["subgoal"] == k + 1
    teleport(env, 7)  # an empty cell, then the last colour
    env.step(np.zeros(8))
    teleport(env, 3)
    _, reward, terminated, _, info = env.step(np.zeros(8))
    assert terminated and reward == 1.0 and info["success"] and info["termination_cause"] == "success"

    env.reset(seed=0, options={"task_id": 0, "layout": LAYOUT, "start_xy": env.cell_centre(4)})
    teleport(env, 2)  # colour 2 while 0 is next
    _, reward, terminated, _, info = env.step(np.zeros(8))
    assert terminated and reward == 0 and info["termination_cause"] == "wrong_colour"


def test_standing_still_times_out_as_truncation():
    e = AntPinpadEnv(horizon=20)
    e.reset(seed=0)
    for _ in range(20):
        _, _, terminated, truncated, info = e.step(np.zeros(8))
    assert truncated and not terminated and info["termination_cause"] == "timeout"


def test_sync_vector_env_runs():
    envs = gym.make_vec(ANT_ID, num_envs=2, vectorization_mode="sync")
    obs, _ = envs.reset(seed=0)
    for _ in range(5):
        obs, *_ = envs.step(envs.action_space.sample())
    assert obs.shape == (2, 41)
    envs.close()


RENDER_SCRIPT = """
import sys
import numpy as np
from internal_rl.envs.ant import AntPinpadEnv
from internal_rl.envs.grid import GridLayout
env = AntPinpadEnv(render_mode="rgb_array", width=64, height=64)
env.reset(seed=0, options={"layout": GridLayout(np.array([0, 1, 2, 3]), np.array([8]), 4)})
frame = env.render()
env.close()
np.save(sys.argv[1], frame)
"""


def test_renders_rgb_array_headless(tmp_path):
    # A subprocess: Mesa's software EGL loads its own LLVM, which can crash a later triton import
    # in the same process (see the README's rendering note).
    out = tmp_path / "frame.npy"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run(
        [sys.executable, "-c", RENDER_SCRIPT, str(out)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0 and ("EGL" in proc.stderr or "OSMesa" in proc.stderr or "GL" in proc.stderr):
        pytest.skip(
            f"MuJoCo offscreen rendering unavailable; install libegl1 libgl1-mesa-dri: {proc.stderr[-300:]}"
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    frame = np.load(out)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    # the red tile of colour 0 (top-left cell) shows up in the top-left of the top-down view
    corner = frame[4:14, 4:14].reshape(-1, 3).mean(0)
    assert corner[0] > corner[1] + 50
