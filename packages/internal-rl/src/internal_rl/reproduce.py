"""``internal-rl reproduce``: the whole pipeline on gridworld- or ant-pinpad, end to end (``make train-internal-rl``).

Stages: expert data + pretraining (or ``--base-run``), subgoal probes, metacontrollers (internal,
forced switching beta = 1, co-trained) and the CompILE baseline on the same clean data, internal
RL (on the metacontrollers' and CompILE's codes) and raw-action RL on the post-training task
with several seeds, an optional alpha sweep (rate-distortion), then ``results.json``,
``report.md`` and PNG figures in ``runs/internal-rl/<run>/``.

The default (``small6``) is a small grid sized for a 2-core CPU; ``--config paper`` holds the paper's settings
(30 runs = 10 base models x 3 metacontroller seeds, Tables A4/A9/A13) for GPU machines.

``--config tiny-ant`` / ``paper-ant`` run the same stages on ant-pinpad (``env="ant"``; Tables
A5/A10/A12/A14): a Hawk base model on gait-MPC controller episodes, probes on the clean data D*,
the three metacontrollers and CompILE with a full linear controller, internal RL in the
ant's internal environment, and raw-action RL on the base model's Gaussian torques. Ant success
is also reported divided by the paper's expert score on the post-training task (0.7), as in Fig. 8b.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from internal_rl import compile_rl as _compile_rl
from internal_rl import discovery as _discovery
from internal_rl import pretrain as _pretrain
from internal_rl import probe as _probe
from internal_rl import rl as _rl
from internal_rl import supervised as _supervised
from internal_rl.baselines import train_raw_action_rl
from internal_rl.envs.tasks import grid_task_sets
from internal_rl.internal_env import prior_exploration
from internal_rl.report import (
    first_policy_name,
    medians_by_alpha,
    plot_beta,
    plot_probe,
    plot_rate_distortion,
    plot_success_curves,
    seed_values,
    write_report,
)
from internal_rl.steering import first_colour_steering, seen_transition_task, transition_rates
from latentforge.configs import config_to_dict
from latentforge.jobs import map_runs
from latentforge.runs import create_run_dir

PAPER_METHODS = ("internal-rl", "forced-switch", "cotrained", "compile", "raw-action")
CONTROL = "subgoal-codes"
"""Not a method of the paper: internal RL over the label-driven controllers (one code per true subgoal,
switching at the true subgoal changes). It needs the label-driven stage (grid only) and tells whether RL
at the abstract timescale solves the task once the codes name subgoals (``supervised.SubgoalCodes``)."""
METHODS = (*PAPER_METHODS, CONTROL)
ANT_EXPERT_SUCCESS = 0.7
"""Paper C.1.1: the ant PPO expert's success on the post-training task; Fig. 8b divides by it."""


@dataclass
class ReproduceConfig:
    """Pipeline settings. Defaults: the ``small`` grid's, on one process; ``PRESETS`` holds the named runs."""

    base_run: Path | None = None
    """Reuse a pretraining run (skips pretraining); otherwise ``pretrain_preset`` is trained."""
    pretrain_preset: str = "small"
    """Pretraining preset when no base run is given (small, tiny, paper-grid)."""
    pretrain_steps: int | None = None
    """Override of the preset's steps (None keeps the preset)."""
    base_models: int = 1
    """Pretrained base models (the paper: 10); ignored with ``base_run``."""
    probe: bool = True
    probe_steps: int = 1500
    probe_episodes: int = 2000
    probe_mlp_hidden: int = 256
    """Width of the non-linear diagnostic probe fitted beside the linear ones (0: none)."""
    supervised: _supervised.SupervisedConfig | None = field(default_factory=_supervised.small_config)
    """Label-driven controllers (C.3, Fig. 4) on D*: can the base model be steered by the true subgoal at
    all (grid only; None skips). Its data, variant and horizon follow the discovery data and RL config."""
    discovery: _discovery.DiscoveryConfig = field(default_factory=_discovery.small_config)
    meta_seeds: int = 3
    """Metacontroller (and CompILE) seeds per base model (the paper: 3)."""
    compile: _compile_rl.CompileRunConfig = field(default_factory=_compile_rl.small_config)
    """CompILE (method "compile"); its data is the metacontrollers' D*, not ``compile.data``."""
    rl: _rl.RLConfig = field(default_factory=_rl.small_config)
    rl_seeds: int = 1
    """RL seeds per metacontroller (raw-action RL: per base model and metacontroller seed, so every
    method gets ``meta_seeds x rl_seeds`` runs of the same episode budget)."""
    methods: tuple[str, ...] = METHODS
    raw_action_runs: int | None = None
    """Raw-action RL runs (each ``rl_seeds`` seeds); None = one per base model x metacontroller seed, the
    same count as the other methods (the paper ran raw-action GRPO with 3 seeds)."""
    exploration_episodes: int = 2048
    """Grid only: episodes of codes drawn from the prior N(0, I) on the RL task with the first metacontroller,
    to show how often internal RL's first policy gets through each colour (0 skips)."""
    steering_episodes: int = 1024
    """Grid only: episodes per measurement of "do the codes steer?" (internal_rl.steering) with the first
    metacontroller: one code held for a whole episode, and the mean code of the true next subgoal at
    every switch of the RL task and of a same-length task of seen transitions (0 skips)."""
    alpha_sweep: tuple[float, ...] = (0.03, 0.3)
    """Alphas for the rate-distortion plot (each trains one more metacontroller)."""
    sweep_steps: int = 600
    seed: int = 0
    num_threads: int = 1
    """Threads of each run (0: torch's default)."""
    workers: int = 1
    """Processes for the independent runs (metacontrollers, CompILE, the alpha sweep, every RL run), each
    with ``num_threads`` threads; the numbers do not depend on it (every run seeds itself)."""
    run_root: Path = Path("runs")
    exp_name: str = "reproduce"
    env: str = "grid"
    """"grid" or "ant" (ant-pinpad: success also divided by the expert's 0.7)."""
    variant: str = "small"
    """Grid only: the member of the gridworld family every stage runs on ("small" 5 x 5, "paper" 7 x 7);
    it overrides the variant of each stage's data and RL config."""
    expert_ties: str = "first"
    """Grid only: the expert's tie-breaking between optimal moves in every stage's data ("random": the
    paper's stochastic expert; "first": deterministic given the next colour, see ``BatchedGridExpert``)."""
    ant_horizon: int = 500
    """Ant only: horizon T of the generated expert episodes (paper 500; RL's is ``rl.horizon``)."""
    pretrain_config: _pretrain.PretrainConfig | None = None
    """A full pretraining config instead of ``pretrain_preset`` (small tests, custom models)."""
    pretrain_data_dir: Path | None = None
    """A dataset folder (``internal-rl generate-data``) for pretraining instead of generating it."""
    discovery_data_dir: Path | None = None
    """A dataset folder for D* (discovery, CompILE, ant probes) instead of generating it."""


