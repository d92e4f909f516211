"""Answer parsing and the paper's metrics on known predictions, unparseable answers included."""

from __future__ import annotations

import pytest
from PIL import Image

from livr.data import Example
from livr.evaluate import AnswerFormat, answer_format, parse_choice, parse_count, score_task

ABCD = ("A", "B", "C", "D")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("(b)", "B"),
        ("C.", "C"),
        ("Answer: D", "D"),
        ("The answer is (a).", "A"),
        ("option c", "C"),
        ("B. the second image", "B"),
        ("I think C", "C"),
        ("A or B", None),  # two letters: ambiguous
        ("(E)", None),  # not an option of a 4-way question
        ("a cat", None),  # lower-case words are not letters
        ("", None),
        ("????", None),
    ],
)
def test_parse_choice_letters(text, expected):
    assert parse_choice(text, ABCD) == expected


def test_parse_choice_by_option_text():
    options = ["the second image", "the third image"]
    assert parse_choice("the third image", ("A", "B"), options) == "B"
    assert parse_choice("It is the second image.", ("A", "B"), options) == "A"
    assert parse_choice("image", ("A", "B"), options) is None
    assert parse_choice("darker", ("lighter", "darker", "same")) == "B"  # labels that are texts


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3", 3), ("three", 3), ("There are 12 stars.", 12), ("Seven", 7), ("none", None), ("", None)],
)
def test_parse_count(text, expected):
    assert parse_count(text) == expected


def examples(answers: list[str], task: str = "t") -> list[Example]:
    image = Image.new("RGB", (8, 8))
    return [Example([image], "q", a, {"task": task}) for a in answers]


def test_accuracy_counts_unparseable_answers_as_wrong():
    fmt = AnswerFormat("choice", ("A", "B", "C"))
    preds = ["A", "(b)", "Answer: A", "dunno", "", "C"]
    score = score_task("mc", preds, examples(["A", "B", "C", "A", "B", "(C)"]), fmt)
    assert (score.n, score.correct, score.unparseable) == (6, 3, 2)
    assert score.score == pytest.approx(50.0)
    assert score.metric == "accuracy"
    assert [r["correct"] for r in score.records] == [True, True, False, False, False, True]


def test_exact_match_for_counts():
    fmt = AnswerFormat("count")
    score = score_task("count", ["4", "four", "5", "many"], examples(["4", "4", "4", "4"]), fmt)
    assert (score.correct, score.unparseable, score.metric) == (2, 1, "exact_match")


def test_a_reference_answer_that_does_not_parse_is_an_error():
    with pytest.raises(ValueError, match="reference answer"):
        score_task("mc", ["A"], examples(["maybe"]), AnswerFormat("choice", ("A", "B")))
    with pytest.raises(ValueError, match="2 predictions for 1"):
        score_task("mc", ["A", "B"], examples(["A"]), AnswerFormat("choice", ("A", "B")))


def test_registered_tasks_have_parseable_reference_answers():
    from livr.tasks import TASKS

    for name, spec in TASKS.items():
        fmt = answer_format(name)
        assert fmt.answer_type == spec.answer_type
        exs = spec.generate(4, seed=0, image_size=64)
        score = score_task(name, [ex.answer for ex in exs], exs)  # the references themselves score 100
        assert score.score == 100.0 and score.unparseable == 0, name
