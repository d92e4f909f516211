"""``internal-rl reproduce``: the whole pipeline on the gridworld, end to end (``make train-internal-rl``).

Stages: expert data + pretraining (or ``--base-run``), subgoal probes, metacontrollers (internal,
forced switching beta = 1, co-trained) and the CompILE baseline on the same clean data, internal
RL (on the metacontrollers' and CompILE's codes) and raw-action RL on the post-training task
with several seeds, an optional alpha sweep (rate-distortion), then ``results.json``,
``report.md`` and PNG figures in ``runs/internal-rl/<run>/``.

The default is a tiny, CPU-sized configuration; ``--config paper`` holds the paper's settings
(30 runs = 10 base models x 3 metacontroller seeds, Tables A4/A9/A13) for GPU machines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from internal_rl import compile_rl as _compile_rl
from internal_rl import discovery as _discovery
from internal_rl import pretrain as _pretrain
from internal_rl import probe as _probe
from internal_rl import rl as _rl
from internal_rl.baselines import train_raw_action_rl
from internal_rl.report import plot_beta, plot_probe, plot_rate_distortion, plot_success_curves, write_report
from latentforge.configs import config_to_dict
from latentforge.runs import create_run_dir

METHODS = ("internal-rl", "forced-switch", "cotrained", "compile", "raw-action")


@dataclass
class ReproduceConfig:
    """Pipeline settings. Defaults: the tiny CPU configuration (a few minutes per stage)."""

    base_run: Path | None = None
    """Reuse a pretraining run (skips pretraining); otherwise the ``tiny`` preset is trained."""
    pretrain_preset: str = "tiny"
    """Pretraining preset when no base run is given (tiny, paper-grid)."""
    pretrain_steps: int | None = None
    """Override of the preset's steps (None keeps the preset)."""
    base_models: int = 1
    """Pretrained base models (the paper: 10); ignored with ``base_run``."""
    probe: bool = True
    probe_steps: int = 500
    probe_episodes: int = 300
    discovery: _discovery.DiscoveryConfig = field(
        default_factory=lambda: dataclasses.replace(_discovery.tiny_config(), steps=300, eval_every=100)
    )
    meta_seeds: int = 1
    """Metacontroller (and CompILE) seeds per base model (the paper: 3)."""
    compile: _compile_rl.CompileRunConfig = field(
        default_factory=lambda: dataclasses.replace(
            _compile_rl.tiny_config(),
            compile=dataclasses.replace(_compile_rl.tiny_config().compile, steps=300),
        )
    )
    """CompILE (method "compile"); its data is the metacontrollers' D*, not ``compile.data``."""
    rl: _rl.RLConfig = field(
        default_factory=lambda: dataclasses.replace(
            _rl.tiny_config(), steps=12, batch_size=64, checkpoint_every=12
        )
    )
    rl_seeds: int = 3
    """RL seeds per metacontroller."""
    methods: tuple[str, ...] = METHODS
    alpha_sweep: tuple[float, ...] = (0.0, 1.0)
    """Alphas for the rate-distortion plot (each trains one more metacontroller)."""
    sweep_steps: int = 200
    seed: int = 0
    num_threads: int = 1
    run_root: Path = Path("runs")
    exp_name: str = "reproduce"


def paper_config() -> ReproduceConfig:
    """The paper's settings (GPU): 10 base models x 3 metacontrollers, Tables A4/A9/A13, alpha grid."""
    return ReproduceConfig(
        pretrain_preset="paper-grid",
        base_models=10,
        probe_steps=8000,
        probe_episodes=10_000,
        discovery=_discovery.paper_grid_config(),
        meta_seeds=3,
        compile=_compile_rl.paper_grid_config(),
        rl=_rl.paper_grid_config(),
        rl_seeds=1,
        alpha_sweep=_discovery.ALPHA_GRID,
        sweep_steps=64_000,
        num_threads=0,
    )


def tiny_config() -> ReproduceConfig:
    """CPU default: tiny base model, 300-step metacontrollers, 3 RL seeds x 12 iterations x 64 episodes."""
    return ReproduceConfig()