def paper_config() -> ReproduceConfig:
    """The paper's settings (GPU): 10 base models x 3 metacontrollers, Tables A4/A9/A13, alpha grid."""
    return ReproduceConfig(
        variant="paper",
        expert_ties="random",
        pretrain_preset="paper-grid",
        base_models=10,
        probe_steps=8000,
        probe_episodes=10_000,
        probe_mlp_hidden=0,
        supervised=_supervised.paper_config(),
        discovery=_discovery.paper_grid_config(),
        meta_seeds=3,
        compile=_compile_rl.paper_grid_config(),
        rl=_rl.paper_grid_config(),
        rl_seeds=1,
        raw_action_runs=3,
        alpha_sweep=_discovery.ALPHA_GRID,
        sweep_steps=64_000,
        num_threads=0,
    )


def small_config() -> ReproduceConfig:
    """The small 5 x 5 grid, every stage (README: "the small grid"), on two processes."""
    return ReproduceConfig(workers=2)


def small6_config() -> ReproduceConfig:
    """CPU default (``make train-internal-rl``): the small grid where internal RL learns the held-out task,
    raw-action RL never succeeds and forced switching learns later and less. Six colours on fixed cells
    (``small6-fixed``), a first policy N(0, 4^2 I) and the paper's batch of 1024 episodes (README: "Sixth
    search"), 150 iterations per RL run. Each batch is used for 8 PPO epochs at lr 3e-3 (README: "Seventh
    search"): at the ``small`` preset's 2 epochs and lr 1e-3 a batch barely moved the policy. The alpha sweep
    reaches 1.0, the top of the paper's grid: on this grid the switch count stays near 5 up to alpha 0.3.
    Every other setting, alpha 0.1 included, is the ``small`` preset's."""
    return ReproduceConfig(
        variant="small6-fixed",
        rl=dataclasses.replace(
            _rl.small_config(),
            init_std=4.0,
            batch_size=1024,
            steps=150,
            ppo=_rl.PPOConfig(lr=3e-3, update_epochs=8),
        ),
        alpha_sweep=(0.03, 0.3, 0.5, 1.0),
        workers=2,
    )


def tiny_config() -> ReproduceConfig:
    """The earlier CPU wiring check on the paper's 7 x 7 grid: tiny base model, 300-step metacontrollers,
    3 RL seeds x 12 iterations x 64 episodes (every method stays at 0: README, "Measured")."""
    return ReproduceConfig(
        variant="paper",
        expert_ties="random",
        pretrain_preset="tiny",
        probe_steps=500,
        probe_episodes=300,
        probe_mlp_hidden=0,
        supervised=None,
        discovery=dataclasses.replace(_discovery.tiny_config(), steps=300, eval_every=100),
        meta_seeds=1,
        compile=dataclasses.replace(
            _compile_rl.tiny_config(),
            compile=dataclasses.replace(_compile_rl.tiny_config().compile, steps=300),
        ),
        rl=dataclasses.replace(_rl.tiny_config(), steps=12, batch_size=64, checkpoint_every=12),
        rl_seeds=3,
        alpha_sweep=(0.0, 1.0),
        sweep_steps=200,
        workers=2,
    )


def paper_ant_config() -> ReproduceConfig:
    """The paper's ant settings (GPU): 10 Hawk base models x 3 metacontrollers, Tables A5/A10/A12/A14."""
    return ReproduceConfig(
        env="ant",
        methods=PAPER_METHODS,  # no label-driven stage on the ant, so no control
        pretrain_preset="paper-ant",
        base_models=10,
        probe_steps=8000,
        discovery=_discovery.paper_ant_config(),
        meta_seeds=3,
        compile=_compile_rl.paper_ant_config(),
        rl=_rl.paper_ant_config(),
        rl_seeds=1,
        raw_action_runs=3,
        alpha_sweep=_discovery.ALPHA_GRID,
        sweep_steps=32_000,
        num_threads=0,
    )


