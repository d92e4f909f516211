"""``livr reproduce`` (what ``make train-livr`` runs): Direct SFT vs LIVR, evaluation, report, figure.

CPU default (``--config tiny``): a small model of the backbone's architecture gets a short generic
pretraining (``livr.pretraining``, cached in the run folder or reused with ``--pretrained``), the
tasks' procedural generators make train/val/test sets, Direct SFT and LIVR (stage 1 then 2) train
on the same multi-task mix with the same budget for several seeds, every checkpoint is evaluated
per task, and ``<run>/results.json``, ``<run>/report.md`` and ``<run>/latent_attention.png`` are
written, together with diagnostics that say whether the latents carry image information (the
stage-1 accuracy with the real image and with a blank image; the latents' attention on the image
and its entropy).

``--config paper --backbone qwen2.5-vl-3b`` (or ``qwen3-vl-4b``, ``llava-ov-1.5-4b``) is the paper-scale
run for GPUs: the published checkpoint, real data under ``--data-root`` (one folder per task in its
published format) or generated data if none is given, 1,000 training examples per task, the
paper's test sizes, single-task training (4 + 6 vs 10 epochs), the ablations.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from latentforge.runs import create_run_dir
from livr.config import ModelConfig, TrainConfig
from livr.data import Example, write_examples
from livr.evaluate import TaskScore, evaluate_tasks, generate_answers, score_task
from livr.multitask import mix_tasks
from livr.pretraining import PretrainConfig, pretrain_base, pretrain_record
from livr.report import BLANK_SUFFIX, markdown_table, method_label, unparseable_table, write_results
from livr.vision_probe import image_token_probe

BACKBONE_ALIASES = {
    "qwen2.5-vl-3b": "qwen2_5_vl",
    "qwen3-vl-4b": "qwen3_vl",
    "llava-ov-1.5-4b": "llava_onevision1_5",
    "llava-onevision-1.5-4b": "llava_onevision1_5",
}
TINY_TASKS = ("counting", "object_localization", "relative_reflectance")
ALL_TASKS = (
    "counting",
    "jigsaw",
    "object_localization",
    "visual_correspondence",
    "art_style",
    "semantic_correspondence",
    "functional_correspondence",
    "relative_reflectance",
    "visual_similarity",
)
DATA_SEEDS = {"train": 101, "val": 202, "test": 303}


@dataclass
class ReproduceConfig:
    """Direct SFT vs LIVR end to end; the defaults are the CPU ``tiny`` preset."""

    backbone: str = "qwen2_5_vl"
    """backbone adapter name or alias (``qwen2.5-vl-3b``, ``qwen3-vl-4b``, ``llava-ov-1.5-4b``)."""
    model_id: str | None = None
    """base model (hub id / folder); None: a small pretrained base (tiny) or the backbone's hub id (paper)."""
    pretrain_small_base: bool = True
    """build and pretrain the small base model (ignored when ``model_id`` is given)."""
    pretrained: str | None = None
    """folder of an earlier small-base pretraining to reuse (e.g. ``<earlier run>/base``)."""
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    tasks: tuple[str, ...] = TINY_TASKS
    """task names (``livr.tasks``)."""
    data_root: str | None = None
    """folder with one sub-folder per task in its published format; None: generated data."""
    task_source: Literal["paper", "grid"] = "paper"
    """generated data: the paper tasks' generators, or their grid versions (``livr.tasks.grid``: counting,
    object_localization, visual_similarity on the small base's 3 x 3 grid; the CPU preset)."""
    blank_control: bool = False
    """also score every trained model with blank images (a text-only control: equal scores mean the image is unused)."""
    train_per_task: int = 32
    """training examples per task (paper: 1,000)."""
    train_sizes: dict[str, int] = field(default_factory=dict)
    """per-task exceptions to ``train_per_task`` (e.g. ``{"visual_similarity": 3000}``)."""
    val_per_task: int = 8
    """validation examples per task (best checkpoint by validation NLL)."""
    test_per_task: int | None = 32
    """test examples per task; None: the paper's test size."""
    image_size: int = 112
    """side of generated images."""
    mode: Literal["multi", "single"] = "multi"
    """``multi``: one model on all tasks mixed; ``single``: one model per task."""
    methods: tuple[str, ...] = ("direct_sft", "livr")
    """trained methods (``direct_sft``, ``livr``, ``latents_no_mask``, ``mask_no_latents``)."""
    latent_sweep: tuple[int, ...] = ()
    """extra LIVR runs with these K (the paper's ablation tries 4, 8, 16, 32)."""
    seeds: tuple[int, ...] = (1, 2, 3)
    """training seeds (LoRA init, latent init, data order)."""
    zero_shot: bool = True
    """also evaluate the untrained base model."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """training recipe for every method (epochs, lr, batch, K via ``train.model.num_latents``)."""
    eval_batch_size: int = 16
    """examples per generation batch."""
    max_new_tokens: int = 4
    """answer length limit."""
    attention_examples: int = 3
    """test examples in the latent-attention figure."""
    diagnostics: bool = True
    """stage-1 accuracy with blank images, latent attention statistics and figure."""
    num_threads: int = 1
    """torch CPU threads (the machine is shared)."""
    runs_root: str = "runs"
    """root of run folders (``<root>/livr/livr__<exp>__<seed>__<time>``)."""
    exp_name: str = "reproduce"
    """experiment name in the run folder name."""
    run_dir: str | None = None
    """explicit run folder."""


GRID_TASKS = ("counting", "object_localization", "visual_similarity")


def tiny_pretrain() -> PretrainConfig:
    """The small base of the CPU preset (chosen by the search in the README, "Base-model search")."""
    return PretrainConfig(
        hidden_size=64,
        num_layers=4,
        head_dim=16,
        mrope_section=(2, 3, 3),
        vision_hidden_size=64,
        vision_layers=2,
        patch_size=8,
        image_tokens=9,
        image_size=48,
        tokenizer="word",
        max_objects=4,
        two_image_rate=0.1,
        steps=3000,
        eval_every=500,
        batch_size=16,
        eval_examples=128,
    )


def tiny_reproduce() -> ReproduceConfig:
    model = ModelConfig(num_latents=8, lora_r=16, lora_alpha=32)
    train = TrainConfig(
        model=model, stage1_epochs=1, stage2_epochs=1, lr=2e-3, batch_size=32, grad_accum=1, dtype="float32"
    )
    return ReproduceConfig(
        pretrain=tiny_pretrain(),
        task_source="grid",
        tasks=GRID_TASKS,
        train_per_task=1000,
        # Similarity is learned from 3,000 examples trained alone, not from 1,000 nor in the multi-task mix
        # (README, "Similarity is learnable"); single-task is also the paper's protocol.
        train_sizes={"visual_similarity": 3000},
        mode="single",
        val_per_task=32,
        test_per_task=200,
        image_size=48,
        methods=("direct_sft", "livr", "latents_no_mask", "mask_no_latents"),
        blank_control=True,
        eval_batch_size=32,
        train=train,
    )


def paper_reproduce() -> ReproduceConfig:
    return ReproduceConfig(
        model_id=None,
        pretrain_small_base=False,
        tasks=ALL_TASKS,
        train_per_task=1000,
        val_per_task=100,
        test_per_task=None,
        image_size=448,
        mode="single",
        methods=("direct_sft", "livr", "latents_no_mask", "mask_no_latents"),
        latent_sweep=(4, 8, 32),
        seeds=(1,),
        train=TrainConfig(),
        eval_batch_size=8,
        max_new_tokens=8,
        num_threads=8,
        exp_name="reproduce-paper",
    )


REPRODUCE_PRESETS = {"tiny": tiny_reproduce, "paper": paper_reproduce}


def resolve_backbone(name: str) -> str:
    return BACKBONE_ALIASES.get(name.lower(), name)


# ---------------------------------------------------------------------------- data
def task_split(cfg: ReproduceConfig, task: str, split: str) -> list[Example]:
    from livr.tasks import get_task

    spec = get_task(task)
    n = {
        "train": cfg.train_sizes.get(task, cfg.train_per_task),
        "val": cfg.val_per_task,
        "test": cfg.test_per_task or spec.test_size,
    }[split]
    if cfg.data_root:
        return spec.load(Path(cfg.data_root) / task, split, limit=n, seed=DATA_SEEDS[split])
    seed = DATA_SEEDS[split] * 1000 + zlib.crc32(task.encode()) % 1000
    if cfg.task_source == "grid":
        from livr.tasks import grid

        return grid.generate(task, n, seed=seed, image_size=cfg.image_size)
    return spec.generate(n, seed=seed, image_size=cfg.image_size)


def reference_rates(
    train: dict[str, list[Example]], tests: dict[str, list[Example]]
) -> dict[str, dict[str, float]]:
    """Per task, in percent: chance (uniform over the options, or over the counts seen in training) and
    the majority rate (the most frequent training answer, scored on the test set)."""
    from collections import Counter

    from livr.tasks import get_task

    chance, majority = {}, {}
    for task, exs in tests.items():
        answers = Counter(ex.answer for ex in train[task])
        choices = get_task(task).choices
        chance[task] = 100.0 / (len(choices) if choices else len(answers))
        top = answers.most_common(1)[0][0]
        majority[task] = 100.0 * sum(ex.answer == top for ex in exs) / max(len(exs), 1)
    return {"chance": chance, "majority": majority}


def write_training_data(
    cfg: ReproduceConfig, folder: Path
) -> tuple[dict[str, Path], dict[str, list[Example]]]:
    """Dataset folders for training (``{"all": mixed}`` in multi mode, one per task in single) and the
    training examples per task."""
    per_task = {t: (task_split(cfg, t, "train"), task_split(cfg, t, "val")) for t in cfg.tasks}
    out = {}
    if cfg.mode == "multi":
        write_examples(mix_tasks({t: tr for t, (tr, _) in per_task.items()}, seed=0), folder / "all", "train")
        write_examples([ex for _, va in per_task.values() for ex in va], folder / "all", "val")
        out["all"] = folder / "all"
    else:
        for t, (tr, va) in per_task.items():
            write_examples(tr, folder / t, "train")
            write_examples(va, folder / t, "val")
            out[t] = folder / t
    return out, {t: tr for t, (tr, _) in per_task.items()}


# ---------------------------------------------------------------------------- runs
def method_configs(cfg: ReproduceConfig) -> list[tuple[str, TrainConfig]]:
    """(label, TrainConfig template) for every trained method, the K sweep included."""
    out = [(m, dataclasses.replace(cfg.train, method=m)) for m in cfg.methods]
    for k in cfg.latent_sweep:
        model = dataclasses.replace(cfg.train.model, num_latents=k)
        out.append((f"livr_k{k}", dataclasses.replace(cfg.train, method="livr", model=model)))
    return out


def blank(example: Example) -> Example:
    images = [Image.new("RGB", im.size) for im in example.images]
    return Example(images, example.question, example.answer, dict(example.meta))


def stage1_diagnostics(cfg: ReproduceConfig, checkpoint: Path, tests: dict[str, list[Example]]) -> dict:
    """Stage-1 (bottleneck) accuracy of the stage-1 checkpoint with the real image and with a blank one.

    Under the stage-1 mask the image reaches the answer only through the latents, so equal scores
    mean the latents carry no usable image information.
    """
    from livr.model import LivrModel

    livr = LivrModel.from_pretrained(checkpoint)
    kw = {"batch_size": cfg.eval_batch_size, "max_new_tokens": cfg.max_new_tokens, "stage": 1}
    out = {}
    for task, exs in tests.items():
        real = score_task(task, generate_answers(livr, exs, **kw), exs)
        blanked = score_task(task, generate_answers(livr, [blank(e) for e in exs], **kw), exs)
        out[task] = {"image": real.score, "blank_image": blanked.score}
    return out


def attention_diagnostics(
    cfg: ReproduceConfig, checkpoint: Path, tests: dict[str, list[Example]], png: Path | None
):
    from livr.attention_maps import latent_attention, plot_latent_attention
    from livr.model import LivrModel

    livr = LivrModel.from_pretrained(checkpoint)
    stats = {}
    for stage in (1, 2):
        per_task = {}
        for task, exs in tests.items():
            res = [latent_attention(livr, ex, stage=stage) for ex in exs[:8]]
            per_task[task] = {
                k: sum(getattr(r, k) for r in res) / len(res)
                for k in ("image_mass", "entropy", "answer_on_latents", "answer_on_image")
            }
        stats[f"stage{stage}"] = per_task
    if png is not None:
        picks = [exs[0] for exs in tests.values()][: cfg.attention_examples]
        plot_latent_attention(livr, picks, png, stage=2)
    return stats


def score_records(method: str, seed: int, scores: dict[str, TaskScore]) -> dict:
    return {"method": method, "seed": seed, "scores": {t: s.summary() for t, s in scores.items()}}


def reproduce(cfg: ReproduceConfig) -> Path:
    """Run everything and return the run folder."""
    from livr.model import LivrModel
    from livr.trainer import train

    torch.set_num_threads(cfg.num_threads)
    started = time.time()
    cfg = dataclasses.replace(cfg, backbone=resolve_backbone(cfg.backbone))
    run_dir = (
        Path(cfg.run_dir) if cfg.run_dir else create_run_dir(cfg.runs_root, "livr", cfg.exp_name, 0, cfg)
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    base, pretrain_info = cfg.model_id, None
    if base is None and cfg.pretrain_small_base:
        t = time.time()
        pre_cfg = dataclasses.replace(cfg.pretrain, backbone=cfg.backbone, image_size=cfg.image_size)
        base_dir = Path(cfg.pretrained) if cfg.pretrained else run_dir / "base"
        base = str(pretrain_base(base_dir, pre_cfg))
        pretrain_info = {"folder": base, **pretrain_record(base)}
        timings["pretraining"] = time.time() - t
        if cfg.task_source == "grid" and cfg.diagnostics and pre_cfg.image_tokens == 9:  # one token a cell
            t = time.time()
            pretrain_info["image_tokens"] = image_token_probe(base, image_size=cfg.image_size)
            timings["image_token_probe"] = time.time() - t
    model_template = dataclasses.replace(cfg.train.model, backbone=cfg.backbone, model_id=base)

    t = time.time()
    data, train_sets = write_training_data(cfg, run_dir / "data")
    tests = {task: task_split(cfg, task, "test") for task in cfg.tasks}
    blank_tests = {task: [blank(ex) for ex in exs] for task, exs in tests.items()}
    references = reference_rates(train_sets, tests)
    del train_sets
    timings["data"] = time.time() - t
    eval_kw = {"batch_size": cfg.eval_batch_size, "max_new_tokens": cfg.max_new_tokens}

    records = []
    if cfg.zero_shot:
        t = time.time()
        zero = LivrModel.from_backbone(dataclasses.replace(model_template, num_latents=0))
        records.append(score_records("zero_shot", 0, evaluate_tasks(zero, tests, **eval_kw)))
        del zero
        timings["zero_shot_eval"] = time.time() - t

    diagnostics: dict = {}
    for label, template in method_configs(cfg):
        for seed in cfg.seeds:
            t = time.time()
            scores: dict[str, TaskScore] = {}
            blank_scores: dict[str, TaskScore] = {}
            for group, folder in data.items():
                model = dataclasses.replace(
                    template.model, backbone=cfg.backbone, model_id=base, latent_init_seed=seed
                )
                name = f"{label}-s{seed}" + ("" if group == "all" else f"-{group}")
                train_cfg = dataclasses.replace(
                    template,
                    model=model,
                    data=str(folder),
                    seed=seed,
                    run_dir=str(run_dir / "train" / name),
                    exp_name=f"{cfg.exp_name}-{label}".replace("_", "-"),
                )
                trained = train(train_cfg)
                livr = LivrModel.from_pretrained(trained / "best")
                group_tests = tests if group == "all" else {group: tests[group]}
                scores.update(evaluate_tasks(livr, group_tests, **eval_kw))
                if cfg.blank_control:
                    blank_group = {task: blank_tests[task] for task in group_tests}
                    blank_scores.update(evaluate_tasks(livr, blank_group, **eval_kw))
                del livr
                if label == "livr" and cfg.diagnostics:
                    for task, row in stage1_diagnostics(cfg, trained / "best-stage1", group_tests).items():
                        per_seed = diagnostics.setdefault("stage1_by_seed", {}).setdefault(task, [])
                        per_seed.append({"seed": seed, **row})
                        diagnostics.setdefault("stage1_accuracy", {})[task] = {
                            key: sum(r[key] for r in per_seed) / len(per_seed)
                            for key in ("image", "blank_image")
                        }
                if label == "livr" and cfg.diagnostics and seed == cfg.seeds[0]:
                    png = run_dir / "latent_attention.png" if group in ("all", cfg.tasks[0]) else None
                    for stage, per_task in attention_diagnostics(
                        cfg, trained / "best", group_tests, png
                    ).items():
                        diagnostics.setdefault("latent_attention", {}).setdefault(stage, {}).update(per_task)
            records.append(score_records(label, seed, scores))
            if blank_scores:
                records.append(score_records(label + BLANK_SUFFIX, seed, blank_scores))
            timings[f"{label}-s{seed}"] = time.time() - t
            write_results(run_dir, records, cfg.tasks, {"partial": True})

    timings["total"] = time.time() - started
    extra = {
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
        "pretraining": pretrain_info,
        "references": references,
        "diagnostics": diagnostics,
        "seconds": timings,
        "load_average": os.getloadavg(),
    }
    write_results(run_dir, records, cfg.tasks, extra)
    (run_dir / "report.md").write_text(render_report(cfg, records, extra))
    return run_dir


def render_report(cfg: ReproduceConfig, records: list[dict], extra: dict) -> str:
    """The markdown report: setup, results table, unparseable answers, diagnostics, timings."""
    lines = ["# LIVR vs Direct SFT", ""]
    pre = extra.get("pretraining")
    if pre:
        p = pre["config"]
        lines += [
            f"Base model: a small random-initialised {cfg.backbone} ({pre['parameters']:,} parameters; LM width "
            f"{p['hidden_size']}, {p['num_layers']} layers) given a short **generic pretraining** of {p['steps']} "
            f"steps x {p['batch_size']} generated image-text pairs (shapes, colours, positions; no evaluation "
            f"task), all weights trained; held-out caption exact match {100 * pre['held_out_exact_match']:.1f}%. "
            f"Cached in `{pre['folder']}`.",
            "",
        ]
    else:
        lines += [f"Base model: `{cfg.model_id or cfg.backbone}`.", ""]
    t = cfg.train
    data_kind = f"real data under `{cfg.data_root}`" if cfg.data_root else "procedurally generated data"
    lines += [
        f"Tasks ({data_kind}): {', '.join(cfg.tasks)}; {cfg.train_per_task} train / {cfg.val_per_task} val / "
        f"{cfg.test_per_task or 'paper-size'} test examples per task"
        + "".join(f" ({n} train for {t})" for t, n in cfg.train_sizes.items() if t in cfg.tasks)
        + f", {cfg.mode}-task training.",
        f"Recipe: LIVR stage 1 {t.stage1_epochs} + stage 2 {t.stage2_epochs} epochs, Direct SFT "
        f"{t.stage1_epochs + t.stage2_epochs} epochs (same budget); K = {t.model.num_latents}, LoRA r{t.model.lora_r}, "
        f"lr {t.lr}, batch {t.batch_size} x accumulation {t.grad_accum}; best checkpoint by validation NLL; "
        f"seeds {list(cfg.seeds)}. Scores in percent (accuracy; exact match for counting), mean ± std over seeds.",
        "",
        markdown_table(records, cfg.tasks, extra.get("references")),
        "",
        "Unparseable answers (counted wrong), summed over seeds:",
        "",
        unparseable_table(records, cfg.tasks),
        "",
    ]
    probe = (pre or {}).get("image_tokens")
    if probe:
        lines += [
            "## What the base's image tokens hold",
            "",
            "Linear read-outs of the vision tower's merged image tokens on 1,200 single-object grid scenes "
            "(fitted on 70 %, scored on the rest; `livr.vision_probe`). Localization needs the object's cell "
            "from the object's own token: rotary positions shape the attention scores but never the values, "
            "so a cell the token does not hold cannot be named, and the vision tower is frozen in fine-tuning.",
            "",
            "| read-out | held-out accuracy | majority |",
            "|---|---|---|",
        ]
        for key, label in (
            ("object_colour", "the object's colour, from its token"),
            ("object_cell", "the object's cell, from its token"),
            ("any_cell", "any token's cell, from that token"),
        ):
            lines.append(f"| {label} | {100 * probe[key]:.1f} | {100 * probe[key + '_majority']:.1f} |")
        lines.append("")
    diag = extra.get("diagnostics") or {}
    if diag.get("stage1_accuracy"):
        lines += [
            "## Does information flow through the latents?",
            "",
            "Stage-1 checkpoint under the bottleneck mask (the image reaches the answer only through the latents), "
            "with the real image and with a blank one (mean over the LIVR seeds): equal scores mean the latents "
            "carry no usable image information.",
            "",
            "| task | real image | blank image | real − blank, per seed |",
            "|---|---|---|---|",
        ]
        for task, row in diag["stage1_accuracy"].items():
            seeds = diag.get("stage1_by_seed", {}).get(task, [])
            per_seed = ", ".join(f"{r['image'] - r['blank_image']:+.1f}" for r in seeds)
            lines.append(f"| {task} | {row['image']:.1f} | {row['blank_image']:.1f} | {per_seed} |")
        lines += [
            "",
            "Latent-token attention (final checkpoint of the first LIVR seed, mean over heads, layers and 8 test "
            "examples):",
            "",
        ]
        lines += [
            "| stage | task | latents→image share | entropy over image (1 = uniform) | answer→latents | answer→image |",
            "|---|---|---|---|---|---|",
        ]
        for stage, per_task in diag.get("latent_attention", {}).items():
            for task, r in per_task.items():
                lines.append(
                    f"| {stage} | {task} | {r['image_mass']:.3f} | {r['entropy']:.3f} | "
                    f"{r['answer_on_latents']:.3f} | {r['answer_on_image']:.3f} |"
                )
        lines += ["", "![latent attention](latent_attention.png)", ""]
    secs = extra.get("seconds", {})
    load = extra.get("load_average")
    lines += [
        "## Cost",
        "",
        f"Total {secs.get('total', float('nan')) / 60:.1f} min wall-clock; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in load) if load else '?'}; torch threads {cfg.num_threads}.",
        "",
        "| step | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in secs.items()],
        "",
        "Methods: "
        + "; ".join(f"`{m}` = {method_label(m)}" for m in dict.fromkeys(r["method"] for r in records)),
        "",
    ]
    return "\n".join(lines)
