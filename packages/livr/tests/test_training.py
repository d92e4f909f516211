"""Trainable-parameter selection, the two-stage trainer, Direct SFT, resume and the CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from latentforge.runs import read_metrics
from livr.cli import main as livr_main
from livr.config import ModelConfig, TrainConfig, tiny_preset
from livr.data import synthetic_counting
from livr.model import LivrModel
from livr.trainer import stages_for, train


def tiny_cfg(tiny_backbones, tmp_path, backbone="qwen2_5_vl", **overrides) -> TrainConfig:
    cfg = tiny_preset()
    model = dataclasses.replace(cfg.model, backbone=backbone, model_id=tiny_backbones[backbone])
    return dataclasses.replace(cfg, model=model, runs_root=str(tmp_path / "runs"), **overrides)


def effective_embeddings(livr: LivrModel) -> torch.Tensor:
    rows = livr.base.get_input_embeddings().weight.shape[0]
    with torch.no_grad():
        return livr.model.get_input_embeddings()(torch.arange(rows)).clone()


BACKBONES = ("qwen2_5_vl", "qwen3_vl", "llava_onevision1_5")


@pytest.mark.parametrize("backbone", BACKBONES)
def test_only_lora_and_latent_rows_train_and_everything_else_is_bit_identical(tiny_backbones, backbone):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, model_id=tiny_backbones[backbone], num_latents=4)
    livr = LivrModel.from_backbone(cfg)
    names = [n for n, _ in livr.trainable_named_parameters()]
    assert names and all("lora_" in n or "trainable_tokens_delta" in n for n in names)
    lora_modules = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names if "lora_" in n}
    assert lora_modules == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # nothing in the vision tower / projector
    vision = [f"base_model.model.{path}." for path in livr.adapter.vision_modules]
    assert not [n for n in names if any(n.startswith(v) for v in vision)]
    assert livr.adapter.vision_parameters(livr.base)  # ... which exists under those names

    frozen_before = {n: p.detach().clone() for n, p in livr.model.named_parameters() if not p.requires_grad}
    emb_before = effective_embeddings(livr)
    lora_before = {n: p.detach().clone() for n, p in livr.trainable_named_parameters()}
    groups = livr.parameter_groups(0.01)
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert groups[1]["params"] == [livr.latent_parameter()]
    opt = torch.optim.AdamW(groups, lr=1e-2)
    livr.train()
    for ex in synthetic_counting(3):
        for stage in (1, 2):
            livr(livr.encode([ex]), stage).loss.backward()
            opt.step()
            opt.zero_grad()
    for n, p in livr.model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[n]), n
    emb_after = effective_embeddings(livr)
    others = torch.ones(emb_after.shape[0], dtype=torch.bool)
    others[livr.latent_ids] = False
    assert torch.equal(emb_after[others], emb_before[others])
    assert not torch.equal(emb_after[livr.latent_ids], emb_before[livr.latent_ids])
    changed = [n for n, p in livr.trainable_named_parameters() if not torch.equal(p, lora_before[n])]
    assert any("lora_B" in n for n in changed) and any("trainable_tokens" in n for n in changed)


def test_stage_plans():
    cfg = TrainConfig()
    assert [(s.mask, s.epochs) for s in stages_for(cfg)] == [(1, 4), (2, 6)]
    sft = dataclasses.replace(cfg, method="direct_sft")
    assert [(s.mask, s.epochs) for s in stages_for(sft)] == [(2, 10)]
    multi = TrainConfig(stage1_epochs=2, stage2_epochs=3)
    assert sum(s.epochs for s in stages_for(dataclasses.replace(multi, method="direct_sft"))) == 5


@pytest.mark.parametrize("backbone", BACKBONES)
def test_two_stage_training_runs_and_the_best_checkpoint_generates(tiny_backbones, tmp_path, backbone):
    cfg = tiny_cfg(tiny_backbones, tmp_path, backbone, synthetic_train=4, synthetic_val=2)
    run = train(cfg)
    rows = read_metrics(run)
    stages = [r["charts/stage"] for r in rows if "charts/stage" in r]
    assert stages == [1, 1, 2, 2]  # 4 examples / accumulation 2 = 2 optimizer steps per stage
    assert sum("eval/val_nll" in r for r in rows) == 2
    assert all(r["losses/nll"] > 0 for r in rows if "losses/nll" in r)
    for sub in ("best-stage1", "best-stage2", "best", "final"):
        assert (run / sub / "livr_config.json").is_file()
    assert list(run.glob("events.out.tfevents*"))
    model = LivrModel.from_pretrained(run / "best")
    answers = model.generate(model.encode(synthetic_counting(2), with_answer=False), max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_direct_sft_uses_no_latents_and_one_causal_stage(tiny_backbones, tmp_path):
    cfg = tiny_cfg(tiny_backbones, tmp_path, method="direct_sft", synthetic_train=4, synthetic_val=2)
    run = train(cfg)
    stages = [r["charts/stage"] for r in read_metrics(run) if "charts/stage" in r]
    assert stages == [2, 2, 2, 2]  # 1 + 1 epochs in one causal stage
    meta = json.loads((run / "final" / "livr_config.json").read_text())
    assert meta["latent_ids"] == [] and meta["model_config"]["num_latents"] == 0
    assert not (run / "final" / "latents.safetensors").exists()


def test_resume_mid_stage_matches_an_uninterrupted_run(tiny_backbones, tmp_path):
    base = tiny_cfg(tiny_backbones, tmp_path, synthetic_train=4, synthetic_val=1, save_every=1)
    base = dataclasses.replace(base, model=dataclasses.replace(base.model, lora_dropout=0.05))
    full = train(dataclasses.replace(base, run_dir=str(tmp_path / "runs/livr/full")))
    cut = str(tmp_path / "runs/livr/cut")
    train(dataclasses.replace(base, run_dir=cut, max_steps=1))  # stops inside stage 1, epoch 1
    resumed = train(dataclasses.replace(base, run_dir=cut))

    def final_state(run):
        return load_file(str(run / "final" / "adapter" / "adapter_model.safetensors"))

    a, b = final_state(full), final_state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses = [r["losses/nll"] for r in read_metrics(full) if "losses/nll" in r]
    resumed_losses = [r["losses/nll"] for r in read_metrics(resumed) if "losses/nll" in r]
    assert resumed_losses == losses  # the interrupted log plus the resumed one replay the same steps


def test_livr_train_cli_on_a_tiny_backbone(tiny_backbones, tmp_path, capsys):
    livr_main(
        [
            "train",
            "--model.model-id",
            tiny_backbones["qwen2_5_vl"],
            "--model.num-latents",
            "2",
            "--stage1-epochs",
            "1",
            "--stage2-epochs",
            "1",
            "--grad-accum",
            "2",
            "--synthetic-train",
            "2",
            "--synthetic-val",
            "1",
            "--runs-root",
            str(tmp_path / "runs"),
            "--exp-name",
            "cli",
        ]
    )
    run = next((tmp_path / "runs" / "livr").glob("livr__cli__1__*"))
    assert (run / "metrics.jsonl").is_file() and (run / "final" / "adapter").is_dir()
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["num_latents"] == 2
    capsys.readouterr()
    livr_main(["eval", "--checkpoint", str(run / "final"), "--num-synthetic", "2", "--max-new-tokens", "2"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["examples"] == 2 and 0.0 <= result["exact_match"] <= 1.0


def test_train_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        livr_main(["train", "--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(TrainConfig):
        if field.name != "model":
            assert "--" + field.name.replace("_", "-") in text, field.name
    for field in dataclasses.fields(ModelConfig):
        assert "--model." + field.name.replace("_", "-") in text, field.name


@pytest.mark.parametrize("backbone", ["qwen2_5_vl", "llava_onevision1_5"])
def test_latent_path_gradients_match_with_gradient_checkpointing(tiny_backbones, backbone):
    livr = LivrModel.from_backbone(
        ModelConfig(backbone=backbone, model_id=tiny_backbones[backbone], num_latents=4, lora_dropout=0)
    )
    with torch.no_grad():
        for n, p in livr.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    livr.train()
    batch = livr.encode(synthetic_counting(2))
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            livr.base.activation_checkpointing_enable({"use_reentrant": False})
            assert livr.base.is_activation_checkpointing
        for stage in (1, 2):
            livr.model.zero_grad()
            livr(batch, stage).loss.backward()
            grads.append(livr.latent_parameter().grad.clone())
    for g in grads:
        assert g.abs().max() > 0  # the latent rows get a learning signal in both stages
    torch.testing.assert_close(grads[0], grads[2])
    torch.testing.assert_close(grads[1], grads[3])


def test_batched_generation_matches_one_at_a_time(tiny_backbones):
    torch.manual_seed(0)
    livr = LivrModel.from_backbone(ModelConfig(model_id=tiny_backbones["qwen2_5_vl"], num_latents=4)).eval()
    with torch.no_grad():
        for n, p in livr.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    examples = synthetic_counting(3, seed=11)
    examples[1].question = "How many white squares are in the picture?"  # a longer prompt: real left padding
    for stage in (1, 2):
        batched = livr.generate_ids(livr.encode(examples, with_answer=False), stage, max_new_tokens=5)
        for b, ex in enumerate(examples):
            single = livr.generate_ids(livr.encode([ex], with_answer=False), stage, max_new_tokens=5)[0]
            assert batched[b, : len(single)].tolist() == single.tolist()


@pytest.fixture
def captured_train(monkeypatch):
    """Replace the trainer with a recorder: these tests check the CLI's config wiring, not training."""
    import livr.trainer

    seen = []
    monkeypatch.setattr(livr.trainer, "train", lambda cfg: seen.append(cfg) or "run")
    return seen