def tiny_ant_config() -> ReproduceConfig:
    """CPU ant smoke run (~6 min): 100-step episodes, 4 x 64 Hawk, 150-step metacontrollers, 2 x 4 RL iterations."""
    # The gait-MPC controller costs ~0.035 s per primitive step here, so the expert episodes are
    # cut to 100 steps (16 + 24 episodes: about 2 of the 6 minutes, measured at load 1-2 on 2
    # cores). 100 steps rarely reach a colour: this preset checks the pipeline, not Fig. 8b.
    from internal_rl.pretrain import ANT_ENV

    horizon = 100
    data = _pretrain.DataConfig(env_id=ANT_ENV, num_episodes=24, data_seed=2)
    return ReproduceConfig(
        env="ant",
        methods=PAPER_METHODS,
        ant_horizon=horizon,
        pretrain_preset="tiny-ant",
        probe_steps=300,
        discovery=dataclasses.replace(
            _discovery.paper_ant_config(), data=data, steps=150, batch_size=8, log_every=25,
            eval_every=75, checkpoint_every=150, eval_episodes=4,
        ),
        compile=dataclasses.replace(
            _compile_rl.paper_ant_config(),
            compile=dataclasses.replace(_compile_rl.paper_ant_config().compile, steps=150, batch_size=8,
                                        log_every=25),
            data=data, eval_episodes=4,
        ),
        rl=dataclasses.replace(
            _rl.paper_ant_config(), ppo=_rl.PPOConfig(lr=3e-4), policy_width=64, steps=4, batch_size=8,
            horizon=horizon, checkpoint_every=4,
        ),
        meta_seeds=1,
        rl_seeds=2,
        raw_action_runs=1,
        alpha_sweep=(0.0, 1.0),
        sweep_steps=100,
    )  # fmt: skip


PRESETS = {
    "small": small_config,
    "small6": small6_config,
    "tiny": tiny_config,
    "paper": paper_config,
    "tiny-ant": tiny_ant_config,
    "paper-ant": paper_ant_config,
}


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def load_env_data(cfg: ReproduceConfig, data_cfg: _pretrain.DataConfig) -> Any:
    """Expert episodes for ``data_cfg``; ant episodes generated here last ``cfg.ant_horizon`` steps."""
    if cfg.env != "ant" or data_cfg.data_dir is not None:
        return _pretrain.load_data(data_cfg)
    from internal_rl.data import generate_trajectories

    return generate_trajectories(
        data_cfg.env_id,
        data_cfg.task_set,
        num_episodes=data_cfg.num_episodes,
        seed=data_cfg.data_seed,
        epsilon=data_cfg.epsilon,
        env_kwargs={"horizon": cfg.ant_horizon},
    )


def _on_variant(cfg: ReproduceConfig, data: _pretrain.DataConfig) -> _pretrain.DataConfig:
    """``data`` on the run's grid variant and expert (ant data is left alone)."""
    return (
        data
        if cfg.env == "ant"
        else dataclasses.replace(data, variant=cfg.variant, expert_ties=cfg.expert_ties)
    )


def _check_env(cfg: ReproduceConfig, what: str, env_id: str) -> None:
    want = _pretrain.ANT_ENV if cfg.env == "ant" else _pretrain.GRID_ENV
    if env_id != want:
        raise ValueError(f"env={cfg.env!r} but the {what} data is {env_id}; use the {cfg.env} presets")


