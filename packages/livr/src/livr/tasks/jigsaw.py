"""Jigsaw (BLINK-style, from COCO): which of two pieces fills the missing lower-right corner? 2-way.

Images: the picture with its lower-right corner blacked out, then candidate pieces A and B.
The wrong piece is the same corner of another picture.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

from livr.data import Example
from livr.tasks.coco import read_coco
from livr.tasks.common import balanced_slots, limit_and_shuffle, mc_question, open_image, place, shrink
from livr.tasks.procedural import textured_scene

NAME = "jigsaw"
PROMPT = (
    "The first image has its lower-right corner missing (shown in black). Which of the next two images is the "
    "missing piece? Compare the edges and content of the pieces with the area around the gap."
)
OPTIONS = ("the second image", "the third image")
QUESTION = mc_question(PROMPT, OPTIONS)
PIECE_FRACTION = 0.45  # side of the missing square relative to the shorter image side


def _cut(image: Image.Image, piece: int) -> tuple[Image.Image, Image.Image, list[int]]:
    """(picture with the corner blacked out, the corner piece, hole box)."""
    w, h = image.size
    box = [w - piece, h - piece, w, h]
    corner = image.crop(tuple(box))
    holed = image.copy()
    holed.paste((0, 0, 0), tuple(box))
    return holed, corner, box


def edge_mismatch(holed: Image.Image, piece: Image.Image, box: list[int]) -> float:
    """Mean colour jump across the hole's top and left edges if ``piece`` were put in the hole."""
    a = np.asarray(holed, dtype=np.float32)
    p = np.asarray(piece, dtype=np.float32)
    x0, y0, x1, y1 = box
    top = np.abs(a[y0 - 1, x0:x1] - p[0]).mean()
    left = np.abs(a[y0:y1, x0 - 1] - p[:, 0]).mean()
    return float(top + left)


def generate(n: int, *, seed: int = 0, image_size: int = 96) -> list[Example]:
    """Procedural scenes; the distractor corner comes from another scene and visibly breaks the edges."""
    rng = random.Random(f"{NAME}:{seed}")  # per-task stream: equal seeds give unrelated images across tasks
    piece = round(image_size * PIECE_FRACTION)
    examples = []
    for slot in balanced_slots(n, 2, rng):
        holed, true_piece, box = _cut(textured_scene(rng, image_size), piece)
        true_score = edge_mismatch(holed, true_piece, box)
        while True:  # a distractor whose edges are clearly worse, so the question has one answer
            _, other, _ = _cut(textured_scene(rng, image_size), piece)
            if edge_mismatch(holed, other, box) > true_score + 15:
                break
        pieces = place(true_piece, [other], slot)
        meta = {"task": NAME, "source": "generated", "hole": box}
        examples.append(Example([holed, *pieces], QUESTION, "AB"[slot], meta))
    return examples


def solve(example: Example) -> str:
    """Picks the piece whose top and left edges continue the picture around the hole."""
    holed, *pieces = example.images
    box = example.meta["hole"]
    scores = [edge_mismatch(holed, p, box) for p in pieces]
    return "AB"[int(np.argmin(scores))]


def load(root, split: str, *, limit: int | None = 1000, seed: int = 0, year: str = "2017") -> list[Example]:
    """COCO images (``annotations/instances_*.json`` lists them) cut into jigsaw questions."""
    images, _, ann_path = read_coco(root, split, year)
    if len(images) < 2:
        raise ValueError(
            f"{ann_path}: jigsaw needs at least two images in split {split!r}, found {len(images)}"
        )
    chosen = limit_and_shuffle(images, limit, seed)
    rng = random.Random(seed + 1)
    slots = balanced_slots(len(chosen), 2, rng)
    examples = []
    for im, slot in zip(chosen, slots, strict=True):
        picture, _ = shrink(open_image(im.path))
        piece = round(min(picture.size) * PIECE_FRACTION)
        holed, true_piece, box = _cut(picture, piece)
        other_im = rng.choice([o for o in images if o.id != im.id]) if len(images) < 50 else None
        while other_im is None or other_im.id == im.id:
            other_im = rng.choice(images)
        other, _ = shrink(open_image(other_im.path))
        side = min(piece, *other.size)
        other = other.crop((other.width - side, other.height - side, other.width, other.height)).resize(
            (piece, piece)
        )
        meta = {
            "task": NAME,
            "source": "coco",
            "image_id": im.id,
            "distractor_image_id": other_im.id,
            "hole": box,
        }
        examples.append(Example([holed, *place(true_piece, [other], slot)], QUESTION, "AB"[slot], meta))
    return examples
