"""The internal-RL environment (Algorithms 1-2) and incremental stepping of the base model."""

import numpy as np
import torch
from gymnasium.utils.env_checker import check_env

from internal_rl.backbone import Backbone, BackboneConfig, ant_backbone_config
from internal_rl.envs.grid import GridLayout, GridPinpadEnv
from internal_rl.incremental import IncrementalBackbone
from internal_rl.internal_env import BatchedInternalEnv, InternalGridEnv, make_grid, prior_exploration


def test_incremental_steps_match_full_forward():
    torch.manual_seed(0)
    cases = [
        BackboneConfig(n_layers=4, d_model=32, n_heads=4, mlp_hidden=64, obs_dim=20),
        ant_backbone_config(n_layers=2, d_model=16, n_heads=2, mlp_hidden=16, lru_width=16, obs_dim=10),
    ]
    for cfg in cases:
        model = Backbone(cfg).eval()
        obs = torch.randn(3, 12, cfg.obs_dim)
        u = torch.randn(cfg.d_model, cfg.d_model) * 0.1
        with torch.no_grad():
            full = model(obs, control=lambda e, u=u: e @ u.T, control_layer=cfg.n_layers // 2)
        ref = full.action_logits if full.action_logits is not None else full.action_mean
        stepper = IncrementalBackbone(model, 3, 20, cfg.n_layers // 2)
        outs = []
        for t in range(12):
            e = stepper.lower(obs[:, t])
            out = stepper.upper(e + e @ u.T)
            outs.append(out.action_logits if out.action_logits is not None else out.action_mean)
        assert torch.allclose(torch.cat(outs, 1), ref, rtol=1e-4, atol=1e-5)


def test_gym_env_passes_check_env(controlled_model):
    env = InternalGridEnv(controlled_model(), "posttrain")
    check_env(env, skip_render_check=True)
    e, _ = env.reset(seed=3)
    assert e.shape == (32,) and e.dtype == np.float32
    e2, _, _, _, info = env.step(np.zeros(8, dtype=np.float32))
    assert e2.shape == (32,) and info["primitive_steps"] >= 1


def _replay(grid, env_index, actions, task_id):
    layout = GridLayout(
        colour_cells=grid.colour_cells[env_index].numpy(),
        wall_cells=grid.wall_cells[env_index].numpy(),
        agent_cell=int(grid.start[env_index]),
    )
    gym_env = GridPinpadEnv(task_set="posttrain")
    gym_env.reset(seed=0, options={"task_id": task_id, "layout": layout})
    total, steps = 0.0, 0
    for a in actions:
        _, r, terminated, truncated, info = gym_env.step(int(a))
        total += r
        steps += 1
        if terminated or truncated:
            break
    return total, steps, terminated or truncated, info["colours_visited"]


def test_batched_env_rewards_and_steps_equal_the_underlying_episodes(controlled_model):
    # A switch bias of 0 gives beta near 0.5: a mix of switching and holding.
    env = BatchedInternalEnv(controlled_model(switch_bias=0.0), 12, "posttrain", seed=4)
    env.reset()
    returns = torch.zeros(12)
    steps = torch.zeros(12, dtype=torch.long)
    decisions = torch.zeros(12, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    while not env.done.all():
        decisions += (env.needs_action & ~env.done).long()
        _, reward, _, info = env.step(torch.randn(12, 8, generator=gen))
        returns += reward
        steps += info["primitive_steps"]
        assert (info["primitive_steps"][~info["decided"]] == 0).all()
    lengths = (env.actions >= 0).sum(1)
    assert torch.equal(steps, lengths)
    assert (decisions >= 1).all()
    for i in range(12):
        total, n, ended, colours = _replay(
            env.grid, i, env.actions[i, : lengths[i]].tolist(), int(env.grid.task_ids[i])
        )
        assert ended and n == int(lengths[i])
        assert total == float(returns[i]) == float(env.success[i])
        # frozen at the episode's end, while the finished grid kept stepping with the batch
        assert colours == int(env.colours[i])


def test_switch_threshold_controls_decision_count(controlled_model):
    never = BatchedInternalEnv(controlled_model(switch_bias=-50.0), 6, "posttrain", seed=1)
    always = BatchedInternalEnv(controlled_model(switch_bias=50.0), 6, "posttrain", seed=1)
    counts = []
    for env in (never, always):
        env.reset()
        n = 0
        while not env.done.all():
            n += int((env.needs_action & ~env.done).sum())
            env.step(torch.zeros(6, 8))
        counts.append(n)
        lengths = (env.actions >= 0).sum(1)
    assert counts[0] == 6  # one code per episode
    assert counts[1] == int(lengths.sum())  # a code every primitive step


def test_custom_task_grid_observes_its_layouts():
    grid = make_grid(5, tasks=((0, 1), (2,)), seed=3)
    obs = grid.reset()
    assert set(grid.task_ids.tolist()) <= {0, 1}
    for i in range(5):
        layout = GridLayout(
            colour_cells=grid.colour_cells[i].numpy(),
            wall_cells=grid.wall_cells[i].numpy(),
            agent_cell=int(grid.start[i]),
        )
        ref, _ = GridPinpadEnv(task_set="posttrain").reset(seed=0, options={"task_id": 0, "layout": layout})
        assert np.array_equal(obs[i].numpy(), ref)
        assert int(grid.shortest_task_lengths(torch.tensor([i]))[0]) <= 100


def test_incremental_route_agrees_with_backbone_step():
    """The rollout stepper (split at L/2, rows that finish drop out) and Backbone.step agree."""
    torch.manual_seed(1)
    cases = [
        BackboneConfig(n_layers=4, d_model=32, n_heads=4, mlp_hidden=64, obs_dim=20),
        ant_backbone_config(n_layers=2, d_model=16, n_heads=2, mlp_hidden=16, lru_width=16, obs_dim=10),
    ]
    for cfg in cases:
        model = Backbone(cfg).eval()
        layer = cfg.n_layers // 2
        obs = torch.randn(3, 10, cfg.obs_dim)
        u = torch.randn(cfg.d_model, cfg.d_model) * 0.1
        state = model.init_state(3)
        stepper = IncrementalBackbone(model, 3, 10, layer)
        rows = torch.tensor([0, 2])
        with torch.no_grad():
            for t in range(10):
                ref, state = model.step(obs[:, t], state, control=lambda e, u=u: e @ u.T, control_layer=layer)
                ref = ref.action_logits if ref.action_logits is not None else ref.action_mean
                sel = None if t < 5 else rows  # from t = 5 on, sequence 1 is "finished"
                e = stepper.lower(obs[:, t] if sel is None else obs[sel, t], sel)
                out = stepper.upper(e + e @ u.T, sel)
                got = out.action_logits if out.action_logits is not None else out.action_mean
                want = ref[:, 0] if sel is None else ref[sel, 0]
                assert torch.allclose(got[:, -1], want, rtol=1e-4, atol=1e-5), (cfg.arch, t)


def test_prior_exploration_counts_colours_in_order_and_matches_success(controlled_model):
    # a switch bias of 0 switches often; the one-colour task makes success and reached[1] the same event
    out = prior_exploration(controlled_model(), 64, tasks=((0,),), horizon=30, seed=2, variant="paper")
    assert out["episodes"] == 64 and out["reached"][0] == 64 and len(out["reached"]) == 2
    assert out["success"] == out["reached"][1] / 64
    two = prior_exploration(controlled_model(), 64, tasks=((0, 1),), horizon=30, seed=2, variant="paper")
    assert (
        two["reached"][0] >= two["reached"][1] >= two["reached"][2]
        and two["success"] == two["reached"][2] / 64
    )


def test_prior_exploration_scales_the_draws_like_the_first_policy(controlled_model):
    # scale 0 plays the zero code at every switch: the same episodes as a constant zero code
    model = controlled_model()
    out = prior_exploration(model, 32, tasks=((0, 1),), horizon=30, seed=5, variant="paper", scale=0.0)
    env = BatchedInternalEnv(model, 32, "posttrain", tasks=((0, 1),), horizon=30, seed=5, variant="paper")
    env.reset()
    while not env.done.all():
        env.step(torch.zeros(32, env.n_z))
    assert out["scale"] == 0.0 and out["reached"] == env.reached(2)
    wide = prior_exploration(model, 32, tasks=((0, 1),), horizon=30, seed=5, variant="paper", scale=4.0)
    assert wide["scale"] == 4.0 and wide["reached"][0] == 32