PRESETS = {"tiny": tiny_config, "paper": paper_config}


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def reproduce(cfg: ReproduceConfig) -> Path:
    """Run every stage; returns the run folder holding results.json, report.md and the figures."""
    t0, load_start = time.perf_counter(), _load()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    run_dir = create_run_dir(cfg.run_root, "internal-rl", cfg.exp_name, cfg.seed, config_to_dict(cfg))
    stage_root = run_dir / "stages"
    common = {"run_root": stage_root, "num_threads": cfg.num_threads}
    results: dict[str, Any] = {"command": "internal-rl reproduce " + " ".join(sys.argv[2:]), "timings": {}}

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
        for k in range(cfg.base_models):
            pcfg = _pretrain.PRESETS[cfg.pretrain_preset]()
            pcfg = dataclasses.replace(pcfg, seed=cfg.seed + k, **common)
            if cfg.pretrain_steps is not None:
                pcfg = dataclasses.replace(pcfg, steps=cfg.pretrain_steps)
            out = _pretrain.pretrain(pcfg)
            base_runs.append(out.run_dir)
            base_metrics = out.metrics
    timed("pretrain", start)
    results["base_run"], results["base"] = str(base_runs[0]), base_metrics

    # probes on the (first) base model
    figures: list[str] = []
    if cfg.probe:
        start = time.perf_counter()
        pc = _probe.tiny_probe_config()
        pc = dataclasses.replace(
            pc, run=base_runs[0], checkpoints="latest", steps=cfg.probe_steps,
            data=dataclasses.replace(pc.data, num_episodes=cfg.probe_episodes), **common,
        )  # fmt: skip
        pr = _probe.probe(pc)
        acc = list(pr.accuracy.values())[-1]
        results["probe"] = {"accuracy": acc, "chance": pr.chance}
        plot_probe(acc, pr.chance, run_dir / "probe_accuracy.png")
        figures.append("probe_accuracy.png")
        timed("probe", start)

    # 3. metacontrollers: one clean dataset (D*) shared by every method
    start = time.perf_counter()
    dcfg = dataclasses.replace(cfg.discovery, **common)
    data = _pretrain.load_data(dataclasses.replace(dcfg.data, epsilon=0.0))
    timed("discovery_data", start)
    variants = {
        "internal-rl": dcfg,
        "forced-switch": dataclasses.replace(dcfg, meta=dataclasses.replace(dcfg.meta, forced_switch=True)),
        "cotrained": dataclasses.replace(dcfg, cotrain=True),
    }
    metas: dict[str, list[Any]] = {}
    results["discovery"] = {}
    for name, vcfg in variants.items():
        if name not in cfg.methods:
            continue
        start = time.perf_counter()
        for b, base_run in enumerate(base_runs):
            for s in range(cfg.meta_seeds):
                out = _discovery.train_metacontroller(
                    dataclasses.replace(
                        vcfg, base_run=base_run, seed=cfg.seed + 100 * b + s, exp_name=f"meta-{name}"
                    ),
                    data=data,
                )
                metas.setdefault(name, []).append(out.model)
                if b == 0 and s == 0:
                    results["discovery"][name] = {**out.metrics, "alpha": vcfg.alpha, "run": str(out.run_dir)}
        timed(f"discovery_{name}", start)

    # CompILE (C.4.3) replaces the metacontroller on the same base models and D*; internal RL
    # then acts on its codes through the periodic-switch adapter (see compile_rl).
    if "compile" in cfg.methods:
        start = time.perf_counter()
        ccfg = dataclasses.replace(cfg.compile, **common)
        for b, base_run in enumerate(base_runs):
            for s in range(cfg.meta_seeds):
                seed = cfg.seed + 100 * b + s
                one = dataclasses.replace(ccfg, compile=dataclasses.replace(ccfg.compile, seed=seed))
                out = _compile_rl.train_compile_run(one, base_run=base_run, data=data)
                metas.setdefault("compile", []).append(out.controlled)
                if b == 0 and s == 0:
                    results["discovery"]["compile"] = {
                        **out.metrics, "alpha_z": one.compile.alpha_z, "alpha_b": one.compile.alpha_b,
                        "run": str(out.run_dir),
                    }  # fmt: skip
        timed("discovery_compile", start)

    # Fig. 6: beta of held-out clean episodes against the true subgoal changes
    if "internal-rl" in metas:
        held = data[len(data) - 16 :]
        stats = _discovery.switch_statistics(metas["internal-rl"][0], held, torch.device("cpu"))
        for i in range(2):
            name = f"beta_episode{i}.png"
            plot_beta(stats["beta"][i], stats["truth"][i], int(held.lengths[i]), run_dir / name,
                      "metacontroller switching gate, held-out expert episode")  # fmt: skip
            figures.append(name)

    # rate-distortion sweep (Fig. 7)
    if cfg.alpha_sweep and "internal-rl" in variants:
        start = time.perf_counter()
        points = []
        for alpha in cfg.alpha_sweep:
            out = _discovery.train_metacontroller(
                dataclasses.replace(dcfg, base_run=base_runs[0], alpha=alpha, steps=cfg.sweep_steps,
                                    eval_every=cfg.sweep_steps, exp_name="meta-sweep"),
                data=data,
            )  # fmt: skip
            m = out.metrics
            points.append({"alpha": alpha, "switches_per_episode": m["eval/switches_per_episode"],
                           "action_nll": m["eval/action_nll"], "alignment_f1": m["eval/alignment_f1"],
                           "random_alignment_f1": m["eval/random_alignment_f1"], "kl": m["eval/kl"]})  # fmt: skip
            true_changes = m["eval/true_boundaries_per_episode"]
        results["rate_distortion"] = points
        plot_rate_distortion(points, true_changes, run_dir / "rate_distortion.png")
        figures.append("rate_distortion.png")
        timed("alpha_sweep", start)

    # 4. RL on the post-training task, every method with the same harness and episode budget
    rcfg = dataclasses.replace(cfg.rl, **common)
    results["rl_task"] = rcfg.tasks or rcfg.task_set
    results["rl"] = {}
    curves: dict[str, list[list[float]]] = {}
    episodes: list[int] = []
    for name in cfg.methods:
        start = time.perf_counter()
        entry: dict[str, Any] = {"metrics": [], "decisions": [], "episodes": []}
        models = metas.get(name, [None]) if name != "raw-action" else [None]
        for m_index, model in enumerate(models):
            for s in range(cfg.rl_seeds):
                seed = cfg.seed + 1000 * m_index + s
                one = dataclasses.replace(rcfg, seed=seed, exp_name=f"rl-{name}")
                if name == "raw-action":
                    base, _ = _pretrain.load_backbone(base_runs[(m_index + s) % len(base_runs)])
                    out = train_raw_action_rl(one, base)
                else:
                    out = _rl.train_internal_rl(one, model)
                history = json.loads((out.run_dir / "results.json").read_text())["history"]
                curves.setdefault(name, []).append(out.success)
                entry["metrics"].append(out.metrics)
                entry["decisions"].append(history["decisions"])
                entry["episodes"] = out.episodes
                episodes = out.episodes
        results["rl"][name] = entry
        timed(f"rl_{name}", start)
    plot_success_curves(curves, episodes, run_dir / "success_vs_episodes.png",
                        f"post-training task {results['rl_task']} (median, 25-75%)")  # fmt: skip
    figures.append("success_vs_episodes.png")

    results["diagnosis"] = diagnose(results)
    results["figures"] = figures
    results["seconds"] = time.perf_counter() - t0
    results["load_start"], results["load_end"] = load_start, _load()
    results["curves"] = curves
    results["episodes"] = episodes
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    write_report(run_dir / "report.md", results)
    return run_dir


