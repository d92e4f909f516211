"""The ``internal-rl`` command line."""

from __future__ import annotations

from typing import Annotated

import tyro

import internal_rl
from internal_rl import pretrain as _pretrain
from internal_rl import probe as _probe
from internal_rl.ant_expert import AntExpertConfig
from internal_rl.ant_expert import train_ant_expert as _train_ant_expert
from internal_rl.generate_data import GenerateDataConfig
from internal_rl.generate_data import generate_data as _generate_data
from latentforge.cli import environment_report, run_subcommands


def _presets(presets: dict) -> object:
    """A tyro type whose subcommands are the named presets (``pretrain tiny --steps 10``)."""
    return tyro.extras.subcommand_type_from_defaults(
        {name: make() for name, make in presets.items()},
        {name: (make.__doc__ or name) for name, make in presets.items()},
    )


PretrainPreset = _presets(_pretrain.PRESETS)
ProbePreset = _presets(_probe.PRESETS)


@tyro.conf.configure(tyro.conf.OmitSubcommandPrefixes)
def pretrain(config: Annotated[PretrainPreset, tyro.conf.arg(name="")]) -> None:  # type: ignore[valid-type]
    """Pretrain a base model on expert sequences: pick a preset (tiny, tiny-ant, paper-grid, paper-ant), then override fields."""
    result = _pretrain.pretrain(config)
    print(f"run: {result.run_dir}")
    for key, value in result.metrics.items():
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")


@tyro.conf.configure(tyro.conf.OmitSubcommandPrefixes)
def probe(config: Annotated[ProbePreset, tyro.conf.arg(name="")]) -> None:  # type: ignore[valid-type]
    """Fit linear subgoal probes on every layer of a pretrained base model (preset tiny or paper; set --run)."""
    result = _probe.probe(config)
    print(f"run: {result.run_dir}  (chance {result.chance:.3f})")
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
    }
    run_subcommands(commands, description=main.__doc__, argv=argv)


if __name__ == "__main__":
    main()
