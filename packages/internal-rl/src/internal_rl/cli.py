"""The ``internal-rl`` command line."""

from __future__ import annotations

import internal_rl
from latentforge.cli import environment_report, run_subcommands


def info() -> None:
    """Print the package version and the compute this machine offers."""
    print(environment_report("latentforge-internal-rl", internal_rl.__version__))


def main(argv: list[str] | None = None) -> None:
    """Internal RL: metacontrollers that steer a frozen autoregressive model, trained by RL over latent codes."""
    run_subcommands({"info": info}, description=main.__doc__, argv=argv)


if __name__ == "__main__":
    main()
