"""Pieces every task shares: option letters, BLINK-style questions, markers, balanced answers, file checks."""

from __future__ import annotations

import functools
import json
import math
import os
import random
import zlib
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from livr.data import load_image

LETTERS = ("A", "B", "C", "D", "E", "F")
ANSWER_SUFFIX = "Answer with the option's letter."
COUNT_SUFFIX = "Answer with a number."

# Longest image side of examples built from real data: keeps markers legible after the VLM's
# own resizing and keeps written datasets small.
REAL_MAX_SIDE = 512

MARKER_COLORS = ((230, 40, 40), (40, 90, 230), (20, 160, 60), (200, 120, 0), (150, 40, 200))


def options_text(options: Sequence[str]) -> str:
    """``(A) first (B) second ...``: the way BLINK lists the options."""
    return " ".join(f"({LETTERS[i]}) {text}" for i, text in enumerate(options))


def mc_question(prompt: str, options: Sequence[str]) -> str:
    """A multiple-choice question: the prompt, the lettered options, the answer instruction."""
    return f"{prompt} Select from the following options. {options_text(options)} {ANSWER_SUFFIX}"


def balanced_slots(n: int, k: int, rng: random.Random) -> list[int]:
    """``n`` correct-option positions in ``range(k)``, each used ``n // k`` or ``n // k + 1`` times, shuffled.

    Drawing the position independently per example leaves small sets unbalanced; a model that
    always answers "A" must score chance, not more.
    """
    slots = [i % k for i in range(n)]
    rng.shuffle(slots)
    return slots


def place(correct, distractors: Sequence, slot: int) -> list:
    """The options in display order with ``correct`` at index ``slot``."""
    out = list(distractors)
    out.insert(slot, correct)
    return out


