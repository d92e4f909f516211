"""Relative reflectance (MID): is surface point A or B darker, ignoring lighting, or about the same? 3-way.

MID (Murmann et al., ICCV 2019) scene folders hold 25 photographs under different flash
directions, ``dir_<k>_mip2.jpg`` (k = 0..24, the "mip2" resolution), plus ``materials_mip2.png``
and ``probes/``. The reflectance ground truth is the albedo of the MIDIntrinsics extension
(``<scene>/albedo.png``, saved next to the photographs). Layout: ``<root>/{train,test}/<scene>/``
(``val`` a fixed tenth of train) or ``<root>/<scene>/`` (fixed 70/10/20 split by scene name).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
from PIL import Image

from livr.data import Example
from livr.tasks.common import (
    balanced_slots,
    draw_marker,
    mc_question,
    normalize_split,
    open_image,
    require_dir,
    shrink,
    split_by_name,
    stable_bucket,
)

NAME = "relative_reflectance"
QUESTION = mc_question(
    "Two points are circled on the image and labelled A and B. Considering only the colour of the surface itself "
    "(its reflectance), not the lighting or shadows, which point is darker, or are they about the same?",
    ("A is darker", "B is darker", "About the same"),
)
SAME_RATIO = 1.1  # albedo ratios within this count as "about the same"
DARKER_RATIO = 1.3  # a "darker" answer needs at least this ratio; in-between pairs are ambiguous and skipped


def label(albedo_a: float, albedo_b: float) -> int | None:
    """0: A darker, 1: B darker, 2: about the same, None: too close to call either way."""
    ratio = (albedo_a + 1e-4) / (albedo_b + 1e-4)
    if 1 / SAME_RATIO <= ratio <= SAME_RATIO:
        return 2
    if ratio <= 1 / DARKER_RATIO:
        return 0
    if ratio >= DARKER_RATIO:
        return 1
    return None


def _mark(image: Image.Image, a, b) -> Image.Image:
    image = image.copy()
    draw_marker(image, a, "A", (230, 40, 40))
    draw_marker(image, b, "B", (40, 90, 230))
    return image


LEVELS = (0.15, 0.25, 0.4, 0.6, 0.85)


def patchwork_scene(rng: random.Random, size: int) -> tuple[Image.Image, np.ndarray]:
    """(rendered image, albedo map): a 3x3 patchwork of albedos under a light gradient and a cast shadow.

    pixel = albedo x shading, so the shading often reverses the observed brightness order.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tint = np.array([rng.uniform(0.7, 1.0) for _ in range(3)], dtype=np.float32)
    cuts_x = sorted(rng.uniform(0.25, 0.4) + k * 0.33 for k in range(2))
    cuts_y = sorted(rng.uniform(0.25, 0.4) + k * 0.33 for k in range(2))
    cell_albedo = [[rng.choice(LEVELS) for _ in range(3)] for _ in range(3)]
    ix = np.searchsorted(np.array(cuts_x), xx)
    iy = np.searchsorted(np.array(cuts_y), yy)
    albedo = np.array(cell_albedo, dtype=np.float32)[iy, ix]
    phi = rng.uniform(0, 2 * math.pi)
    shading = 0.55 + 0.45 * (np.cos(phi) * (xx - 0.5) + np.sin(phi) * (yy - 0.5)) * 2
    sx0, sy0 = rng.uniform(0, 0.6), rng.uniform(0, 0.6)
    sw, sh = rng.uniform(0.25, 0.4), rng.uniform(0.25, 0.4)
    shadow = (xx > sx0) & (xx < sx0 + sw) & (yy > sy0) & (yy < sy0 + sh)
    shading = np.clip(np.where(shadow, shading * 0.45, shading), 0.1, 1.0)
    radiance = np.clip(albedo * shading / max(LEVELS), 0, 1)[..., None] * tint
    image = Image.fromarray((radiance ** (1 / 2.2) * 255).astype(np.uint8))  # sRGB-like display gamma
    return image, albedo


