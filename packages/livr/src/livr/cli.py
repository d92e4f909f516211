"""The ``livr`` command line."""

from __future__ import annotations

import livr
from latentforge.cli import environment_report, run_subcommands


def info() -> None:
    """Print the package version and the compute this machine offers."""
    print(environment_report("latentforge-livr", livr.__version__))


def main(argv: list[str] | None = None) -> None:
    """Latent Implicit Visual Reasoning: latent tokens + bottleneck attention for VLMs."""
    run_subcommands({"info": info}, description=main.__doc__, argv=argv)


if __name__ == "__main__":
    main()
