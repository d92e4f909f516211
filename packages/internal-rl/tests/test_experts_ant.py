"""Ant experts: the direction hint, the velocity-alignment reward, a few PPO updates, the controller."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import json

import numpy as np
import torch

from internal_rl.ant_controller import GaitMPCController
from internal_rl.ant_expert import (
    AntExpertConfig,
    DirectionHintWrapper,
    direction_hint,
    load_ant_expert,
    train_ant_expert,
)
from internal_rl.data import Trajectories, generate_trajectories
from internal_rl.envs import ANT_ID
from internal_rl.envs.ant import AntPinpadEnv
from internal_rl.envs.grid import GridLayout

# Colour 0 at cell 3 (top right), the wall at cell 1 (top row): from cell 0 the path goes down, around.
LAYOUT = GridLayout(colour_cells=np.array([3, 12, 14, 15]), wall_cells=np.array([1]), agent_cell=0)


def test_direction_hint_follows_the_grid_shortest_path():
    env = AntPinpadEnv()
    env.reset(seed=0, options={"task_id": 0, "layout": LAYOUT, "start_xy": env.cell_centre(0)})
    assert env.task[0] == 0
    assert direction_hint(env).tolist() == [0, 0, 1, 0]  # down: right is the wall
    qpos = env.data.qpos.copy()
    qpos[:2] = env.cell_centre(7)  # just below colour 0
    env.set_state(qpos, env.data.qvel)
    env.cell = env.cell_of(env.torso_xy)
    assert direction_hint(env).tolist() == [1, 0, 0, 0]  # up
    env.close()


def test_velocity_alignment_reward_has_the_sign_of_the_motion():
    env = DirectionHintWrapper(AntPinpadEnv(), velocity_reward_coef=1.0)
    obs, _ = env.reset(seed=0, options={"task_id": 0, "layout": LAYOUT, "start_xy": np.array([-3.0, 3.0])})
    assert obs.shape == (45,) and obs[-4:].tolist() == [0, 0, 1, 0]
    base = env.unwrapped
    qpos, qvel = base.data.qpos.copy(), np.zeros_like(base.data.qvel)
    qvel[1] = -1.0  # moving down (-y), the hinted direction
    base.set_state(qpos, qvel)
    _, _, _, _, info = env.step(np.zeros(8))
    assert info["intrinsic_reward"] > 0.1
    qvel[1] = 1.0
    base.set_state(base.data.qpos.copy(), qvel)
    _, _, _, _, info = env.step(np.zeros(8))
    assert info["intrinsic_reward"] < -0.1
    env.close()


def test_ppo_trainer_runs_updates_checkpoints_and_loads(tmp_path):
    config = AntExpertConfig.tiny()
    config.runs_root = str(tmp_path)
    config.num_updates = 3
    torch.manual_seed(0)
    run_dir = train_ant_expert(config)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["losses/value_loss"]) for r in rows)
    policy = load_ant_expert(run_dir)
    fresh = type(policy)(45, 8, config.width, config.depth)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(policy.state_dict().values(), fresh.state_dict().values(), strict=True)
    )
    # the trained expert drives data generation; stored observations are the plain (hint-free) ones
    data = generate_trajectories(ANT_ID, num_episodes=2, seed=0, expert=run_dir, env_kwargs={"horizon": 15})
    assert (
        data.observations.shape[-1] == 41
        and data.actions.shape[-1] == 8
        and data.actions.dtype == torch.float32
    )
    assert (data.lengths <= 15).all() and (data.subgoals[data.step_mask()] >= 0).all()
    assert (data.actions.abs() <= 1).all()
    data.save(tmp_path / "ant")
    assert torch.equal(Trajectories.load(tmp_path / "ant").actions, data.actions)


def test_controller_walks_towards_its_waypoint():
    env = AntPinpadEnv()
    env.reset(seed=0, options={"task_id": 0, "layout": LAYOUT, "start_xy": env.cell_centre(0), "yaw": 0.0})
    controller = GaitMPCController(env, seed=0, num_candidates=8, plan_horizon=15)
    goal = controller.waypoint()
    assert np.allclose(goal, env.cell_centre(4))
    before = np.linalg.norm(goal - env.torso_xy)
    for _ in range(40):
        _, _, terminated, _, info = env.step(controller.act())
        assert not terminated, info["termination_cause"]
    assert np.linalg.norm(goal - env.torso_xy) < before - 0.3
    env.close()


def test_controller_generates_ant_data_by_default():
    data = generate_trajectories(ANT_ID, "posttrain", num_episodes=2, seed=3, env_kwargs={"horizon": 12})
    assert data.actions.shape[0] == 2 and data.actions.shape[-1] == 8 and data.observations.shape[-1] == 41
    assert (data.lengths <= 12).all() and set(data.layouts) >= {"colour_cells", "wall_cells", "start_xy"}
    assert (data.subgoals[:, 0] == 0).all()  # the post-training task starts with colour 0
