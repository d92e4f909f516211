"""Baselines of paper C.4 / C.5 run through the same RL harness and episode budget.

* ``raw-action``: the GRPO-like update of :mod:`internal_rl.rl` applied directly to the base
  model's primitive actions (every parameter of the base model is finetuned): the grid's
  softmax actions, or the ant's 8 Gaussian torques (sampled, clipped to the action box for
  MuJoCo; the update scores the unclipped sample);
* ``forced-switch``: a metacontroller trained with beta = 1 at every step, then internal RL
  (the policy acts at every primitive step);
* ``cotrained``: a metacontroller trained jointly with the base model, then internal RL.

The last two are discovery options (``MetacontrollerConfig.forced_switch``,
``DiscoveryConfig.cotrain``) followed by :func:`internal_rl.rl.train_internal_rl`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from internal_rl.backbone import Backbone, shift_actions
from internal_rl.incremental import IncrementalBackbone
from internal_rl.internal_env import make_grid
from internal_rl.rl import RLConfig, RLResult, Rollout, parse_tasks, run_rl_loop
from latentforge.seeding import seed_everything


@torch.no_grad()
def collect_raw(model: Backbone, grid: Any, generator: torch.Generator, horizon: int) -> Rollout:
    """Episodes of the base model sampling primitive actions itself (no controller)."""
    n = grid.num_envs
    obs0 = grid.reset().clone()
    layer = model.n_layers // 2
    stepper = IncrementalBackbone(model, n, horizon + 1, layer)
    observations = torch.zeros(n, horizon + 1, obs0.shape[-1])
    observations[:, 0] = obs0
    actions = torch.full((n, horizon), -1, dtype=torch.long)
    log_probs = torch.zeros(n, horizon)
    done = torch.zeros(n, dtype=torch.bool)
    returns = torch.zeros(n)
    obs = obs0
    for t in range(horizon):
        rows = (~done).nonzero().squeeze(1)
        e = stepper.lower(obs[rows], rows)
        logits = stepper.upper(e, rows).action_logits[:, -1]
        chosen = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
        action = torch.zeros(n, dtype=torch.long)
        action[rows] = chosen
        actions[rows, t] = chosen
        log_probs[rows, t] = F.log_softmax(logits, -1).gather(1, chosen[:, None]).squeeze(1)
        obs, reward, terminated, truncated, _ = grid.step(action)
        returns += reward * ~done
        done |= terminated | truncated
        observations[:, t + 1] = obs
        if done.all():
            break
    lengths = (actions >= 0).sum(1)
    steps = max(1, int(lengths.max()))
    mask = torch.arange(steps)[None] < lengths[:, None]
    return Rollout(
        obs=observations[:, :steps],
        actions=actions[:, :steps],
        log_probs=log_probs[:, :steps],
        mask=mask,
        returns=returns,
        primitive_steps=lengths,
        decisions=lengths,
    )


def raw_log_probs(model: torch.nn.Module, rollout: Rollout) -> torch.Tensor:
    logits = model(rollout.obs).action_logits
    return F.log_softmax(logits, -1).gather(-1, rollout.actions.clamp(min=0)[..., None]).squeeze(-1)


def train_raw_action_rl(
    cfg: RLConfig, base: Backbone, *, reset_options: Sequence[dict[str, Any] | None] | None = None
) -> RLResult:
    """Finetune a copy of ``base`` with critic-free PPO-clip on primitive actions.

    The action head says which world ``base`` was pretrained on: softmax -> gridworld-pinpad,
    Gaussian -> ant-pinpad (:func:`train_raw_action_rl_ant`, which alone takes ``reset_options``).
    """
    if not base.config.discrete_actions:
        return train_raw_action_rl_ant(cfg, base, reset_options=reset_options)
    if reset_options is not None:
        raise ValueError("reset_options are the ant's (AntPinpadEnv.reset); the grid takes none")
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    policy = copy.deepcopy(base).train().requires_grad_(True)
    tasks = parse_tasks(cfg.tasks)

    def collect_fn(iteration: int, generator: torch.Generator) -> Rollout:
        grid = make_grid(
            cfg.batch_size, cfg.task_set, tasks=tasks, seed=cfg.seed * 1_000_003 + iteration,
            horizon=cfg.horizon, layout_pool=cfg.batch_size, variant=cfg.variant,
        )  # fmt: skip
        policy.eval()
        rollout = collect_raw(policy, grid, generator, cfg.horizon)
        policy.train()
        return rollout

    return run_rl_loop(cfg, policy, collect_fn, raw_log_probs, extra={"baseline": "raw-action"})


# -- ant-pinpad: Gaussian torques ------------------------------------------------------------------
def _gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(mean, log_std.exp()).log_prob(action).sum(-1)


@torch.no_grad()
def collect_raw_ant(
    model: Backbone,
    envs: Sequence[Any],
    seeds: Sequence[int],
    generator: torch.Generator,
    reset_options: Sequence[dict[str, Any] | None] | None = None,
) -> Rollout:
    """Episodes of ``envs`` (``AntPinpadEnv``) with ``model`` sampling torques from its Gaussian head.

    Every env is reset with ``seeds[i]`` and ``reset_options[i]``. ``actions`` holds the unclipped
    samples the log-probs score; ``extras["executed"]`` the clipped ones MuJoCo ran (and a model
    with ``condition_on_prev_action`` embeds as a_{t-1}), 0 after an episode's end. Noise comes from
    ``generator`` (CPU), so the episodes do not depend on the model's device.
    """
    n, device = len(envs), model.final_norm.weight.device
    options = list(reset_options) if reset_options is not None else [None] * n
    horizon = max(env.horizon for env in envs)
    space = envs[0].action_space
    low = torch.as_tensor(space.low, dtype=torch.float32, device=device)
    high = torch.as_tensor(space.high, dtype=torch.float32, device=device)
    first = [env.reset(seed=int(s), options=o)[0] for env, s, o in zip(envs, seeds, options, strict=True)]
    obs_np = np.stack(first).astype(np.float32)
    a_dim = model.config.action_dim
    observations = torch.zeros(n, horizon, obs_np.shape[-1], device=device)
    actions = torch.zeros(n, horizon, a_dim, device=device)
    executed = torch.zeros(n, horizon, a_dim, device=device)
    log_probs = torch.zeros(n, horizon, device=device)
    lengths = torch.zeros(n, dtype=torch.long)
    returns = torch.zeros(n)
    success = torch.zeros(n, dtype=torch.bool)
    done = np.zeros(n, bool)
    state = model.init_state(n)
    prev = torch.zeros(n, a_dim, device=device)
    for t in range(horizon):
        obs = torch.as_tensor(obs_np, device=device)
        # Finished rows are stepped on their last observation (rows are independent) and never read.
        out, state = model.step(obs, state, prev_action=prev)
        assert out.action_mean is not None and out.action_log_std is not None
        mean, log_std = out.action_mean[:, 0], out.action_log_std[:, 0]
        noise = torch.randn(mean.shape, generator=generator).to(device)
        sample = mean + log_std.exp() * noise
        clipped = torch.clamp(sample, low, high)
        active = torch.as_tensor(~done, device=device)
        observations[:, t] = torch.where(active[:, None], obs, 0.0)
        actions[:, t] = torch.where(active[:, None], sample, 0.0)
        executed[:, t] = torch.where(active[:, None], clipped, 0.0)
        log_probs[:, t] = torch.where(active, _gaussian_log_prob(mean, log_std, sample), 0.0)
        prev = clipped
        clipped_np = clipped.cpu().numpy()  # MuJoCo runs exactly the float32 values recorded
        for i in np.flatnonzero(~done).tolist():
            o, r, terminated, truncated, info = envs[i].step(clipped_np[i])
            obs_np[i] = o
            returns[i] += r
            lengths[i] += 1
            success[i] |= bool(info["success"])
            done[i] = terminated or truncated
        if done.all():
            break
    steps = max(1, int(lengths.max()))
    mask = (torch.arange(steps)[None] < lengths[:, None]).to(device)
    return Rollout(
        obs=observations[:, :steps],
        actions=actions[:, :steps],
        log_probs=log_probs[:, :steps],
        mask=mask,
        returns=returns.to(device),
        primitive_steps=lengths,
        decisions=lengths,
        extras={"executed": executed[:, :steps], "success": success},
    )


def raw_gaussian_log_probs(model: torch.nn.Module, rollout: Rollout) -> torch.Tensor:
    """log N(a_t; mu(o_{1:t}), sigma(o_{1:t})) of the stored unclipped torques, one full forward pass."""
    prev = shift_actions(rollout.extras["executed"], discrete=False)
    out = model(rollout.obs, prev if model.config.condition_on_prev_action else None)
    return _gaussian_log_prob(out.action_mean, out.action_log_std, rollout.actions)


def train_raw_action_rl_ant(
    cfg: RLConfig, base: Backbone, *, reset_options: Sequence[dict[str, Any] | None] | None = None
) -> RLResult:
    """Raw-action RL on ant-pinpad: PPO-clip on every parameter of a copy of the Gaussian-head ``base``.

    The episodes of iteration ``k`` are those internal RL sees at ``k`` (same seed derivation as
    ``BatchedInternalAntEnv.seed``); the copy runs on ``cfg.device``, MuJoCo on the CPU.
    ``reset_options`` (one per episode of the batch) fixes e.g. the layout or start of each ant.
    """
    from internal_rl.envs.ant import AntPinpadEnv
    from internal_rl.internal_ant_env import _episode_seeds
    from internal_rl.pretrain import resolve_device

    if base.config.discrete_actions:
        raise ValueError("the ant's base model must have a continuous (Gaussian) action head")
    if reset_options is not None and len(reset_options) != cfg.batch_size:
        raise ValueError(f"{len(reset_options)} reset_options for batch_size {cfg.batch_size}")
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    policy = copy.deepcopy(base).to(resolve_device(cfg.device)).train().requires_grad_(True)
    tasks = parse_tasks(cfg.tasks)
    envs = [AntPinpadEnv(cfg.task_set, horizon=cfg.horizon) for _ in range(cfg.batch_size)]
    if tasks is not None:
        for env in envs:  # AntPinpadEnv draws its task (and a solvable layout) from .tasks
            env.tasks = tasks
    if envs[0].observation_space.shape != (base.config.obs_dim,):
        raise ValueError(
            f"ant observations {envs[0].observation_space.shape} do not match the model's obs_dim "
            f"{base.config.obs_dim}"
        )

    def collect_fn(iteration: int, generator: torch.Generator) -> Rollout:
        seeds = _episode_seeds(cfg.seed * 1_000_003 + iteration, cfg.batch_size)
        policy.eval()
        rollout = collect_raw_ant(policy, envs, seeds, generator, reset_options)
        policy.train()
        return rollout

    try:
        return run_rl_loop(cfg, policy, collect_fn, raw_gaussian_log_probs, extra={"baseline": "raw-action"})
    finally:
        for env in envs:
            env.close()
