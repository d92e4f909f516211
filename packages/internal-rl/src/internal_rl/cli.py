"""The ``internal-rl`` command line."""

from __future__ import annotations

from typing import Annotated

import tyro

import internal_rl
from internal_rl import pretrain as _pretrain
from internal_rl import probe as _probe
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


def info() -> None:
    """Print the package version and the compute this machine offers."""
    print(environment_report("latentforge-internal-rl", internal_rl.__version__))


def main(argv: list[str] | None = None) -> None:
    """Internal RL: metacontrollers that steer a frozen autoregressive model, trained by RL over latent codes."""
    run_subcommands({"info": info, "pretrain": pretrain, "probe": probe}, description=main.__doc__, argv=argv)


if __name__ == "__main__":
    main()
