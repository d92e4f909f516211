"""Object localization (BLINK-style, COCO boxes): which of two drawn boxes encloses the object? 2-way.

One image with two labelled boxes: the annotated box and a shifted / rescaled copy of it
(IoU with the object below ``MAX_DISTRACTOR_IOU``).
"""

from __future__ import annotations

import math
import random
from collections import Counter

from PIL import Image, ImageDraw

from livr.data import Example
from livr.tasks.coco import read_coco
from livr.tasks.common import (
    balanced_slots,
    draw_box,
    limit_and_shuffle,
    mc_question,
    open_image,
    place,
    shrink,
)
from livr.tasks.procedural import SHAPES, draw_shape, random_color, shape_polygon

NAME = "object_localization"
OPTIONS = ("Box A", "Box B")
BOX_COLORS = ((230, 30, 30), (30, 80, 230))
MAX_DISTRACTOR_IOU = 0.5
MIN_AREA_FRACTION = 0.02  # COCO objects smaller than this (of the image) are too small to judge


def question(category: str) -> str:
    return mc_question(
        "A bounding box is a rectangle drawn around an object whose edges touch the object's outermost pixels. "
        f"Two boxes labelled A and B are drawn on the image. Which box more accurately encloses the {category}?",
        OPTIONS,
    )


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def perturbed_box(rng: random.Random, box, width: int, height: int) -> list[float]:
    """A box of similar size near ``box`` overlapping it with IoU in [0.05, MAX_DISTRACTOR_IOU)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    for _ in range(500):
        sw, sh = w * rng.uniform(0.6, 1.5), h * rng.uniform(0.6, 1.5)
        angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 0.9)
        cx = (x0 + x1) / 2 + math.cos(angle) * dist * w
        cy = (y0 + y1) / 2 + math.sin(angle) * dist * h
        cand = [
            max(0.0, cx - sw / 2),
            max(0.0, cy - sh / 2),
            min(width - 1.0, cx + sw / 2),
            min(height - 1.0, cy + sh / 2),
        ]
        if cand[2] - cand[0] >= 4 and cand[3] - cand[1] >= 4 and 0.05 <= iou(cand, box) < MAX_DISTRACTOR_IOU:
            return [round(c, 1) for c in cand]
    raise RuntimeError(f"could not place a distractor box near {box} in a {width}x{height} image")


def _annotate(image: Image.Image, true_box, rng: random.Random, slot: int) -> tuple[Image.Image, list]:
    boxes = place(list(true_box), [perturbed_box(rng, true_box, *image.size)], slot)
    image = image.copy()
    for i, b in enumerate(boxes):
        draw_box(image, b, "AB"[i], BOX_COLORS[i])
    return image, boxes


def generate(n: int, *, seed: int = 0, image_size: int = 96) -> list[Example]:
    """One named shape (plus another kind as clutter); the wrong box is a displaced, resized copy."""
    rng = random.Random(f"{NAME}:{seed}")  # per-task stream: equal seeds give unrelated images across tasks
    examples = []
    for slot in balanced_slots(n, 2, rng):
        image = Image.new("RGB", (image_size, image_size), random_color(rng, 150, 255))
        draw = ImageDraw.Draw(image)
        target, other = rng.sample(SHAPES, 2)
        r = rng.uniform(0.14, 0.24) * image_size
        cx, cy = (rng.uniform(r + 2, image_size - r - 2) for _ in range(2))
        angle = rng.uniform(0, 6.3)
        for _ in range(rng.randint(0, 2)):  # clutter first, so the target is drawn on top
            draw_shape(
                draw,
                other,
                rng.uniform(0, image_size),
                rng.uniform(0, image_size),
                r * 0.6,
                random_color(rng, 0, 140),
            )
        draw_shape(draw, target, cx, cy, r, random_color(rng, 0, 140), angle)
        if target == "circle":
            true_box = [cx - r, cy - r, cx + r, cy + r]
        else:
            pts = shape_polygon(target, cx, cy, r, angle)
            true_box = [
                min(p[0] for p in pts),
                min(p[1] for p in pts),
                max(p[0] for p in pts),
                max(p[1] for p in pts),
            ]
        true_box = [round(c, 1) for c in true_box]
        image, boxes = _annotate(image, true_box, rng, slot)
        meta = {
            "task": NAME,
            "source": "generated",
            "object_box": true_box,
            "boxes": boxes,
            "category": target,
        }
        examples.append(Example([image], question(target), "AB"[slot], meta))
    return examples


def solve(example: Example) -> str:
    """The drawn box with the larger IoU against the object's own extent."""
    gt = example.meta["object_box"]
    scores = [iou(b, gt) for b in example.meta["boxes"]]
    return "AB"[scores.index(max(scores))]


def load(root, split: str, *, limit: int | None = 1000, seed: int = 0, year: str = "2017") -> list[Example]:
    """COCO objects (not crowds, at least 2 % of the image, only one of their category in the image)."""
    images, objects, ann_path = read_coco(root, split, year)
    by_id = {im.id: im for im in images}
    per_image = Counter((o.image_id, o.category) for o in objects)
    usable = [
        o
        for o in objects
        if not o.iscrowd
        and per_image[(o.image_id, o.category)] == 1
        and (o.box[2] - o.box[0]) * (o.box[3] - o.box[1])
        >= MIN_AREA_FRACTION * by_id[o.image_id].width * by_id[o.image_id].height
    ]
    chosen = limit_and_shuffle(usable, limit, seed)
    rng = random.Random(seed + 1)
    examples = []
    for o, slot in zip(chosen, balanced_slots(len(chosen), 2, rng), strict=True):
        im = by_id[o.image_id]
        raw = open_image(im.path)
        if raw.size != (im.width, im.height):  # boxes would land in the wrong place
            raise ValueError(
                f"{im.path} is {raw.width}x{raw.height} but {ann_path} says {im.width}x{im.height}"
            )
        picture, scale = shrink(raw)
        box = [round(c * scale, 1) for c in o.box]
        picture, boxes = _annotate(picture, box, rng, slot)
        meta = {
            "task": NAME,
            "source": "coco",
            "image_id": o.image_id,
            "object_box": box,
            "boxes": boxes,
            "category": o.category,
        }
        examples.append(Example([picture], question(o.category), "AB"[slot], meta))
    return examples
