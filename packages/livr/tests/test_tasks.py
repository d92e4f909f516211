"""The task registry and the procedural generators: deterministic, solvable, balanced, right format."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from livr.tasks import TASKS, get_task

N = 36  # divisible by 2, 3, 4 and 9 (counts 2..10): exact balance is checkable


@pytest.fixture(scope="module")
def generated() -> dict:
    return {name: spec.generate(N, seed=3) for name, spec in TASKS.items()}


def test_registry_names_and_lookup():
    assert set(TASKS) <= {
        "counting",
        "jigsaw",
        "object_localization",
        "visual_correspondence",
        "art_style",
        "semantic_correspondence",
        "functional_correspondence",
        "relative_reflectance",
        "visual_similarity",
    }
    assert get_task("counting") is TASKS["counting"]
    with pytest.raises(KeyError, match="known tasks: counting"):
        get_task("no_such_task")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_generator_is_deterministic_by_seed(name, generated):
    spec = TASKS[name]
    again = spec.generate(N, seed=3)
    other = spec.generate(N, seed=4)
    for a, b in zip(generated[name], again, strict=True):
        assert (a.question, a.answer) == (b.question, b.answer)
        assert [np.asarray(i).tobytes() for i in a.images] == [np.asarray(i).tobytes() for i in b.images]
    assert any(
        np.asarray(a.images[0]).tobytes() != np.asarray(b.images[0]).tobytes()
        for a, b in zip(generated[name], other, strict=True)
    )


@pytest.mark.parametrize("name", sorted(TASKS))
def test_scripted_solver_gets_everything_right(name, generated):
    spec = TASKS[name]
    wrong = [i for i, ex in enumerate(generated[name]) if spec.solve(ex) != ex.answer]
    assert wrong == []


@pytest.mark.parametrize("name", sorted(TASKS))
def test_answers_are_balanced_and_in_format(name, generated):
    spec = TASKS[name]
    examples = generated[name]
    answers = Counter(ex.answer for ex in examples)
    if spec.answer_type == "choice":
        assert set(answers) == set(spec.choices)
        assert max(answers.values()) - min(answers.values()) <= 1
        letters = re.findall(r"\(([A-F])\)", examples[0].question)
        assert tuple(letters) == spec.choices  # the question lists exactly the task's options
        assert examples[0].question.endswith("Answer with the option's letter.")
    else:
        assert all(ex.answer.isdigit() for ex in examples)
        assert sorted(int(a) for a in answers) == list(range(2, 11))  # PixMo-Count's 2..10
        assert max(answers.values()) - min(answers.values()) <= 1
    for ex in examples:
        assert ex.meta["task"] == name
        assert ex.images and all(max(im.size) <= 128 for im in ex.images)


@pytest.mark.parametrize("size", [40, 112])
@pytest.mark.parametrize("name", sorted(TASKS))
def test_generator_image_size_argument(name, size):
    spec = TASKS[name]
    examples = spec.generate(6, seed=0, image_size=size)
    assert all(max(ex.images[0].size) == size for ex in examples)
    assert all(spec.solve(ex) == ex.answer for ex in examples)
