"""Closed-loop steering diagnostics: mean codes per subgoal, held codes, oracle transition rates."""

import itertools
import math

import pytest
import torch

from internal_rl.discovery import context_codes, previous_subgoals, subgoal_codes
from internal_rl.envs.tasks import get_grid_spec
from internal_rl.internal_env import BatchedInternalEnv
from internal_rl.steering import first_colour_steering, seen_transition_task, transition_rates


def test_subgoal_codes_average_labelled_steps_and_mark_absent_labels():
    z = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [9.0, 9.0]], [[5.0, 4.0], [0.0, 0.0], [7.0, 7.0]]])
    labels = torch.tensor([[0, 0, -1], [0, 2, -1]])
    codes = subgoal_codes(z, labels)
    assert codes.shape == (3, 2)
    assert torch.allclose(codes[0], torch.tensor([3.0, 2.0])) and torch.equal(codes[2], torch.zeros(2))
    assert torch.isnan(codes[1]).all()  # label 1 never occurs
    with pytest.raises(ValueError, match="no labelled step"):
        subgoal_codes(z, torch.full((2, 3), -1))


@pytest.mark.parametrize(
    "variant", ["small", "small-fixed", "small6-fixed", "small8-fixed", "small-pairs", "paper"]
)
def test_seen_transition_task_matches_the_rl_task_but_uses_only_pretraining_transitions(variant):
    spec = get_grid_spec(variant)
    task, post = seen_transition_task(variant), spec.posttrain_task()
    assert len(task) == len(post) and task[0] == post[0]
    seen = {
        (spec.subgoal_of(a), spec.subgoal_of(b))
        for t in spec.pretrain_tasks()
        for a, b in itertools.pairwise(t)
        if spec.subgoal_of(a) != spec.subgoal_of(b)
    }
    k = spec.colours_per_subgoal
    subgoals = [spec.subgoal_of(c) for c in task[::k]]
    assert all(pair in seen for pair in itertools.pairwise(subgoals))
    assert spec.colours(tuple(subgoals)) == task
    if variant == "small":
        assert task == (0, 2, 1, 3)


def test_control_gain_zero_is_the_base_model_whatever_the_code(controlled_model):
    model = controlled_model()
    runs = {}
    for gain, scale in itertools.product((0.0, 1.0), (1.0, -1.0)):
        env = BatchedInternalEnv(model, 16, tasks=((0, 1),), horizon=20, seed=4, control_gain=gain)
        env.reset()
        z = scale * torch.ones(16, model.meta.config.n_z)
        while not env.done.all():
            env.step(z)
        runs[gain, scale] = env.actions.clone()
    assert torch.equal(runs[0.0, 1.0], runs[0.0, -1.0])  # U scaled by 0: the code cannot matter
    assert not torch.equal(runs[1.0, 1.0], runs[1.0, -1.0])  # at gain 1 it does


def test_first_colour_steering_rows_and_a_code_free_model_scores_every_code_like_the_base(controlled_model):
    model = controlled_model()
    play = dict(variant="paper", horizon=12, candidates=4, episodes=8, recheck=32, seed=1)
    rows = first_colour_steering(model, codes=torch.randn(4, model.meta.config.n_z), **play)
    assert [r["colour"] for r in rows] == list(range(8))  # the paper grid; codes per colour pair
    for r in rows:
        assert all(
            0.0 <= r[k] <= 1.0 for k in ("uncontrolled", "prior", "best_screened", "best", "subgoal_code")
        )
        assert r["best_screened"] >= r["prior"]  # the best of the screened candidates
    with (
        torch.no_grad()
    ):  # U = 0 for every code: the re-measured best code is the base model on the same layouts
        model.meta.decoder[-1].weight.zero_()
        model.meta.decoder[-1].bias.zero_()
    rows = first_colour_steering(model, codes=torch.randn(4, model.meta.config.n_z), **play)
    assert all(r["best"] == r["uncontrolled"] == r["subgoal_code"] for r in rows)


def test_transition_rates_count_colours_in_order_per_gain(controlled_model):
    model = controlled_model()
    codes = torch.randn(4, model.meta.config.n_z)
    out = transition_rates(
        model, codes, (0, 1, 4, 5), gains=(0.0, 1.0), episodes=32, variant="paper", horizon=20
    )
    assert [g["gain"] for g in out] == [0.0, 1.0]
    for g in out:
        reached = g["reached"]
        assert reached[0] == 32 and all(a >= b for a, b in itertools.pairwise(reached))
        assert g["success"] == reached[-1] / 32
        for k, rate in enumerate(g["rates"]):
            assert math.isnan(rate) if reached[k] == 0 else rate == reached[k + 1] / reached[k]
    other = transition_rates(
        model, -codes, (0, 1, 4, 5), gains=(0.0,), episodes=32, variant="paper", horizon=20
    )
    assert other[0]["reached"] == out[0]["reached"]  # gain 0 ignores the codes


def _episodes_over_transitions(pairs, steps=4):
    """Label sequences start -> a -> b for every (a, b) in ``pairs``, each subgoal held ``steps`` steps."""
    return torch.tensor([[a] * steps + [b] * steps + [-1] for a, b in pairs])


def test_previous_subgoals_follow_segment_changes():
    labels = torch.tensor([[2, 2, 0, 0, 3, -1, -1]])
    assert previous_subgoals(labels).tolist() == [[-1, -1, 2, 2, 0, -1, -1]]


def test_context_codes_tell_absolute_from_relative_codes():
    # every context (previous subgoal) has two successors, as in the pretraining task sets
    pairs = [(0, 2), (0, 3), (1, 0), (1, 3), (2, 0), (2, 1), (3, 1), (3, 2)] * 10
    labels = _episodes_over_transitions(pairs)
    absolute = torch.nn.functional.one_hot(labels.clamp(min=0), 4).float()
    prev = previous_subgoals(labels)
    # relative: one axis says which of the two successors of the previous subgoal comes next, with signs
    # chosen so that one subgoal gets opposite codes from its two predecessors; first segments: one-hot
    sign = {
        (0, 2): -1.0,
        (0, 3): 1.0,
        (1, 0): 1.0,
        (1, 3): -1.0,
        (2, 0): -1.0,
        (2, 1): 1.0,
        (3, 1): -1.0,
        (3, 2): 1.0,
    }
    relative = torch.zeros(*labels.shape, 5)
    for (p, c), v in sign.items():
        relative[(prev == p) & (labels == c), 0] = v
    start = (prev < 0) & (labels >= 0)
    relative[start] = torch.nn.functional.one_hot(labels[start] + 1, 5).float()
    a = context_codes(absolute, labels, min_steps=4)
    r = context_codes(relative, labels, min_steps=4)
    assert a["pairs"] == r["pairs"] == 12  # 8 transitions + 4 first segments
    assert a["same_subgoal"] == pytest.approx(1.0) and a["same_context"] == pytest.approx(0.0)
    # transitions: -1 within each context and across each subgoal's two predecessors; first segments: 0
    assert r["same_context"] == pytest.approx(-0.4) and r["same_subgoal"] < 0
