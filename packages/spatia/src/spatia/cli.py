"""The ``spatia`` command line."""

from __future__ import annotations

import spatia
from latentforge.cli import environment_report, run_subcommands


def info() -> None:
    """Print the package version and the compute this machine offers."""
    print(environment_report("latentforge-spatia", spatia.__version__))


def main(argv: list[str] | None = None) -> None:
    """Spatia: camera-controlled video generation with an updatable 3D spatial memory."""
    run_subcommands({"info": info}, description=main.__doc__, argv=argv)


if __name__ == "__main__":
    main()
