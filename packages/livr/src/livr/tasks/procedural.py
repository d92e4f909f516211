"""Procedural image material shared by the generators: textured scenes, shapes, colours."""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star")

PALETTE = {
    "red": (220, 50, 50),
    "green": (40, 170, 70),
    "blue": (50, 90, 220),
    "yellow": (230, 200, 40),
    "purple": (150, 60, 190),
    "orange": (240, 130, 30),
}


def random_color(rng: random.Random, lo: int = 30, hi: int = 230) -> tuple[int, int, int]:
    return tuple(rng.randint(lo, hi) for _ in range(3))


def shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float = 0.0) -> list[tuple[float, float]]:
    """Vertices of a square / triangle / star centred at ``(cx, cy)`` with circumradius ``r``."""
    if kind == "square":
        pts = [(math.pi / 4 + k * math.pi / 2) for k in range(4)]
        return [(cx + r * math.cos(a + angle), cy + r * math.sin(a + angle)) for a in pts]
    if kind == "triangle":
        pts = [(-math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)]
        return [(cx + r * math.cos(a + angle), cy + r * math.sin(a + angle)) for a in pts]
    if kind == "star":
        out = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5 + angle
            rr = r if k % 2 == 0 else r * 0.45
            out.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return out
    raise ValueError(f"unknown polygon shape {kind!r}")


def draw_shape(
    draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, fill, angle: float = 0.0
):
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(shape_polygon(kind, cx, cy, r, angle), fill=fill)


def textured_scene(rng: random.Random, size: int, n_blobs: int = 14) -> Image.Image:
    """A colourful, locally distinctive image (smooth gradient plus random shapes).

    Distinct local structure everywhere makes correspondence and jigsaw questions answerable by
    looking, as in natural photographs.
    """
    nrng = np.random.default_rng(rng.getrandbits(32))
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack(
        [nrng.uniform(40, 200) + nrng.uniform(-60, 60) * xx + nrng.uniform(-60, 60) * yy for _ in range(3)],
        -1,
    )
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(n_blobs):
        kind = rng.choice(SHAPES)
        r = rng.uniform(0.05, 0.16) * size
        draw_shape(
            draw,
            kind,
            rng.uniform(0, size),
            rng.uniform(0, size),
            r,
            random_color(rng, 0, 255),
            rng.uniform(0, 6.3),
        )
    for _ in range(4):
        x0, y0 = rng.uniform(0, size), rng.uniform(0, size)
        draw.line(
            (x0, y0, x0 + rng.uniform(-size, size) / 2, y0 + rng.uniform(-size, size) / 2),
            fill=random_color(rng, 0, 255),
            width=max(1, size // 40),
        )
    return image
