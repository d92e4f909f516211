"""Internal RL (Algorithm 3, Eq. 10) and the raw-action baseline."""

import dataclasses
import json

import pytest
import torch

from internal_rl.backbone import Backbone, BackboneConfig
from internal_rl.baselines import train_raw_action_rl
from internal_rl.discovery import ControlledModel
from internal_rl.internal_env import BatchedInternalEnv
from internal_rl.metacontroller import Metacontroller, MetacontrollerConfig
from internal_rl.rl import (
    PPOConfig,
    RLConfig,
    SSMPolicy,
    collect,
    policy_log_probs,
    ppo_update,
    train_internal_rl,
    trajectory_advantages,
)

# 7x7 grid, agent in the centre (24), colour 0 two cells to its right, colour 1 two to its left.
EASY_LAYOUT = {
    "colour_cells": [26, 22, 0, 6, 42, 48, 3, 45],
    "wall_cells": [10, 38, 21, 27],
    "agent_cell": [24],
}


def steerable_model(seed: int = 0) -> ControlledModel:
    """A random base model whose actions react strongly to the residual (so z matters) and
    whose switching unit never fires (one code per episode)."""
    torch.manual_seed(seed)
    base = Backbone(BackboneConfig(n_layers=2, d_model=32, n_heads=4, mlp_hidden=64))
    meta = Metacontroller(32, MetacontrollerConfig())
    with torch.no_grad():
        base.action_head.weight.mul_(30.0)
        for p in meta.decoder.parameters():
            p.normal_(0, 1.0)
        meta.switch[-1].bias.fill_(-50.0)
    return ControlledModel(base, meta).eval().requires_grad_(False)


def test_trajectory_advantage_is_batch_normalised():
    r = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0])
    a = trajectory_advantages(r, 1e-3)
    assert abs(float(a.mean())) < 1e-6
    assert float(a[1]) > 0 > float(a[0])
    assert torch.allclose(a * (r.std(unbiased=False) + 1e-3), r - r.mean())


def test_internal_rl_improves_on_an_easy_task():
    """Reach colour 0 on a fixed layout: the best code is a constant the policy can learn."""
    env = BatchedInternalEnv(steerable_model(), 32, tasks=((0,),), layout=EASY_LAYOUT, horizon=30)
    policy = SSMPolicy(32, 8, 32)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2, weight_decay=0.0)
    success = []
    for it in range(12):
        env.seed(it)
        rollout = collect(env, policy, torch.Generator().manual_seed(it))
        assert (rollout.decisions == 1).all()  # the switch never fires: one code per episode
        success.append(float(rollout.returns.mean()))
        ppo_update(policy, optimizer, rollout, PPOConfig(), policy_log_probs)
    initial, final = sum(success[:3]) / 3, sum(success[-3:]) / 3
    assert final > initial + 0.2, success


def _rl_cfg(tmp_path, steps, **kw):
    return RLConfig(
        tasks="0", steps=steps, batch_size=8, policy_width=16, checkpoint_every=2, log_every=1,
        run_root=tmp_path, ppo=PPOConfig(lr=1e-2), horizon=30, **kw,
    )  # fmt: skip


def test_internal_rl_resume_matches_uninterrupted(tmp_path):
    model = steerable_model()
    full = train_internal_rl(_rl_cfg(tmp_path / "a", 4), model)
    half = train_internal_rl(_rl_cfg(tmp_path / "b", 2), model)
    resumed = train_internal_rl(dataclasses.replace(_rl_cfg(tmp_path / "b", 4), resume=half.run_dir), model)
    assert full.success == resumed.success and len(full.success) == 4
    h_full = json.loads((full.run_dir / "results.json").read_text())["history"]
    h_res = json.loads((resumed.run_dir / "results.json").read_text())["history"]
    assert h_full == h_res
    from safetensors.torch import load_file

    from latentforge.checkpoint import latest_checkpoint

    a = load_file(str(latest_checkpoint(full.run_dir / "checkpoints") / "model.safetensors"))
    b = load_file(str(latest_checkpoint(resumed.run_dir / "checkpoints") / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_raw_action_baseline_runs_and_finetunes_the_base_model(tmp_path):
    model = steerable_model()
    before = model.base.action_head.weight.clone()
    result = train_raw_action_rl(_rl_cfg(tmp_path, 2, exp_name="raw"), model.base)
    assert len(result.success) == 2
    assert torch.equal(model.base.action_head.weight, before)  # a copy is finetuned, not the original
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("losses/loss" in r for r in rows)


def test_cli_lists_the_part_two_subcommands(capsys):
    import pytest

    from internal_rl.cli import main

    for argv in (["metacontroller", "tiny", "--help"], ["rl", "tiny", "--help"], ["reproduce", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--base-run" in out and "--metacontroller-run" in out and "--config" in out


def test_internal_rl_trains_on_the_ant_when_the_base_model_is_continuous(tmp_path):
    from internal_rl.backbone import ant_backbone_config

    torch.manual_seed(0)
    base = Backbone(
        ant_backbone_config(n_layers=2, d_model=16, n_heads=2, mlp_hidden=32, lru_width=16, obs_dim=41)
    )
    model = ControlledModel(base, Metacontroller(16, MetacontrollerConfig(rank=0))).eval()
    cfg = _rl_cfg(tmp_path, 2, threshold=1.01)  # beta never reaches 1.01: one code per episode
    cfg = dataclasses.replace(cfg, batch_size=2, horizon=12)
    result = train_internal_rl(cfg, model)
    history = json.loads((result.run_dir / "results.json").read_text())["history"]
    assert history["decisions"] == [1.0, 1.0]
    # each random ant walks the whole horizon or stops early (fell, wall, colour): never more
    assert all(0 < steps <= 12 for steps in history["primitive_steps"])
    assert len(result.success) == 2


def test_initial_policy_std_sets_the_spread_of_the_first_codes():
    obs = torch.randn(4096, 16)
    for std in (1.0, 3.0):
        policy = SSMPolicy(16, 8, width=32, init_std=std)
        mean, _ = policy.step(obs, policy.init_state(4096))
        z = mean + policy.log_std.exp() * torch.randn(4096, 8, generator=torch.Generator().manual_seed(0))
        assert torch.equal(mean, torch.zeros_like(mean))  # the mean head starts at zero: N(0, std^2 I)
        assert abs(float(z.std()) - std) < 0.05 * std
    with pytest.raises(ValueError, match="init_std must be positive"):
        SSMPolicy(16, 8, init_std=0.0)
