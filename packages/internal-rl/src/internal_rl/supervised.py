"""Label-driven controllers (paper C.3, Fig. 4, Tables A7/A8): can the frozen base model be steered at all?

One linear controller per subgoal, chosen by the ground-truth label: the metacontroller with
beta_t = 1 forced and z_t = one-hot(g_t), trained on the clean expert data D* by the action NLL
with the base model frozen. It answers the question every later stage depends on: if even the
true subgoal, injected as U_g e at layer L/2, does not make the base model reach that subgoal,
no code the metacontroller discovers can, and internal RL has nothing to search for.

The closed-loop evaluation plays the controllers in the environment with the *true* current
subgoal (an oracle policy over the controllers), against two controls: the base model
uncontrolled, and the controller of a wrong subgoal (a label drawn uniformly from the others).

    internal-rl supervised small --base-run runs/internal-rl/<pretraining run>
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from internal_rl.discovery import ControlledModel, load_metacontroller
from internal_rl.internal_env import BatchedInternalEnv
from internal_rl.metacontroller import Metacontroller, MetacontrollerConfig
from internal_rl.pretrain import CHECKPOINTS, Batch, DataConfig, action_nll, load_backbone, load_data
from latentforge.checkpoint import save_checkpoint
from latentforge.configs import config_to_dict
from latentforge.runs import MetricsLogger, create_run_dir
from latentforge.seeding import seed_everything


@dataclass
class SupervisedConfig:
    """Label-driven controllers. Defaults: paper Table A7 (grid)."""

    base_run: Path | None = None
    """Pretraining run whose (frozen) base model is steered."""
    data: DataConfig = field(default_factory=lambda: DataConfig(num_episodes=20_000, data_seed=2))
    """The clean expert data D* (epsilon is forced to 0)."""
    rank: int = 16
    """Rank of each controller U_g (grid: 16; 0 = full matrix, the ant's)."""
    steps: int = 3200
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.03
    eval_fraction: float = 0.1
    """Share of episodes held out for the action NLL."""
    rollout_episodes: int = 512
    """Closed-loop episodes per evaluation (pretraining tasks and the post-training task)."""
    horizon: int = 100
    """Episode horizon of the closed-loop evaluation."""
    greedy: bool = False
    """Closed-loop actions: sampled from the controlled base model (False) or its argmax."""
    seed: int = 0
    num_threads: int = 0
    run_root: Path = Path("runs")
    exp_name: str = "supervised"


def paper_config() -> SupervisedConfig:
    """Table A7: rank 16 at L/2, 3200 steps x 512, AdamW lr 1e-3, wd 0.03."""
    return SupervisedConfig()


def small_config() -> SupervisedConfig:
    """The small grid: 800 steps x 64 on 3000 clean episodes, horizon 40 (README: "the small grid")."""
    return SupervisedConfig(
        data=DataConfig(num_episodes=3000, data_seed=2, variant="small", expert_ties="first"),
        steps=800,
        batch_size=64,
        horizon=40,
    )


PRESETS = {"small": small_config, "paper": paper_config}


@dataclass
class SupervisedResult:
    run_dir: Path
    model: ControlledModel
    metrics: dict[str, float]


def _labels(subgoals: torch.Tensor, steps: int, n: int) -> torch.Tensor:
    """one-hot(g_t) for every token of a batch: (E, steps, n); the final observation keeps the last label."""
    g = subgoals.clamp(min=0)
    g = torch.cat([g, g[:, -1:]], 1)[:, :steps]
    return F.one_hot(g, n).float()


def controlled_nll(
    model: ControlledModel, part: Any, n_subgoals: int, *, control: bool = True
) -> torch.Tensor:
    """Action NLL of the base model on expert episodes, steered by the true subgoal's controller or not."""
    batch = Batch.from_trajectories(
        part.observations, part.actions, part.lengths, next(model.parameters()).device
    )
    with torch.no_grad():
        e = model.base.lower(batch.obs, model.layer)
    if control:
        z = _labels(part.subgoals, e.shape[1], n_subgoals).to(e.device)
        e = e + model.meta.control(z, e)
    return action_nll(model.base.upper(e, model.layer), batch.actions, batch.mask)


@torch.no_grad()
def closed_loop(
    model: ControlledModel,
    task_set: str,
    labels: str,
    *,
    episodes: int,
    horizon: int,
    variant: str,
    seed: int = 0,
    greedy: bool = False,
) -> dict[str, float]:
    """Play the controllers at every step with ``labels``: "true" (the current subgoal), "wrong" (another
    subgoal, redrawn every step) or "none" (the base model alone); success and colours entered in order."""
    if labels not in ("true", "wrong", "none"):
        raise ValueError(f"labels must be 'true', 'wrong' or 'none', got {labels!r}")
    n = model.meta.config.n_z
    env = BatchedInternalEnv(model, episodes, task_set, horizon=horizon, seed=seed, greedy=greedy,
                             variant=variant)  # fmt: skip
    env.reset()
    gen = torch.Generator().manual_seed(seed)
    while not env.done.all():
        g = env.grid._info()["subgoal"].clamp(min=0).cpu()
        if labels == "wrong":  # uniform over the other n - 1 subgoals
            g = (g + torch.randint(1, n, g.shape, generator=gen)) % n
        z = F.one_hot(g, n).float()
        if labels == "none":
            z = torch.zeros_like(z)
        env.step(z)
    return {
        "success": float(env.success.float().mean()),
        "colours": float(env.colours.float().mean()),
    }


class SubgoalCodes(torch.nn.Module):
    """The label-driven controllers as an internal-RL action space: a positive control.

    A code z in R^K plays controller argmax(z), so a Gaussian policy over z, initialised at
    N(0, I), starts uniform over the K subgoals. There is no switching unit: the environment must
    switch at the true subgoal boundaries (``BatchedInternalEnv(switch_on_subgoal=True)``). Internal
    RL over these codes asks whether RL at the abstract timescale learns the post-training task
    when every code names a subgoal, which separates the RL half of the paper's claim from the
    discovery half.
    """

    def __init__(self, meta: Metacontroller):
        super().__init__()
        self.inner = meta
        self.config = meta.config  # the environment and the policy read config.n_z

    def control(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(z.argmax(-1), self.config.n_z).to(e.dtype)
        return self.inner.control(one_hot, e)

    def init_history(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch, 1, device=device)

    def step_history(self, e: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        return h_prev

    def switch_prob(self, e: torch.Tensor, h_prev: torch.Tensor, z_prev: torch.Tensor) -> torch.Tensor:
        return torch.zeros(e.shape[0], device=e.device, dtype=e.dtype)


def as_subgoal_codes(model: ControlledModel) -> ControlledModel:
    """Trained label-driven controllers (``SupervisedResult.model``) as internal-RL codes on their base model."""
    if not model.meta.config.forced_switch:
        raise ValueError("these are discovered codes, not label-driven (supervised) controllers")
    return ControlledModel(model.base, SubgoalCodes(model.meta)).eval()


def load_label_codes(run: str | Path, device: str | torch.device = "cpu") -> ControlledModel:
    """:func:`as_subgoal_codes` of a ``supervised`` run folder's checkpoint."""
    try:
        return as_subgoal_codes(load_metacontroller(run, device))
    except ValueError as exc:
        raise ValueError(f"{run}: {exc}") from exc


def _uncontrolled(meta: Metacontroller) -> Metacontroller:
    """A copy whose decoder outputs exactly 0, so U = 0 for every code (the base model alone)."""
    clone = Metacontroller(meta.d_model, meta.config)
    clone.load_state_dict(meta.state_dict())
    with torch.no_grad():
        clone.decoder[-1].weight.zero_()
        clone.decoder[-1].bias.zero_()
    return clone


def train_supervised(cfg: SupervisedConfig, data: Any = None, base: Any = None) -> SupervisedResult:
    """Train one controller per subgoal on D* and evaluate them closed-loop; ``data``/``base`` override the config."""
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if base is None:
        if cfg.base_run is None:
            raise ValueError("set base_run: the pretraining run whose model the controllers steer")
        base, _ = load_backbone(cfg.base_run)
    if data is None:
        data = load_data(dataclasses.replace(cfg.data, epsilon=0.0))
    if data.actions.ndim != 2:
        raise ValueError("label-driven controllers are implemented for the grid (discrete actions)")
    n_subgoals = int(data.subgoals.max()) + 1
    seed_everything(cfg.seed)
    meta = Metacontroller(
        base.config.d_model, MetacontrollerConfig(n_z=n_subgoals, rank=cfg.rank, forced_switch=True)
    )
    model = ControlledModel(base, meta).eval()
    n_eval = max(1, round(len(data) * cfg.eval_fraction))
    train, held_out = data[: len(data) - n_eval], data[len(data) - n_eval :]
    optimizer = torch.optim.AdamW(meta.decoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run_dir = create_run_dir(cfg.run_root, "internal-rl", cfg.exp_name, cfg.seed, config_to_dict(cfg))
    t0 = time.perf_counter()
    with MetricsLogger(run_dir) as log:
        for step in log.progress(range(cfg.steps), total=cfg.steps, desc="label-driven controllers"):
            part = train[torch.randint(len(train), (cfg.batch_size,))]
            loss = controlled_nll(model, part, n_subgoals)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step + 1) % 100 == 0 or step + 1 == cfg.steps:
                log.log(step + 1, **{"losses/action_nll": float(loss.detach())})
    model.requires_grad_(False)
    with torch.no_grad():
        metrics: dict[str, float] = {
            "held_out_nll_controlled": float(controlled_nll(model, held_out, n_subgoals)),
            "held_out_nll_base": float(controlled_nll(model, held_out, n_subgoals, control=False)),
        }
    variant = cfg.data.variant
    plain = ControlledModel(base, _uncontrolled(meta)).eval()
    for task_set in ("pretrain", "posttrain"):
        for labels in ("true", "wrong", "none"):
            out = closed_loop(
                plain if labels == "none" else model, task_set, labels, episodes=cfg.rollout_episodes,
                horizon=cfg.horizon, variant=variant, seed=cfg.seed + 1, greedy=cfg.greedy,
            )  # fmt: skip
            for key, value in out.items():
                metrics[f"{task_set}/{labels}_{key}"] = value
    metrics["seconds_this_session"] = time.perf_counter() - t0
    (run_dir / "results.json").write_text(json.dumps(metrics, indent=2))
    # base + controllers in one checkpoint, in the discovery runs' layout (load_label_codes reads it)
    extra = {
        "backbone": config_to_dict(base.config),
        "meta": config_to_dict(meta.config),
        "base_run": str(cfg.base_run),
    }
    save_checkpoint(run_dir / CHECKPOINTS, model=model, step=cfg.steps, extra=extra)
    return SupervisedResult(run_dir=run_dir, model=model, metrics=metrics)
