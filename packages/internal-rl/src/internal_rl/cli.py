"""The ``internal-rl`` command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import tyro

import internal_rl
from internal_rl import compile_rl as _compile_rl
from internal_rl import discovery as _discovery
from internal_rl import pretrain as _pretrain
from internal_rl import probe as _probe
from internal_rl import reproduce as _reproduce
from internal_rl import rl as _rl
from internal_rl import supervised as _supervised
from internal_rl.ant_expert import AntExpertConfig
from internal_rl.ant_expert import train_ant_expert as _train_ant_expert
from internal_rl.envs.tasks import GRID_SPECS
from internal_rl.generate_data import GenerateDataConfig
from internal_rl.generate_data import generate_data as _generate_data
from latentforge.cli import environment_report, run_subcommands


def _presets(presets: dict) -> object:
    """A tyro type whose subcommands are the named presets (``pretrain tiny --steps 10``)."""
    return tyro.extras.subcommand_type_from_defaults(
        {name: make() for name, make in presets.items()},
        {name: (make.__doc__ or name) for name, make in presets.items()},
    )


def _print_run(result: object) -> None:
    """The run folder and final metrics of a training command's result."""
    print(f"run: {result.run_dir}")  # type: ignore[attr-defined]
    for key, value in result.metrics.items():  # type: ignore[attr-defined]
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")


PretrainPreset = _presets(_pretrain.PRESETS)
ProbePreset = _presets(_probe.PRESETS)


DiscoveryPreset = _presets(_discovery.PRESETS)
CompilePreset = _presets(_compile_rl.PRESETS)
RLPreset = _presets(_rl.PRESETS)
SupervisedPreset = _presets(_supervised.PRESETS)


@tyro.conf.configure(tyro.conf.OmitSubcommandPrefixes)
def pretrain(config: Annotated[PretrainPreset, tyro.conf.arg(name="")]) -> None:  # type: ignore[valid-type]
    """Pretrain a base model on expert sequences: pick a preset (small, tiny, tiny-ant, paper-grid, paper-ant), then override fields."""
    result = _pretrain.pretrain(config)
    _print_run(result)


@tyro.conf.configure(tyro.conf.OmitSubcommandPrefixes)
def probe(config: Annotated[ProbePreset, tyro.conf.arg(name="")]) -> None:  # type: ignore[valid-type]
    """Fit linear subgoal probes on every layer of a pretrained base model (preset small, tiny or paper; set --run)."""
    result = _probe.probe(config)
    history = (
        ""
        if result.history_baseline is None
        else f", last-visited-colour lookup {result.history_baseline:.3f}"
    )
    print(f"run: {result.run_dir}  (chance {result.chance:.3f}{history})")
    for step, acc in sorted(result.accuracy.items()):
        print(f"  checkpoint {step}: " + " ".join(f"L{i}={a:.3f}" for i, a in enumerate(acc)))


def generate_data(config: Annotated[GenerateDataConfig, tyro.conf.arg(name="")]) -> None:
    """Generate expert trajectories (grid: DP expert; ant: PPO expert checkpoint or gait-MPC controller) as shards."""
    _generate_data(config)


def train_ant_expert(config: Annotated[AntExpertConfig, tyro.conf.arg(name="")]) -> None:
    """Train the ant PPO expert (direction hint + velocity-alignment reward, Table A3); a GPU-scale job."""
    print(f"run: {_train_ant_expert(config)}")


def eval_ant_controller(task_set: str = "pretrain", episodes: int = 20, seed: int = 0) -> None:
    """Success rate of the cheap gait-MPC ant controller (the paper's PPO expert reaches 0.8 / 0.7)."""
    from internal_rl.ant_controller import evaluate_controller

    print(evaluate_controller(task_set, episodes=episodes, seed=seed))


@tyro.conf.configure(tyro.conf.OmitSubcommandPrefixes)
def supervised(config: Annotated[SupervisedPreset, tyro.conf.arg(name="")]) -> None:  # type: ignore[valid-type]
    """Label-driven controllers (paper C.3): one controller per true subgoal, then closed-loop success (preset small or paper; set --base-run)."""
    result = _supervised.train_supervised(config)
    _print_run(result)


@tyro.conf.configure(tyro.conf.OmitSubcommandPrefixes)
def metacontroller(config: Annotated[DiscoveryPreset, tyro.conf.arg(name="")]) -> None:  # type: ignore[valid-type]
    """Train a metacontroller on a frozen base model (preset small, tiny, paper-grid or paper-ant; set --base-run)."""
    result = _discovery.train_metacontroller(config)
    _print_run(result)