def generate(n: int, *, seed: int = 0, image_size: int = 96) -> list[Example]:
    """Patchwork scenes (``patchwork_scene``); two marked points per scene with the example's answer."""
    rng = random.Random(f"{NAME}:{seed}")  # per-task stream: equal seeds give unrelated images across tasks
    s = image_size
    examples = []
    for slot in balanced_slots(n, 3, rng):
        d = max(1, round(0.03 * s))  # points stay this far from a patch edge
        margin = max(0.08 * s, d + 1)
        tries = 0
        while True:  # draw point pairs until their albedo relation is this example's answer
            if tries % 500 == 0:  # a scene without such a pair (e.g. one albedo everywhere): draw another
                image, albedo = patchwork_scene(rng, s)
            tries += 1
            a, b = ((rng.uniform(margin, s - margin), rng.uniform(margin, s - margin)) for _ in range(2))
            if math.dist(a, b) < 0.25 * s:
                continue
            va, vb = (float(albedo[int(p[1]), int(p[0])]) for p in (a, b))
            near_edge = any(
                len(
                    {
                        float(albedo[int(y), int(x)])
                        for x in (p[0] - d, p[0] + d)
                        for y in (p[1] - d, p[1] + d)
                    }
                )
                > 1
                for p in (a, b)
            )
            if not near_edge and label(va, vb) == slot:
                break
        meta = {"task": NAME, "source": "generated", "points": [list(a), list(b)], "albedo": [va, vb]}
        examples.append(Example([_mark(image, a, b)], QUESTION, "ABC"[slot], meta))
    return examples


def solve(example: Example) -> str:
    """Compares the recorded albedos of the two marked surface points."""
    return "ABC"[label(*example.meta["albedo"])]


def _scenes(root: Path, split: str) -> list[Path]:
    split = normalize_split(split)
    if (root / "train").is_dir() and (root / "test").is_dir():
        if split == "test":
            return sorted(p for p in (root / "test").iterdir() if p.is_dir())
        keep = [p for p in (root / "train").iterdir() if p.is_dir()]
        return sorted(p for p in keep if (stable_bucket(p.name) == 0) == (split == "val"))
    return sorted(p for p in root.iterdir() if p.is_dir() and split_by_name(p.name, split))


def _luminance(image: Image.Image) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32) / 255.0
    return a @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def load(root, split: str, *, limit: int | None = 1000, seed: int = 0) -> list[Example]:
    """One lighting of a scene, two points with a clear albedo relation (balanced over the three answers)."""
    root = require_dir(root, "MID root")
    scenes = _scenes(root, split)
    if not scenes:
        return []
    rng = random.Random(seed)
    total = len(scenes) if limit is None else limit
    examples = []
    slots = balanced_slots(total, 3, rng)
    order = scenes[:]
    rng.shuffle(order)
    attempts = 0
    while len(examples) < total:
        attempts += 1
        if attempts > 20 * total + 20:
            raise ValueError(
                f"MID root {root}: could not find point pairs for every answer in {len(scenes)} scene(s) "
                f"(made {len(examples)} of {total}); the albedo images may be uniform"
            )
        scene = order[attempts % len(order)]
        photos = sorted(scene.glob("dir_*_mip2.*"))
        photos = [p for p in photos if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
        if not photos:
            raise FileNotFoundError(f"MID scene {scene} has no dir_<k>_mip2.jpg photographs")
        albedo_path = scene / "albedo.png"
        if not albedo_path.is_file():
            raise FileNotFoundError(
                f"MID scene {scene}: reflectance file {albedo_path} (MIDIntrinsics albedo) does not exist"
            )
        photo, _ = shrink(open_image(rng.choice(photos)))
        albedo_image = open_image(albedo_path)
        aspect = (albedo_image.width * photo.height) / (albedo_image.height * photo.width)
        if abs(aspect - 1) > 0.02:  # a mismatched albedo would put the points on the wrong surfaces
            raise ValueError(
                f"{albedo_path} is {albedo_image.width}x{albedo_image.height}, a different shape from the photographs "
                f"of scene {scene}"
            )
        albedo = _luminance(albedo_image.resize(photo.size, Image.BILINEAR))
        want = slots[len(examples)]
        s = min(photo.size)
        margin = 0.06 * s
        for _ in range(300):
            a, b = (
                (rng.uniform(margin, photo.width - margin), rng.uniform(margin, photo.height - margin))
                for _ in range(2)
            )
            if math.dist(a, b) < 0.15 * s:
                continue
            r = max(1, round(0.01 * s))  # a small window: one pixel can sit on a texture edge
            va, vb = (
                float(np.median(albedo[int(p[1]) - r : int(p[1]) + r + 1, int(p[0]) - r : int(p[0]) + r + 1]))
                for p in (a, b)
            )
            if label(va, vb) == want:
                meta = {
                    "task": NAME,
                    "source": "mid",
                    "scene": scene.name,
                    "points": [list(a), list(b)],
                    "albedo": [va, vb],
                }
                examples.append(Example([_mark(photo, a, b)], QUESTION, "ABC"[want], meta))
                break
    return examples
