"""Slow: on the tiny default pipeline, metacontroller switches should align with true subgoal changes."""

import dataclasses
import os
from pathlib import Path

import pytest

from internal_rl import discovery, pretrain


@pytest.mark.slow
@pytest.mark.xfail(
    reason="measured 2026-11-25: the tiny base model has no subgoal belief (probes at chance) and the "
    "metacontroller's KL collapses (beta never switches, F1 0 vs 0 random); see the package README",
    strict=False,
)
def test_tiny_switches_align_better_than_random(tmp_path):
    base_run = os.environ.get("INTERNAL_RL_BASE_RUN")  # reuse a tiny pretraining run to save ~15 min
    if base_run is None:
        base_run = pretrain.pretrain(dataclasses.replace(pretrain.tiny_config(), run_root=tmp_path)).run_dir
    cfg = dataclasses.replace(
        discovery.tiny_config(), base_run=Path(base_run), run_root=tmp_path, device="cpu"
    )
    metrics = discovery.train_metacontroller(cfg).metrics
    assert metrics["eval/switches_per_episode"] > 0.5
    assert metrics["eval/alignment_f1"] > metrics["eval/random_alignment_f1"] + 0.05
