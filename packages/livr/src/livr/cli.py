"""The ``livr`` command line: ``info``, ``train``, ``eval``, ``reproduce``, ``pretrain``, ``make-tiny``, ``params``."""

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
from livr.pretraining import PretrainConfig
from livr.reproduce import tiny_pretrain as _tiny_pretrain


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
    checkpoint: tuple[Path, ...],
    tasks: tuple[str, ...] = (),
    data: str = "synthetic",
    split: str | None = None,
    label: tuple[str, ...] = (),
    base_model: str | None = None,
    num_synthetic: int = 16,
    num_per_task: int = 32,
    data_seed: int = 303,
    image_size: int = 112,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    out: Path | None = None,
) -> None:
    """Per-task scores of one or more checkpoints side by side (accuracy; exact match for counts).

    Prints a markdown table, then one JSON line per checkpoint. Several checkpoints (e.g. a LIVR and a
    Direct SFT run) share the same examples.

    Args:
        checkpoint: folder(s) written by training (``<run>/best`` or ``<run>/final``).
        tasks: task names (``livr.tasks``); empty: the dataset's own examples (or synthetic counting).
        data: ``synthetic`` (the tasks' generators), a dataset folder with ``<split>.jsonl`` (no
            ``--tasks``), or a root with one folder per task in its published format (with ``--tasks``).
        split: split to read from ``data`` (default: ``test`` with ``--tasks``, else ``val``).
        label: a row name per checkpoint (default: the checkpoint's run folder name).
        base_model: hub id or folder overriding the base model recorded in the checkpoint.
        num_synthetic: generated synthetic-counting examples (no ``--tasks``, ``data == synthetic``).
        num_per_task: examples per task (generated or loaded).
        data_seed: seed of generated / sampled task examples.
        image_size: side of generated task images.
        batch_size: examples per generation batch.
        max_new_tokens: answer length limit.
        out: folder for ``results.json`` and ``results.md``.
    """
    from livr.data import load_examples, synthetic_counting
    from livr.evaluate import SYNTHETIC_COUNTING, evaluate_tasks, group_by_task
    from livr.model import LivrModel
    from livr.report import markdown_table, write_results

    split = split or ("test" if tasks else "val")
    if label and len(label) != len(checkpoint):
        raise SystemExit(f"--label needs one name per checkpoint ({len(checkpoint)}), got {len(label)}")
    if tasks:
        from livr.tasks import get_task

        by_task = {}
        for t in tasks:
            spec = get_task(t)
            by_task[spec.name] = (
                spec.generate(num_per_task, seed=data_seed, image_size=image_size)
                if data == "synthetic"
                else spec.load(Path(data) / spec.name, split, limit=num_per_task, seed=data_seed)
            )
    elif data == "synthetic":
        by_task = {SYNTHETIC_COUNTING: synthetic_counting(num_synthetic, seed=20_000)}
    else:
        by_task = group_by_task(load_examples(data, split))
    records, lines = [], []
    for i, path in enumerate(checkpoint):
        name = label[i] if label else (path.parent.name if path.name in ("best", "final") else path.name)
        model = LivrModel.from_pretrained(path, base_model=base_model)
        scores = evaluate_tasks(model, by_task, batch_size=batch_size, max_new_tokens=max_new_tokens)
        del model
        records.append({"method": name, "seed": 0, "scores": {t: s.summary() for t, s in scores.items()}})
        n = sum(s.n for s in scores.values())
        lines.append(
            json.dumps(
                {
                    "checkpoint": str(path),
                    "label": name,
                    "examples": n,
                    "exact_match": sum(s.correct for s in scores.values()) / max(n, 1),
                    "scores": {t: s.summary() for t, s in scores.items()},
                }
            )
        )
    table = markdown_table(records, list(by_task))
    if out is not None:
        write_results(out, records, list(by_task), {"checkpoints": [str(c) for c in checkpoint]})
        (Path(out) / "results.md").write_text(table + "\n")
    print(table)
    print("\n".join(lines))


