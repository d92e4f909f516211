"""Slow: ``internal-rl reproduce --config small``, four colours drawn anew (the default until the tenth
session; 536 s with the runs on two processes, 1474 s on one).

Asserts the effects it reproduces (README, "The `small` preset"), the positive control's RL half of Fig. 8
included; the one it does not reach at this scale (internal RL over the discovered codes above raw-action
RL) is reported there with the evidence, not asserted here.
"""

from __future__ import annotations

import dataclasses
import json
import statistics

import pytest

from internal_rl.reproduce import reproduce, small_config


@pytest.mark.slow
def test_small_reproduction_steers_and_aligns_switches(tmp_path):
    run_dir = reproduce(dataclasses.replace(small_config(), run_root=tmp_path))
    results = json.loads((run_dir / "results.json").read_text())
    base = results["base"]
    # the base model, acting itself, enters colours in order nearly as often as a perfect imitator
    assert base["eval/rollout_colours_sampled"] > 0.75 * base["eval/imitator_colours"]
    # Fig. 3: a linear probe reads the subgoal above the majority rate past the embeddings
    probe = results["probe"]
    assert max(probe["accuracy"][1:]) > probe["chance"] + 0.08
    assert max(probe["mlp_accuracy"]) > probe["chance"] + 0.1
    # Fig. 4: the true subgoal's controller steers the frozen model through the unseen post-training task
    sup = results["supervised"]
    assert sup["held_out_nll_controlled"] < sup["held_out_nll_base"] - 0.1
    assert sup["posttrain/true_colours"] > sup["posttrain/wrong_colours"] + 1.0
    assert sup["posttrain/true_success"] > sup["posttrain/none_success"] + 0.1
    # metacontroller switches fall on true subgoal changes far more often than as many random switches
    seeds = results["discovery"]["internal-rl"]["seeds"]
    gains = [m["eval/alignment_f1"] - m["eval/random_alignment_f1"] for m in seeds]
    assert len(gains) == 3 and statistics.median(gains) > 0.3
    # forcing a switch at every step aligns no better than chance (the control of that comparison)
    forced = results["discovery"]["forced-switch"]
    assert forced["eval/alignment_f1"] == pytest.approx(forced["eval/random_alignment_f1"], abs=0.02)
    # Fig. 7: the switch count falls with alpha, from over-switching (0.03) through the preset (0.1) to
    # near collapse (0.3)
    switches: dict[float, list[float]] = {}
    for point in results["rate_distortion"]:
        switches.setdefault(point["alpha"], []).append(point["switches_per_episode"])
    assert min(switches[0.03]) > statistics.median(switches[0.1]) > max(switches[0.3])
    # Fig. 8, RL half (positive control): internal RL over codes that name subgoals learns the held-out task,
    # raw-action RL with the same loop and episodes does not
    rl = results["rl"]
    control = statistics.median(m["final_success"] for m in rl["subgoal-codes"]["metrics"])
    raw = statistics.median(m["final_success"] for m in rl["raw-action"]["metrics"])
    assert control > raw + 0.1 and control > 0.5 * sup["posttrain/true_success"]
    assert (run_dir / "report.md").is_file() and (run_dir / "success_vs_episodes.png").is_file()
