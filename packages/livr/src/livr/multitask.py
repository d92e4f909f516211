"""Multi-task training data: every task's examples mixed into one shuffled training set.

The paper trains one model on all nine tasks at once (1,000 examples each, so equal shares) with a
shorter schedule (stage 1 two epochs + stage 2 three epochs, Direct SFT five). ``mix_tasks`` does
the mixing; with ``proportions`` it samples a set of ``total`` examples whose per-task counts follow
the proportions exactly (largest-remainder rounding), re-using a task's examples only when the task
has fewer than its share.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from livr.data import Example


def task_counts(proportions: Mapping[str, float], total: int) -> dict[str, int]:
    """Integer counts summing to ``total`` in the given proportions (largest remainder first)."""
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    bad = {t: p for t, p in proportions.items() if not (p >= 0 and math.isfinite(p))}
    if bad or not proportions or sum(proportions.values()) <= 0:
        raise ValueError(f"proportions must be finite, >= 0 and not all zero: {dict(proportions)}")
    norm = sum(proportions.values())
    exact = {t: total * p / norm for t, p in proportions.items()}
    counts = {t: math.floor(v) for t, v in exact.items()}
    left = total - sum(counts.values())
    for t in sorted(exact, key=lambda t: (counts[t] - exact[t], t))[:left]:
        counts[t] += 1
    return counts


def mix_tasks(
    per_task: Mapping[str, Sequence[Example]],
    *,
    proportions: Mapping[str, float] | None = None,
    total: int | None = None,
    seed: int = 0,
) -> list[Example]:
    """One shuffled training set from several tasks.

    Without ``proportions`` every example of every task is used once (the paper's mix). With
    ``proportions`` (task -> weight, tasks missing from it get none), ``total`` examples are drawn
    (default: as many as all tasks hold): each task's share without replacement, cycling through a
    reshuffled copy when the share exceeds the task's size.
    """
    rng = random.Random(seed)
    empty = [t for t, exs in per_task.items() if not exs]
    if empty:
        raise ValueError(f"task(s) {empty} have no examples")
    if proportions is None:
        mixed = [ex for exs in per_task.values() for ex in exs]
    else:
        unknown = sorted(set(proportions) - set(per_task))
        if unknown:
            raise ValueError(f"proportions name tasks without examples: {unknown}")
        total = sum(len(exs) for exs in per_task.values()) if total is None else total
        mixed = []
        for task, count in task_counts(proportions, total).items():
            pool = list(per_task[task])
            while count > 0:
                rng.shuffle(pool)
                mixed += pool[:count]
                count -= len(pool)
    rng.shuffle(mixed)
    return mixed