def reproduce(
    config: str = "tiny",
    backbone: str | None = None,
    model_id: str | None = None,
    pretrained: str | None = None,
    tasks: tuple[str, ...] | None = None,
    seeds: tuple[int, ...] | None = None,
    methods: tuple[str, ...] | None = None,
    latent_sweep: tuple[int, ...] | None = None,
    train_per_task: int | None = None,
    test_per_task: int | None = None,
    data_root: str | None = None,
    mode: Literal["multi", "single"] | None = None,
    num_threads: int | None = None,
    runs_root: str | None = None,
    run_dir: str | None = None,
) -> None:
    """Direct SFT vs LIVR end to end (``make train-livr``): train, evaluate, results.json, report.md, figure.

    ``--config tiny`` (default) runs on a CPU: a small base model with a short generic pretraining,
    generated tasks, several seeds. ``--config paper --backbone qwen2.5-vl-3b`` (or ``qwen3-vl-4b``,
    ``llava-ov-1.5-4b``) is the paper-scale GPU run (add ``--data-root`` for the real datasets).

    Args:
        config: ``tiny``, ``paper`` or a .json/.toml file of ``livr.reproduce.ReproduceConfig``.
        backbone: backbone name or alias.
        model_id: base model hub id / folder (skips the small-base pretraining).
        pretrained: reuse the small base pretrained by an earlier run (``<run>/base``).
        tasks: task names.
        seeds: training seeds.
        methods: ``direct_sft``, ``livr``, ``latents_no_mask``, ``mask_no_latents``.
        latent_sweep: extra LIVR runs with these numbers of latents K.
        train_per_task: training examples per task.
        test_per_task: test examples per task.
        data_root: root with one folder per task in its published format (default: generated data).
        mode: ``multi`` (all tasks in one model) or ``single`` (one model per task).
        num_threads: torch CPU threads.
        runs_root: root folder of run folders.
        run_dir: explicit run folder.
    """
    import dataclasses

    from latentforge.configs import resolve_config
    from livr.reproduce import REPRODUCE_PRESETS, ReproduceConfig
    from livr.reproduce import reproduce as run_reproduce

    cfg = resolve_config(ReproduceConfig, config, REPRODUCE_PRESETS)
    overrides = {
        "backbone": backbone,
        "model_id": model_id,
        "pretrained": pretrained,
        "tasks": tasks,
        "seeds": seeds,
        "methods": methods,
        "latent_sweep": latent_sweep,
        "train_per_task": train_per_task,
        "test_per_task": test_per_task,
        "data_root": data_root,
        "mode": mode,
        "num_threads": num_threads,
        "runs_root": runs_root,
        "run_dir": run_dir,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    print(run_reproduce(cfg))


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


TINY_PRETRAIN = _tiny_pretrain()


def pretrain(out: Path, cfg: Annotated[PretrainConfig, tyro.conf.arg(name="")] = TINY_PRETRAIN) -> None:
    """Pretrain a small base model into ``out`` (the CPU preset's by default) and print its record.

    Every ``PretrainConfig`` field is an option (``--steps``, ``--hidden-size``, ``--tokenizer`` ...);
    the record holds the held-out exact match per question kind, and with ``--eval-every N`` its curve.
    A folder that already holds a pretraining with the same settings is reused.
    """
    import torch

    from livr.pretraining import pretrain_base, pretrain_record

    torch.set_num_threads(1)  # the machine is shared; matches livr reproduce's default
    folder = pretrain_base(out, cfg)
    record = pretrain_record(folder)
    print(json.dumps({k: v for k, v in record.items() if k != "config"}, indent=2))


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
            "reproduce": reproduce,
            "preset": preset,
            "make-tiny": make_tiny,
            "pretrain": pretrain,
            "params": params,
        },
        description=main.__doc__,
        argv=args,
    )


if __name__ == "__main__":
    main()
