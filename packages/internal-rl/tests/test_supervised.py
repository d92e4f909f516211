"""Label-driven controllers (paper C.3): one controller per true subgoal, trained and played closed loop."""

import dataclasses
import json

import pytest
import torch

from internal_rl.backbone import Backbone, BackboneConfig
from internal_rl.data import generate_trajectories
from internal_rl.discovery import ControlledModel
from internal_rl.internal_env import BatchedInternalEnv
from internal_rl.metacontroller import Metacontroller, MetacontrollerConfig
from internal_rl.supervised import (
    SubgoalCodes,
    _uncontrolled,
    closed_loop,
    load_label_codes,
    small_config,
    train_supervised,
)

GRID = "internal_rl/GridPinpad-v0"


def _small_grid_data(episodes: int):
    return generate_trajectories(
        GRID, "pretrain", num_episodes=episodes, seed=3, env_kwargs={"variant": "small"}, ties="first"
    )


def _base(obs_dim: int) -> Backbone:
    torch.manual_seed(0)
    return Backbone(BackboneConfig(obs_dim=obs_dim, n_layers=2, d_model=32, n_heads=4, mlp_hidden=64)).eval()


def _base_and_random_controllers() -> tuple[Backbone, Metacontroller]:
    """A tiny base and 4 label-driven controllers with a random (non-zero) decoder."""
    base = _base(_small_grid_data(8).observations.shape[-1])
    meta = Metacontroller(32, MetacontrollerConfig(n_z=4, rank=4, forced_switch=True))
    with torch.no_grad():
        for p in meta.decoder.parameters():
            p.normal_(0, 0.5)
    return base, meta


def test_label_driven_controllers_lower_the_nll_with_the_base_frozen(tmp_path):
    data = _small_grid_data(400)
    base = _base(data.observations.shape[-1])
    before = {k: v.clone() for k, v in base.state_dict().items()}
    cfg = dataclasses.replace(
        small_config(), steps=100, batch_size=32, lr=3e-3, rollout_episodes=16, run_root=tmp_path
    )
    result = train_supervised(cfg, data=data, base=base)
    m = result.metrics
    # the true subgoal, injected as U_g e, makes the expert's actions more likely on held-out episodes
    assert m["held_out_nll_controlled"] < m["held_out_nll_base"] - 0.02
    for k, v in base.state_dict().items():
        assert torch.equal(v, before[k]), f"frozen base parameter {k} changed"
    for tasks in ("pretrain", "posttrain"):
        for labels in ("true", "wrong", "none"):
            assert 0.0 <= m[f"{tasks}/{labels}_success"] <= 1.0
            assert 0.0 <= m[f"{tasks}/{labels}_colours"] <= 4.0
    assert (
        json.loads((result.run_dir / "results.json").read_text())["held_out_nll_base"]
        == m["held_out_nll_base"]
    )
    assert any((result.run_dir / "checkpoints").iterdir())


def test_no_control_is_the_base_model_alone_whatever_the_label():
    base, meta = _base_and_random_controllers()
    plain = ControlledModel(base, _uncontrolled(meta))
    z, e = torch.randn(3, 5, 4), torch.randn(3, 5, 32)
    assert torch.equal(plain.meta.control(z, e), torch.zeros_like(e))
    assert meta.control(z, e).abs().max() > 0  # the copy, not the original, was zeroed
    kw = {"episodes": 32, "horizon": 40, "variant": "small", "seed": 5}
    assert closed_loop(plain, "pretrain", "none", **kw) == closed_loop(plain, "pretrain", "true", **kw)
    with pytest.raises(ValueError, match="labels"):
        closed_loop(ControlledModel(base, meta), "pretrain", "oracle", **kw)


def test_subgoal_codes_play_the_argmax_controller_and_switch_only_at_subgoal_boundaries():
    base, meta = _base_and_random_controllers()
    codes = SubgoalCodes(meta)
    z, e = torch.tensor([[0.1, 2.0, -1.0, 0.3], [5.0, 0.0, 0.0, 0.0]]), torch.randn(2, 32)
    expected = meta.control(torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]), e)
    assert torch.allclose(codes.control(z, e), expected)
    assert codes.switch_prob(e, codes.init_history(2), z).eq(0).all()

    env = BatchedInternalEnv(ControlledModel(base, codes), 16, "pretrain", horizon=40, variant="small",
                             switch_on_subgoal=True, seed=2)  # fmt: skip
    env.reset()
    decisions = torch.ones(16, dtype=torch.long)
    while not env.done.all():
        _, _, _, info = env.step(torch.randn(16, 4))
        decisions += (info["decided"] & ~env.done).long()
    # a new code exactly when the task's next colour changed, never in between
    changes = (env.subgoals[:, 1:] != env.subgoals[:, :-1]) & (env.subgoals[:, 1:] >= 0)
    assert torch.equal(env.switch_steps[:, 1:], changes)
    assert torch.equal(decisions, 1 + changes.sum(1))
    assert changes.any()
    # without the flag a switching unit that never fires asks for one code per episode
    env = BatchedInternalEnv(
        ControlledModel(base, codes), 16, "pretrain", horizon=40, variant="small", seed=2
    )
    env.reset()
    while not env.done.all():
        _, _, _, info = env.step(torch.randn(16, 4))
        assert not (info["decided"] & ~env.done).any()
    assert not env.switch_steps[:, 1:].any()


def test_rl_over_a_label_run_switches_at_subgoal_changes_and_needs_exactly_one_source(tmp_path):
    from internal_rl import rl

    data = _small_grid_data(60)
    base = _base(data.observations.shape[-1])
    cfg = dataclasses.replace(small_config(), steps=3, batch_size=8, rollout_episodes=4, run_root=tmp_path)
    run = train_supervised(cfg, data=data, base=base).run_dir
    codes = load_label_codes(run)
    assert isinstance(codes.meta, SubgoalCodes) and codes.meta.config.n_z == int(data.subgoals.max()) + 1
    for k, v in base.state_dict().items():  # the checkpoint carries its base model
        assert torch.equal(codes.base.state_dict()[k], v)
    rcfg = dataclasses.replace(rl.small_config(), label_run=run, steps=2, batch_size=8, run_root=tmp_path)
    out = rl.train_internal_rl(rcfg)
    assert json.loads((out.run_dir / "config.json").read_text())["switch_on_subgoal"]
    assert len(out.success) == 2
    with pytest.raises(ValueError, match="one of"):
        rl.train_internal_rl(dataclasses.replace(rcfg, metacontroller_run=run))
    with pytest.raises(ValueError, match="not label-driven"):
        load_label_codes(_discovery_run(tmp_path, base, data))


def _discovery_run(tmp_path, base, data):
    from internal_rl import discovery

    cfg = dataclasses.replace(discovery.small_config(), steps=2, batch_size=4, eval_every=2, checkpoint_every=2,
                              eval_episodes=4, run_root=tmp_path)  # fmt: skip
    return discovery.train_metacontroller(cfg, data=data, base=base).run_dir