@tyro.conf.configure(tyro.conf.OmitSubcommandPrefixes)
def compile(config: Annotated[CompilePreset, tyro.conf.arg(name="")]) -> None:  # type: ignore[valid-type]
    """Train the CompILE baseline on a frozen base model (preset small, tiny, paper-grid or paper-ant; set --base-run)."""
    result = _compile_rl.train_compile_run(config)
    _print_run(result)


@tyro.conf.configure(tyro.conf.OmitSubcommandPrefixes)
def rl(config: Annotated[RLPreset, tyro.conf.arg(name="")]) -> None:  # type: ignore[valid-type]
    """Internal RL over latent codes (preset small, tiny, paper-grid or paper-ant; set --metacontroller-run, --compile-run or --label-run)."""
    result = _rl.train_internal_rl(config)
    _print_run(result)


def reproduce(
    config: Annotated[
        str,
        tyro.conf.arg(
            help="preset: small6 (CPU default: the 5 x 5 grid with six colours on fixed cells, where internal RL "
            "learns the held-out task and the baselines learn far less or not at all), small (four colours drawn "
            "anew per episode), tiny (7 x 7 grid, CPU wiring check), paper (7 x 7 grid, the paper's GPU "
            "settings), tiny-ant (ant, CPU smoke run) or paper-ant (ant, GPU settings)"
        ),
    ] = "small6",
    base_run: Path | None = None,
    run_root: Path = Path("runs"),
    num_threads: int = 1,
    workers: Annotated[
        int | None,
        tyro.conf.arg(
            help="processes for the independent runs (metacontroller seeds, CompILE, every RL run); the numbers "
            "do not depend on it; default: the preset's (2 on the CPU presets)"
        ),
    ] = None,
    pretrain_data_dir: Annotated[
        Path | None,
        tyro.conf.arg(help="a generate-data dataset folder for pretraining, instead of generating episodes"),
    ] = None,
    discovery_data_dir: Annotated[
        Path | None,
        tyro.conf.arg(
            help="a generate-data dataset folder for the clean data D*, instead of generating episodes"
        ),
    ] = None,
    variant: Annotated[
        str | None,
        tyro.conf.arg(
            help="grid only: another member of the grid family for every stage (e.g. small-fixed: the small "
            "grid with the colours on fixed cells); default: the preset's"
        ),
    ] = None,
    rl_steps: Annotated[
        int | None,
        tyro.conf.arg(
            help="RL iterations of every method (episodes = iterations x the preset's batch); default: the preset's"
        ),
    ] = None,
) -> None:
    """Pipeline end to end (grid or ant): pretraining, probes, metacontrollers, internal RL, baselines, report."""
    if config not in _reproduce.PRESETS:
        raise SystemExit(f"unknown --config {config!r}; choose one of {sorted(_reproduce.PRESETS)}")
    cfg = _reproduce.PRESETS[config]()
    if variant is not None:
        if cfg.env != "grid":
            raise SystemExit("--variant is a grid option; the ant presets have none")
        if variant not in GRID_SPECS:
            raise SystemExit(f"unknown --variant {variant!r}; choose one of {sorted(GRID_SPECS)}")
        cfg = dataclasses.replace(cfg, variant=variant)
    if workers is not None and workers < 1:
        raise SystemExit(f"--workers must be at least 1, got {workers}")
    if rl_steps is not None:
        if rl_steps < 1:
            raise SystemExit(f"--rl-steps must be at least 1, got {rl_steps}")
        cfg = dataclasses.replace(cfg, rl=dataclasses.replace(cfg.rl, steps=rl_steps))
    cfg = dataclasses.replace(
        cfg,
        base_run=base_run,
        run_root=run_root,
        num_threads=num_threads,
        workers=cfg.workers if workers is None else workers,
        pretrain_data_dir=pretrain_data_dir,
        discovery_data_dir=discovery_data_dir,
    )
    run_dir = _reproduce.reproduce(cfg)
    print(f"run: {run_dir}")
    print((run_dir / "report.md").read_text())


def info() -> None:
    """Print the package version and the compute this machine offers."""
    print(environment_report("latentforge-internal-rl", internal_rl.__version__))


def main(argv: list[str] | None = None) -> None:
    """Internal RL: metacontrollers that steer a frozen autoregressive model, trained by RL over latent codes."""
    commands = {
        "info": info,
        "generate-data": generate_data,
        "train-ant-expert": train_ant_expert,
        "eval-ant-controller": eval_ant_controller,
        "pretrain": pretrain,
        "probe": probe,
        "supervised": supervised,
        "metacontroller": metacontroller,
        "compile": compile,
        "rl": rl,
        "reproduce": reproduce,
    }
    run_subcommands(commands, description=main.__doc__, argv=argv)


if __name__ == "__main__":
    main()
