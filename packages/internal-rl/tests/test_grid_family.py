"""The gridworld family: the paper's task rule, the small member, and gymnasium registration."""

from __future__ import annotations

import itertools
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import internal_rl  # noqa: F401  (registers the envs, as a gymnasium plug-in)
from internal_rl.envs import GRID_ID, GRID_SMALL_ID
from internal_rl.envs.tasks import ANT_TASK_SETS, GRID_SPECS, GRID_TASK_SETS, GridSpec, grid_task_sets


def transitions(task: tuple[int, ...], spec: GridSpec) -> set[tuple[int, int]]:
    goals = [spec.subgoal_of(c) for c in task[:: spec.colours_per_subgoal]]
    return set(itertools.pairwise(goals))


def test_rule_reproduces_tables_a1_and_a2():
    paper = GRID_SPECS["paper"]
    assert sorted(paper.pretrain_tasks()) == sorted(GRID_TASK_SETS["pretrain"])
    assert paper.posttrain_task() == GRID_TASK_SETS["posttrain"][0]
    ant_rule = GridSpec(size=4, num_colours=4, num_walls=1, colours_per_subgoal=1, posttrain_subgoals=4)
    assert sorted(ant_rule.pretrain_tasks()) == sorted(ANT_TASK_SETS["pretrain"])
    assert ant_rule.posttrain_task() == ANT_TASK_SETS["posttrain"][0]


@pytest.mark.parametrize("variant", sorted(GRID_SPECS))
def test_pretraining_tasks_never_hold_a_posttraining_transition(variant):
    spec = GRID_SPECS[variant]
    sets = grid_task_sets(variant)
    (post,) = sets["posttrain"]
    post_steps = transitions(post, spec)
    assert len(post) // spec.colours_per_subgoal > spec.pretrain_subgoals  # longer than any pretraining task
    for task in sets["pretrain"]:
        assert not transitions(task, spec) & post_steps, task
        assert max(task) < spec.num_colours
    # every subgoal starts some pretraining task and each has more than one successor (a choice to infer)
    assert {spec.subgoal_of(t[0]) for t in sets["pretrain"]} == set(range(spec.num_subgoals))
    # every subgoal is followed by all others but the banned next one: P - 2 successors (small6-fixed: 4)
    successors = {g: set() for g in range(spec.num_subgoals)}
    for task in sets["pretrain"]:
        for a, b in transitions(task, spec):
            successors[a].add(b)
    assert all(len(s) == spec.num_subgoals - 2 for s in successors.values()), successors


def test_spec_validation_names_the_problem():
    with pytest.raises(ValueError, match="do not fit"):
        GridSpec(size=3, num_colours=8, num_walls=4)
    with pytest.raises(ValueError, match="split into subgoals"):
        GridSpec(num_colours=7)


@pytest.mark.parametrize(("env_id", "size", "obs_dim"), [(GRID_ID, 7, 637), (GRID_SMALL_ID, 5, 150)])
def test_registered_ids_make_checked_envs(env_id, size, obs_dim):
    env = gym.make(env_id, task_set="posttrain", render_mode="rgb_array")
    check_env(env.unwrapped)
    obs, info = env.reset(seed=3)
    assert obs.shape == (obs_dim,) and env.unwrapped.size == size
    assert env.render().shape == (size * 24, size * 24, 3)
    assert info["subgoal"] == env.unwrapped.grid_spec.subgoal_of(info["next_colour"])


def test_small_grid_subgoals_are_single_colours():
    env = gym.make(GRID_SMALL_ID, task_set="pretrain")
    _, info = env.reset(seed=0)
    assert info["subgoal"] == info["next_colour"]
    assert np.asarray(info["colour_cells"]).shape == (4,) and np.asarray(info["wall_cells"]).shape == (1,)


def test_module_syntax_imports_the_plugin_in_a_fresh_interpreter():
    # gymnasium imports "internal_rl" for the "module:id" form; nothing else is imported first
    code = "import gymnasium as gym; e = gym.make('internal_rl:internal_rl/GridPinpadSmall-v0'); print(e.reset(seed=0)[0].shape)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(150,)"


def test_fixed_colour_cells_hold_in_both_envs_while_walls_and_agent_vary():
    from internal_rl.envs.grid import GridPinpadEnv
    from internal_rl.envs.grid_batched import BatchedGridPinpad

    fixed = GRID_SPECS["small-fixed"].colour_cells
    env = GridPinpadEnv("posttrain", variant="small-fixed")
    seen = set()
    for seed in range(20):
        _, info = env.reset(seed=seed)
        assert tuple(info["colour_cells"]) == fixed
        assert not set(info["wall_cells"]) & set(fixed) and info["agent_cell"] not in fixed
        seen.add((int(info["wall_cells"][0]), info["agent_cell"]))
    assert len(seen) > 10

    batched = BatchedGridPinpad(256, "pretrain", variant="small-fixed", seed=0)
    batched.reset()
    assert (batched.colour_cells == torch.tensor(fixed)).all()
    others = torch.cat([batched.wall_cells, batched.agent[:, None]], 1)
    assert not torch.isin(others, torch.tensor(fixed)).any()
    assert (others[:, 0] != others[:, 1]).all()
    assert len(set(others[:, 1].tolist())) == 25 - 4  # the agent starts on every cell that is not a colour
    assert (batched.shortest_task_lengths(torch.arange(256)) <= batched.horizon).all()


def test_fixed_colour_cells_are_validated():
    with pytest.raises(ValueError, match="distinct cells"):
        GridSpec(size=5, num_colours=4, num_walls=1, colours_per_subgoal=1, colour_cells=(0, 0, 1, 2))
    with pytest.raises(ValueError, match="distinct cells"):
        GridSpec(size=5, num_colours=4, num_walls=1, colours_per_subgoal=1, colour_cells=(0, 1, 2, 25))