def reproduce(cfg: ReproduceConfig) -> Path:
    """Run every stage; returns the run folder holding results.json, report.md and the figures."""
    if cfg.env not in ("grid", "ant"):
        raise ValueError(f"env must be 'grid' or 'ant', got {cfg.env!r}")
    ant = cfg.env == "ant"
    methods = tuple(cfg.methods)
    _check_env(cfg, "discovery", cfg.discovery.data.env_id)
    if "compile" in methods:
        _check_env(cfg, "CompILE", cfg.compile.data.env_id)
    t0, load_start = time.perf_counter(), _load()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    run_dir = create_run_dir(cfg.run_root, "internal-rl", cfg.exp_name, cfg.seed, config_to_dict(cfg))
    stage_root = run_dir / "stages"
    common = {"run_root": stage_root, "num_threads": cfg.num_threads}
    results: dict[str, Any] = {"command": "internal-rl reproduce " + " ".join(sys.argv[2:]), "timings": {}}
    if ant:  # (grid results.json keeps its keys)
        results["env"] = "ant"
        results["success_normaliser"] = ANT_EXPERT_SUCCESS

    def timed(name: str, start: float) -> None:
        results["timings"][name] = time.perf_counter() - start

    # 1-2. data + pretraining
    start = time.perf_counter()
    base_runs: list[Path] = []
    base_metrics: dict[str, Any] = {}
    if cfg.base_run is not None:
        base_runs = [Path(cfg.base_run)]
        found = Path(cfg.base_run) / "results.json"
        base_metrics = json.loads(found.read_text()) if found.is_file() else {}
    else:
        pretrain_data = None  # ant: generated once, shared by the base models (grid: each regenerates)
        for k in range(cfg.base_models):
            pcfg = cfg.pretrain_config or _pretrain.PRESETS[cfg.pretrain_preset]()
            pcfg = dataclasses.replace(pcfg, seed=cfg.seed + k, data=_on_variant(cfg, pcfg.data), **common)
            if cfg.pretrain_steps is not None:
                pcfg = dataclasses.replace(pcfg, steps=cfg.pretrain_steps)
            if cfg.pretrain_data_dir is not None:
                pcfg = dataclasses.replace(
                    pcfg, data=dataclasses.replace(pcfg.data, data_dir=cfg.pretrain_data_dir)
                )
            _check_env(cfg, "pretraining", pcfg.data.env_id)
            if ant and pretrain_data is None:
                pretrain_data = load_env_data(cfg, pcfg.data)
            out = _pretrain.pretrain(pcfg, data=pretrain_data)
            base_runs.append(out.run_dir)
            base_metrics = out.metrics
    timed("pretrain", start)
    results["base_run"], results["base"] = str(base_runs[0]), base_metrics

    # The clean data D* of every method; the ant loads it first because its probes reuse it
    # (labelled ant episodes are expensive), the grid probes draw their own layouts.
    dcfg = dataclasses.replace(cfg.discovery, data=_on_variant(cfg, cfg.discovery.data), **common)
    if cfg.discovery_data_dir is not None:
        dcfg = dataclasses.replace(dcfg, data=dataclasses.replace(dcfg.data, data_dir=cfg.discovery_data_dir))
    data = None
    if ant:
        start = time.perf_counter()
        data = load_env_data(cfg, dataclasses.replace(dcfg.data, epsilon=0.0))
        timed("discovery_data", start)

    # probes on the (first) base model
    figures: list[str] = []
    if cfg.probe:
        start = time.perf_counter()
        pc = _probe.tiny_probe_config()
        probe_data = _on_variant(cfg, dataclasses.replace(pc.data, num_episodes=cfg.probe_episodes))
        if ant:
            probe_data = dataclasses.replace(dcfg.data, epsilon=0.0, eval_fraction=pc.data.eval_fraction)
        pc = dataclasses.replace(
            pc, run=base_runs[0], checkpoints="latest", steps=cfg.probe_steps, data=probe_data,
            mlp_hidden=cfg.probe_mlp_hidden, **common,
        )  # fmt: skip
        pr = _probe.probe(pc, data=data)
        acc = list(pr.accuracy.values())[-1]
        results["probe"] = {"accuracy": acc, "chance": pr.chance, "history_baseline": pr.history_baseline}
        if pr.mlp_accuracy:
            results["probe"]["mlp_accuracy"] = list(pr.mlp_accuracy.values())[-1]
        plot_probe(acc, pr.chance, run_dir / "probe_accuracy.png", history=pr.history_baseline)
        figures.append("probe_accuracy.png")
        timed("probe", start)

    # 3. metacontrollers: one clean dataset (D*) shared by every method
    label_model = None
    if data is None:
        start = time.perf_counter()
        data = load_env_data(cfg, dataclasses.replace(dcfg.data, epsilon=0.0))
        timed("discovery_data", start)
    # label-driven controllers: the steering ceiling every later stage works under
    if cfg.supervised is not None and not ant:
        start = time.perf_counter()
        scfg = dataclasses.replace(
            cfg.supervised,
            base_run=base_runs[0],
            data=dcfg.data,
            horizon=cfg.rl.horizon,
            seed=cfg.seed,
            **common,
        )
        sup = _supervised.train_supervised(scfg, data=data)
        label_model = sup.model
        results["supervised"] = {**sup.metrics, "run": str(sup.run_dir)}
        timed("supervised", start)

    variants = {
        "internal-rl": dcfg,
        "forced-switch": dataclasses.replace(dcfg, meta=dataclasses.replace(dcfg.meta, forced_switch=True)),
        "cotrained": dataclasses.replace(dcfg, cotrain=True),
    }
    # Every metacontroller, CompILE and alpha-sweep run is independent given D*: one pool for all of them.
    jobs: list[tuple[str, Any, Path | None, Any]] = []
    for name, vcfg in variants.items():
        if name not in methods:
            continue
        for b, base_run in enumerate(base_runs):
            for s in range(cfg.meta_seeds):
                one = dataclasses.replace(
                    vcfg, base_run=base_run, seed=cfg.seed + 100 * b + s, exp_name=f"meta-{name}"
                )
                jobs.append((name, one, None, data))
    # CompILE (C.4.3) replaces the metacontroller on the same base models and D*; internal RL
    # then acts on its codes through the periodic-switch adapter (see compile_rl).
    if "compile" in methods:
        ccfg = dataclasses.replace(cfg.compile, **common)
        for b, base_run in enumerate(base_runs):
            for s in range(cfg.meta_seeds):
                one = dataclasses.replace(
                    ccfg, compile=dataclasses.replace(ccfg.compile, seed=cfg.seed + 100 * b + s)
                )
                jobs.append(("compile", one, base_run, data))
    sweep = tuple(cfg.alpha_sweep)  # rate-distortion (Fig. 7)
    for alpha in sweep:
        one = dataclasses.replace(dcfg, base_run=base_runs[0], alpha=alpha, steps=cfg.sweep_steps,
                                  eval_every=cfg.sweep_steps, exp_name="meta-sweep")  # fmt: skip
        jobs.append(("sweep", one, None, data))
    done = map_runs(_discovery_job, jobs, cfg.workers, desc="metacontrollers")
    metas: dict[str, list[Any]] = {}
    results["discovery"] = {}
    sweep_metrics = []
    for (name, job_cfg, _, _), (model, metrics, job_dir, seconds) in zip(jobs, done, strict=True):
        results["timings"][f"discovery_{name}"] = results["timings"].get(f"discovery_{name}", 0.0) + seconds
        if name == "sweep":
            sweep_metrics.append(metrics)
            continue
        metas.setdefault(name, []).append(model)
        if name not in results["discovery"]:  # the first base model's first seed
            alphas = (
                {"alpha_z": job_cfg.compile.alpha_z, "alpha_b": job_cfg.compile.alpha_b}
                if name == "compile"
                else {"alpha": job_cfg.alpha}
            )
            results["discovery"][name] = {**metrics, **alphas, "run": str(job_dir)}
        results["discovery"][name].setdefault("seeds", []).append(metrics)

    # Fig. 6: beta of held-out clean episodes against the true subgoal changes
    if "internal-rl" in metas:
        held = data[len(data) - 16 :]
        stats = _discovery.switch_statistics(metas["internal-rl"][0], held, torch.device("cpu"))
        for i in range(2):
            name = f"beta_episode{i}.png"
            plot_beta(stats["beta"][i], stats["truth"][i], int(held.lengths[i]), run_dir / name,
                      "metacontroller switching gate, held-out expert episode")  # fmt: skip
            figures.append(name)

    if sweep:
        points = [_rate_distortion_point(a, m) for a, m in zip(sweep, sweep_metrics, strict=True)]
        if dcfg.alpha not in sweep:  # the main metacontrollers are points of the sweep too
            for m in results["discovery"].get("internal-rl", {}).get("seeds", []):
                points.append(_rate_distortion_point(dcfg.alpha, m))
            points.sort(key=lambda p: p["alpha"])
        results["rate_distortion"] = points
        true_changes = sweep_metrics[-1]["eval/true_boundaries_per_episode"]
        plot_rate_distortion(points, true_changes, run_dir / "rate_distortion.png")
        figures.append("rate_distortion.png")

    # 4. RL on the post-training task, every method with the same harness and episode budget
    rcfg = dataclasses.replace(cfg.rl, **common)
    if not ant:  # the RL config keeps its own horizon (the small preset's is the small grid's 40)
        rcfg = dataclasses.replace(rcfg, variant=cfg.variant)
    results["rl_task"] = rcfg.tasks or rcfg.task_set
    if not ant and cfg.exploration_episodes and "internal-rl" in metas:
        start = time.perf_counter()
        results["exploration"] = prior_exploration(
            metas["internal-rl"][0], cfg.exploration_episodes, rcfg.task_set, tasks=_rl.parse_tasks(rcfg.tasks),
            threshold=rcfg.threshold, horizon=rcfg.horizon, variant=rcfg.variant, seed=cfg.seed,
            scale=rcfg.init_std,
        )  # fmt: skip
        results["exploration"]["rl_batch_size"] = rcfg.batch_size
        timed("exploration", start)
    if not ant and cfg.steering_episodes and "internal-rl" in metas:
        start = time.perf_counter()
        results["steering"] = _steering(cfg, rcfg, metas["internal-rl"][0], data, label_model)
        timed("steering", start)
    rl_jobs: list[tuple[str, _rl.RLConfig, Any, Path | None]] = []
    for name in methods:
        control_cfg: dict[str, Any] = {}
        if name == "raw-action":
            runs = cfg.raw_action_runs or len(base_runs) * cfg.meta_seeds
            models = [None] * runs
        elif name == CONTROL:
            if label_model is None:  # no label-driven stage (the ant, or supervised=None)
                continue
            models = [_supervised.as_subgoal_codes(label_model)] * (len(base_runs) * cfg.meta_seeds)
            control_cfg = {"switch_on_subgoal": True}
        else:
            models = metas.get(name, [None])
        for m_index, model in enumerate(models):
            for s in range(cfg.rl_seeds):
                seed = cfg.seed + 1000 * m_index + s
                one = dataclasses.replace(rcfg, seed=seed, exp_name=f"rl-{name}", **control_cfg)
                base_run = base_runs[(m_index + s) % len(base_runs)] if name == "raw-action" else None
                rl_jobs.append((name, one, model, base_run))
    results["rl"] = {}
    curves: dict[str, list[list[float]]] = {}
    episodes: list[int] = []
    for (name, *_), (out, decisions, seconds) in zip(
        rl_jobs, map_runs(_rl_job, rl_jobs, cfg.workers, desc="RL runs"), strict=True
    ):
        entry = results["rl"].setdefault(name, {"metrics": [], "decisions": [], "episodes": []})
        curves.setdefault(name, []).append(out.success)
        entry["metrics"].append(out.metrics)
        entry["decisions"].append(decisions)
        entry["episodes"] = episodes = out.episodes
        results["timings"][f"rl_{name}"] = results["timings"].get(f"rl_{name}", 0.0) + seconds
    if ant:  # Fig. 8b: success divided by the expert's
        normalised = {k: [[x / ANT_EXPERT_SUCCESS for x in run] for run in v] for k, v in curves.items()}
        results["curves_normalised"] = normalised
        plot_success_curves(normalised, episodes, run_dir / "success_vs_episodes.png",
                            f"ant post-training task {results['rl_task']} (median, 25-75%)",
                            ylabel=f"success / expert's {ANT_EXPERT_SUCCESS}",
                            ymax=1.02 / ANT_EXPERT_SUCCESS)  # fmt: skip
    else:
        plot_success_curves(curves, episodes, run_dir / "success_vs_episodes.png",
                            f"post-training task {results['rl_task']} (median, 25-75%)")  # fmt: skip
    figures.append("success_vs_episodes.png")

    results["diagnosis"] = diagnose(results)
    results["figures_reproduced"] = figures_reproduced(results)
    results["figures"] = figures
    results["seconds"] = time.perf_counter() - t0
    results["load_start"], results["load_end"] = load_start, _load()
    results["curves"] = curves
    results["episodes"] = episodes
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    write_report(run_dir / "report.md", results)
    return run_dir


