"""Named task sets of the two pinpad environments (paper App. A, Tables A1 and A2).

A task is the ordered tuple of colours the agent must step on. Grid subgoals are colour pairs
(0-1, 2-3, 4-5, 6-7), so the grid's abstract subgoal of colour ``c`` is ``c // 2``; ant subgoals
are single colours.
"""

from __future__ import annotations

Task = tuple[int, ...]


def _parse(tasks: str) -> tuple[Task, ...]:
    """``"0-1-4 2-3-0"`` -> ``((0, 1, 4), (2, 3, 0))``."""
    return tuple(tuple(int(c) for c in task.split("-")) for task in tasks.split())


GRID_TASK_SETS: dict[str, tuple[Task, ...]] = {
    # Table A1: 16 tasks of three colour pairs each.
    "pretrain": _parse(
        "0-1-4-5-0-1 0-1-4-5-2-3 0-1-6-7-2-3 2-3-0-1-4-5 "
        "2-3-6-7-2-3 2-3-6-7-4-5 4-5-0-1-4-5 4-5-0-1-6-7 "
        "4-5-2-3-6-7 6-7-2-3-0-1 6-7-2-3-6-7 6-7-4-5-0-1 "
        "0-1-6-7-4-5 2-3-0-1-6-7 4-5-2-3-0-1 6-7-4-5-2-3 "
    ),
    # Needs unseen pair transitions (A->B, B->C, C->D, D->A) and twice the length.
    "posttrain": _parse("0-1-2-3-4-5-6-7-0-1-2-3"),
}

ANT_TASK_SETS: dict[str, tuple[Task, ...]] = {
    # Table A2: 16 tasks of three colours each.
    "pretrain": _parse(
        "0-3-2 1-0-3 2-1-0 3-2-1 0-2-0 0-2-1 0-3-1 1-0-2 1-3-1 1-3-2 2-0-2 2-0-3 2-1-3 3-1-0 3-1-3 3-2-0 "
    ),
    "posttrain": _parse("0-1-2-3"),
}


def get_task_set(task_sets: dict[str, tuple[Task, ...]], name: str) -> tuple[Task, ...]:
    """The tasks called ``name``, with an error listing the known names."""
    try:
        return task_sets[name]
    except KeyError:
        raise ValueError(f"unknown task set {name!r}; known: {sorted(task_sets)}") from None


def grid_subgoal(colour: int) -> int:
    """Abstract subgoal of a grid colour: the index of its colour pair."""
    return colour // 2
