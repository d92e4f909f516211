"""``spatia`` command line: help text, preset handling, a tiny training run, and the conditioning helpers."""

from __future__ import annotations

import json

import numpy as np
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


@pytest.mark.slow
def test_two_process_fsdp_stages_export_full_weights(tmp_path):
    """latentforge-launch with 2 CPU processes (gloo, FSDP2): both stages train and export unsharded weights."""
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from spatia.models import SpatiaTransformer3DModel

    launch = Path(sys.executable).parent / "latentforge-launch"
    common = ["--config", "tiny", "--iterations", "2", "--batch-size", "2", "--strategy", "fsdp"]
    common += ["--data.num-scenes", "1", "--data.num-reference-frames", "0"]
    cmd = [str(launch), "--nproc-per-node", "2", "-m", "spatia.cli", "train", *common]
    subprocess.run([*cmd, "--runs-root", str(tmp_path / "s1")], check=True, timeout=900)
    (run1,) = (tmp_path / "s1" / "spatia").iterdir()
    stage1 = SpatiaTransformer3DModel.from_pretrained(run1 / "export" / "transformer")
    assert any(torch.count_nonzero(b.proj_out.weight) > 0 for b in stage1.vace_blocks)
    subprocess.run(
        [
            *cmd,
            "--stage",
            "2",
            "--stage1-checkpoint",
            str(run1 / "export" / "transformer"),
            "--runs-root",
            str(tmp_path / "s2"),
        ],
        check=True,
        timeout=900,
    )
    (run2,) = (tmp_path / "s2" / "spatia").iterdir()
    lora = load_file(str(run2 / "export" / "lora" / "pytorch_lora_weights.safetensors"))
    assert lora["transformer.blocks.0.attn1.to_q.lora_A.weight"].shape == (4, 24)  # whole, not a shard
    assert any(torch.count_nonzero(v) > 0 for k, v in lora.items() if "lora_B" in k)


def test_preview_data_writes_what_the_model_sees(tmp_path):
    import imageio.v3 as iio

    from spatia.data.procedural import ProceduralClips
    from spatia.preview import preview_panels

    main(
        [
            "preview-data",
            "--config",
            "tiny",
            "--num-clips",
            "1",
            "--data.num-scenes",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    gif = iio.imread(tmp_path / "clip_0.gif", index=None)
    assert gif.shape[:3] == (9, 32, 96)  # 9 frames, three 32x32 panels
    cams = json.loads((tmp_path / "clip_0_cameras.json").read_text())
    assert cams["num_history_frames"] == 5 and len(cams["extrinsics_w2c"]) == 9
    assert (tmp_path / "clip_0_references.png").is_file()
    clips = ProceduralClips(
        num_scenes=1,
        height=32,
        width=32,
        first_clip_frames=9,
        history_frames=5,
        new_frames=4,
        num_reference_frames=2,
        seed=1,
    )
    sample = clips.sample(0, False)
    panels = preview_panels(sample)
    holes = sample.holes.numpy()
    assert np.all(panels[:, :, 64:][holes] == 255) and np.all(panels[:, :, 64:][~holes] == 0)
    assert np.array_equal(
        panels[:, :, 32:64], ((sample.render.permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()
    )


def test_real_video_sources_fail_fast_with_the_missing_piece_named(tmp_path):
    with pytest.raises(NotImplementedError, match="memory reconstructed"):
        main(["train", "--data.source", "realestate10k", "--runs-root", str(tmp_path)])
