"""Internal RL on CompILE's codes (paper C.4.3): the trained CompILE module stands in for the
metacontroller, and the same internal-RL environment and algorithm act on its latent codes.

The environment needs a *causal* switching unit; CompILE has none. Its boundaries are a
softmax over every position of a whole sequence (normalised with the future) and its encoder
re-reads the sequence from each segment's start, so neither can say online "switch now".
The adaptation used here is the one that adds nothing learnt: **switch every k primitive
steps**, with k = round(prior mean segment length) = round(``prior_rate``) (the Poisson prior's
mean is its rate, 10 in Tables A11/A12). Each abstract step therefore runs exactly k primitive
steps of the controlled base model, except the episode's last, which stops when the episode
ends. ``CompileRunConfig.rl_switch_every`` overrides k (e.g. with the measured mean segment
length of a trained model).

The control is CompILE's own decoder (the metacontroller's hypernetwork, trained with CompILE):
e_t <- e_t + U(z) e_t at layer L/2 of the frozen base model; CompILE's encoder and boundary
head are inference-only and are dropped, as the paper drops the metacontroller's encoder.

    train_compile_run(tiny_config(), base_run)  # run folder: config.json, metrics.jsonl, checkpoints/
    train_internal_rl(rl_cfg, load_compile_controlled(run_dir))
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from internal_rl.backbone import Backbone, BackboneConfig
from internal_rl.compile import (
    CompileConfig,
    CompileModel,
    compile_losses,
    compile_switch_statistics,
    paper_ant_compile_config,
    train_compile,
)
from internal_rl.pretrain import Batch, DataConfig, load_backbone, load_data, resolve_device
from latentforge.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from latentforge.configs import config_from_dict, config_to_dict
from latentforge.runs import MetricsLogger, create_run_dir

CHECKPOINTS = "checkpoints"


def default_switch_interval(cfg: CompileConfig) -> int:
    """k = round(prior mean segment length): the Poisson length prior's mean is its rate."""
    return max(1, round(cfg.prior_rate))


