"""Gridworld-pinpad: gymnasium contract, the paper's rules, and the batched torch twin."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from internal_rl.envs import GRID_ID, register_envs
from internal_rl.envs.grid import GridLayout, GridPinpadEnv, observe
from internal_rl.envs.grid_batched import CAUSES, BatchedGridPinpad, smallest_cells
from internal_rl.envs.grid_paths import UNREACHABLE, shortest_task_length

register_envs()


def cell(r: int, c: int) -> int:
    return r * 7 + c


def make_layout(agent: int) -> GridLayout:
    # Colours 0..7 on row 0; walls at (3, 0..3); agent somewhere else.
    return GridLayout(
        colour_cells=np.array([cell(0, c) for c in range(7)] + [cell(6, 6)]),
        wall_cells=np.array([cell(3, c) for c in range(4)]),
        agent_cell=agent,
    )


@pytest.mark.parametrize("task_set", ["pretrain", "posttrain"])
def test_check_env_passes(task_set):
    env = gym.make(GRID_ID, task_set=task_set, render_mode="rgb_array")
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (637,) and obs.dtype == np.float32
    # one object or wall per occupied cell, plus the agent
    assert obs.sum() == 8 + 4 + 1
    frame = env.render()
    assert frame.shape == (7 * 24, 7 * 24, 3) and frame.dtype == np.uint8


def test_seeded_reset_is_deterministic_and_layout_changes_per_episode():
    env = GridPinpadEnv()
    a, _ = env.reset(seed=3)
    b, _ = env.reset(seed=3)
    c, _ = env.reset()
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_walls_and_border_are_noops_and_time_limit_truncates():
    env = GridPinpadEnv(horizon=5)
    env.reset(seed=0, options={"task_id": 0, "layout": make_layout(cell(4, 0))})
    _, _, term, trunc, info = env.step(0)  # up into the wall at (3, 0)
    assert env.agent_cell == cell(4, 0) and not term and not trunc
    env.step(3)  # left: border
    assert env.agent_cell == cell(4, 0)
    for _ in range(2):
        env.step(2)
    _, reward, term, trunc, info = env.step(2)  # 5th step, down off the bottom border (6,0) -> no-op
    assert trunc and not term and reward == 0.0 and info["termination_cause"] == "timeout"


def test_wrong_colour_terminates_and_success_pays_one():
    env = GridPinpadEnv(task_set="pretrain")
    # Task 0 is 0-1-4-5-0-1; colours sit on row 0, the agent below colour 0.
    env.reset(seed=0, options={"task_id": 0, "layout": make_layout(cell(1, 0))})
    _, r, term, _, info = env.step(0)  # enter colour 0
    assert not term and r == 0 and info["colours_visited"] == 1 and info["subgoal"] == 0
    _, r, term, _, info = env.step(1)  # colour 1
    assert not term and info["subgoals_completed"] == 1 and info["subgoal"] == 2 and info["next_colour"] == 4
    _, r, term, trunc, info = env.step(1)  # colour 2 is not next
    assert (
        term and not trunc and r == 0 and info["termination_cause"] == "wrong_colour" and not info["success"]
    )

    env.reset(seed=0, options={"task_id": 0, "layout": make_layout(cell(1, 0))})
    # 0, 1, then along row 1 to 4, 5, back along row 1 to 0, 1
    path = [0, 1, 2, 1, 1, 1, 0, 1, 2, 3, 3, 3, 3, 3, 0, 1]
    rewards, info = [], {}
    for a in path:
        _, r, term, _, info = env.step(a)
        rewards.append(r)
        if term:
            break
    assert (
        info["termination_cause"] == "success"
        and info["success"]
        and rewards[-1] == 1.0
        and sum(rewards) == 1.0
    )


def test_visit_needs_entering_from_another_cell():
    env = GridPinpadEnv()
    env.reset(seed=0, options={"task_id": 0, "layout": make_layout(cell(1, 0))})
    env.step(0)  # on colour 0 at the top border
    _, _, term, _, info = env.step(0)  # bump the border: staying does not count again
    assert not term and info["colours_visited"] == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs_run(mode):
    envs = gym.make_vec(GRID_ID, num_envs=3, vectorization_mode=mode, task_set="pretrain")
    obs, _ = envs.reset(seed=1)
    assert obs.shape == (3, 637)
    for _ in range(30):
        obs, *_, info = envs.step(envs.action_space.sample())
    assert obs.shape == (3, 637) and "subgoal" in info
    envs.close()


@pytest.mark.parametrize("variant", ["paper", "small"])
@pytest.mark.parametrize("task_set", ["pretrain", "posttrain"])
def test_batched_matches_gymnasium_step_for_step(task_set, variant):
    n = 32
    gyms = [GridPinpadEnv(task_set=task_set, variant=variant) for _ in range(n)]
    infos = [e.reset(seed=100 + i)[1] for i, e in enumerate(gyms)]
    batched = BatchedGridPinpad(n, task_set, variant=variant)
    layouts = {
        k: np.stack([np.asarray(i[k]) for i in infos]) for k in ("colour_cells", "wall_cells", "agent_cell")
    }
    obs = batched.reset(task_ids=torch.tensor([i["task_id"] for i in infos]), layouts=layouts)
    assert torch.equal(obs, torch.as_tensor(np.stack([e._observe() for e in gyms])))
    rng = np.random.default_rng(0)
    alive = np.ones(n, dtype=bool)
    checked = 0
    for _ in range(100):
        actions = rng.integers(4, size=n)
        b_obs, b_rew, b_term, b_trunc, b_info = batched.step(torch.as_tensor(actions))
        for i in np.flatnonzero(alive):
            o, r, term, trunc, info = gyms[i].step(int(actions[i]))
            assert np.array_equal(o, b_obs[i].numpy())
            assert (r, term, trunc) == (b_rew[i].item(), b_term[i].item(), b_trunc[i].item())
            for key in ("subgoal", "next_colour", "colours_visited", "subgoals_completed", "success"):
                assert info[key] == b_info[key][i].item(), key
            assert info["termination_cause"] == CAUSES[b_info["termination_cause"][i]]
            checked += 1
            alive[i] = not (term or trunc)
        if not alive.any():
            break
    assert checked > n  # several steps per env were compared


def test_batched_autoreset_returns_final_obs_and_starts_new_episodes():
    env = BatchedGridPinpad(64, autoreset=True, seed=1, horizon=10, require_solvable=False)
    env.reset()
    finished = 0
    for _ in range(25):
        obs, _, term, trunc, info = env.step(torch.randint(4, (64,)))
        done = term | trunc
        finished += int(done.sum())
        assert (env.t[done] == 0).all() and (env.progress[done] == 0).all()
        assert torch.equal(info["final_env_ids"], done.nonzero().squeeze(1))
        # the final observation shows the agent where the step left it, the new one a fresh layout
        assert (info["final_obs"].view(-1, 49, 13)[..., 12].sum(-1) == 1).all()
        assert (obs.view(-1, 49, 13).sum((1, 2)) == 13).all()
    assert finished >= 64  # the horizon alone ends every episode at least twice in 25 steps


def test_batched_layouts_are_distinct_cells_and_solvable():
    env = BatchedGridPinpad(256, "posttrain", seed=2)
    env.reset()
    cells = torch.cat([env.colour_cells, env.wall_cells, env.agent[:, None]], 1)
    assert all(len(set(row.tolist())) == 13 for row in cells)
    assert (env.shortest_task_lengths(torch.arange(256)) <= 100).all()


def _reference_lengths(env: BatchedGridPinpad, ids) -> list[int]:
    out = []
    for i in ids:
        task = tuple(int(c) for c in env.tasks[env.task_ids[i]] if c >= 0)
        colours, walls = env.colour_cells[i].numpy(), env.wall_cells[i].numpy()
        out.append(min(shortest_task_length(colours, walls, int(env.start[i]), task, env.size), UNREACHABLE))
    return out


@pytest.mark.parametrize(("size", "task_set"), [(7, "pretrain"), (7, "posttrain"), (5, "pretrain")])
def test_bitmask_task_lengths_match_the_reference_search(size, task_set):
    # unfiltered random layouts: solvable ones, long ones and impossible ones
    env = BatchedGridPinpad(400, task_set, size=size, seed=8, require_solvable=False)
    env.reset()
    ids = torch.arange(400)
    lengths = env.shortest_task_lengths(ids)
    assert lengths.tolist() == _reference_lengths(env, range(400))
    assert (lengths >= UNREACHABLE).any() and (lengths < UNREACHABLE).any()
    args = (env.colour_cells, env.wall_cells, env.start, env.tasks[env.task_ids])
    for check_every in (1, 3, 50):  # where the search stops to drop finished legs must not matter
        assert torch.equal(env.task_lengths_of(*args, check_every=check_every), lengths)


def test_bitmask_task_lengths_of_padded_tasks():
    env = BatchedGridPinpad(200, seed=9, require_solvable=False)
    env.reset()
    tasks = torch.tensor([[3, -1, -1], [0, 1, -1], [5, 2, 7], [-1, -1, -1]]).repeat(50, 1)
    got = env.task_lengths_of(env.colour_cells, env.wall_cells, env.start, tasks)
    for i in range(200):
        task = tuple(int(c) for c in tasks[i] if c >= 0)
        colours, walls = env.colour_cells[i].numpy(), env.wall_cells[i].numpy()
        expected = shortest_task_length(colours, walls, int(env.start[i]), task, 7) if task else 0
        assert int(got[i]) == min(expected, UNREACHABLE)


def test_layout_pool_hands_out_the_sequential_rejection_draws_in_order():
    # The pool must give the layouts a drawing env (no pool) seeded like it gives, refill after
    # refill, each with the task it was checked for (a reset spanning three refills included).
    n, pool, seed = 300, 128, 5
    env = BatchedGridPinpad(n, layout_pool=pool, horizon=30, seed=seed)
    env.reset()
    pool_seed = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(seed)))
    drawer = BatchedGridPinpad(pool, layout_pool=0, horizon=30, seed=pool_seed)
    for start in range(0, n, pool):
        drawer.reset()
        rows = slice(start, min(start + pool, n))
        count = rows.stop - rows.start
        assert torch.equal(env.task_ids[rows], drawer.task_ids[:count])
        assert torch.equal(env.colour_cells[rows], drawer.colour_cells[:count])
        assert torch.equal(env.wall_cells[rows], drawer.wall_cells[:count])
        assert torch.equal(env.start[rows], drawer.start[:count])
    assert (env.shortest_task_lengths(torch.arange(n)) <= 30).all()


def test_autoreset_keeps_observation_and_lookup_tables_in_step_with_the_state():
    # resets clear only the old layout's entries, so the buffers must mirror the state exactly
    env = BatchedGridPinpad(128, autoreset=True, seed=3, layout_pool=64, horizon=25)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        obs, *_ = env.step(torch.randint(4, (128,), generator=gen))
    for i in range(128):
        layout = GridLayout(env.colour_cells[i].numpy(), env.wall_cells[i].numpy(), int(env.start[i]))
        expected = observe(layout, int(env.agent[i]), 7, 8, 4)
        assert np.array_equal(obs[i].numpy(), expected)
        colour_at = np.full(49, -1)
        colour_at[layout.colour_cells] = np.arange(8)
        assert np.array_equal(env.colour_at[i].numpy(), colour_at)
        assert env.wall[i].nonzero().squeeze(1).sort().values.tolist() == sorted(layout.wall_cells.tolist())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_task_lengths_match_cpu_searched_on_device_or_host():
    cpu = BatchedGridPinpad(512, seed=8, require_solvable=False)
    cpu.reset()
    expected = cpu.shortest_task_lengths(torch.arange(512))
    gpu = BatchedGridPinpad(512, seed=8, require_solvable=False, device="cuda")
    args = [x.cuda() for x in (cpu.colour_cells, cpu.wall_cells, cpu.start, cpu.tasks[cpu.task_ids])]
    for limit in (0, 10**9):  # the whole search on the device, then on the host
        gpu.host_search_max_legs = limit
        assert torch.equal(gpu.task_lengths_of(*args).cpu(), expected)
    env = BatchedGridPinpad(256, autoreset=True, seed=1, layout_pool=128, device="cuda")
    env.reset()
    for _ in range(20):
        env.step(torch.randint(4, (256,), device="cuda"))
    assert (env.shortest_task_lengths(torch.arange(256, device="cuda")) <= 100).all()


def test_smallest_cells_equal_topk_with_and_without_ties():
    gen = torch.Generator().manual_seed(0)
    for keys in (
        torch.rand(3000, 49, generator=gen),  # torch.rand's keys: ties are rare
        torch.randint(0, 20, (3000, 49), generator=gen) / 20,  # many ties: topk decides those rows
        torch.rand(3000, 49, generator=gen) * 1e-7,  # distinct floats that truncate to the same integer
    ):
        expected = keys.topk(13, dim=1, largest=False, sorted=True).indices
        assert torch.equal(smallest_cells(keys, 13), expected)
    assert smallest_cells(torch.rand(0, 49), 13).shape == (0, 13)