def _steering(
    cfg: ReproduceConfig, rcfg: _rl.RLConfig, model: Any, data: Any, label_model: Any = None
) -> dict[str, Any]:
    """Closed-loop tests of what the discovered codes do (internal_rl.steering), for the report; with the
    label-driven controllers (``label_model``), the same oracle over their one-hot codes for comparison."""
    n = cfg.steering_episodes
    held = data[max(len(data) - n, 0) :]
    codes = _discovery.switch_statistics(model, held, torch.device("cpu"))["subgoal_codes"]
    play = dict(variant=rcfg.variant, horizon=rcfg.horizon, threshold=rcfg.threshold, seed=cfg.seed)
    rl_tasks = _rl.parse_tasks(rcfg.tasks) or grid_task_sets(rcfg.variant)[rcfg.task_set]
    tasks = {"rl": rl_tasks[0], "seen": seen_transition_task(rcfg.variant)}
    out = {
        "episodes": n,
        "candidates": min(64, n),
        "first_colour": first_colour_steering(
            model,
            codes=codes,
            candidates=min(64, n),
            episodes=max(n // 16, 8),
            recheck=max(n // 2, 8),
            **play,
        ),
        "transitions": {
            name: {"task": list(task), "gains": transition_rates(model, codes, task, episodes=n, **play)}
            for name, task in tasks.items()
        },
    }
    if label_model is not None:  # one-hot codes, a controller per subgoal, switching every step
        eye = torch.eye(label_model.meta.config.n_z)
        gains = transition_rates(label_model, eye, tasks["rl"], gains=(1.0, 2.0), episodes=n, **play)
        out["transitions"]["label-driven"] = {"task": list(tasks["rl"]), "gains": gains}
    return out


def _discovery_job(
    kind: str, cfg: Any, base_run: Path | None, data: Any
) -> tuple[Any, dict[str, Any], Path, float]:
    """One metacontroller, CompILE or sweep run: (model for internal RL, metrics, run folder, seconds).
    Module level, so that ``map_runs`` can send it to a worker process."""
    start = time.perf_counter()
    if kind == "compile":
        out = _compile_rl.train_compile_run(cfg, base_run=base_run, data=data)
        return out.controlled, out.metrics, out.run_dir, time.perf_counter() - start
    out = _discovery.train_metacontroller(cfg, data=data)
    return out.model, out.metrics, out.run_dir, time.perf_counter() - start


def _rl_job(
    name: str, cfg: _rl.RLConfig, model: Any, base_run: Path | None
) -> tuple[Any, list[float], float]:
    """One RL run of method ``name``: (RLResult, decisions per episode of each iteration, seconds)."""
    start = time.perf_counter()
    if name == "raw-action":
        base, _ = _pretrain.load_backbone(base_run)
        out = train_raw_action_rl(cfg, base)
    else:
        out = _rl.train_internal_rl(cfg, model)
    history = json.loads((out.run_dir / "results.json").read_text())["history"]
    return out, history["decisions"], time.perf_counter() - start


def _rate_distortion_point(alpha: float, m: dict[str, Any]) -> dict[str, float]:
    """One metacontroller's point of Fig. 7 from its held-out switch statistics."""
    keys = ("switches_per_episode", "action_nll", "alignment_f1", "random_alignment_f1", "kl")
    return {"alpha": alpha, **{k: m[f"eval/{k}"] for k in keys}}


def _final_success(rl: dict[str, Any], name: str) -> float:
    """Median over runs of one method's final success (mean of the last quarter of its iterations)."""
    return float(np.median([m["final_success"] for m in rl[name]["metrics"]]))


def positive_control_verdict(control: float, ours: float, margin: float = 0.1) -> str:
    """What the positive control (RL over the label-driven codes) says of internal RL's final success."""
    if control > ours + margin:
        return (
            "RL at the abstract timescale solves the task once the codes name subgoals, so what is missing here "
            "is discovery."
        )
    if control > margin:
        return (
            f"internal RL over the discovered codes ends within {margin} of it or above it, so discovery "
            "supplies codes that serve RL as well as the true subgoal labels."
        )
    return (
        "RL at the abstract timescale does not solve the task even over codes that name subgoals within this "
        "budget."
    )


def figures_reproduced(results: dict[str, Any]) -> list[dict[str, str]]:
    """Which of the paper's figures this run reproduces in shape, each with the measured evidence.

    The thresholds are the ones the small preset's slow test asserts with (README, "the small grid").
    """
    rows: list[dict[str, str]] = []

    def row(figure: str, claim: str, ok: bool, evidence: str) -> None:
        rows.append(
            {"figure": figure, "claim": claim, "reproduced": "yes" if ok else "no", "evidence": evidence}
        )

    p = results.get("probe")
    if p:
        best = max(range(len(p["accuracy"])), key=p["accuracy"].__getitem__)
        row("Fig. 3", "a linear probe reads the subgoal from the residual stream", p["accuracy"][best] > p["chance"] + 0.05,
            f"best layer {best}: {p['accuracy'][best]:.3f} vs majority {p['chance']:.3f}")  # fmt: skip
    sup = results.get("supervised")
    if sup:
        true, none = sup["posttrain/true_success"], sup["posttrain/none_success"]
        row("Fig. 4", "label-driven controllers steer the frozen model through the post-training task",
            true > none + 0.1, f"success {true:.3f} with the true subgoal vs {none:.3f} uncontrolled")  # fmt: skip
    d = results["discovery"].get("internal-rl")
    if d:
        f1, rand = seed_values(d, "eval/alignment_f1"), seed_values(d, "eval/random_alignment_f1")
        gain = float(np.median([a - b for a, b in zip(f1, rand, strict=True)]))
        row("Figs. 6, A3", "switches fall on subgoal changes", gain > 0.1,
            f"F1 - random F1 median {gain:.3f} over {len(f1)} seeds")  # fmt: skip
    alphas, med = medians_by_alpha(results.get("rate_distortion") or [], "switches_per_episode")
    if len(alphas) >= 3:
        true = (d or {}).get("eval/true_boundaries_per_episode", float("nan"))
        falling = all(x > y for x, y in itertools.pairwise(med)) and med[0] > true > med[-1]
        row("Fig. 7", "switching falls with alpha, through the true number of changes", falling,
            "median switches / episode " + ", ".join(f"{m:.2f} at {a}" for a, m in zip(alphas, med, strict=True)))  # fmt: skip
    rl = results.get("rl", {})
    if "internal-rl" in rl and "raw-action" in rl:
        ours, raw = _final_success(rl, "internal-rl"), _final_success(rl, "raw-action")
        row("Fig. 8", "internal RL solves the post-training task where raw-action RL does not",
            ours > max(raw, 0.0) + 0.05, f"final success {ours:.3f} vs raw-action {raw:.3f}")  # fmt: skip
        if "forced-switch" in rl:
            forced = _final_success(rl, "forced-switch")
            row("Fig. 8, beta = 1 ablation", "internal RL learns more than with a switch at every step",
                ours > forced + 0.05, f"final success {ours:.3f} vs forced switching {forced:.3f}")  # fmt: skip
        if CONTROL in rl:
            ctl = _final_success(rl, CONTROL)
            row("Fig. 8, RL half (control)", "RL over codes that name subgoals, at the abstract timescale, solves "
                "the post-training task where raw-action RL does not", ctl > max(raw, 0.0) + 0.05,
                f"final success {ctl:.3f} over the label-driven codes vs raw-action {raw:.3f}")  # fmt: skip
    return rows


def _steering_diagnosis(st: dict[str, Any] | None) -> list[str]:
    """Sentences from :func:`_steering`: whether any code picks the first colour, where the oracle over the
    discovered codes stops on the RL task against a task of seen transitions, and the label-driven oracle."""
    if not st:
        return []
    rows = st["first_colour"]
    base = float(np.mean([r["uncontrolled"] for r in rows]))
    best = float(np.mean([r["best"] for r in rows]))
    mean_code = float(np.mean([r.get("subgoal_code", float("nan")) for r in rows]))
    verdict = (
        "no code held throughout picks the first colour, so the codes are not goals on this grid (they re-encode "
        "moves, which mean different colours in every layout)"
        if max(best, mean_code) < base + 0.1
        else "codes do pick the first colour: at the start, where every colour is possible, they act as goals"
    )
    out = [
        f"- Do the codes steer? With one code held for an episode, the first colour is the intended one in "
        f"{base:.2f} of episodes for the base model alone, {best:.2f} for the best of {st['candidates']} prior codes and "
        f"{mean_code:.2f} for the mean code of its subgoal (means over colours): {verdict}."
    ]
    tr = st["transitions"]

    def fmt(g: dict[str, Any]) -> str:
        return ", ".join(f"{r:.2f}" for r in g["rates"])

    if "rl" in tr and "seen" in tr:

        def at(name: str, gain: float) -> dict[str, Any] | None:
            return next((g for g in tr[name]["gains"] if g["gain"] == gain), None)

        rl1, seen1 = at("rl", 1.0), at("seen", 1.0)
        if rl1 and seen1:
            strongest = max(tr["rl"]["gains"], key=lambda g: g["gain"])
            out.append(
                f"- Oracle over the discovered codes (mean code of the true next subgoal at every switch): on a task "
                f"of seen transitions ({'-'.join(map(str, tr['seen']['task']))}) it gets through colour 1, 2, ... at "
                f"rates {fmt(seen1)} (success {seen1['success']:.3f}); on the RL task ({'-'.join(map(str, tr['rl']['task']))}) "
                f"at {fmt(rl1)} (success {rl1['success']:.3f}), and with the controller scaled {strongest['gain']:g}x at "
                f"{fmt(strongest)} (success {strongest['success']:.3f})."
            )
    if "label-driven" in tr:
        by_gain = {g["gain"]: g for g in tr["label-driven"]["gains"]}
        text = "; ".join(
            f"gain {k:g}: rates {fmt(g)}, success {g['success']:.3f}" for k, g in sorted(by_gain.items())
        )
        out.append(
            f"- The label-driven controllers (one code per subgoal, the same for every context) on the RL task: {text}. "
            "Where they get through and the discovered codes do not, the base model can make the unseen "
            "transitions and what is missing is a code that names the subgoal."
        )
    return out


def diagnose(results: dict[str, Any]) -> list[str]:
    """Plain statements, from the measured numbers, about why internal RL did or did not work."""
    out: list[str] = []
    base = results["base"]
    acc = base.get("eval/action_accuracy")
    if acc is not None:
        out.append(f"- Base model held-out action accuracy {acc:.3f} (chance 0.25).")
    if "eval/rollout_colours_sampled" in base:
        ratio = base["eval/rollout_colours_sampled"] / max(base["eval/imitator_colours"], 1e-9)
        out.append(
            f"- Acting itself (sampled), the base model enters {base['eval/rollout_colours_sampled']:.3f} colours in "
            f"order per episode and succeeds in {base['eval/rollout_success_sampled']:.3f}, against "
            f"{base['eval/imitator_colours']:.3f} and {base['eval/imitator_success']:.3f} for a perfect imitator "
            f"that cannot see the task ({ratio:.0%} of its colours): "
            + ("it steers." if ratio > 0.8 else "it does not yet steer like the data.")
        )
    elif base.get("eval/action_nll") is not None:
        out.append(
            f"- Base model held-out action NLL {base['eval/action_nll']:.3f} nats per step "
            "(Gaussian head over the ant's 8 torques; lower is better)."
        )
    if results.get("probe"):
        p = results["probe"]
        best = max(p["accuracy"])
        verdict = "above" if best > p["chance"] + 0.05 else "at"
        out.append(f"- Best subgoal-probe accuracy {best:.3f} vs chance {p['chance']:.3f}: {verdict} chance, "
                   + ("the base model holds a linearly decodable subgoal belief." if verdict == "above"
                      else "the base model shows no linearly decodable subgoal belief (not compositional yet)."))  # fmt: skip
        if p.get("mlp_accuracy"):
            layer = max(range(len(p["mlp_accuracy"])), key=p["mlp_accuracy"].__getitem__)
            out.append(f"- A one-hidden-layer probe reads the subgoal at {p['mlp_accuracy'][layer]:.3f} (layer {layer}) "
                       f"against the linear probes' {best:.3f}: "
                       + (("a non-linear read-out finds more of it." if best > p["chance"] + 0.05
                           else "the subgoal is in the residual stream, but not linearly.")
                          if p["mlp_accuracy"][layer] > p["chance"] + 0.05 else "not there either."))  # fmt: skip
        if p.get("history_baseline") is not None:
            out.append(f"- A lookup table from the last colour entered decodes the subgoal at {p['history_baseline']:.3f}: "
                       "what a model that tracked its progress through the task could offer a probe.")  # fmt: skip
    d = results["discovery"].get("internal-rl")
    if d:
        sw, true = d["eval/switches_per_episode"], d["eval/true_boundaries_per_episode"]
        if sw < 0.25 * true:
            state = "beta almost never switches (one segment per episode)"
        elif sw > 4 * true:
            state = "beta switches far more often than the subgoals change (close to beta = 1)"
        else:
            state = "the switch count is of the order of the true subgoal changes"
        out.append(f"- Metacontroller: {sw:.2f} switches per episode vs {true:.2f} true changes: {state}; alignment "
                   f"F1 {d['eval/alignment_f1']:.3f} vs {d['eval/random_alignment_f1']:.3f} for random switches; "
                   f"KL {d['eval/kl']:.3f} nats per step" + (" (KL collapse: the codes carry almost nothing)"
                                                              if d["eval/kl"] < 0.05 else "") + ".")  # fmt: skip
    if d and "eval/code_subgoal_accuracy" in d:
        gain_sub = d["eval/code_subgoal_accuracy"] - d["eval/code_subgoal_majority"]
        gain_act = d["eval/code_action_accuracy"] - d["eval/code_action_majority"]
        out.append(
            f"- Its codes tell the subgoal at {d['eval/code_subgoal_accuracy']:.3f} (majority "
            f"{d['eval/code_subgoal_majority']:.3f}) and the current action at {d['eval/code_action_accuracy']:.3f} "
            f"(majority {d['eval/code_action_majority']:.3f}): "
            + ("they stand for subgoals." if gain_sub > 0.1 and gain_sub >= gain_act
               else "they do not name the colour an episode heads for, but they do tell the current move: "
               "a code describes a leg of the path in this layout, not a subgoal that transfers across "
               "layouts." if gain_act > gain_sub + 0.05
               else "they stand for neither clearly.")
        )  # fmt: skip
    same_sub = (d or {}).get("eval/code_cosine_same_subgoal", float("nan"))
    same_ctx = (d or {}).get("eval/code_cosine_same_context", float("nan"))
    if not (math.isnan(same_sub) or math.isnan(same_ctx)):
        if same_ctx < -0.3 and same_sub < 0.5:
            verdict = (
                "the codes are relative. In each context they pick one of the successors the pretraining tasks "
                "allow there, so no code stands for a transition D* never shows, and the RL task is made of those."
            )
        elif same_sub >= 0.5:
            verdict = "the codes are close to absolute (one code per subgoal across contexts)."
        else:
            verdict = "the codes are tied to the subgoal only weakly, in either sense."
        out.append(
            f"- Mean codes of one subgoal reached from different previous subgoals have cosine {same_sub:.2f}; codes "
            f"of different subgoals after the same previous one, {same_ctx:.2f}: {verdict}"
        )
    sup = results.get("supervised")
    if sup:
        out.append(
            f"- Label-driven controllers (the true subgoal injected at L/2) reach "
            f"{sup['posttrain/true_success']:.3f} success and {sup['posttrain/true_colours']:.3f} colours on the "
            f"post-training task, against {sup['posttrain/none_success']:.3f} / {sup['posttrain/none_colours']:.3f} "
            f"uncontrolled and {sup['posttrain/wrong_success']:.3f} / {sup['posttrain/wrong_colours']:.3f} with a "
            "wrong subgoal: the ceiling of any policy over subgoal codes on this base model."
        )
    x = results.get("exploration")
    if x:
        reached = x["reached"]
        rates = ", ".join(
            f"{reached[k] / reached[k - 1]:.2f}" if reached[k - 1] else "-" for k in range(1, len(reached))
        )
        out.append(
            f"- Codes drawn from {first_policy_name(x)} (internal RL's first policy) carry an episode through colour 1, 2, ... "
            f"of the RL task, once it got that far, at rates {rates}; success {x['success']:.4f}, about "
            f"{x['success'] * x['rl_batch_size']:.1f} successes per RL batch of {x['rl_batch_size']} to learn from."
        )
    out += _steering_diagnosis(results.get("steering"))
    c = results["discovery"].get("compile")
    if c:
        out.append(
            f"- CompILE: {c['eval/segments_per_episode']:.2f} segments per episode, i.e. "
            f"{c['eval/segments_per_episode'] - 1:.2f} boundaries vs {c['eval/true_boundaries_per_episode']:.2f} "
            f"true subgoal changes; alignment F1 {c['eval/alignment_f1']:.3f} vs "
            f"{c['eval/random_alignment_f1']:.3f} for random boundaries; internal RL on its codes switches every "
            f"{c['rl_switch_every']} primitive steps (it has no causal switching unit)."
        )
    rl = results.get("rl", {})
    if CONTROL in rl and "internal-rl" in rl:
        ctl, ours = _final_success(rl, CONTROL), _final_success(rl, "internal-rl")
        out.append(
            f"- Positive control: internal RL over the label-driven codes (switching at the true subgoal changes) "
            f"ends at {ctl:.3f} success against {ours:.3f} over the discovered codes, in the same episode budget: "
            + positive_control_verdict(ctl, ours)
        )
    scale = results.get("success_normaliser")
    for name, r in results["rl"].items():
        fin = [m["final_success"] for m in r["metrics"]]
        med = float(sorted(fin)[len(fin) // 2])
        norm = f" ({med / scale:.3f} of the expert's {scale})" if scale else ""
        out.append(f"- {name}: final success median {med:.3f}{norm} over {len(fin)} runs.")
    return out
