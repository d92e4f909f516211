"""Multi-task mixing: every example once, or exact per-task shares of a sampled total."""

from __future__ import annotations

import collections

import pytest
from PIL import Image

from livr.data import Example
from livr.multitask import mix_tasks, task_counts


def make(task: str, n: int) -> list[Example]:
    image = Image.new("RGB", (4, 4))
    return [Example([image], f"{task} {i}", "A", {"task": task, "i": i}) for i in range(n)]


def tally(mixed):
    return collections.Counter(ex.meta["task"] for ex in mixed)


def test_without_proportions_every_example_is_used_once_and_shuffled():
    per_task = {"a": make("a", 10), "b": make("b", 5)}
    mixed = mix_tasks(per_task, seed=3)
    assert tally(mixed) == {"a": 10, "b": 5}
    assert len({id(ex) for ex in mixed}) == 15
    assert [ex.meta["task"] for ex in mixed] != ["a"] * 10 + ["b"] * 5
    assert mixed == mix_tasks(per_task, seed=3)  # deterministic by seed
    assert mixed != mix_tasks(per_task, seed=4)


def test_proportions_give_exact_counts():
    assert task_counts({"a": 1, "b": 1, "c": 1}, 10) in (
        {"a": 4, "b": 3, "c": 3},
        {"a": 3, "b": 4, "c": 3},
        {"a": 3, "b": 3, "c": 4},
    )
    assert task_counts({"a": 3, "b": 1}, 8) == {"a": 6, "b": 2}
    assert sum(task_counts({"a": 0.2, "b": 0.45, "c": 0.35}, 101).values()) == 101
    per_task = {"a": make("a", 50), "b": make("b", 50), "c": make("c", 50)}
    mixed = mix_tasks(per_task, proportions={"a": 0.5, "b": 0.25, "c": 0.25}, total=40, seed=0)
    assert tally(mixed) == {"a": 20, "b": 10, "c": 10}
    assert len({id(ex) for ex in mixed}) == 40  # no repeats when every task has enough


def test_a_share_larger_than_the_task_reuses_its_examples_evenly():
    per_task = {"small": make("small", 3), "big": make("big", 100)}
    mixed = mix_tasks(per_task, proportions={"small": 1, "big": 1}, total=20, seed=1)
    assert tally(mixed) == {"small": 10, "big": 10}
    uses = collections.Counter(ex.meta["i"] for ex in mixed if ex.meta["task"] == "small")
    assert sorted(uses.values()) == [3, 3, 4]


def test_tasks_left_out_of_the_proportions_get_nothing():
    mixed = mix_tasks({"a": make("a", 5), "b": make("b", 5)}, proportions={"a": 1}, seed=0)
    assert tally(mixed) == {"a": 10}


def test_bad_proportions_are_refused():
    with pytest.raises(ValueError, match="not all zero"):
        task_counts({"a": 0}, 4)
    with pytest.raises(ValueError, match=">= 0"):
        task_counts({"a": -1, "b": 2}, 4)
    with pytest.raises(ValueError, match="without examples"):
        mix_tasks({"a": make("a", 2)}, proportions={"z": 1})
    with pytest.raises(ValueError, match="no examples"):
        mix_tasks({"a": []})
