"""Named task sets of the two pinpad environments (paper App. A, Tables A1 and A2).

A task is the ordered tuple of colours the agent must step on. Grid subgoals are colour pairs
(0-1, 2-3, 4-5, 6-7), so the grid's abstract subgoal of colour ``c`` is ``c // 2``; ant subgoals
are single colours.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

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


@dataclass(frozen=True)
class GridSpec:
    """One member of the gridworld-pinpad family: every size of App. A.1 as a field.

    Subgoals are groups of ``colours_per_subgoal`` consecutive colours (the paper's grid: pairs
    0-1, 2-3, ...; 1 gives single-colour subgoals, the rule of the paper's ant tasks). The task
    sets follow the paper's rule, which this class makes explicit: the post-training task walks
    the subgoals in cyclic order (0, 1, ..., P-1, 0, ...) for ``posttrain_subgoals`` subgoals, and
    the pretraining tasks are *every* sequence of ``pretrain_subgoals`` subgoals that contains
    none of the post-training task's transitions (g -> g+1 mod P) and no repeat (g -> g). With
    P = 4 subgoals of length 3 this gives exactly Table A1's 16 tasks (pairs) and Table A2's
    (single colours); the post-training task needs both unseen transitions and more subgoals.
    """

    size: int = 7
    """Grid side G."""
    num_colours: int = 8
    """Coloured cells O."""
    num_walls: int = 4
    """Wall cells W."""
    horizon: int = 100
    """Episode length limit T."""
    colours_per_subgoal: int = 2
    """Colours that make one abstract subgoal (2: the paper's colour pairs; 1: single colours)."""
    pretrain_subgoals: int = 3
    """Subgoals per pretraining task (Table A1: 3 pairs)."""
    posttrain_subgoals: int = 6
    """Subgoals of the post-training task (0-1-2-3-4-5-6-7-0-1-2-3: 6 pairs)."""
    colour_cells: tuple[int, ...] | None = None
    """Cells of colours 0, 1, ... in every episode (None: drawn at random every episode, App. A.1).
    Walls and the agent are still drawn at random among the other cells."""

    def __post_init__(self) -> None:
        if self.colour_cells is not None and (
            len(self.colour_cells) != self.num_colours
            or len(set(self.colour_cells)) != self.num_colours
            or not all(0 <= c < self.size * self.size for c in self.colour_cells)
        ):
            raise ValueError(
                f"colour_cells must be {self.num_colours} distinct cells of the {self.size}x{self.size} grid, "
                f"got {self.colour_cells}"
            )
        if self.num_colours + self.num_walls + 1 > self.size * self.size:
            raise ValueError(
                f"{self.num_colours} colours + {self.num_walls} walls + agent do not fit a {self.size}x{self.size} grid"
            )
        if self.colours_per_subgoal < 1 or self.num_colours % self.colours_per_subgoal:
            raise ValueError(
                f"{self.num_colours} colours do not split into subgoals of {self.colours_per_subgoal}"
            )
        if self.num_subgoals < 3:
            raise ValueError(
                "the task rule needs at least 3 subgoals (each must have a successor that is neither itself nor the next one)"
            )
        if self.pretrain_subgoals < 1 or self.posttrain_subgoals < 2:
            raise ValueError("pretrain_subgoals must be >= 1 and posttrain_subgoals >= 2")

    @property
    def num_subgoals(self) -> int:
        """P, the number of abstract subgoals."""
        return self.num_colours // self.colours_per_subgoal

    @property
    def obs_dim(self) -> int:
        """G^2 (O + W + 1): the flat per-cell one-hot."""
        return self.size * self.size * (self.num_colours + self.num_walls + 1)

    def colours(self, subgoals: tuple[int, ...]) -> Task:
        """The colour sequence of a subgoal sequence."""
        k = self.colours_per_subgoal
        return tuple(g * k + j for g in subgoals for j in range(k))

    def subgoal_of(self, colour: int) -> int:
        return colour // self.colours_per_subgoal

    def posttrain_transitions(self) -> set[tuple[int, int]]:
        p = self.num_subgoals
        return {(g, (g + 1) % p) for g in range(p)}

    def pretrain_tasks(self) -> tuple[Task, ...]:
        banned = self.posttrain_transitions()
        tasks = []
        for seq in itertools.product(range(self.num_subgoals), repeat=self.pretrain_subgoals):
            steps = list(itertools.pairwise(seq))
            if all(a != b and (a, b) not in banned for a, b in steps):
                tasks.append(self.colours(seq))
        return tuple(tasks)

    def posttrain_task(self) -> Task:
        return self.colours(tuple(k % self.num_subgoals for k in range(self.posttrain_subgoals)))

    def task_sets(self) -> dict[str, tuple[Task, ...]]:
        return {"pretrain": self.pretrain_tasks(), "posttrain": (self.posttrain_task(),)}


_SMALL = GridSpec(
    size=5,
    num_colours=4,
    num_walls=1,
    horizon=40,
    colours_per_subgoal=1,
    pretrain_subgoals=3,
    posttrain_subgoals=4,
)

GRID_SPECS: dict[str, GridSpec] = {
    # App. A.1 (Table A1's tasks are this rule's output, listed in the paper's order below).
    "paper": GridSpec(),
    # The smallest member where the paper's effects appear on a CPU (README: "the small grid"):
    # the paper's ant task abstraction (4 single-colour subgoals, Table A2's 16 tasks, post-training
    # 0-1-2-3) on a 5 x 5 grid.
    "small": _SMALL,
    # "small" with the colours on the four corners in every episode (walls and agent still random):
    # a subgoal is then a place, so a code that says "go there" means the same in every layout.
    "small-fixed": dataclasses.replace(_SMALL, colour_cells=(0, 4, 24, 20)),
    # Six single-colour subgoals on fixed cells (corners, then two inner cells off the edges' paths): every
    # context then allows 4 successors, not 2, so a code that names the subgoal ("go to c") costs little more
    # KL than one that only picks among the successors the base expects there (README, "fourth search").
    "small6-fixed": dataclasses.replace(_SMALL, num_colours=6, colour_cells=(0, 4, 24, 20, 7, 17)),
    # Eight: the corners and the four diagonal neighbours of the centre; 6 successors per subgoal.
    "small8-fixed": dataclasses.replace(_SMALL, num_colours=8, colour_cells=(0, 4, 24, 20, 6, 8, 18, 16)),
    # The paper's own subgoal structure (colour pairs, Table A1's 16 tasks) on the 5 x 5 grid;
    # post-training 0-1-2-3-4-5-6-7 (four pairs, every transition unseen).
    "small-pairs": GridSpec(
        size=5,
        num_colours=8,
        num_walls=1,
        horizon=50,
        colours_per_subgoal=2,
        pretrain_subgoals=3,
        posttrain_subgoals=4,
    ),
}


def get_grid_spec(variant: str | GridSpec) -> GridSpec:
    """A named member of the grid family (or the spec itself)."""
    if isinstance(variant, GridSpec):
        return variant
    try:
        return GRID_SPECS[variant]
    except KeyError:
        raise ValueError(f"unknown grid variant {variant!r}; known: {sorted(GRID_SPECS)}") from None


def grid_task_sets(variant: str | GridSpec) -> dict[str, tuple[Task, ...]]:
    """The named task sets of a grid variant (the paper's in Table A1's order)."""
    spec = get_grid_spec(variant)
    return GRID_TASK_SETS if spec == GRID_SPECS["paper"] else spec.task_sets()


def get_task_set(task_sets: dict[str, tuple[Task, ...]], name: str) -> tuple[Task, ...]:
    """The tasks called ``name``, with an error listing the known names."""
    try:
        return task_sets[name]
    except KeyError:
        raise ValueError(f"unknown task set {name!r}; known: {sorted(task_sets)}") from None


def grid_subgoal(colour: int) -> int:
    """Abstract subgoal of a grid colour: the index of its colour pair."""
    return colour // 2
