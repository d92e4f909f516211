"""The grid versions of counting / localization / similarity used by the CPU reproduction."""

from collections import Counter, defaultdict

import numpy as np
import pytest

from livr.tasks import grid

TASKS = sorted(grid.GENERATORS)


@pytest.mark.parametrize("task", TASKS)
def test_grid_task_is_deterministic_solved_and_balanced(task):
    a, b = grid.generate(task, 200, seed=3), grid.generate(task, 200, seed=3)
    assert [e.question for e in a] == [e.question for e in b]
    assert all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for ea, eb in zip(a, b, strict=True)
        for x, y in zip(ea.images, eb.images, strict=True)
    )
    assert all(grid.solve(e) == e.answer for e in a)
    assert all(e.meta["task"] == task for e in a)
    counts = Counter(e.answer for e in a)
    assert max(counts.values()) - min(counts.values()) <= 1  # a constant answer scores chance
    other = grid.generate(task, 200, seed=4)
    assert [e.answer for e in other] != [e.answer for e in a]


@pytest.mark.parametrize("task", TASKS)
def test_grid_task_needs_the_image(task):
    """The best text-only rule (the most frequent training answer for each question string) stays near
    chance on fresh examples: the question alone does not give the answer away."""
    train, test = grid.generate(task, 2000, seed=1), grid.generate(task, 1000, seed=2)
    by_question: dict[str, Counter] = defaultdict(Counter)
    for e in train:
        by_question[e.question][e.answer] += 1
    overall = Counter(e.answer for e in train).most_common(1)[0][0]
    guess = [
        by_question[e.question].most_common(1)[0][0] if e.question in by_question else overall for e in test
    ]
    accuracy = np.mean([g == e.answer for g, e in zip(guess, test, strict=True)])
    chance = 1 / len(Counter(e.answer for e in train))
    assert accuracy < chance + 0.06, (task, accuracy, chance)


def test_grid_images_follow_the_record():
    """Each recorded object is drawn in its grid cell; an empty cell's centre shows that cell's board tint."""
    for e in grid.generate("counting", 50, seed=0, image_size=48):
        pixels = np.asarray(e.images[0]).astype(int)
        occupied = {o["slot"] for o in e.meta["objects"]}
        corner = pixels[0, 0]  # cell 0's corner: never covered, its tint is the background itself
        for slot in range(9):
            row, col = divmod(slot, 3)
            centre = pixels[row * 16 + 8, col * 16 + 8]
            tint = np.array(grid.cell_tint(tuple(int(v) for v in corner), slot))
            if slot in occupied:
                assert np.abs(centre - tint).sum() > 0
            else:
                assert np.abs(centre - tint).sum() == 0
        tints = {grid.cell_tint((0, 0, 0), slot) for slot in range(9)}
        assert len(tints) == 9  # every cell's board colour is different


def test_grid_similarity_candidates_differ_as_recorded():
    for e in grid.generate("visual_similarity", 40, seed=0):
        ref, *cands = (np.asarray(im).astype(int) for im in e.images)
        near = cands[e.meta["candidates"].index("near")]
        far = cands[e.meta["candidates"].index("far")]
        assert np.abs(ref - near).sum() < np.abs(ref - far).sum()


def test_grid_unknown_task_is_an_error():
    with pytest.raises(ValueError, match="grid tasks"):
        grid.generate("jigsaw", 4)