class PeriodicSwitch(nn.Module):
    """CompILE's decoder in the metacontroller's place, with a switch every ``every`` primitive steps.

    The "history" the environment threads through ``step_history`` is the number of primitive
    steps taken since the episode began, so beta_t = 1 exactly when t is a multiple of ``every``
    and a new code is then asked for; e, h_{t-1} and z are otherwise ignored.
    """

    def __init__(self, model: CompileModel, every: int | None = None):
        super().__init__()
        self.decoder = model.decoder
        self.config = model.config  # the environment reads config.n_z
        self.every = default_switch_interval(model.config) if every is None else int(every)
        if self.every < 1:
            raise ValueError(f"switch interval must be >= 1, got {self.every}")

    def control(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """U(z) e from CompILE's hypernetwork decoder."""
        return self.decoder.control(z, e)

    def init_history(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch, dtype=torch.long, device=device)

    def step_history(self, e: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        return h_prev + 1

    def switch_prob(self, e: torch.Tensor, h_prev: torch.Tensor, z_prev: torch.Tensor) -> torch.Tensor:
        return (h_prev % self.every == 0).to(e.dtype)


class CompileControlledModel(nn.Module):
    """A trained CompILE model presented as :class:`internal_rl.discovery.ControlledModel`:
    ``.base`` (frozen), ``.layer`` (L/2) and ``.meta`` (a :class:`PeriodicSwitch`)."""

    def __init__(self, model: CompileModel, switch_every: int | None = None):
        super().__init__()
        self.base = model.base
        self.layer = model.layer
        self.meta = PeriodicSwitch(model, switch_every)


@dataclass
class CompileRunConfig:
    """A CompILE training run folder (the metacontroller's DiscoveryConfig, for CompILE)."""

    base_run: Path | None = None
    """Pretraining run folder (or checkpoint) of the frozen base model."""
    compile: CompileConfig = field(default_factory=CompileConfig)
    """Module and optimisation (seed and device included); defaults: Table A11."""
    data: DataConfig = field(default_factory=lambda: DataConfig(num_episodes=100_000, data_seed=2))
    """D*: clean expert data (epsilon forced to 0), as the metacontroller's."""
    eval_episodes: int = 256
    """Held-out episodes (the last ones of the data) for the segmentation statistics."""
    rl_switch_every: int = 0
    """Primitive steps per abstract step in internal RL; 0 means round(compile.prior_rate)."""
    switch_tolerance: int = 1
    """As the metacontroller's: steps by which a boundary may miss a true subgoal change in the F1."""
    num_threads: int = 0
    run_root: Path = Path("runs")
    exp_name: str = "compile"


def paper_grid_config() -> CompileRunConfig:
    """Table A11: M 4, prior rate 10, n_z 8, rank-16 U, 32K steps x batch 512, AdamW 1e-3, wd 0.03."""
    return CompileRunConfig()


def paper_ant_config() -> CompileRunConfig:
    """Table A12: as the grid with a full linear U, batch 128 and lr 3e-4, on ant expert data."""
    from internal_rl.pretrain import ANT_ENV

    return CompileRunConfig(
        compile=paper_ant_compile_config(), data=DataConfig(env_id=ANT_ENV, num_episodes=10_000, data_seed=2)
    )


def tiny_config() -> CompileRunConfig:
    """CPU-sized grid run: 600 steps x 32 episodes on 2000 clean expert episodes (as discovery's tiny)."""
    return CompileRunConfig(
        compile=CompileConfig(steps=600, batch_size=32, log_every=25),
        data=DataConfig(num_episodes=2000, data_seed=2),
        eval_episodes=200,
    )


def small_config() -> CompileRunConfig:
    """The CPU reproduction on the small grid: 300 steps x 64 (its M = 4 segment passes cost about four
    metacontroller steps each); the Poisson prior's rate is the small grid's mean leg length (about 3.5
    steps; the paper's 10 suits its 7 x 7 legs)."""
    return CompileRunConfig(
        compile=CompileConfig(steps=300, batch_size=64, log_every=25, prior_rate=3.5, lr=2e-3),
        data=DataConfig(num_episodes=3000, data_seed=2, variant="small", expert_ties="first"),
        eval_episodes=300,
        switch_tolerance=0,
    )


PRESETS = {
    "small": small_config,
    "tiny": tiny_config,
    "paper-grid": paper_grid_config,
    "paper-ant": paper_ant_config,
}


@dataclass
class CompileRunResult:
    run_dir: Path
    model: CompileModel
    metrics: dict[str, float]
    controlled: CompileControlledModel
    """``model`` wrapped for the internal-RL environment with the run's switch interval."""


@torch.no_grad()
def compile_evaluation(model: CompileModel, data: Any, seed: int = 0, tolerance: int = 1) -> dict[str, float]:
    """Held-out segmentation and losses of ``model`` in eval mode (argmax boundaries, z = mu)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = Batch.from_trajectories(data.observations, data.actions, data.lengths, device)
    losses = compile_losses(model, batch, data.lengths.to(device))
    model.train(was)
    stats = compile_switch_statistics(model, data, seed=seed, tolerance=tolerance)
    segments = stats["switches_per_episode"] + 1.0  # every switch opens one more non-empty segment
    return {
        **stats,
        "segments_per_episode": segments,
        "mean_segment_length": float(data.lengths.float().mean()) / segments,
        "action_nll": float(losses["action_nll"]),
        "kl_z": float(losses["kl_z"]),
        "kl_b": float(losses["kl_b"]),
    }


def train_compile_run(
    cfg: CompileRunConfig, base_run: str | Path | None = None, data: Any = None
) -> CompileRunResult:
    """Train CompILE on a frozen base model into a run folder.

    ``base_run`` and ``data`` (Trajectories) override ``cfg.base_run`` and ``cfg.data``. The
    folder holds ``config.json``, ``metrics.jsonl`` (+ TensorBoard), a safetensors checkpoint of
    the whole model (base included) under ``checkpoints/`` and ``results.json`` with the
    held-out ``eval/`` statistics. Training runs in one go (no resume).
    """
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    base_run = cfg.base_run if base_run is None else Path(base_run)
    if base_run is None:
        raise ValueError("set base_run: the pretraining run whose model CompILE steers")
    base, _ = load_backbone(base_run, resolve_device(cfg.compile.device))
    if data is None:
        data = load_data(dataclasses.replace(cfg.data, epsilon=0.0))
    n_eval = min(cfg.eval_episodes, len(data) // 5)
    train, held_out = data[: len(data) - n_eval], data[len(data) - n_eval :]
    run_cfg = dataclasses.replace(cfg, base_run=base_run)
    run_dir = create_run_dir(
        cfg.run_root, "internal-rl", cfg.exp_name, cfg.compile.seed, config_to_dict(run_cfg)
    )
    t0 = time.perf_counter()
    with MetricsLogger(run_dir) as log:

        def on_log(row: dict[str, float]) -> None:
            log.log(int(row["step"]), **{f"losses/{k}": v for k, v in row.items() if k != "step"})

        model, _ = train_compile(cfg.compile, base, train, on_log=on_log)
        metrics = {
            f"eval/{k}": v
            for k, v in compile_evaluation(model, held_out, cfg.compile.seed, cfg.switch_tolerance).items()
        }
        log.log(cfg.compile.steps, **metrics)
    every = cfg.rl_switch_every or default_switch_interval(cfg.compile)
    extra = {
        "backbone": config_to_dict(model.base.config),
        "compile": config_to_dict(cfg.compile),
        "base_run": str(base_run),
        "rl_switch_every": every,
    }
    save_checkpoint(run_dir / CHECKPOINTS, model=model, step=cfg.compile.steps, extra=extra)
    result = {
        **metrics,
        "rl_switch_every": every,
        "steps": cfg.compile.steps,
        "seconds_this_session": time.perf_counter() - t0,
    }
    (run_dir / "results.json").write_text(json.dumps(result, indent=2))
    return CompileRunResult(
        run_dir=run_dir, model=model, metrics=result, controlled=CompileControlledModel(model, every)
    )


def _checkpoint(run: str | Path) -> Path:
    run = Path(run)
    root = run / CHECKPOINTS if (run / CHECKPOINTS).is_dir() else run
    ckpt = root if (root / "state.json").is_file() else latest_checkpoint(root)
    if ckpt is None:
        raise FileNotFoundError(f"{run}: no CompILE checkpoint found")
    return ckpt


def load_compile(run: str | Path, device: str | torch.device = "cpu") -> tuple[CompileModel, dict[str, Any]]:
    """The CompILE model (eval mode) of a run folder or checkpoint, and the checkpoint's extras."""
    ckpt = _checkpoint(run)
    try:
        extra = json.loads((ckpt / "state.json").read_text())["extra"]
        base_cfg = config_from_dict(BackboneConfig, extra["backbone"], where=f"{ckpt}/state.json:backbone")
        cfg = config_from_dict(CompileConfig, extra["compile"], where=f"{ckpt}/state.json:compile")
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{ckpt}/state.json is not a CompILE checkpoint: {exc}") from exc
    # Every weight, the encoder's included, comes from the checkpoint: no need to copy the base.
    model = CompileModel(Backbone(base_cfg), dataclasses.replace(cfg, init_from_base=False))
    load_checkpoint(ckpt, model=model, restore_rng=False)
    return model.to(device).eval(), extra


def load_compile_controlled(
    run: str | Path, device: str | torch.device = "cpu", switch_every: int | None = None
) -> CompileControlledModel:
    """A CompILE run as the internal-RL environment's model; ``switch_every`` overrides the run's k."""
    model, extra = load_compile(run, device)
    every = switch_every or extra.get("rl_switch_every") or default_switch_interval(model.config)
    return CompileControlledModel(model, every).eval()
