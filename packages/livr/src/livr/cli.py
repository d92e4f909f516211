"""The ``livr`` command line: ``info``, ``train``, ``eval``, ``make-tiny``, ``params``."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro

import livr
from latentforge.cli import environment_report, run_subcommands
from latentforge.configs import resolve_config
from livr.config import PRESETS, TrainConfig


def info() -> None:
    """Print the package version and the compute this machine offers."""
    print(environment_report("latentforge-livr", livr.__version__))


def _pop_config(argv: list[str]) -> tuple[str, list[str]]:
    """Take ``--config X`` / ``--config=X`` out of ``argv`` (tyro then parses the rest); default ``paper``."""
    rest, source, i = [], "paper", 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise SystemExit(
                    "livr: --config needs a value (paper, multitask, tiny or a .json/.toml file)"
                )
            source, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            source = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return source, rest


def _train_command(base: TrainConfig, source: str):
    def train(cfg: Annotated[TrainConfig, tyro.conf.arg(name="")] = base) -> None:
        """Two-stage LIVR training (or ``--method direct_sft``); run folder under ``runs/livr/``.

        ``--config paper|multitask|tiny|FILE.json|FILE.toml`` (given first) picks the base values, default
        ``paper`` (the single-task recipe); every other option overrides one field. ``--config tiny`` without
        ``--model.model-id`` first writes a tiny random-weight backbone of ``--model.backbone`` under
        ``<runs-root>/livr/tiny-backbones/`` (a CPU smoke run of a few minutes).
        """
        from livr.trainer import train as run_training

        if source == "tiny" and cfg.model.model_id is None:
            cfg = dataclasses.replace(
                cfg, model=dataclasses.replace(cfg.model, model_id=str(tiny_backbone(cfg)))
            )
        print(run_training(cfg))

    return train


def tiny_backbone(cfg: TrainConfig) -> Path:
    """The tiny random-weight backbone folder for ``cfg.model.backbone`` (written once, then reused)."""
    from livr.tiny import make_tiny_backbone

    folder = Path(cfg.runs_root) / "livr" / "tiny-backbones" / cfg.model.backbone
    if not (folder / "livr_tiny.json").is_file():
        make_tiny_backbone(cfg.model.backbone, folder)
    return folder


def preset(name: Literal["paper", "multitask", "tiny"] = "paper") -> None:
    """Print a preset's config as JSON (the two-plus-three-epoch multi-task recipe is ``multitask``)."""
    from latentforge.configs import config_to_dict

    print(json.dumps(config_to_dict(PRESETS[name]()), indent=2))


def eval_checkpoint(
    checkpoint: Path,
    data: str = "synthetic",
    split: str = "val",
    base_model: str | None = None,
    num_synthetic: int = 16,
    batch_size: int = 4,
    max_new_tokens: int = 16,
) -> None:
    """Exact-match accuracy of a checkpoint (``LivrModel.save_pretrained`` folder) on a dataset split.

    Args:
        checkpoint: folder written by training (``<run>/best`` or ``<run>/final``).
        data: dataset folder with ``<split>.jsonl`` (see livr.data), or ``synthetic``.
        split: split file name.
        base_model: hub id or folder overriding the base model recorded in the checkpoint.
        num_synthetic: number of generated examples when ``data == "synthetic"``.
        batch_size: examples per generation batch.
        max_new_tokens: answer length limit.
    """
    from livr.data import load_examples, synthetic_counting
    from livr.evaluate import exact_match
    from livr.model import LivrModel

    model = LivrModel.from_pretrained(checkpoint, base_model=base_model)
    examples = (
        synthetic_counting(num_synthetic, seed=20_000) if data == "synthetic" else load_examples(data, split)
    )
    accuracy, _ = exact_match(model, examples, batch_size=batch_size, max_new_tokens=max_new_tokens)
    print(json.dumps({"checkpoint": str(checkpoint), "examples": len(examples), "exact_match": accuracy}))


def make_tiny(out: Path, backbone: str = "qwen2_5_vl", seed: int = 0) -> None:
    """Write a tiny random-weight backbone (model, tokenizer, image processor) for CPU runs.

    Args:
        out: folder to write.
        backbone: backbone adapter name.
        seed: weight initialisation seed.
    """
    from livr.tiny import make_tiny_backbone

    print(make_tiny_backbone(backbone, out, seed=seed))


def params(backbone: str = "qwen2_5_vl", num_latents: int = 16) -> None:
    """Total and LIVR-trainable parameter counts of a backbone's published config (meta device)."""
    from livr.params import parameter_counts

    print(json.dumps(parameter_counts(backbone, num_latents=num_latents), indent=2))


def main(argv: list[str] | None = None) -> None:
    """Latent Implicit Visual Reasoning: latent tokens + bottleneck attention for VLMs."""
    args = list(sys.argv[1:] if argv is None else argv)
    source = "paper"
    if args[:1] == ["train"]:
        source, args = _pop_config(args)
    try:
        base = resolve_config(TrainConfig, source, PRESETS)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"livr: {exc}") from exc
    run_subcommands(
        {
            "info": info,
            "train": _train_command(base, source),
            "eval": eval_checkpoint,
            "preset": preset,
            "make-tiny": make_tiny,
            "params": params,
        },
        description=main.__doc__,
        argv=args,
    )


if __name__ == "__main__":
    main()
