"""Procedural objects made of parts with named keypoints, for the correspondence generators.

A category is a list of primitives and a dict of keypoints, all in canonical [0, 1]^2
coordinates. An instance applies a random similarity transform (scale, small rotation,
horizontal flip, shift) and colours, so two instances of a category (semantic
correspondence) or two categories sharing an action (functional correspondence) show the
same keypoint names at different pixels.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from livr.tasks.procedural import random_color

Point = tuple[float, float]


def rect(x0, y0, x1, y1) -> list[Point]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def ellipse(cx, cy, rx, ry, n: int = 24) -> list[Point]:
    return [
        (cx + rx * math.cos(2 * math.pi * k / n), cy + ry * math.sin(2 * math.pi * k / n)) for k in range(n)
    ]


@dataclass(frozen=True)
class Category:
    name: str
    parts: tuple[tuple[str, tuple[Point, ...]], ...]  # (colour slot name, polygon)
    keypoints: dict[str, Point]


def _cat(name, parts, keypoints) -> Category:
    return Category(name, tuple((slot, tuple(poly)) for slot, poly in parts), keypoints)


# Semantic categories: several instances of one category are matched by part.
SEMANTIC = {
    "quadruped": _cat(
        "quadruped",
        [
            ("body", ellipse(0.45, 0.5, 0.25, 0.13)),
            ("body", rect(0.25, 0.55, 0.31, 0.82)),
            ("body", rect(0.58, 0.55, 0.64, 0.82)),
            ("head", ellipse(0.76, 0.36, 0.1, 0.08)),
            ("head", [(0.72, 0.3), (0.75, 0.18), (0.79, 0.3)]),
            ("body", [(0.2, 0.46), (0.06, 0.3), (0.09, 0.28), (0.22, 0.42)]),
        ],
        {
            "nose": (0.86, 0.37),
            "ear_tip": (0.75, 0.19),
            "tail_tip": (0.07, 0.29),
            "front_foot": (0.61, 0.81),
            "back_foot": (0.28, 0.81),
            "back": (0.45, 0.38),
        },
    ),
    "bird": _cat(
        "bird",
        [
            ("body", ellipse(0.45, 0.52, 0.22, 0.14)),
            ("head", ellipse(0.7, 0.35, 0.09, 0.09)),
            ("head", [(0.78, 0.32), (0.93, 0.36), (0.78, 0.39)]),
            ("body", [(0.25, 0.5), (0.06, 0.42), (0.08, 0.6)]),
            ("wing", [(0.35, 0.48), (0.5, 0.2), (0.58, 0.5)]),
            ("legs", rect(0.44, 0.64, 0.47, 0.86)),
        ],
        {
            "beak_tip": (0.92, 0.36),
            "crown": (0.7, 0.27),
            "tail_tip": (0.07, 0.5),
            "wing_tip": (0.5, 0.21),
            "foot": (0.455, 0.85),
            "belly": (0.45, 0.65),
        },
    ),
    "car": _cat(
        "car",
        [
            ("body", rect(0.1, 0.45, 0.9, 0.68)),
            ("head", [(0.28, 0.45), (0.36, 0.28), (0.64, 0.28), (0.74, 0.45)]),
            ("legs", ellipse(0.27, 0.7, 0.08, 0.08)),
            ("legs", ellipse(0.73, 0.7, 0.08, 0.08)),
            ("wing", rect(0.84, 0.48, 0.9, 0.54)),
        ],
        {
            "headlight": (0.87, 0.51),
            "rear_bumper": (0.11, 0.6),
            "front_wheel": (0.73, 0.7),
            "rear_wheel": (0.27, 0.7),
            "roof": (0.5, 0.29),
        },
    ),
}

# Functional categories: keypoints named by their role in an action, shared across categories.
FUNCTIONAL = {
    "pour": {
        "mug": _cat(
            "mug",
            [
                ("body", rect(0.3, 0.3, 0.62, 0.78)),
                (
                    "head",
                    [
                        (0.62, 0.38),
                        (0.8, 0.4),
                        (0.8, 0.66),
                        (0.62, 0.68),
                        (0.62, 0.6),
                        (0.72, 0.6),
                        (0.72, 0.46),
                        (0.62, 0.46),
                    ],
                ),
            ],
            {"opening": (0.34, 0.31), "grip": (0.77, 0.53), "base": (0.46, 0.77), "wall": (0.31, 0.55)},
        ),
        "bottle": _cat(
            "bottle",
            [("body", rect(0.38, 0.42, 0.62, 0.88)), ("head", rect(0.46, 0.16, 0.54, 0.42))],
            {"opening": (0.5, 0.17), "grip": (0.5, 0.6), "base": (0.5, 0.87), "wall": (0.61, 0.7)},
        ),
        "kettle": _cat(
            "kettle",
            [
                ("body", ellipse(0.48, 0.6, 0.2, 0.18)),
                ("head", [(0.64, 0.6), (0.86, 0.38), (0.88, 0.42), (0.68, 0.7)]),
                ("wing", [(0.34, 0.44), (0.48, 0.22), (0.62, 0.44), (0.56, 0.44), (0.48, 0.3), (0.4, 0.44)]),
            ],
            {"opening": (0.87, 0.39), "grip": (0.48, 0.25), "base": (0.48, 0.77), "wall": (0.29, 0.6)},
        ),
    },
    "pound": {
        "hammer": _cat(
            "hammer",
            [("legs", rect(0.46, 0.3, 0.54, 0.9)), ("head", rect(0.28, 0.18, 0.72, 0.32))],
            {
                "striking_face": (0.71, 0.25),
                "grip": (0.5, 0.75),
                "handle_end": (0.5, 0.89),
                "head_back": (0.29, 0.25),
            },
        ),
        "mallet": _cat(
            "mallet",
            [("legs", rect(0.15, 0.47, 0.62, 0.53)), ("head", ellipse(0.74, 0.5, 0.12, 0.17))],
            {
                "striking_face": (0.74, 0.34),
                "grip": (0.3, 0.5),
                "handle_end": (0.16, 0.5),
                "head_back": (0.74, 0.66),
            },
        ),
        "wrench": _cat(
            "wrench",
            [
                ("legs", [(0.2, 0.78), (0.6, 0.38), (0.66, 0.44), (0.26, 0.84)]),
                ("head", [(0.56, 0.3), (0.72, 0.14), (0.86, 0.28), (0.7, 0.44)]),
            ],
            {
                "striking_face": (0.79, 0.21),
                "grip": (0.38, 0.64),
                "handle_end": (0.23, 0.81),
                "head_back": (0.63, 0.37),
            },
        ),
    },
}


@dataclass
class Instance:
    category: Category
    scale: float
    angle: float
    flip: bool
    offset: Point
    colors: dict[str, tuple[int, int, int]]

    def to_pixels(self, p: Point, size: int) -> Point:
        x, y = p
        if self.flip:
            x = 1.0 - x
        x, y = x - 0.5, y - 0.5
        c, s = math.cos(self.angle), math.sin(self.angle)
        x, y = self.scale * (c * x - s * y), self.scale * (s * x + c * y)
        return ((x + 0.5 + self.offset[0]) * size, (y + 0.5 + self.offset[1]) * size)

    def keypoints(self, size: int) -> dict[str, Point]:
        return {k: self.to_pixels(p, size) for k, p in self.category.keypoints.items()}


def random_instance(rng: random.Random, category: Category) -> Instance:
    scale = rng.uniform(0.7, 0.95)
    room = (1 - scale) / 2
    return Instance(
        category,
        scale,
        rng.uniform(-0.25, 0.25),
        rng.random() < 0.5,
        (rng.uniform(-room, room), rng.uniform(-room, room)),
        {slot: random_color(rng, 0, 200) for slot in ("body", "head", "wing", "legs")},
    )


def render(instance: Instance, size: int, background: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for slot, poly in instance.category.parts:
        draw.polygon(
            [instance.to_pixels(p, size) for p in poly], fill=instance.colors[slot], outline=(20, 20, 20)
        )
    return image