def diagnose(results: dict[str, Any]) -> list[str]:
    """Plain statements, from the measured numbers, about why internal RL did or did not work."""
    out: list[str] = []
    acc = results["base"].get("eval/action_accuracy")
    if acc is not None:
        out.append(
            f"- Base model held-out action accuracy {acc:.3f} (the 'repeat the previous move' reference is about 0.47, "
            "chance 0.25; see the Base models section of the package README)."
        )
    if results.get("probe"):
        p = results["probe"]
        best = max(p["accuracy"])
        verdict = "above" if best > p["chance"] + 0.05 else "at"
        out.append(f"- Best subgoal-probe accuracy {best:.3f} vs chance {p['chance']:.3f}: {verdict} chance, "
                   + ("the base model holds a linearly decodable subgoal belief." if verdict == "above"
                      else "the base model shows no linearly decodable subgoal belief (not compositional yet)."))  # fmt: skip
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
    c = results["discovery"].get("compile")
    if c:
        out.append(
            f"- CompILE: {c['eval/segments_per_episode']:.2f} segments per episode, i.e. "
            f"{c['eval/segments_per_episode'] - 1:.2f} boundaries vs {c['eval/true_boundaries_per_episode']:.2f} "
            f"true subgoal changes; alignment F1 {c['eval/alignment_f1']:.3f} vs "
            f"{c['eval/random_alignment_f1']:.3f} for random boundaries; internal RL on its codes switches every "
            f"{c['rl_switch_every']} primitive steps (it has no causal switching unit)."
        )
    for name, r in results["rl"].items():
        fin = [m["final_success"] for m in r["metrics"]]
        out.append(
            f"- {name}: final success median {float(sorted(fin)[len(fin) // 2]):.3f} over {len(fin)} runs."
        )
    return out
