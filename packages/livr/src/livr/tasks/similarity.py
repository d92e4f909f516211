"""Visual similarity (DreamSim's NIGHTS): which of two images is more similar to the reference? 2-way.

NIGHTS layout: ``<root>/data.csv`` with ``ref_path``, ``left_path``, ``right_path`` (relative to
the root, under ``ref/`` and ``distort/``), ``left_vote``, ``right_vote``, ``votes`` and ``split``
(train / val / test). As DreamSim does, triplets with fewer than 6 unanimous votes are dropped.
"""

from __future__ import annotations

import csv
import random

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from livr.data import Example
from livr.tasks.common import (
    bad_annotation,
    balanced_slots,
    limit_and_shuffle,
    mc_question,
    normalize_split,
    open_image,
    place,
    require_dir,
    require_file,
    shrink,
)
from livr.tasks.procedural import SHAPES, draw_shape, random_color, textured_scene

NAME = "visual_similarity"
QUESTION = mc_question(
    "The first image is the reference. Which of the next two images is more similar to the reference?",
    ("the second image", "the third image"),
)
DISTORTIONS = ("blur", "noise", "color", "shift", "shapes")
MIN_VOTES = 6


def distort(image: Image.Image, kind: str, strength: float, rng: random.Random) -> Image.Image:
    """``image`` changed by one distortion; ``strength`` in (0, 1]."""
    s = image.width
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(0.5 + 3.5 * strength))
    if kind == "noise":
        a = np.asarray(image, dtype=np.float32)
        a = a + np.random.default_rng(rng.getrandbits(32)).normal(0, 90 * strength, a.shape)
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if kind == "color":
        out = ImageEnhance.Color(image).enhance(1 - 0.9 * strength)
        return ImageEnhance.Brightness(out).enhance(1 + rng.choice((-0.6, 0.6)) * strength)
    if kind == "shift":
        d = round(0.3 * s * strength) + 1
        return image.transform(
            image.size,
            Image.AFFINE,
            (1, 0, rng.choice((-d, d)), 0, 1, rng.choice((-d, d))),
            fillcolor=(0, 0, 0),
        )
    if kind == "shapes":
        out = image.copy()
        draw = ImageDraw.Draw(out)
        for _ in range(1 + round(8 * strength)):
            draw_shape(
                draw,
                rng.choice(SHAPES),
                rng.uniform(0, s),
                rng.uniform(0, s),
                rng.uniform(0.08, 0.16) * s,
                random_color(rng, 0, 255),
            )
        return out
    raise ValueError(f"unknown distortion {kind!r}")


def generate(n: int, *, seed: int = 0, image_size: int = 96) -> list[Example]:
    """A scene and two distorted copies: a light distortion (strength <= 0.25) and a heavy one (>= 0.7)."""
    rng = random.Random(f"{NAME}:{seed}")  # per-task stream: equal seeds give unrelated images across tasks
    examples = []
    for slot in balanced_slots(n, 2, rng):
        ref = textured_scene(rng, image_size)
        near = (rng.choice(DISTORTIONS), rng.uniform(0.05, 0.25))
        far = (rng.choice(DISTORTIONS), rng.uniform(0.7, 1.0))
        images = [distort(ref, kind, strength, rng) for kind, strength in (near, far)]
        record = [[k, round(s, 3)] for k, s in place(near, [far], slot)]
        meta = {"task": NAME, "source": "generated", "distortions": record}
        examples.append(Example([ref, *place(images[0], [images[1]], slot)], QUESTION, "AB"[slot], meta))
    return examples


def solve(example: Example) -> str:
    """The candidate with the weaker recorded distortion."""
    strengths = [s for _, s in example.meta["distortions"]]
    return "AB"[strengths.index(min(strengths))]


def _int(row: dict, key: str, where: str) -> int:
    try:
        return int(float(row[key]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"bad annotation in {where}: {key!r} must be a number, got {row.get(key)!r}"
        ) from exc


def _read_rows(path, split: str, min_votes: int) -> list[tuple[int, dict, bool]]:
    """(line number, row, left image wins) of the split's triplets with enough votes and no tie."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        needed = {"ref_path", "left_path", "right_path", "left_vote", "right_vote", "split"}
        missing = needed - set(reader.fieldnames or ())
        if missing:
            raise bad_annotation(path, f"missing column(s) {sorted(missing)}")
        for lineno, row in enumerate(reader, 2):
            where = f"{path}:{lineno}"
            if row["split"] != split:
                continue
            left, right = _int(row, "left_vote", where), _int(row, "right_vote", where)
            votes = _int(row, "votes", where) if row.get("votes") not in (None, "") else left + right
            if votes >= min_votes and left != right:
                rows.append((lineno, row, left > right))
    return rows


def load(
    root, split: str, *, limit: int | None = 1000, seed: int = 0, min_votes: int = MIN_VOTES
) -> list[Example]:
    """NIGHTS triplets of ``split``; the answer is the distortion most annotators chose."""
    root = require_dir(root, "NIGHTS root")
    path = require_file(root / "data.csv", "NIGHTS annotations")
    split = normalize_split(split)
    try:
        rows = _read_rows(path, split, min_votes)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path} is not a readable CSV file: {exc}") from exc
    chosen = limit_and_shuffle(rows, limit, seed)
    rng = random.Random(seed + 1)
    examples = []
    for (lineno, row, left_wins), slot in zip(chosen, balanced_slots(len(chosen), 2, rng), strict=True):
        ref, left, right = (
            shrink(open_image(root / row[k]))[0] for k in ("ref_path", "left_path", "right_path")
        )
        closer, other = (left, right) if left_wins else (right, left)
        meta = {"task": NAME, "source": "nights", "row": lineno, "id": row.get("id", "")}
        examples.append(Example([ref, *place(closer, [other], slot)], QUESTION, "AB"[slot], meta))
    return examples
