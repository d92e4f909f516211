"""The internal-RL environment for ant-pinpad (Algorithms 1-2 over MuJoCo ants)."""

import numpy as np
import torch
from gymnasium.utils.env_checker import check_env

from internal_rl.backbone import Backbone, BackboneConfig, ant_backbone_config
from internal_rl.discovery import ControlledModel
from internal_rl.envs.ant import AntPinpadEnv
from internal_rl.envs.grid import GridLayout
from internal_rl.internal_ant_env import BatchedInternalAntEnv, InternalAntEnv, SplitStepper
from internal_rl.metacontroller import Metacontroller, MetacontrollerConfig

OBS_DIM = 41  # AntPinpadEnv's default observation
# 4x4 cells of 2 m: colours 0..3 on the top row (y > 2), the wall at row 2 col 0, start at row 1 col 0.
LAYOUT = GridLayout(colour_cells=np.array([0, 1, 2, 3]), wall_cells=np.array([8]), agent_cell=4)
# Torsos a few cm below the top row: the random ants cross into colour 0 (the task: success),
# colour 1 (wrong colour), or stay (timeout, fell), so the replays cover several causes.
STARTS = [{"task_id": 0, "layout": LAYOUT, "start_xy": np.array([x, 1.98])} for x in (-3.0, -1.0, -3.0, -1.0)]
TASKS = ((0,),)


def controlled_model(seed: int = 0, decoder_scale: float = 0.0, switch_bias: float = 0.0) -> ControlledModel:
    """A tiny random Hawk base and an untrained full-rank metacontroller (U = 0 unless decoder_scale)."""
    torch.manual_seed(seed)
    cfg = ant_backbone_config(n_layers=2, d_model=16, n_heads=2, mlp_hidden=32, lru_width=16, obs_dim=OBS_DIM)
    base = Backbone(cfg)  # built first, so every decoder_scale steers the same base model
    meta = Metacontroller(16, MetacontrollerConfig(rank=0))
    with torch.no_grad():
        if decoder_scale:
            for p in meta.decoder.parameters():
                p.normal_(0, decoder_scale)
        meta.switch[-1].bias.fill_(switch_bias)
    return ControlledModel(base, meta).eval()


def run_episodes(env: BatchedInternalAntEnv, seed: int = 0) -> dict[str, torch.Tensor]:
    env.reset()
    n = env.num_envs
    returns, steps, decisions = (
        torch.zeros(n),
        torch.zeros(n, dtype=torch.long),
        torch.zeros(n, dtype=torch.long),
    )
    gen = torch.Generator().manual_seed(seed)
    while not env.done.all():
        decisions += (env.needs_action & ~env.done).long()
        _, reward, _, info = env.step(torch.randn(n, env.n_z, generator=gen))
        returns += reward
        steps += info["primitive_steps"]
        assert (info["primitive_steps"][~info["decided"]] == 0).all()
        assert (reward[~info["decided"]] == 0).all()
    return {"returns": returns, "steps": steps, "decisions": decisions}


def replay(env: BatchedInternalAntEnv, i: int, tasks=TASKS) -> tuple[float, int, str, bool]:
    """The recorded primitive actions of env ``i`` in a fresh ant on the same seed and options."""
    ant = AntPinpadEnv("posttrain", horizon=env.horizon)
    ant.tasks = tasks
    ant.reset(seed=env.episode_seeds[i], options=env.reset_options[i])
    total, n, cause, terminated = 0.0, 0, "", False
    for a in env.actions[i, : int(env.lengths[i])].numpy():
        _, r, terminated, truncated, info = ant.step(a)
        total, n = total + r, n + 1
        if terminated or truncated:
            cause = info["termination_cause"]
            break
    ant.close()
    return total, n, cause, bool(terminated)


def test_gym_env_passes_check_env_and_counts_primitive_steps():
    env = InternalAntEnv(controlled_model(decoder_scale=0.3), horizon=20)
    check_env(env, skip_render_check=True)
    e, _ = env.reset(seed=3)
    assert e.shape == (16,) and e.dtype == np.float32
    total_steps, done = 0, False
    while not done:
        e, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert e.shape == (16,) and info["primitive_steps"] >= 1
        total_steps += info["primitive_steps"]
        done = terminated or truncated
    assert total_steps == int(env.inner.lengths[0]) <= 20
    assert info["termination_cause"] in ("success", "wall", "fell", "wrong_colour", "timeout")
    assert truncated == (info["termination_cause"] == "timeout")
    env.close()


