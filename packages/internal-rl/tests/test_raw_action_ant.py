"""Raw-action RL on ant-pinpad (paper C.4.1): PPO-clip on the base model's Gaussian torques."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from internal_rl.backbone import Backbone, BackboneConfig, ant_backbone_config
from internal_rl.baselines import collect_raw_ant, raw_gaussian_log_probs, train_raw_action_rl
from internal_rl.envs.ant import AntPinpadEnv
from internal_rl.envs.grid import GridLayout
from internal_rl.rl import PPOConfig, RLConfig
from latentforge.checkpoint import latest_checkpoint

OBS_DIM = 41
HORIZON = 20
# 4x4 cells of 2 m: colours on the top row, torsos a few cm below it, so the random ants end
# by several causes (success on colour 0, wrong colour 1, timeout, fell) within the horizon.
LAYOUT = GridLayout(colour_cells=np.array([0, 1, 2, 3]), wall_cells=np.array([8]), agent_cell=4)
OPTIONS = [
    {"task_id": 0, "layout": LAYOUT, "start_xy": np.array([x, 1.98])} for x in (-3.0, -1.0, -3.0, -1.0)
]
TASKS = ((0,),)


def tiny_base(seed: int = 0, **overrides) -> Backbone:
    torch.manual_seed(seed)
    cfg = ant_backbone_config(
        n_layers=2, d_model=16, n_heads=2, mlp_hidden=32, lru_width=16, obs_dim=OBS_DIM, **overrides
    )
    base = Backbone(cfg).eval()
    with torch.no_grad():  # wide torques: some samples leave the [-1, 1] box and get clipped
        base.action_head.bias[cfg.action_dim :].fill_(0.3)
    return base


def make_envs(n: int = 4) -> list[AntPinpadEnv]:
    envs = [AntPinpadEnv("posttrain", horizon=HORIZON) for _ in range(n)]
    for env in envs:
        env.tasks = TASKS
    return envs


def test_recorded_torques_replay_to_the_same_episodes_and_their_log_probs_are_the_models():
    base = tiny_base(condition_on_prev_action=True)
    seeds = [11, 12, 13, 14]
    rollout = collect_raw_ant(base, make_envs(), seeds, torch.Generator().manual_seed(5), OPTIONS)
    lengths = rollout.primitive_steps
    assert torch.equal(rollout.mask.sum(1), lengths) and (lengths >= 1).all() and (lengths <= HORIZON).all()
    executed = rollout.extras["executed"]
    # the box is [-1, 1]: clipping happened, and only where the sample left it
    assert bool((rollout.actions[rollout.mask].abs() > 1).any())
    assert torch.equal(executed, rollout.actions.clamp(-1, 1) * rollout.mask[..., None])
    causes = set()
    for i, (seed, opts) in enumerate(zip(seeds, OPTIONS, strict=True)):
        ant = AntPinpadEnv("posttrain", horizon=HORIZON)
        ant.tasks = TASKS
        obs, _ = ant.reset(seed=seed, options=opts)
        total, n = 0.0, 0
        for t, a in enumerate(executed[i, : int(lengths[i])].numpy()):
            assert np.array_equal(obs, rollout.obs[i, t].numpy())  # the model saw this env's o_t
            obs, r, terminated, truncated, info = ant.step(a)
            total, n = total + r, n + 1
            if terminated or truncated:
                causes.add(info["termination_cause"])
                break
        assert terminated or truncated  # each recorded episode ends where the rollout's did
        assert total == float(rollout.returns[i]) and n == int(lengths[i])
        ant.close()
    assert len(causes) >= 2, causes

    # log N(a; mu, sigma) written out, with the model's own mean / std of o_{1:t} and a_{1:t-1}
    prev = torch.cat([torch.zeros_like(executed[:, :1]), executed[:, :-1]], 1)
    out = base(rollout.obs, prev)
    mu, log_std = out.action_mean, out.action_log_std
    explicit = (
        -0.5 * ((rollout.actions - mu) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    ).sum(-1)
    m = rollout.mask
    with torch.no_grad():
        used = raw_gaussian_log_probs(base, rollout)
    assert torch.allclose(used[m], explicit[m], atol=1e-4)
    # the rollout's (stepped) log-probs are the old-policy log-probs of the PPO ratio: ratio 1 at the start
    assert torch.allclose(rollout.log_probs[m], explicit[m], atol=1e-3)
    assert (rollout.log_probs[~m] == 0).all() and (rollout.actions[~m] == 0).all()


def _cfg(tmp_path, steps: int, **kw) -> RLConfig:
    return RLConfig(
        tasks="0", steps=steps, batch_size=4, horizon=HORIZON, checkpoint_every=1, log_every=1,
        run_root=tmp_path, ppo=PPOConfig(lr=1e-2), device="cpu", exp_name="raw-ant", **kw,
    )  # fmt: skip


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(latest_checkpoint(run_dir / "checkpoints") / "model.safetensors"))


def test_raw_action_ant_finetunes_a_copy_and_resumes_to_the_uninterrupted_run(tmp_path):
    base = tiny_base()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    full = train_raw_action_rl(_cfg(tmp_path / "a", 2), base, reset_options=OPTIONS)
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())  # the original is untouched
    trained = _weights(full.run_dir)
    assert any(not torch.equal(trained[k], before[k]) for k in trained)  # the copy was updated
    assert len(full.success) == 2 and full.episodes == [4, 8]
    history = json.loads((full.run_dir / "results.json").read_text())["history"]
    assert all(0 < s <= HORIZON for s in history["primitive_steps"])
    rows = [json.loads(x) for x in (full.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["losses/clip_fraction"] >= 0 for r in rows] == [True, True]  # both batches were learnt from

    half = train_raw_action_rl(_cfg(tmp_path / "b", 1), base, reset_options=OPTIONS)
    resumed = train_raw_action_rl(
        dataclasses.replace(_cfg(tmp_path / "b", 2), resume=half.run_dir), base, reset_options=OPTIONS
    )
    assert resumed.success == full.success
    h_res = json.loads((resumed.run_dir / "results.json").read_text())["history"]
    assert h_res == history
    b = _weights(resumed.run_dir)
    assert all(torch.equal(trained[k], b[k]) for k in trained)


def test_reset_options_belong_to_the_ant():
    grid_base = Backbone(BackboneConfig(n_layers=1, d_model=8, n_heads=2, mlp_hidden=8))
    with pytest.raises(ValueError, match="the grid takes none"):
        train_raw_action_rl(RLConfig(batch_size=4), grid_base, reset_options=OPTIONS)
    with pytest.raises(ValueError, match="4 reset_options for batch_size 2"):
        train_raw_action_rl(RLConfig(batch_size=2), tiny_base(), reset_options=OPTIONS)
