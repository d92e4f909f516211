"""Exact-match evaluation of a checkpoint by greedy generation (latents appended, stage-2 mask)."""

from __future__ import annotations

from collections.abc import Sequence

from livr.data import Example
from livr.model import LivrModel


def normalise(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


def exact_match(
    livr: LivrModel, examples: Sequence[Example], *, batch_size: int = 4, max_new_tokens: int = 16
) -> tuple[float, list[str]]:
    """Accuracy of greedy answers against ``example.answer`` and the predictions themselves."""
    livr.eval()
    predictions: list[str] = []
    for i in range(0, len(examples), batch_size):
        chunk = list(examples[i : i + batch_size])
        predictions += livr.generate(livr.encode(chunk, with_answer=False), 2, max_new_tokens)
    hits = sum(normalise(p) == normalise(ex.answer) for p, ex in zip(predictions, examples, strict=True))
    return hits / max(len(examples), 1), predictions