@functools.lru_cache(maxsize=32)  # loading the FreeType font dominates drawing time otherwise
def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def draw_marker(
    image: Image.Image, xy: tuple[float, float], label: str, color: tuple[int, int, int] = MARKER_COLORS[0]
) -> None:
    """A ring around ``xy`` with ``label`` beside it (BLINK's labelled-circle markers), drawn in place."""
    draw = ImageDraw.Draw(image)
    side = min(image.size)
    r = max(3, round(side * 0.035))
    x, y = xy
    draw.ellipse((x - r, y - r, x + r, y + r), outline=color, width=max(1, r // 3))
    draw.ellipse(
        (x - r + r // 3 + 1, y - r + r // 3 + 1, x + r - r // 3 - 1, y + r - r // 3 - 1), outline="white"
    )
    f = font(max(8, round(side * 0.07)))
    width = draw.textlength(label, font=f)
    tx = x + r + 1 if x + r + 1 + width < image.width else max(0, x - r - 1 - width)  # keep the label inside
    ty = min(max(0, y - r - side * 0.07), image.height - side * 0.08)
    box = draw.textbbox((tx, ty), label, font=f)
    draw.rectangle(box, fill="white")
    draw.text((tx, ty), label, fill=color, font=f)


def draw_box(image: Image.Image, box: Sequence[float], label: str, color: tuple[int, int, int]) -> None:
    """An outlined box ``(x0, y0, x1, y1)`` labelled at its top-left corner, drawn in place."""
    draw = ImageDraw.Draw(image)
    side = min(image.size)
    draw.rectangle(tuple(box), outline=color, width=max(1, round(side / 60)))
    f = font(max(8, round(side * 0.07)))
    tx, ty = max(0, box[0]), max(0, box[1] - side * 0.08)
    bb = draw.textbbox((tx, ty), label, font=f)
    draw.rectangle(bb, fill=color)
    draw.text((tx, ty), label, fill="white", font=f)


def shrink(image: Image.Image, max_side: int = REAL_MAX_SIDE) -> tuple[Image.Image, float]:
    """``image`` scaled so its longer side is at most ``max_side``; returns it and the scale factor."""
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.BICUBIC)
    return image, scale


def far_enough(p: Sequence[float], others: Sequence[Sequence[float]], min_dist: float) -> bool:
    return all(math.dist(p, q) >= min_dist for q in others)


def nearest(point: Sequence[float], candidates: Sequence[Sequence[float]]) -> int:
    return min(range(len(candidates)), key=lambda i: math.dist(point, candidates[i]))


def stable_bucket(name: str, buckets: int = 10) -> int:
    """A split bucket that depends only on ``name`` (not on Python's randomised ``hash``)."""
    return zlib.crc32(name.encode()) % buckets


def split_by_name(name: str, split: str) -> bool:
    """Deterministic 70/10/20 train/val/test assignment by name, for datasets without official splits."""
    b = stable_bucket(name)
    return {"train": b >= 3, "val": b == 2, "test": b < 2}[normalize_split(split)]


def normalize_split(split: str) -> str:
    aliases = {"train": "train", "trn": "train", "val": "val", "validation": "val", "test": "test"}
    if split not in aliases:
        raise ValueError(f"unknown split {split!r}; expected one of train, val, test")
    return aliases[split]


def require_dir(path: os.PathLike | str, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: folder {path} does not exist")
    return path


def require_file(path: os.PathLike | str, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: file {path} does not exist")
    return path


def read_json(path: os.PathLike | str):
    path = require_file(path, "annotation")
    try:
        with open(path) as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def bad_annotation(path: os.PathLike | str, problem: str) -> ValueError:
    return ValueError(f"bad annotation in {path}: {problem}")


def point_list(value, path, key: str) -> list[tuple[float, float]]:
    """``[[x, y], ...]`` validated, with an error naming the file and the key."""
    if not isinstance(value, list):
        raise bad_annotation(path, f"{key!r} must be a list of [x, y] points")
    out = []
    for i, p in enumerate(value):
        if (
            not isinstance(p, (list, tuple))
            or len(p) < 2
            or not all(isinstance(c, (int, float)) and math.isfinite(c) for c in p[:2])
        ):
            raise bad_annotation(path, f"{key}[{i}] = {p!r} is not an [x, y] point")
        out.append((float(p[0]), float(p[1])))
    return out


def open_image(path: os.PathLike | str) -> Image.Image:
    """``livr.data.load_image`` (RGB, errors naming the file)."""
    return load_image(path)


def limit_and_shuffle(items: list, limit: int | None, seed: int) -> list:
    """A seeded shuffle of ``items`` cut to ``limit`` (so a limited load is a uniform sample)."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items if limit is None else items[:limit]


def candidate_points(
    rng: random.Random,
    true_point: Sequence[float],
    size: tuple[int, int],
    k: int,
    min_dist: float,
    margin: float,
    pool: Sequence[Sequence[float]] = (),
) -> list[tuple[float, float]]:
    """``k`` distractor points at least ``min_dist`` from the true point and from each other.

    Taken from ``pool`` (e.g. other annotated keypoints) first, then uniformly inside the image.
    """
    chosen: list[tuple[float, float]] = []
    pool = list(pool)
    rng.shuffle(pool)
    for p in pool:
        if len(chosen) == k:
            break
        if far_enough(p, [true_point, *chosen], min_dist):
            chosen.append((float(p[0]), float(p[1])))
    w, h = size
    tries = 0
    while len(chosen) < k:
        tries += 1
        d = min_dist if tries < 2000 else min_dist / 2
        p = (rng.uniform(margin, w - margin), rng.uniform(margin, h - margin))
        if far_enough(p, [true_point, *chosen], d):
            chosen.append(p)
        if tries > 10_000:
            raise RuntimeError("could not place distractor points; image too small for the marker spacing")
    return chosen


def mark_pair(
    first: Image.Image,
    second: Image.Image,
    ref: Sequence[float],
    candidates: Sequence[Sequence[float]],
) -> tuple[Image.Image, Image.Image]:
    """Copies of the two images with REF circled on the first and A, B, C, ... on the second."""
    first, second = first.copy(), second.copy()
    draw_marker(first, ref, "REF", MARKER_COLORS[0])
    for i, p in enumerate(candidates):
        draw_marker(second, p, LETTERS[i], MARKER_COLORS[0])
    return first, second


def correspondence_options(k: int = 4) -> tuple[str, ...]:
    return tuple(f"Point {LETTERS[i]}" for i in range(k))


def keypoint_example(
    rng: random.Random,
    first: Image.Image,
    second: Image.Image,
    ref: Sequence[float],
    true: Sequence[float],
    pool: Sequence[Sequence[float]],
    slot: int,
    question: str,
    meta: dict,
    min_separation: float = 0.12,
):
    """A 4-way marked-point question: REF on ``first``; ``true`` and three distractors on ``second``.

    Distractors come from ``pool`` (the other annotated keypoints, which look like plausible
    answers) and, when too few are far enough apart, from random points.
    """
    from livr.data import Example

    sep = min_separation * min(second.size)
    margin = 0.04 * min(second.size)
    distractors = candidate_points(rng, true, second.size, 3, sep, margin, pool)
    candidates = place((float(true[0]), float(true[1])), distractors, slot)
    a, b = mark_pair(first, second, ref, candidates)
    meta = {**meta, "ref": [float(ref[0]), float(ref[1])], "candidates": [list(c) for c in candidates]}
    return Example([a, b], question, LETTERS[slot], meta)
