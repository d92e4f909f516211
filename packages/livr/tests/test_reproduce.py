"""Pretraining the small base, the latents-without-mask ablation, multi-checkpoint `livr eval`, and
`livr reproduce` end to end on a micro config."""

from __future__ import annotations

import dataclasses
import json

import pytest

from latentforge.runs import read_metrics
from livr.cli import main as livr_main
from livr.config import TrainConfig, tiny_preset
from livr.data import write_examples
from livr.pretraining import PretrainConfig, caption_pairs, pretrain_base, pretrain_record
from livr.reproduce import resolve_backbone
from livr.tasks import get_task
from livr.trainer import stages_for, train

MICRO_BASE = PretrainConfig(
    hidden_size=32, num_layers=1, vision_hidden_size=32, image_tokens=4, image_size=56, steps=2, batch_size=2
)


def test_caption_pairs_are_deterministic_and_answer_their_question():
    a, b = (
        caption_pairs(200, seed=7, image_size=48, max_objects=4),
        caption_pairs(200, seed=7, image_size=48, max_objects=4),
    )
    assert [(e.question, e.answer) for e in a] == [(e.question, e.answer) for e in b]
    assert {e.meta["kind"] for e in a} == {
        "describe",
        "colour",
        "colour_at",
        "shape_at",
        "where",
        "choice",
        "count",
    }
    assert any(len(e.images) == 2 for e in a)
    for e in a:
        objects, kind = e.meta["objects"], e.meta["kind"]
        at = {o["where"]: o for o in objects}
        if kind == "count":
            assert e.answer == str(len(objects))
        elif kind == "colour_at":
            assert any(f" at {w}" in e.question and o["colour"] == e.answer for w, o in at.items())
        elif kind == "shape_at":
            assert any(f" at {w}" in e.question and o["shape"] == e.answer for w, o in at.items())
        elif kind == "where":
            assert f"{at[e.answer]['colour']} {at[e.answer]['shape']}" in e.question
        elif kind == "colour":
            # the named shape is unique in the image and has the answered colour
            named = [o for o in objects if f" {o['shape']}" in e.question]
            assert len(named) == 1 and named[0]["colour"] == e.answer
        elif kind == "choice":
            assert e.answer in "ABCD" and f"({e.answer}) " in e.question
            named = [o for o in objects if f" {o['shape']}" in e.question.split("?")[0]]
            assert f"({e.answer}) {named[0]['colour']}" in e.question
        else:
            assert e.answer == ", ".join(f"{o['colour']} {o['shape']} {o['where']}" for o in objects)


def test_word_tokenizer_round_trips_the_small_base_texts():
    from livr.pretraining import vocabulary_texts
    from livr.tiny import build_word_tokenizer

    tok = build_word_tokenizer(vocabulary_texts())
    for e in caption_pairs(50, seed=11, image_size=24):
        ids = tok(e.answer, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids and tok.decode(ids) == e.answer
    assert tok("zebra", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    prompt = tok.apply_chat_template(
        [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": "How many red objects are there?"}],
            }
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    tokens = tok.convert_ids_to_tokens(tok(prompt, add_special_tokens=False)["input_ids"])
    assert tokens[:5] == ["<|im_start|>", "user", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]
    assert tokens[5:11] == ["How", "many", "red", "objects", "are", "there"] and tokens[-1] == "assistant"


def test_pretrained_base_is_cached_by_its_settings(tmp_path):
    folder = pretrain_base(tmp_path / "base", MICRO_BASE, progress=False)
    record = pretrain_record(folder)
    assert record["config"]["steps"] == 2 and 0.0 <= record["held_out_exact_match"] <= 1.0
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    pretrain_base(folder, MICRO_BASE, progress=False)  # same settings: reused, not retrained
    assert weights.stat().st_mtime_ns == stamp
    pretrain_base(folder, dataclasses.replace(MICRO_BASE, steps=3), progress=False)
    assert pretrain_record(folder)["config"]["steps"] == 3


def test_latents_without_mask_ablation_trains_two_causal_stages(tiny_backbones, tmp_path):
    assert [(s.mask, s.epochs) for s in stages_for(TrainConfig(method="latents_no_mask"))] == [(2, 4), (2, 6)]
    cfg = tiny_preset()
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, model_id=tiny_backbones["qwen2_5_vl"]),
        method="latents_no_mask",
        synthetic_train=4,
        synthetic_val=1,
        runs_root=str(tmp_path),
    )
    run = train(cfg)
    assert [r["charts/stage"] for r in read_metrics(run) if "charts/stage" in r] == [2, 2, 2, 2]
    meta = json.loads((run / "final" / "livr_config.json").read_text())
    assert len(meta["latent_ids"]) == cfg.model.num_latents  # the latents are kept


def test_mask_without_latents_ablation_trains_blind_stage1_then_causal(tiny_backbones, tmp_path):
    assert [(s.mask, s.epochs) for s in stages_for(TrainConfig(method="mask_no_latents"))] == [(1, 4), (2, 6)]
    cfg = tiny_preset()
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, model_id=tiny_backbones["qwen2_5_vl"]),
        method="mask_no_latents",
        synthetic_train=4,
        synthetic_val=1,
        runs_root=str(tmp_path),
    )
    run = train(cfg)
    # tiny preset: one epoch per stage, 4 examples / accumulation 2 = 2 optimiser steps each
    assert [r["charts/stage"] for r in read_metrics(run) if "charts/stage" in r] == [1, 1, 2, 2]
    meta = json.loads((run / "final" / "livr_config.json").read_text())
    assert meta["latent_ids"] == []  # K = 0: stage 1 had no path from the image to the answer


