"""``spatia`` command line: help text, preset handling, a tiny training run, and the conditioning helpers."""

from __future__ import annotations

import json

import pytest
import torch

from spatia.cli import main
from spatia.conditioning import FrameLayout, assemble_sequence, latent_frames, token_timesteps, trim_context


def test_train_help_lists_paper_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--stage" in out and "--lora-rank" in out and "--data.history-frames" in out
    assert "Wan-AI/Wan2.2-TI2V-5B-Diffusers" in out and "8000" in out


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown config 'huge'"):
        main(["train", "--config", "huge"])


def test_tiny_training_run_from_the_command_line(tmp_path):
    main(
        [
            "train",
            "--config",
            "tiny",
            "--iterations",
            "2",
            "--batch-size",
            "1",
            "--data.num-scenes",
            "1",
            "--data.num-reference-frames",
            "0",
            "--runs-root",
            str(tmp_path),
        ]
    )
    (run,) = (tmp_path / "spatia").iterdir()
    assert run.name.startswith("spatia__tiny__1__")
    config = json.loads((run / "config.json").read_text())
    assert config["iterations"] == 2 and config["model"]["pretrained"] == "tiny"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["losses/flow_matching"])) for r in records)


def test_layout_puts_references_first_and_trims_them_back_off():
    clip = torch.arange(2 * 3).float().view(1, 1, 6, 1, 1).expand(1, 4, 6, 2, 2)
    refs = torch.full((1, 4, 2, 2, 2), -1.0)
    control = torch.ones(1, 8, 6, 2, 2)
    latents, ctrl, layout = assemble_sequence(clip, refs, control, num_history=3)
    assert layout == FrameLayout(num_reference=2, num_history=3, num_target=3)
    assert torch.equal(latents[:, :, :2], refs) and torch.equal(ctrl[:, :, :2], torch.zeros(1, 8, 2, 2, 2))
    assert torch.equal(trim_context(latents, layout), clip[:, :, 3:])
    t = token_timesteps(torch.tensor([700.0]), layout, 2, 2, (1, 2, 2))
    assert t.tolist() == [[0.0] * 5 + [700.0] * 3]
    assert latent_frames(81, 4) == 21 and latent_frames(9, 4) == 3 and latent_frames(1, 4) == 1
    with pytest.raises(ValueError, match="1 \\+ k"):
        latent_frames(72, 4)
    with pytest.raises(ValueError, match="must cover the clip"):
        assemble_sequence(clip, refs, control[:, :, :5], num_history=3)
