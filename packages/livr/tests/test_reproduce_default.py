"""The CPU default of ``livr reproduce`` learns: slow end-to-end checks on the small default preset."""

import dataclasses
import json

import pytest

from livr.reproduce import GRID_TASKS, reproduce, tiny_reproduce


@pytest.mark.slow
def test_small_default_learns_the_tasks_and_its_latents_carry_the_image(tmp_path):
    """One seed of Direct SFT and LIVR on the default preset (its pretraining, data and recipe).

    Direct SFT must beat the majority rate on every task (the old default sat exactly on it), and
    the stage-1 LIVR checkpoint must score higher with the real image than with a blank one: under
    the bottleneck the answer sees the image only through the latents.
    """
    cfg = dataclasses.replace(
        tiny_reproduce(),
        seeds=(1,),
        methods=("direct_sft", "livr"),
        zero_shot=False,
        run_dir=str(tmp_path / "run"),
    )
    run = reproduce(cfg)
    results = json.loads((run / "results.json").read_text())
    majority = results["references"]["majority"]
    sft = results["summary"]["direct_sft"]
    for task in GRID_TASKS:
        assert sft[task]["mean"] > majority[task] + 5, (task, sft[task]["mean"], majority[task])
    stage1 = results["diagnostics"]["stage1_accuracy"]
    real = sum(row["image"] for row in stage1.values()) / len(stage1)
    blank = sum(row["blank_image"] for row in stage1.values()) / len(stage1)
    assert real > blank + 5, stage1
