"""The paper's nine vision-centric tasks: real-data loaders, procedural generators, scripted solvers.

``TASKS[name]`` is a :class:`TaskSpec`; ``get_task(name)`` looks one up with an error listing the
names. Every :class:`~livr.data.Example` a task returns has the canonical answer (an option letter
or a count in digits) and ``meta["task"] == name``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from livr.data import Example
from livr.tasks import (
    art_style,
    counting,
    functional_correspondence,
    jigsaw,
    localization,
    reflectance,
    semantic_correspondence,
    similarity,
    visual_correspondence,
)


@dataclass(frozen=True)
class TaskSpec:
    """One task: its answer format, the paper's test size and its three entry points.

    ``generate(n, *, seed, image_size=...)`` is deterministic by seed; ``load(root, split, *,
    limit=1000, seed=0)`` reads the published dataset format; ``solve(example)`` answers a
    generated example from its ``meta`` (and images) and must be right every time.
    """

    name: str
    answer_type: Literal["choice", "count"]
    choices: tuple[str, ...] | None
    test_size: int
    generate: Callable[..., list[Example]]
    load: Callable[..., list[Example]]
    solve: Callable[[Example], str]
    source: str = ""


def _spec(module, answer_type, choices, test_size, source) -> TaskSpec:
    return TaskSpec(
        module.NAME, answer_type, choices, test_size, module.generate, module.load, module.solve, source
    )


AB, ABC, ABCD = ("A", "B"), ("A", "B", "C"), ("A", "B", "C", "D")

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _spec(counting, "count", None, 528, "PixMo-Count"),
        _spec(jigsaw, "choice", AB, 150, "COCO"),
        _spec(localization, "choice", AB, 122, "COCO"),
        _spec(visual_correspondence, "choice", ABCD, 700, "HPatches"),
        _spec(art_style, "choice", AB, 117, "ArtBench-10"),
        _spec(semantic_correspondence, "choice", ABCD, 139, "SPair-71k"),
        _spec(functional_correspondence, "choice", ABCD, 146, "FunKPoint"),
        _spec(reflectance, "choice", ABC, 134, "MID"),
        _spec(similarity, "choice", AB, 135, "DreamSim NIGHTS"),
    )
}


def get_task(name: str) -> TaskSpec:
    """The task called ``name`` (``-`` and ``_`` are interchangeable)."""
    key = name.replace("-", "_")
    if key not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[key]


__all__ = ["TASKS", "TaskSpec", "get_task"]
