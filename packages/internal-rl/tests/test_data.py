"""Expert datasets: the data contract, sharded save/load round trips and file validation."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from internal_rl.data import Trajectories, generate_trajectories, rollout_gym_grid
from internal_rl.envs import GRID_ID
from internal_rl.envs.tasks import GRID_TASK_SETS


@pytest.fixture(scope="module")
def grid_data() -> Trajectories:
    return generate_trajectories(GRID_ID, "pretrain", num_episodes=150, seed=0, num_envs=64)


def test_grid_dataset_follows_the_contract(grid_data):
    d = grid_data
    e, t = d.actions.shape
    assert e == 150 and d.observations.shape == (e, t + 1, 637) and d.observations.dtype == torch.uint8
    assert d.actions.dtype == torch.int64 and d.subgoals.shape == (e, t) and d.lengths.max() == t
    assert d.success.all()  # the epsilon=0 expert never fails
    mask = d.step_mask()
    assert ((d.actions >= 0) & (d.actions < 4))[mask].all() and (d.actions[~mask] == -1).all()
    assert (d.subgoals[~mask] == -1).all() and ((d.subgoals >= 0) & (d.subgoals < 4))[mask].all()
    # one agent one-hot in every real observation (including the final one), zeros after it
    agent = d.observations.view(e, t + 1, 49, 13)[..., 12].sum(-1)
    real_obs = torch.arange(t + 1) <= d.lengths[:, None]
    assert (agent[real_obs] == 1).all() and (agent[~real_obs] == 0).all()
    # subgoal labels follow the task's colour pairs in order, each held for a contiguous segment
    for i in range(10):
        labels = d.subgoals[i, : d.lengths[i]].tolist()
        segments = [labels[0]] + [b for a, b in itertools.pairwise(labels) if a != b]
        task = GRID_TASK_SETS["pretrain"][int(d.task_ids[i])]
        assert segments == [c // 2 for c in task[::2]]
    assert set(d.layouts) == {"colour_cells", "wall_cells", "agent_cell"}


def test_generation_is_seeded(grid_data):
    again = generate_trajectories(GRID_ID, "pretrain", num_episodes=150, seed=0, num_envs=64)
    other = generate_trajectories(GRID_ID, "pretrain", num_episodes=150, seed=1, num_envs=64)
    assert torch.equal(again.observations, grid_data.observations)
    assert not torch.equal(other.actions[:, :10], grid_data.actions[:, :10])


def test_reference_gym_rollout_has_the_same_format():
    d = rollout_gym_grid("posttrain", 5, seed=0)
    assert (
        d.observations.shape[-1] == 637
        and d.observations.dtype == torch.uint8
        and d.success.all()
        and (d.subgoals[:, 0] == 0).all()
    )


def test_save_load_round_trip_with_shards(grid_data, tmp_path):
    grid_data.save(tmp_path / "ds", shard_size=64)
    index = json.loads((tmp_path / "ds" / "index.json").read_text())
    assert [s["num_episodes"] for s in index["shards"]] == [64, 64, 22] and index["env_id"] == GRID_ID
    assert index["observations_stored_as"] == "uint8"  # one-hot grid observations are stored compactly
    back = Trajectories.load(tmp_path / "ds")
    assert back.observations.dtype == torch.uint8  # stays compact in memory
    assert back.float_observations().dtype == torch.float32
    for key in ("observations", "actions", "lengths", "subgoals", "task_ids", "success"):
        assert torch.equal(getattr(back, key), getattr(grid_data, key)), key
    assert all(torch.equal(back.layouts[k], v) for k, v in grid_data.layouts.items())
    assert back.env_id == GRID_ID and back.task_set == "pretrain"


def test_load_names_the_bad_file(grid_data, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"index\.json"):
        Trajectories.load(tmp_path)
    grid_data[:10].save(tmp_path / "a", shard_size=4)
    (tmp_path / "a" / "shard_00001.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"shard_00001\.safetensors"):
        Trajectories.load(tmp_path / "a")
    (tmp_path / "a" / "shard_00001.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"shard_00001\.safetensors"):
        Trajectories.load(tmp_path / "a")
    grid_data[:10].save(tmp_path / "b")
    (tmp_path / "b" / "index.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"index\.json"):
        Trajectories.load(tmp_path / "b")


def test_inconsistent_shapes_are_rejected(grid_data):
    with pytest.raises(ValueError, match="actions"):
        Trajectories(
            env_id=GRID_ID,
            observations=grid_data.observations,
            actions=grid_data.actions[:, :-1],
            lengths=grid_data.lengths,
            subgoals=grid_data.subgoals,
            task_ids=grid_data.task_ids,
            success=grid_data.success,
        )


def test_unknown_env_and_task_set_raise():
    with pytest.raises(ValueError, match="unknown env_id"):
        generate_trajectories("CartPole-v1", num_episodes=1)
    with pytest.raises(ValueError, match="unknown task set"):
        generate_trajectories(GRID_ID, "nope", num_episodes=1)
