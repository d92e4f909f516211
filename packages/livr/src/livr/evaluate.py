"""Scoring generated answers the way the paper does, and evaluating checkpoints per task.

Multiple-choice tasks are scored by accuracy and counting by exact match. A free-form answer is
first *parsed*: a letter with or without parentheses (``B``, ``(B)``, ``B.``, ``Answer: B``,
``the answer is (b)``), or an option's text, for choice tasks; digits or a number word (``3``,
``three``) for counts. An answer that cannot be parsed is wrong, and counted separately so the
report can say how often the model did not answer in the task's format.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from livr.data import Example

AnswerType = Literal["choice", "count"]

NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
SYNTHETIC_COUNTING = "synthetic_counting"


def normalise(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


@dataclass(frozen=True)
class AnswerFormat:
    """How a task's answers look: a count, or one of ``choices`` (letters such as ``A``..``D``)."""

    answer_type: AnswerType
    choices: tuple[str, ...] = ()

    @property
    def metric(self) -> str:
        return "exact_match" if self.answer_type == "count" else "accuracy"


def answer_format(task: str) -> AnswerFormat:
    """The answer format of a registered task (``livr.tasks``), or of the built-in synthetic counting."""
    if task == SYNTHETIC_COUNTING:
        return AnswerFormat("count")
    try:
        from livr.tasks import get_task
    except ImportError as exc:  # the task registry is optional for the synthetic task
        raise KeyError(f"unknown task {task!r} (no task registry available: {exc})") from exc
    spec = get_task(task)
    return AnswerFormat(spec.answer_type, tuple(str(c) for c in (spec.choices or ())))


def task_of(example: Example) -> str:
    return str(example.meta.get("task", SYNTHETIC_COUNTING))


def parse_count(text: str) -> int | None:
    """The first number in ``text`` (digits or an English number word up to twenty), else None."""
    for token in re.findall(r"[a-z]+|\d+", text.lower()):
        if token.isdigit():
            return int(token)
        if token in NUMBER_WORDS:
            return NUMBER_WORDS[token]
    return None


def _letters(choices: Sequence[str], option_texts: Sequence[str]) -> list[str]:
    if choices and all(len(c) == 1 and c.isalpha() for c in choices):
        return [c.upper() for c in choices]
    n = len(option_texts) or len(choices)
    return list(string.ascii_uppercase[:n])


def parse_choice(text: str, choices: Sequence[str] = (), option_texts: Sequence[str] = ()) -> str | None:
    """The chosen option's letter, or None when ``text`` names no valid option unambiguously.

    ``choices`` are the valid letters (or option labels); ``option_texts`` are the options' texts in
    letter order (``choices`` that are not single letters are used as texts too).
    """
    if not option_texts and choices and not all(len(c) == 1 and c.isalpha() for c in choices):
        option_texts = choices
    letters = _letters(choices, option_texts)
    valid = "".join(letters)
    clean = text.strip()
    if not clean or not valid:
        return None
    cls = f"[{re.escape(valid)}{re.escape(valid.lower())}]"
    insensitive = re.IGNORECASE
    patterns = (
        (rf"^\(?({cls})\)?[.:)]?$", insensitive),  # "B", "(B)", "B.", "b)"
        (rf"\banswer\s*(?:is|:)?\s*:?\s*\(?({cls})\)?(?![A-Za-z])", insensitive),  # "Answer: B"
        (rf"\boption\s*\(?({cls})\)?(?![A-Za-z])", insensitive),  # "option C"
        (rf"\(({cls})\)", insensitive),  # "... (C) ..."
        (rf"^({cls})[.:)]\s", insensitive),  # "B. the left one"
        (rf"(?<![A-Za-z])([{re.escape(valid)}])(?![A-Za-z])", 0),  # a lone capital letter
    )
    for pattern, flags in patterns:
        found = {m.upper() for m in re.findall(pattern, clean, flags=flags)}
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None
    said = normalise(clean)
    texts = [normalise(t) for t in option_texts]
    exact = [letters[i] for i, t in enumerate(texts) if t and t == said]
    if len(exact) == 1:
        return exact[0]
    contained = [letters[i] for i, t in enumerate(texts) if t and re.search(rf"\b{re.escape(t)}\b", said)]
    return contained[0] if len(contained) == 1 else None


