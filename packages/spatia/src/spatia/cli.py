"""The ``spatia`` command line.

``spatia train [--config tiny|paper|FILE.json|FILE.toml] [--stage 2] [--iterations N] ...``:
``--config`` picks the base values (default ``paper``), every other option overrides one field.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import tyro

import spatia
from latentforge.cli import environment_report, run_subcommands
from latentforge.configs import resolve_config
from spatia.config import PRESETS, TrainConfig


def info() -> None:
    """Print the package version and the compute this machine offers."""
    print(environment_report("latentforge-spatia", spatia.__version__))


def _pop_config(argv: list[str]) -> tuple[str, list[str]]:
    """Take ``--config X`` / ``--config=X`` out of ``argv`` (tyro then parses the rest)."""
    rest, source, i = [], "paper-default", 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise SystemExit("spatia: --config needs a value (tiny, paper or a .json/.toml file)")
            source, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            source = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return source, rest


def _train_command(base: TrainConfig):
    def train(config: Annotated[TrainConfig, tyro.conf.arg(name="")] = base) -> None:
        """Flow-matching training of the control branch (stage 1) or of LoRA on the main blocks (stage 2).

        Choose base values with --config tiny|paper|FILE (default paper, given before other options);
        metrics go to runs/spatia/<run>/metrics.jsonl and TensorBoard.
        """
        from spatia.trainer import train as run_training

        run_dir = run_training(config)
        print(f"run folder: {run_dir}")

    return train


def _preview_command(base: TrainConfig):
    def preview_data(
        config: Annotated[TrainConfig, tyro.conf.arg(name="")] = base,
        out: str = "runs/spatia/preview",
        num_clips: int = 2,
        first_clips: bool = False,
    ) -> None:
        """Write the training clips' conditions (frames | memory render | holes GIFs, references, cameras) to OUT.

        Uses the data options of --config tiny|paper|FILE; --first-clips previews image-conditioned first clips.
        """
        from spatia.preview import save_clip_preview
        from spatia.trainer import build_dataset

        dataset = build_dataset(config.data, config.seed)
        for i in range(num_clips):
            paths = save_clip_preview(dataset.sample(i, first_clips), out, f"clip_{i}")
            print(*paths, sep="\n")

    return preview_data


def _generate_command():
    from spatia.generate import GenerateConfig

    base = GenerateConfig()

    def generate(config: Annotated[GenerateConfig, tyro.conf.arg(name="")] = base) -> None:
        """Generate a video along a camera trajectory with the spatial memory (mp4, point cloud, camera paths,
        contact sheet in --out). --pipeline is a SpatiaPipeline folder (spatia reproduce writes one) or "tiny"."""
        from spatia.generate import generate as run_generation

        for name, path in run_generation(config).items():
            print(f"{name}: {path}")

    # The config class is imported here, not at module level, so the annotation is given as an object.
    generate.__annotations__ = {"config": Annotated[GenerateConfig, tyro.conf.arg(name="")], "return": None}
    return generate


def _reproduce_command(source: str):
    from spatia.reproduce import PRESETS as REPRODUCE_PRESETS
    from spatia.reproduce import ReproduceConfig

    try:
        base = resolve_config(
            ReproduceConfig, "tiny" if source == "paper-default" else source, REPRODUCE_PRESETS
        )
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"spatia: {exc}") from exc

    def reproduce(config: Annotated[ReproduceConfig, tyro.conf.arg(name="")] = base) -> None:
        """make train-spatia: train a tiny model (stage 1, stage 2) on procedural rooms, generate along loops
        with and without memory, write results.json, report.md, video.mp4 and contact_sheet.png.

        Default: the CPU run (minutes); --config paper is the paper-scale run for GPUs."""
        from spatia.reproduce import reproduce as run_reproduce

        print(f"run folder: {run_reproduce(config)}")

    reproduce.__annotations__ = {"config": Annotated[ReproduceConfig, tyro.conf.arg(name="")], "return": None}
    return reproduce


def main(argv: Sequence[str] | None = None) -> None:
    """Spatia: camera-controlled video generation with an updatable 3D spatial memory."""
    args = list(sys.argv[1:] if argv is None else argv)
    source, args = _pop_config(args)
    try:
        base = resolve_config(TrainConfig, "paper" if source == "paper-default" else source, PRESETS)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"spatia: {exc}") from exc
    run_subcommands(
        {
            "info": info,
            "train": _train_command(base),
            "preview-data": _preview_command(base),
            "generate": _generate_command(),
            "reproduce": _reproduce_command(source),
        },
        description=main.__doc__,
        argv=args,
    )


if __name__ == "__main__":
    main()
