"""Visual correspondence (HPatches): which of four marked points in the second view matches REF? 4-way.

HPatches layout: ``<root>/<sequence>/{1..6}.ppm`` plus ``H_1_2 ... H_1_6`` (3x3 homographies,
whitespace-separated, mapping pixels of image 1 to image k); ``i_*`` sequences change the
lighting, ``v_*`` the viewpoint. The benchmark holds out whole sequences: a fixed 70/10/20
train/val/test assignment by sequence name.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from livr.data import Example
from livr.tasks.common import (
    LETTERS,
    balanced_slots,
    candidate_points,
    correspondence_options,
    mark_pair,
    mc_question,
    nearest,
    open_image,
    place,
    require_dir,
    shrink,
    split_by_name,
)
from livr.tasks.procedural import textured_scene

NAME = "visual_correspondence"
QUESTION = mc_question(
    "A point is circled on the first image and labelled REF. The second image shows the same scene from another "
    "viewpoint or under other lighting, with four circled points labelled A, B, C and D. Which point on the second "
    "image is the same scene point as REF?",
    correspondence_options(4),
)
MIN_SEPARATION = 0.15  # distractors at least this fraction of the shorter side from the answer and each other
MARGIN = 0.08


def apply_h(h: np.ndarray, p) -> tuple[float, float]:
    v = np.asarray(h, dtype=np.float64) @ np.array([p[0], p[1], 1.0])
    return float(v[0] / v[2]), float(v[1] / v[2])


def homography_from_corners(src, dst) -> np.ndarray:
    """The 3x3 homography taking four ``src`` points to four ``dst`` points (direct linear solve)."""
    a, b = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.extend([u, v])
    h = np.linalg.solve(np.array(a, dtype=np.float64), np.array(b, dtype=np.float64))
    return np.append(h, 1.0).reshape(3, 3)


def warp(image: Image.Image, h: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """``image`` seen through ``h`` (PIL wants the output-to-input map)."""
    inv = np.linalg.inv(h)
    inv = inv / inv[2, 2]
    return image.transform(
        size, Image.PERSPECTIVE, tuple(inv.ravel()[:8]), Image.BICUBIC, fillcolor=(0, 0, 0)
    )


def _inside(p, size, margin) -> bool:
    return margin <= p[0] <= size[0] - margin and margin <= p[1] <= size[1] - margin


def _example(rng, first, second, h, slot, meta) -> Example | None:
    """Marks a random REF point of ``first`` whose match lands inside ``second``; None if none found."""
    margin = MARGIN * min(second.size)
    for _ in range(200):
        ref = (rng.uniform(margin, first.width - margin), rng.uniform(margin, first.height - margin))
        true = apply_h(h, ref)
        if _inside(true, second.size, margin):
            break
    else:
        return None
    sep = MIN_SEPARATION * min(second.size)
    cands = place(true, candidate_points(rng, true, second.size, 3, sep, margin), slot)
    a, b = mark_pair(first, second, ref, cands)
    meta = {
        **meta,
        "task": NAME,
        "ref": list(ref),
        "candidates": [list(c) for c in cands],
        "homography": h.tolist(),
    }
    return Example([a, b], QUESTION, LETTERS[slot], meta)


def generate(n: int, *, seed: int = 0, image_size: int = 96) -> list[Example]:
    """A textured scene and a perspective-warped, re-lit copy (corners moved by up to 15 %)."""
    rng = random.Random(f"{NAME}:{seed}")  # per-task stream: equal seeds give unrelated images across tasks
    s = image_size
    examples = []
    for slot in balanced_slots(n, 4, rng):
        scene = textured_scene(rng, s)
        while True:
            corners = [(0, 0), (s, 0), (s, s), (0, s)]
            moved = [(x + rng.uniform(-0.15, 0.15) * s, y + rng.uniform(-0.15, 0.15) * s) for x, y in corners]
            h = homography_from_corners(corners, moved)
            second = ImageEnhance.Brightness(warp(scene, h, (s, s))).enhance(rng.uniform(0.7, 1.3))
            ex = _example(rng, scene, second, h, slot, {"source": "generated"})
            if ex is not None:
                break
        examples.append(ex)
    return examples


def solve(example: Example) -> str:
    """Maps REF through the recorded homography and picks the nearest candidate."""
    true = apply_h(np.array(example.meta["homography"]), example.meta["ref"])
    return LETTERS[nearest(true, example.meta["candidates"])]


def read_homography(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"HPatches homography file {path} does not exist")
    try:
        values = [float(v) for v in path.read_text().split()]
    except ValueError as exc:
        raise ValueError(f"bad annotation in {path}: not a list of numbers ({exc})") from exc
    if len(values) != 9:
        raise ValueError(
            f"bad annotation in {path}: expected 9 numbers (a 3x3 homography), found {len(values)}"
        )
    h = np.array(values).reshape(3, 3)
    if not np.isfinite(h).all() or abs(np.linalg.det(h)) < 1e-12:
        raise ValueError(f"bad annotation in {path}: the homography is not finite and invertible")
    return h


def _find_image(folder: Path, index: int) -> Path:
    for ext in (".ppm", ".png", ".jpg"):
        if (folder / f"{index}{ext}").is_file():
            return folder / f"{index}{ext}"
    raise FileNotFoundError(f"HPatches image {folder / str(index)}.ppm does not exist")


def load(root, split: str, *, limit: int | None = 1000, seed: int = 0) -> list[Example]:
    """Pairs (1, k), k = 2..6, of the split's sequences; several REF points per pair when ``limit`` asks for more."""
    root = require_dir(root, "HPatches root")
    sequences = sorted(p for p in root.iterdir() if p.is_dir() and p.name[:2] in ("i_", "v_"))
    if not sequences:
        raise FileNotFoundError(f"HPatches root {root} has no i_* / v_* sequence folders")
    pairs = [(seq, k) for seq in sequences if split_by_name(seq.name, split) for k in range(2, 7)]
    if not pairs:
        return []
    rng = random.Random(seed)
    rng.shuffle(pairs)
    total = len(pairs) if limit is None else limit
    slots = balanced_slots(total, 4, rng)

    @functools.lru_cache(maxsize=12)  # a full HPatches split does not fit in memory decoded
    def image(seq: Path, k: int) -> tuple[Image.Image, float]:
        return shrink(open_image(_find_image(seq, k)))

    examples = []
    i = 0
    while len(examples) < total and i < 20 * total:
        seq, k = pairs[i % len(pairs)]
        i += 1
        (first, s1), (second, sk) = image(seq, 1), image(seq, k)
        h = read_homography(seq / f"H_1_{k}")
        h = np.diag([sk, sk, 1.0]) @ h @ np.diag([1 / s1, 1 / s1, 1.0])  # into the shrunk pixel grids
        ex = _example(
            rng,
            first,
            second,
            h,
            slots[len(examples)],
            {"source": "hpatches", "sequence": seq.name, "pair": [1, k]},
        )
        if ex is not None:
            examples.append(ex)
    return examples