def parse_answer(text: str, fmt: AnswerFormat, option_texts: Sequence[str] = ()) -> str | None:
    """The canonical answer (a letter, or a count's decimal string) or None if unparseable."""
    if fmt.answer_type == "count":
        value = parse_count(text)
        return None if value is None else str(value)
    return parse_choice(text, fmt.choices, option_texts)


@dataclass
class TaskScore:
    """One task's metric (in percent, as the paper reports it) and its unparseable count."""

    task: str
    metric: str
    n: int
    correct: int
    unparseable: int
    records: list[dict] = field(default_factory=list, repr=False)

    @property
    def score(self) -> float:
        return 100.0 * self.correct / self.n if self.n else float("nan")

    def summary(self) -> dict:
        return {
            "metric": self.metric,
            "score": self.score,
            "n": self.n,
            "correct": self.correct,
            "unparseable": self.unparseable,
        }


def score_task(
    task: str, predictions: Sequence[str], examples: Sequence[Example], fmt: AnswerFormat | None = None
) -> TaskScore:
    """Score ``predictions`` against the examples' answers with the task's metric."""
    if len(predictions) != len(examples):
        raise ValueError(f"{task}: {len(predictions)} predictions for {len(examples)} examples")
    fmt = fmt or answer_format(task)
    correct = unparseable = 0
    records = []
    for pred, ex in zip(predictions, examples, strict=True):
        options = [str(o) for o in ex.meta.get("options", ())]
        gold = parse_answer(ex.answer, fmt, options)
        if gold is None:
            raise ValueError(
                f"{task}: the reference answer {ex.answer!r} does not parse as a {fmt.answer_type}"
            )
        parsed = parse_answer(pred, fmt, options)
        unparseable += parsed is None
        correct += parsed == gold
        records.append({"prediction": pred, "parsed": parsed, "answer": gold, "correct": parsed == gold})
    return TaskScore(task, fmt.metric, len(examples), correct, unparseable, records)


def generate_answers(
    livr, examples: Sequence[Example], *, batch_size: int = 8, max_new_tokens: int = 8, stage: int = 2
) -> list[str]:
    """Greedy answers in batches (``LivrModel.generate``: latents appended, the stage's mask)."""
    livr.eval()
    predictions: list[str] = []
    for i in range(0, len(examples), batch_size):
        chunk = list(examples[i : i + batch_size])
        predictions += livr.generate(livr.encode(chunk, with_answer=False), stage, max_new_tokens)
    return predictions


def group_by_task(examples: Sequence[Example]) -> dict[str, list[Example]]:
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(task_of(ex), []).append(ex)
    return groups


def evaluate_tasks(
    livr,
    examples_by_task: Mapping[str, Sequence[Example]],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 8,
    stage: int = 2,
) -> dict[str, TaskScore]:
    """Per-task scores of a model's greedy answers."""
    return {
        task: score_task(
            task,
            generate_answers(livr, exs, batch_size=batch_size, max_new_tokens=max_new_tokens, stage=stage),
            exs,
        )
        for task, exs in examples_by_task.items()
    }


def average(scores: Mapping[str, TaskScore]) -> float:
    """Unweighted mean over tasks (the paper's average column)."""
    values = [s.score for s in scores.values()]
    return sum(values) / len(values) if values else float("nan")


def exact_match(
    livr, examples: Sequence[Example], *, batch_size: int = 4, max_new_tokens: int = 16
) -> tuple[float, list[str]]:
    """Fraction of greedy answers equal to ``example.answer`` after normalisation, and the answers."""
    predictions = generate_answers(livr, examples, batch_size=batch_size, max_new_tokens=max_new_tokens)
    hits = sum(normalise(p) == normalise(ex.answer) for p, ex in zip(predictions, examples, strict=True))
    return hits / max(len(examples), 1), predictions
