"""Art style (BLINK-style, ArtBench-10): which of two paintings shares the reference's style? 2-way.

ArtBench-10 is distributed as class folders (one per style, e.g. ``baroque/``, ``ukiyo_e/``).
Accepted layouts: ``<root>/{train,test}/<style>/*.jpg`` (the ImageFolder release; ``val`` is a
fixed tenth of ``train``) or ``<root>/<style>/*.jpg`` (fixed 70/10/20 split by file name).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from livr.data import Example
from livr.tasks.common import (
    balanced_slots,
    limit_and_shuffle,
    mc_question,
    normalize_split,
    open_image,
    place,
    require_dir,
    shrink,
    split_by_name,
    stable_bucket,
)
from livr.tasks.procedural import random_color

NAME = "art_style"
QUESTION = mc_question(
    "The first image is the reference. Which of the next two images shares the same art style as the reference?",
    ("the second image", "the third image"),
)
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp"}
STYLES = ("stripes", "dots", "checker", "rings", "waves", "mosaic")


def render_style(style: str, rng: random.Random, size: int) -> Image.Image:
    """One picture of a procedural style; palette, scale, angle and position vary per call."""
    nrng = np.random.default_rng(rng.getrandbits(32))
    palette = np.array([random_color(rng, 0, 255) for _ in range(3)], dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    period = rng.uniform(0.12, 0.25) * size
    if style == "stripes":
        idx = np.floor(u / period * 2).astype(int) % 3
        out = palette[idx]
    elif style == "dots":
        gu, gv = (u % period) - period / 2, (v % period) - period / 2
        out = np.where((gu**2 + gv**2 < (0.3 * period) ** 2)[..., None], palette[0], palette[1])
    elif style == "checker":
        idx = (np.floor(u / period) + np.floor(v / period)).astype(int) % 2
        out = palette[idx]
    elif style == "rings":
        cx, cy = nrng.uniform(0, size, 2)
        idx = np.floor(np.hypot(xx - cx, yy - cy) / (period / 2)).astype(int) % 3
        out = palette[idx]
    elif style == "waves":
        t = 0.5 + 0.5 * np.sin(u / period * 2 * np.pi + rng.uniform(1, 3) * np.sin(v / period * np.pi))
        out = palette[0] * t[..., None] + palette[1] * (1 - t[..., None])
    elif style == "mosaic":
        image = Image.new("RGB", (size, size), tuple(int(c) for c in palette[2]))
        draw = ImageDraw.Draw(image)
        for _ in range(40):
            x, y = rng.uniform(-0.1, 1) * size, rng.uniform(-0.1, 1) * size
            w, h = rng.uniform(0.05, 0.25) * size, rng.uniform(0.05, 0.25) * size
            draw.rectangle((x, y, x + w, y + h), fill=random_color(rng, 0, 255), outline=(0, 0, 0))
        return image
    else:
        raise ValueError(f"unknown style {style!r}")
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def generate(n: int, *, seed: int = 0, image_size: int = 96) -> list[Example]:
    """Reference and matching picture of one procedural style, the distractor of another."""
    rng = random.Random(f"{NAME}:{seed}")  # per-task stream: equal seeds give unrelated images across tasks
    examples = []
    for slot in balanced_slots(n, 2, rng):
        style, other = rng.sample(STYLES, 2)
        ref, same, diff = (render_style(s, rng, image_size) for s in (style, style, other))
        styles = place(style, [other], slot)
        meta = {"task": NAME, "source": "generated", "reference_style": style, "candidate_styles": styles}
        examples.append(Example([ref, *place(same, [diff], slot)], QUESTION, "AB"[slot], meta))
    return examples


def solve(example: Example) -> str:
    """The candidate whose recorded style is the reference's."""
    return "AB"[example.meta["candidate_styles"].index(example.meta["reference_style"])]


def _images_by_style(folder: Path, keep) -> dict[str, list[Path]]:
    out = {}
    for style_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in style_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS and keep(p))
        if files:
            out[style_dir.name] = files
    return out


def load(root, split: str, *, limit: int | None = 1000, seed: int = 0) -> list[Example]:
    """Triplets (reference, same-style painting, other-style painting) from the style folders."""
    root = require_dir(root, "ArtBench-10 root")
    split = normalize_split(split)
    if (root / "train").is_dir() and (root / "test").is_dir():
        if split == "test":
            styles = _images_by_style(root / "test", lambda p: True)
        else:
            styles = _images_by_style(
                root / "train", lambda p: (stable_bucket(p.name) == 0) == (split == "val")
            )
    else:
        styles = _images_by_style(root, lambda p: split_by_name(p.name, split))
    usable = [s for s, files in styles.items() if len(files) >= 2]
    if not usable or len(styles) < 2:
        raise ValueError(
            f"ArtBench-10 root {root} (split {split!r}) needs at least two style folders, one with two or more images; "
            f"found { ({s: len(f) for s, f in styles.items()}) }"
        )
    rng = random.Random(seed)
    refs = limit_and_shuffle([(s, p) for s in usable for p in styles[s]], limit, seed)  # each image once
    examples = []
    for (style, ref_path), slot in zip(refs, balanced_slots(len(refs), 2, rng), strict=True):
        same_path = rng.choice([p for p in styles[style] if p != ref_path])
        other_style = rng.choice([s for s in styles if s != style])
        other_path = rng.choice(styles[other_style])
        ref, same, diff = (shrink(open_image(p))[0] for p in (ref_path, same_path, other_path))
        meta = {
            "task": NAME,
            "source": "artbench-10",
            "reference_style": style,
            "candidate_styles": place(style, [other_style], slot),
            "files": [str(p.relative_to(root)) for p in (ref_path, *place(same_path, [other_path], slot))],
        }
        examples.append(Example([ref, *place(same, [diff], slot)], QUESTION, "AB"[slot], meta))
    return examples
