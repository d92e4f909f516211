"""Held-out action accuracy and action NLL against optimiser steps, for one or more pretraining runs.

    python tools/plot_pretrain_curves.py --out curves.png runs/internal-rl/<run-a>:100K runs/internal-rl/<run-b>:400K

Each argument is a run folder (or its ``metrics.jsonl``), optionally followed by ``:label``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from latentforge.runs import read_metrics


def eval_curve(run: Path, key: str) -> tuple[list[int], list[float]]:
    rows = read_metrics(run)
    points = [(row["step"], row[key]) for row in rows if key in row]
    if not points:
        raise ValueError(f"{run}: no '{key}' rows in metrics.jsonl")
    steps, values = zip(*points, strict=True)
    return list(steps), list(values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folder[:label]")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for spec in args.runs:
        path, _, label = spec.partition(":")
        for ax, key in zip(axes, ("eval/action_accuracy", "eval/action_nll"), strict=True):
            steps, values = eval_curve(Path(path), key)
            ax.plot(steps, values, label=label or Path(path).name)
    for ax, title in zip(axes, ("held-out action accuracy", "held-out action NLL (nats)"), strict=True):
        ax.set_xlabel("optimiser steps")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
