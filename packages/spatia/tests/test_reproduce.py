"""spatia reproduce: presets, the summary and its verdict, the report, and (slow) the whole run end to end."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from spatia.cli import _reproduce_command
from spatia.report import verdict, write_report
from spatia.reproduce import ReproduceConfig, eval_scene, summarise


def test_config_presets_tiny_by_default_paper_on_request():
    tiny = _reproduce_command("paper-default").__defaults__[0]
    paper = _reproduce_command("paper").__defaults__[0]
    assert tiny.train.model.pretrained == "tiny" and tiny.stage1_iterations < 8000
    assert tiny.use_trained_autoencoder and tiny.stage0_iterations > 0
    # The paper starts from pretrained Wan2.2 (its VAE, no stage 0).
    assert not paper.use_trained_autoencoder and paper.stage0_iterations == 0
    assert paper.stage1_iterations == 8000 and paper.stage2_iterations == 5000
    assert paper.stage1_learning_rate == 1e-5 and paper.stage2_learning_rate == 1e-4
    assert paper.num_inference_steps == 50 and paper.guidance_scale == 5.0
    assert paper.train.model.pretrained == "Wan-AI/Wan2.2-TI2V-5B-Diffusers"


def test_autoencoder_rooms_must_match_the_training_rooms(tmp_path):
    from spatia.reproduce import reproduce, tiny_reproduce

    config = tiny_reproduce()
    config = replace(config, runs_root=str(tmp_path), autoencoder=replace(config.autoencoder, patterns=(1,)))
    with pytest.raises(ValueError, match=r"patterns: train\.data"):
        reproduce(config)
    assert not any(tmp_path.iterdir())  # nothing started, nothing written


def test_from_run_reuses_the_exports_and_reads_every_stage_time(tmp_path):
    from spatia.reproduce import reuse_training

    run = tmp_path / "run"
    for stage, seconds in (("stage0", 40.0), ("stage1", 30.0), ("stage2", 20.0)):
        (run / stage).mkdir(parents=True)
        (run / stage / "metrics.jsonl").write_text(
            json.dumps({"step": 0, "time": 100.0})
            + "\n"
            + json.dumps({"step": 9, "time": 100.0 + seconds})
            + "\n"
        )
    with pytest.raises(FileNotFoundError, match="stages finished"):
        reuse_training(run)
    (run / "stage1" / "export" / "transformer").mkdir(parents=True)
    (run / "stage2" / "export" / "lora").mkdir(parents=True)
    transformer, lora, timings = reuse_training(run)
    assert transformer.name == "transformer" and lora.name == "lora"
    assert timings == {"reused_from": str(run), "stage0_s": 40.0, "stage1_s": 30.0, "stage2_s": 20.0}
    (run / "stage0" / "metrics.jsonl").unlink()  # a run without stage 0 (the paper preset)
    assert "stage0_s" not in reuse_training(run)[2]


def test_eval_scene_loop_returns_to_its_start():
    cfg = ReproduceConfig()
    scene = eval_scene(1000, cfg, 13)
    assert scene.frames.shape == (13, 3, 32, 32) and scene.depth.shape == (13, 32, 32)
    assert torch.allclose(scene.w2c[0], scene.w2c[-1], atol=1e-9)
    assert torch.allclose(scene.frames[0], scene.frames[-1])


def test_there_and_back_revisits_the_way_out_frame_for_frame():
    from spatia.evaluation import revisit_pairs

    cfg = replace(ReproduceConfig(), there_and_back=True)
    scene = eval_scene(1000, cfg, 13)
    for i in range(13):
        assert torch.equal(scene.w2c[i], scene.w2c[12 - i])
        assert torch.equal(scene.frames[i], scene.frames[12 - i])
    assert not torch.allclose(scene.w2c[0], scene.w2c[6])  # it does go somewhere
    pairs = revisit_pairs(scene.w2c)
    assert len(pairs) >= 3 and all(torch.equal(scene.w2c[a], scene.w2c[b]) for a, b in pairs)


def test_wrong_room_memory_covers_the_start_view_with_another_room():
    from spatia.reproduce import wrong_room_memory

    cfg = ReproduceConfig()
    scene = eval_scene(1000, cfg, 9)
    memory = wrong_room_memory(cfg, scene)
    render, holes = memory.render(scene.w2c[:1], scene.intrinsics, 32, 32)
    covered = ~holes[0, 0]
    assert covered.float().mean() > 0.5
    diff = (render[0] - scene.frames[0]).abs().amax(0)[covered]
    assert (diff > 0.1).float().mean() > 0.5  # mostly other colours: the memory is of the wrong room


def _run(setting, psnr_c, seed):
    metrics = {
        "closed_loop": {"psnr_c": psnr_c, "match_accuracy": 0.5, "num_pairs": 3, "ssim_c": 0.5},
        "vs_ground_truth": {"psnr": 10.0, "ssim": 0.1, "lpips": "unavailable: test"},
        "probes": {"psnr_new_vs_memory_render_covered": math.nan, "psnr_new_vs_last_context_frame": 20.0},
    }
    return {"scene": 1, "seed": seed, "setting": setting, "metrics": metrics}


def test_summary_and_verdict_follow_the_seed_spread(tmp_path):
    runs = [_run("no_memory", 12.0 + s, s) for s in (0, 1)] + [_run("memory_k1", 18.0 + s, s) for s in (0, 1)]
    summary = summarise(runs)
    assert summary["no_memory"]["psnr_c"] == {"mean": 12.5, "std": 0.5, "n": 2}
    assert summary["memory_k1"]["psnr_vs_memory_render"]["n"] == 0  # NaN values are left out, not averaged
    assert verdict(summary).startswith("memory helps")
    close = summarise([_run("no_memory", 12.0 + 3 * s, s) for s in (0, 1)] + [_run("memory_k1", 13.0, 0)])
    assert verdict(close).startswith("no clear effect")
    results = {
        "config": json.loads(json.dumps(ReproduceConfig(), default=lambda o: o.__dict__)),
        "summary": summary,
        "timings": {"stage1_s": 1.0, "stage2_s": 1.0, "generation_and_eval_s": 1.0, "total_s": 3.0},
        "load_average": [1.0, 1.0, 1.0],
        "references": {
            "1": {
                "ground_truth_closed_loop": {"psnr_c": 30.0, "match_accuracy": 0.9},
                "vae_round_trip": {"psnr": 9.0, "lpips": "unavailable: test"},
            }
        },
        "runs": runs,
    }
    text = write_report(results, tmp_path / "report.md").read_text()
    assert "memory helps" in text and "| memory_k1 | 18.500 ± 0.500 (n=2)" in text
    assert "no video has the 3 registered frames" not in text and "registered" not in text  # no SLAM ran

    poses = [(25, 1, math.nan, math.nan, math.nan), (25, 9, 1.0, 2.5, 0.02), (25, 13, 2.0, 3.0, 0.04)]
    for run, (frames, registered, rot, worst, rmse) in zip(runs, poses + poses[:1], strict=False):
        run["metrics"]["pose_error"] = {
            "num_frames": frames, "num_registered": registered, "rotation_deg_mean": rot,
            "rotation_deg_max": worst, "translation_rmse": rmse, "trajectory_extent": 0.5,
        }  # fmt: skip
    text = write_report(results, tmp_path / "report.md").read_text()
    assert "registered 24 of 100 frames" in text  # every run with a pose error, frame 0 included
    assert "over the 2 videos with at least 3 registered frames" in text
    assert "1.50 degrees on average (worst frame 3.00) and 0.030 units" in text
    assert "in the memory's frame" not in text  # results written before the unaligned error existed
    runs[1]["metrics"]["pose_error"] |= {"world_rotation_deg_mean": 4.0, "world_centre_rmse": 0.1}
    text = write_report(results, tmp_path / "report.md").read_text()
    assert (
        "in the memory's frame (no alignment: the memory fixes frame and scale), 4.00 degrees and 0.100"
        in text
    )


@pytest.mark.slow
def test_reproduce_end_to_end_writes_results_report_video_and_sheet(tmp_path):
    from spatia.config import tiny_config
    from spatia.reproduce import reproduce
    from spatia.video import read_mp4

    cfg = replace(
        ReproduceConfig(),
        train=replace(tiny_config(), runs_root=str(tmp_path)),
        stage1_iterations=2,
        stage2_iterations=1,
        eval_scenes=(1000,),
        seeds=(0,),
        reference_counts=(1,),
        num_clips=2,
        num_inference_steps=1,
        runs_root=str(tmp_path),
    )
    run = reproduce(cfg)
    results = json.loads((run / "results.json").read_text())
    assert set(results["summary"]) == {"no_memory", "memory_k1"}
    assert len(results["runs"]) == 2
    assert "Verdict" in (run / "report.md").read_text()
    assert read_mp4(run / "video.mp4").shape[0] == 13
    assert (run / "contact_sheet.png").is_file() and (run / "pipeline" / "model_index.json").is_file()


@pytest.mark.slow
def test_default_reproduce_memory_raises_revisit_psnr_and_the_wrong_room_does_not(tmp_path):
    """``make train-spatia``'s CPU default (about 17 minutes here): memory lifts PSNR_C and the frames'
    agreement with the ground truth; another room's memory does not.

    Measured (README): no memory 13.8 dB PSNR_C and 13.3 dB vs GT, memory 18.8-18.9 dB and 17.1 dB at
    K = 1 / 3 / 7, wrong room 13.6 dB and 10.6 dB (3 rooms x 2 seeds, seed spread below 1.3 dB on PSNR_C).
    The margins asserted are well inside those gaps.
    """
    from spatia.reproduce import reproduce, tiny_reproduce

    run = reproduce(replace(tiny_reproduce(), runs_root=str(tmp_path)))
    summary = json.loads((run / "results.json").read_text())["summary"]
    base = summary["no_memory"]
    for k in (1, 3, 7):
        assert summary[f"memory_k{k}"]["psnr_c"]["mean"] > base["psnr_c"]["mean"] + 3.0
        assert summary[f"memory_k{k}"]["psnr_gt"]["mean"] > base["psnr_gt"]["mean"] + 1.5
    wrong = summary["wrong_room_k7"]
    assert wrong["psnr_c"]["mean"] < summary["memory_k7"]["psnr_c"]["mean"] - 3.0
    assert wrong["psnr_gt"]["mean"] < summary["memory_k7"]["psnr_gt"]["mean"] - 3.0
