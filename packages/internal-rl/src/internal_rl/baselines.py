"""Baselines of paper C.4 / C.5 run through the same RL harness and episode budget.

* ``raw-action``: the GRPO-like update of :mod:`internal_rl.rl` applied directly to the base
  model's primitive actions (every parameter of the base model is finetuned);
* ``forced-switch``: a metacontroller trained with beta = 1 at every step, then internal RL
  (the policy acts at every primitive step);
* ``cotrained``: a metacontroller trained jointly with the base model, then internal RL.

The last two are discovery options (``MetacontrollerConfig.forced_switch``,
``DiscoveryConfig.cotrain``) followed by :func:`internal_rl.rl.train_internal_rl`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from internal_rl.backbone import Backbone
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


def train_raw_action_rl(cfg: RLConfig, base: Backbone) -> RLResult:
    """Finetune a copy of ``base`` with critic-free PPO-clip on primitive actions."""
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    policy = copy.deepcopy(base).train().requires_grad_(True)
    tasks = parse_tasks(cfg.tasks)

    def collect_fn(iteration: int, generator: torch.Generator) -> Rollout:
        grid = make_grid(
            cfg.batch_size, cfg.task_set, tasks=tasks, seed=cfg.seed * 1_000_003 + iteration,
            horizon=cfg.horizon, layout_pool=cfg.batch_size,
        )  # fmt: skip
        policy.eval()
        rollout = collect_raw(policy, grid, generator, cfg.horizon)
        policy.train()
        return rollout

    return run_rl_loop(cfg, policy, collect_fn, raw_log_probs, extra={"baseline": "raw-action"})
