"""Slow: the third search's finding on ``small-fixed`` (README, "Third search"); 564 s measured on 2 cores.

With the colours on fixed cells the discovered codes name the subgoal (on ``small`` they name the leg),
while no method solves the post-training task; only the former is asserted here.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from internal_rl.reproduce import reproduce, small_config


@pytest.mark.slow
def test_fixed_colours_give_subgoal_codes(tmp_path):
    cfg = dataclasses.replace(
        small_config(),
        variant="small-fixed",
        run_root=tmp_path,
        methods=("internal-rl",),
        meta_seeds=1,
        alpha_sweep=(),
        supervised=None,
        rl=dataclasses.replace(small_config().rl, steps=4),
    )
    results = json.loads((reproduce(cfg) / "results.json").read_text())
    probe = results["probe"]
    assert max(probe["accuracy"][1:]) > probe["chance"] + 0.4  # measured 0.800 vs 0.254
    meta = results["discovery"]["internal-rl"]["seeds"][0]
    # what the codes stand for: the subgoal, far above its majority rate (measured 0.552 vs 0.242)
    assert meta["eval/code_subgoal_accuracy"] > meta["eval/code_subgoal_majority"] + 0.2
    assert meta["eval/alignment_f1"] > meta["eval/random_alignment_f1"] + 0.25  # measured 0.524 vs 0.160