def test_rewards_causes_and_step_counts_equal_the_replayed_ant_episodes():
    # switch bias 0: beta near 0.5, so episodes mix switching and holding codes.
    env = BatchedInternalAntEnv(
        controlled_model(decoder_scale=0.3), 4, tasks=TASKS, horizon=30, seed=5, reset_options=STARTS
    )
    out = run_episodes(env)
    assert torch.equal(out["steps"], env.lengths)
    assert torch.equal((~env.actions.isnan().any(-1)).sum(1), env.lengths)
    assert (out["decisions"] >= 1).all()
    assert float(env.actions.nan_to_num().abs().max()) <= 1.0  # clipped to the ant's action box
    for i in range(4):
        total, n, cause, terminated = replay(env, i)
        assert n == int(env.lengths[i]) and cause == env.causes[i]
        assert total == float(out["returns"][i]) == float(env.success[i])
        assert terminated == bool(env.terminated[i]) == (cause != "timeout")
    assert float(out["returns"].sum()) >= 1  # the comparison covered a rewarded episode
    assert len(set(env.causes)) >= 2


def test_zero_control_acts_as_the_base_models_greedy_policy():
    model = controlled_model()  # untrained full-rank decoder: U(z) = 0 for every z
    assert float(model.meta.matrix(torch.randn(5, 8)).detach().abs().max()) == 0.0
    fixed = {"task_id": 0, "layout": LAYOUT}  # random starts inside cell 4: longer episodes
    kwargs = {"tasks": TASKS, "horizon": 25, "seed": 2, "reset_options": fixed}
    env = BatchedInternalAntEnv(model, 2, greedy=True, **kwargs)
    run_episodes(env)
    assert int(env.lengths.min()) >= 10
    for i in range(2):
        ant = AntPinpadEnv("posttrain", horizon=25)
        ant.tasks = TASKS
        obs, _ = ant.reset(seed=env.episode_seeds[i], options=fixed)
        state = model.base.init_state(1)
        with torch.no_grad():
            for a in env.actions[i, : int(env.lengths[i])]:
                out, state = model.base.step(torch.as_tensor(obs)[None], state)
                own = out.action_mean[0, 0].clamp(-1.0, 1.0)
                assert torch.allclose(a, own, atol=1e-5)
                obs, *_ = ant.step(a.numpy())
        ant.close()

    # Controls that do change the residual, or sampling, move the actions off that policy.
    steered = BatchedInternalAntEnv(controlled_model(decoder_scale=0.3), 2, greedy=True, **kwargs)
    sampled = BatchedInternalAntEnv(model, 2, **kwargs)
    for other in (steered, sampled):
        other.reset()
        other.step(torch.ones(2, 8))
        assert float((other.actions[:, 0] - env.actions[:, 0]).abs().max()) > 1e-3


def test_threshold_zero_asks_for_a_code_every_primitive_step():
    always = BatchedInternalAntEnv(controlled_model(), 3, horizon=20, seed=2, threshold=0.0)
    out = run_episodes(always)
    assert torch.equal(out["decisions"], always.lengths)
    assert always.switch_steps[:, 1:].sum() == (always.lengths - 1).clamp(min=0).sum()
    never = BatchedInternalAntEnv(controlled_model(), 3, horizon=20, seed=2, threshold=1.01)
    out = run_episodes(never)
    assert (out["decisions"] == 1).all() and (never.lengths > 1).any()


def test_split_stepper_matches_the_full_forward_pass():
    torch.manual_seed(0)
    cases = [
        ant_backbone_config(n_layers=2, d_model=16, n_heads=2, mlp_hidden=16, lru_width=16, obs_dim=10),
        ant_backbone_config(
            n_layers=3,
            d_model=16,
            n_heads=2,
            mlp_hidden=16,
            lru_width=16,
            obs_dim=10,
            condition_on_prev_action=True,
        ),
        BackboneConfig(n_layers=2, d_model=16, n_heads=2, mlp_hidden=16, obs_dim=10, action_dim=3),
    ]
    for cfg in cases:
        model = Backbone(cfg).eval()
        layer = cfg.n_layers // 2
        obs = torch.randn(3, 9, cfg.obs_dim)
        actions = torch.randn(3, 9, cfg.action_dim) if not cfg.discrete_actions else torch.randint(3, (3, 9))
        u = torch.randn(cfg.d_model, cfg.d_model) * 0.1
        kwargs = {}
        if cfg.condition_on_prev_action:
            kwargs["prev_actions"] = torch.cat([torch.zeros_like(actions[:, :1]), actions[:, :-1]], 1)
        with torch.no_grad():
            full = model(obs, control=lambda e, u=u: e @ u.T, control_layer=layer, **kwargs)
        ref = full.action_mean if full.action_mean is not None else full.action_logits
        stepper = SplitStepper(model, 3, layer)
        got = []
        for t in range(9):
            e = stepper.lower(obs[:, t])
            out = stepper.upper(e + e @ u.T)
            got.append(out.action_mean if out.action_mean is not None else out.action_logits)
            stepper.record_action(actions[:, t])
        assert torch.allclose(torch.cat(got, 1), ref, rtol=1e-4, atol=1e-5), cfg.arch