def train_two(tiny_backbones, tmp_path, data: str, n: int) -> dict:
    runs = {}
    for method in ("direct_sft", "livr"):
        args = ["train", "--model.model-id", tiny_backbones["qwen2_5_vl"], "--model.num-latents", "2"]
        args += ["--method", method, "--data", data, "--stage1-epochs", "1", "--stage2-epochs", "1"]
        args += ["--synthetic-train", str(n), "--synthetic-val", "1", "--grad-accum", "2"]
        args += ["--runs-root", str(tmp_path / "runs"), "--exp-name", method.replace("_", "-")]
        livr_main(args)
        runs[method] = next((tmp_path / "runs" / "livr").glob(f"livr__{method.replace('_', '-')}__*"))
    return runs


def eval_side_by_side(runs, tasks, out, capsys, n: int) -> None:
    capsys.readouterr()
    args = ["eval", "--checkpoint", str(runs["direct_sft"] / "best"), str(runs["livr"] / "best")]
    args += [
        "--label",
        "direct_sft",
        "livr",
        "--tasks",
        *tasks,
        "--num-per-task",
        str(n),
        "--image-size",
        "56",
    ]
    livr_main([*args, "--max-new-tokens", "2", "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    assert [r["label"] for r in rows] == ["direct_sft", "livr"]
    assert all(r["examples"] == n * len(tasks) and set(r["scores"]) == set(tasks) for r in rows)
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results["runs"]] == ["direct_sft", "livr"]
    assert results["livr_minus_direct_sft"] is not None
    table = (out / "results.md").read_text()
    assert "| Direct SFT | 1 |" in table and "| LIVR | 1 |" in table and "LIVR − Direct SFT" in table


def test_eval_two_checkpoints_side_by_side_on_two_tasks(tiny_backbones, tmp_path, capsys):
    runs = train_two(tiny_backbones, tmp_path, "synthetic", 2)
    eval_side_by_side(runs, ("counting", "object_localization"), tmp_path / "eval", capsys, 2)


@pytest.mark.slow
def test_train_on_task_data_then_eval_two_checkpoints_side_by_side(tiny_backbones, tmp_path, capsys):
    tasks = ("counting", "object_localization")
    data = tmp_path / "data"
    for split, seed in (("train", 0), ("val", 1)):
        write_examples(
            [ex for t in tasks for ex in get_task(t).generate(2, seed=seed, image_size=56)], data, split
        )
    runs = train_two(tiny_backbones, tmp_path, str(data), 2)
    eval_side_by_side(runs, tasks, tmp_path / "eval", capsys, 3)


def test_backbone_aliases():
    assert resolve_backbone("qwen2.5-vl-3b") == "qwen2_5_vl"
    assert resolve_backbone("Qwen3-VL-4B") == "qwen3_vl"
    assert resolve_backbone("llava-ov-1.5-4b") == "llava_onevision1_5"
    assert resolve_backbone("qwen2_5_vl") == "qwen2_5_vl"


def test_reproduce_micro_config_writes_results_report_and_figure(tmp_path, capsys):
    config = {
        "pretrain": dataclasses.asdict(MICRO_BASE),
        "tasks": ["counting", "object_localization"],
        "train_per_task": 2,
        "val_per_task": 1,
        "test_per_task": 2,
        "image_size": 56,
        "seeds": [1, 2],
        "train": {
            "model": {"num_latents": 2},
            "stage1_epochs": 1,
            "stage2_epochs": 1,
            "batch_size": 2,
            "grad_accum": 1,
        },
        "max_new_tokens": 2,
        "attention_examples": 2,
    }
    path = tmp_path / "micro.json"
    path.write_text(json.dumps(config))
    livr_main(["reproduce", "--config", str(path), "--run-dir", str(tmp_path / "run")])
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [
        ("zero_shot", 0),
        ("direct_sft", 1),
        ("direct_sft", 2),
        ("livr", 1),
        ("livr", 2),
    ]
    assert results["summary"]["livr"]["average"]["n_seeds"] == 2
    assert set(results["diagnostics"]["stage1_accuracy"]) == {"counting", "object_localization"}
    stage1 = results["diagnostics"]["latent_attention"]["stage1"]
    assert all(row["answer_on_image"] == pytest.approx(0.0, abs=1e-7) for row in stage1.values())
    assert results["pretraining"]["config"]["steps"] == 2 and (run / "base" / "model.safetensors").is_file()
    report = (run / "report.md").read_text()
    assert "generic pretraining" in report and "| LIVR − Direct SFT (paired by seed) | 2 |" in report
    assert (run / "latent_attention.png").read_bytes()[:4] == b"\x89PNG"
    # with --pretrained the cached base is reused (its weights are not rewritten)
    stamp = (run / "base" / "model.safetensors").stat().st_mtime_ns
    config.update(seeds=[1], zero_shot=False, diagnostics=False)
    path.write_text(json.dumps(config))
    livr_main(
        [
            "reproduce",
            "--config",
            str(path),
            "--run-dir",
            str(tmp_path / "run2"),
            "--pretrained",
            str(run / "base"),
        ]
    )
    assert (run / "base" / "model.safetensors").stat().st_mtime_ns == stamp
    assert [r["method"] for r in json.loads((tmp_path / "run2" / "results.json").read_text())["runs"]] == [
        "direct_sft",
        "livr",
    ]


def test_paper_preset_is_the_papers_single_task_recipe_on_all_nine_tasks():
    from livr.reproduce import paper_reproduce
    from livr.tasks import TASKS

    cfg = paper_reproduce()
    assert set(cfg.tasks) == set(TASKS) and cfg.mode == "single" and cfg.test_per_task is None
    assert cfg.train_per_task == 1000 and cfg.train_sizes == {} and cfg.model_id is None
    assert not cfg.pretrain_small_base
    assert (cfg.train.stage1_epochs, cfg.train.stage2_epochs, cfg.train.lr) == (4, 6, 1e-4)
    assert cfg.train.model.num_latents == 16 and cfg.train.grad_accum == 8
    assert "latents_no_mask" in cfg.methods and cfg.latent_sweep == (4, 8, 32)


def test_per_task_training_sizes_override_the_default_and_keep_the_data_deterministic(tmp_path):
    from livr.reproduce import tiny_reproduce, write_training_data

    cfg = dataclasses.replace(
        tiny_reproduce(), train_per_task=6, val_per_task=2, train_sizes={"visual_similarity": 9, "jigsaw": 4}
    )
    _, train_sets = write_training_data(cfg, tmp_path / "a")
    assert {t: len(exs) for t, exs in train_sets.items()} == {
        "counting": 6,
        "object_localization": 6,
        "visual_similarity": 9,
    }
    # a task's examples do not depend on how many the others get
    again = dataclasses.replace(cfg, train_sizes={})
    _, plain = write_training_data(again, tmp_path / "b")
    assert [e.question for e in plain["counting"]] == [e.question for e in train_sets["counting"]]


def test_reproduce_help(capsys):
    with pytest.raises(SystemExit):
        livr_main(["reproduce", "--help"])
    text = capsys.readouterr().out
    for option in ("--config", "--backbone", "--pretrained", "--tasks", "--seeds", "--data-root"):
        assert option in text
