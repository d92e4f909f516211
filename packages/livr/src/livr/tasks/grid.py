"""Grid versions of three paper tasks, sized for the CPU reproduction (``livr reproduce --config tiny``).

The paper's generators (``livr.tasks.counting`` ...) draw free-form scenes at 96 px and ask BLINK's
long questions; a model small enough to train on a shared CPU in minutes cannot read them (the
earlier tiny runs stayed at the constant-answer floor). These versions keep each task's question
type but draw on the visual vocabulary of the small base model's generic pretraining
(``livr.pretraining``: coloured squares, circles and triangles on a 3 x 3 grid, one grid cell per
image token), and ask short questions, so that the image is needed and can be read:

- ``counting``: how many objects of one colour (1-5, balanced) among 0-2 objects of other colours;
  exact match.
- ``object_localization``: where is the (unique) object of a colour, two grid positions as options
  (the true cell and another cell, half the time one holding another object); 2-way.

The named attribute is the colour, not the shape: after its generic pretraining the small base
reads an object's colour well above chance but its shape barely (README "Base-model search").
- ``visual_similarity``: a reference scene and two candidates, one the same scene with a single
  object recoloured, one another scene with a different number of objects; which candidate is
  closer; 2-way (three images per prompt).

Answers are balanced over the options (and over the counts), so a constant answer scores chance.
``generate(task, n, seed=..., image_size=48)`` is deterministic by seed; ``solve(example)`` answers
from ``meta``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from PIL import Image, ImageDraw

from livr.data import Example
from livr.tasks.common import balanced_slots, place

# The visual vocabulary the small base is pretrained on (livr.pretraining draws its scenes with these).
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
    "white": (245, 245, 245),
    "purple": (150, 60, 200),
}
SHAPES = ("square", "circle", "triangle")
ROWS, COLS = ("top", "middle", "bottom"), ("left", "centre", "right")
MAX_COUNT = 5


def position_name(slot: int) -> str:
    """The name of grid cell ``slot`` (0-8, row-major): ``top left`` ... ``centre`` ... ``bottom right``."""
    row, col = divmod(slot, 3)
    if row == 1 and col == 1:
        return "centre"
    if row == 1:
        return COLS[col]
    if col == 1:
        return ROWS[row]
    return f"{ROWS[row]} {COLS[col]}"


def draw_object(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, colour) -> None:
    if shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)


def jitter(rng: random.Random) -> tuple[float, float, float]:
    """An object's radius and offset from its cell centre, in cells (it stays inside its cell, and
    some of the cell's tinted background stays visible around it)."""
    return rng.uniform(0.22, 0.34), rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08)


def cell_tint(background: tuple[int, int, int], slot: int) -> tuple[int, int, int]:
    """The board colour of cell ``slot``: the background shifted by row (green) and column (red).

    Qwen2.5-VL's vision tower has no absolute position embedding and M-RoPE gives the language
    model only relative positions, so a small model trained for minutes could not tell which cell
    an image token shows (position questions stayed at chance; README "Base-model search"). A board
    with a faint per-cell tint makes the cell part of what each image token sees.
    """
    row, col = divmod(slot, 3)
    return (background[0] + 24 * col, background[1] + 24 * row, background[2])


def draw_scene(objects: list[dict], size: int, rng: random.Random, background=None) -> Image.Image:
    """Objects ``{"colour", "shape", "slot"}`` drawn in their grid cells.

    Size and offset in the cell are jittered, from ``o["jitter"] = (radius, dx, dy)`` (fractions of a
    cell) when given, so that edited copies of a scene differ only where they were edited.
    """
    if background is None:
        background = (0, 0, 0) if rng.random() < 0.5 else (90, 90, 90)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    cell = size / 3
    for slot in range(9):
        row, col = divmod(slot, 3)
        box = (round(col * cell), round(row * cell), round((col + 1) * cell) - 1, round((row + 1) * cell) - 1)
        draw.rectangle(box, fill=cell_tint(background, slot))
    for o in objects:
        row, col = divmod(o["slot"], 3)
        radius, dx, dy = o.get("jitter") or jitter(rng)
        r = cell * radius
        cx = (col + 0.5 + dx) * cell
        cy = (row + 0.5 + dy) * cell
        draw_object(draw, o["shape"], cx, cy, r, COLOURS[o["colour"]])
    return image


def _objects(kinds: list[tuple[str, str]], slots: list[int]) -> list[dict]:
    return [{"colour": c, "shape": s, "slot": slot} for (c, s), slot in zip(kinds, slots, strict=True)]


def _options(letters_text: list[str]) -> str:
    return " ".join(f"({'AB'[i]}) {t}" for i, t in enumerate(letters_text))


