"""Pieces the three package CLIs share: subcommand dispatch and an environment report."""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import tyro


def run_subcommands(
    commands: Mapping[str, Callable[..., Any]],
    *,
    description: str | None = None,
    argv: Sequence[str] | None = None,
) -> Any:
    """Dispatch ``prog <subcommand> [options]`` with tyro.

    Each command is a function whose typed arguments (often one config dataclass with
    documented fields) become its options, so ``prog <subcommand> --help`` lists them all.
    """
    return tyro.extras.subcommand_cli_from_dict(dict(commands), description=description, args=argv)


def environment_report(distribution: str, version: str) -> str:
    """A few lines naming the package version and the available compute."""
    lines = [
        f"{distribution} {version}",
        f"python {platform.python_version()} on {platform.machine()}",
        f"torch {torch.__version__}",
    ]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        lines.append(f"cuda: {torch.cuda.device_count()} device(s): {names}")
    else:
        lines.append(f"cuda: none (CPU with {torch.get_num_threads()} threads)")
    return "\n".join(lines)