def test_train_config_presets_files_and_overrides(tmp_path, captured_train, capsys):
    livr_main(["train", "--config", "multitask", "--lr", "0.002"])
    livr_main(["train", "--seed", "5"])  # default: the paper preset
    cfg_file = tmp_path / "mine.toml"
    cfg_file.write_text(
        'stage1_epochs = 3\nexp_name = "mine"\n[model]\nbackbone = "qwen3_vl"\nnum_latents = 8\n'
    )
    livr_main(["train", f"--config={cfg_file}", "--model.num-latents", "6"])
    multitask, paper, mine = captured_train
    assert (multitask.stage1_epochs, multitask.stage2_epochs, multitask.lr) == (2, 3, 0.002)
    assert paper == dataclasses.replace(TrainConfig(), seed=5)
    assert (mine.stage1_epochs, mine.stage2_epochs, mine.exp_name) == (3, 6, "mine")
    assert (mine.model.backbone, mine.model.num_latents) == ("qwen3_vl", 6)


@pytest.mark.parametrize("backbone", ["qwen2_5_vl", "llava_onevision1_5"])
def test_train_config_tiny_writes_a_tiny_backbone_when_none_is_given(tmp_path, captured_train, backbone):
    runs = str(tmp_path / "runs")
    argv = ["train", "--config", "tiny", "--model.backbone", backbone, "--runs-root", runs]
    livr_main(argv)
    livr_main(argv)  # the second run reuses the folder
    first, second = captured_train
    assert first.model.model_id == second.model.model_id
    folder = tmp_path / "runs" / "livr" / "tiny-backbones" / backbone
    assert first.model.model_id == str(folder)
    assert json.loads((folder / "livr_tiny.json").read_text())["backbone"] == backbone
    assert (first.model.num_latents, first.lr) == (4, 1e-3)  # the tiny preset's values


def test_train_config_errors_name_the_problem(tmp_path, captured_train):
    with pytest.raises(SystemExit, match="unknown config 'nope'"):
        livr_main(["train", "--config", "nope"])
    with pytest.raises(SystemExit, match="does not exist"):
        livr_main(["train", "--config", str(tmp_path / "absent.json")])
    bad = tmp_path / "bad.json"
    bad.write_text('{"stage1_epoch": 3}')
    with pytest.raises(SystemExit, match=r"unknown key\(s\) \['stage1_epoch'\]"):
        livr_main(["train", "--config", str(bad)])
    with pytest.raises(SystemExit, match="needs a value"):
        livr_main(["train", "--config"])
    assert captured_train == []