def generate_counting(n: int, *, seed: int = 0, image_size: int = 48) -> list[Example]:
    rng = random.Random(f"grid-counting:{seed}")
    counts = [1 + i % MAX_COUNT for i in range(n)]
    rng.shuffle(counts)
    out = []
    for count in counts:
        target = rng.choice(list(COLOURS))
        others = [c for c in COLOURS if c != target]
        kinds = [(target, rng.choice(SHAPES)) for _ in range(count)]
        kinds += [(rng.choice(others), rng.choice(SHAPES)) for _ in range(rng.randint(0, 2))]
        objects = _objects(kinds, rng.sample(range(9), len(kinds)))
        meta = {"task": "counting", "source": "grid", "target": target, "objects": objects}
        image = draw_scene(objects, image_size, rng)
        out.append(Example([image], f"How many {target} objects are there?", str(count), meta))
    return out


def generate_localization(n: int, *, seed: int = 0, image_size: int = 48) -> list[Example]:
    rng = random.Random(f"grid-localization:{seed}")
    out = []
    for slot in balanced_slots(n, 2, rng):
        target = rng.choice(list(COLOURS))
        others = [c for c in COLOURS if c != target]
        kinds = [(target, rng.choice(SHAPES))]
        kinds += [(rng.choice(others), rng.choice(SHAPES)) for _ in range(rng.randint(0, 3))]
        cells = rng.sample(range(9), len(kinds))
        objects = _objects(kinds, cells)
        # The wrong cell is in another row and another column (so that either tells them apart), and
        # holds another object when one is there, so "is there an object" does not answer it.
        far = [c for c in range(9) if c // 3 != cells[0] // 3 and c % 3 != cells[0] % 3]
        taken = [c for c in far if c in cells[1:]]
        wrong = rng.choice(taken) if taken and rng.random() < 0.5 else rng.choice(far)
        options = place(position_name(cells[0]), [position_name(wrong)], slot)
        meta = {
            "task": "object_localization",
            "source": "grid",
            "target": target,
            "objects": objects,
            "options": options,
        }
        image = draw_scene(objects, image_size, rng)
        question = f"Where is the {target} object? {_options(options)}"
        out.append(Example([image], question, "AB"[slot], meta))
    return out


def generate_similarity(n: int, *, seed: int = 0, image_size: int = 48) -> list[Example]:
    rng = random.Random(f"grid-similarity:{seed}")
    out = []
    for slot in balanced_slots(n, 2, rng):
        k = rng.randint(2, 4)
        kinds = rng.sample([(c, s) for c in COLOURS for s in SHAPES], k)
        cells = rng.sample(range(9), k)
        ref = [dict(o, jitter=jitter(rng)) for o in _objects(kinds, cells)]
        near = [dict(o) for o in ref]
        changed = rng.randrange(k)
        near[changed]["colour"] = rng.choice([c for c in COLOURS if c != ref[changed]["colour"]])
        # the far candidate is another scene, with a different number of objects
        k_far = rng.choice([m for m in range(1, 6) if m != k])
        far_kinds = rng.sample([(c, s) for c in COLOURS for s in SHAPES], k_far)
        far = [dict(o, jitter=jitter(rng)) for o in _objects(far_kinds, rng.sample(range(9), k_far))]
        background = (0, 0, 0) if rng.random() < 0.5 else (90, 90, 90)
        images = [draw_scene(objs, image_size, rng, background) for objs in (ref, near, far)]
        candidates = place("near", ["far"], slot)
        meta = {"task": "visual_similarity", "source": "grid", "candidates": candidates}
        question = "Which image is more similar to the first? (A) second (B) third"
        out.append(Example([images[0], *place(images[1], [images[2]], slot)], question, "AB"[slot], meta))
    return out


GENERATORS: dict[str, Callable[..., list[Example]]] = {
    "counting": generate_counting,
    "object_localization": generate_localization,
    "visual_similarity": generate_similarity,
}


def generate(task: str, n: int, *, seed: int = 0, image_size: int = 48) -> list[Example]:
    """``n`` grid examples of ``task`` (one of :data:`GENERATORS`), deterministic by seed."""
    if task not in GENERATORS:
        raise ValueError(f"no grid version of task {task!r}; grid tasks: {sorted(GENERATORS)}")
    return GENERATORS[task](n, seed=seed, image_size=image_size)


def solve(example: Example) -> str:
    """The right answer from the generation record."""
    meta = example.meta
    if meta["task"] == "counting":
        return str(sum(o["colour"] == meta["target"] for o in meta["objects"]))
    if meta["task"] == "object_localization":
        true = position_name(next(o["slot"] for o in meta["objects"] if o["colour"] == meta["target"]))
        return "AB"[meta["options"].index(true)]
    return "AB"[meta["candidates"].index("near")]
