"""Semantic correspondence (SPair-71k): which of four marked points is the same part as REF? 4-way.

SPair-71k layout: ``<root>/PairAnnotation/{trn,val,test}/*.json``, one pair per file with
``src_imname``, ``trg_imname``, ``category``, ``src_kps`` and ``trg_kps`` (index-aligned
``[x, y]`` lists); images in ``<root>/JPEGImages/<category>/<imname>``.
"""

from __future__ import annotations

import math
import random

from livr.data import Example
from livr.tasks.common import (
    LETTERS,
    bad_annotation,
    balanced_slots,
    correspondence_options,
    keypoint_example,
    limit_and_shuffle,
    mc_question,
    nearest,
    normalize_split,
    open_image,
    point_list,
    read_json,
    require_dir,
    shrink,
)
from livr.tasks.parts import SEMANTIC, random_instance, render
from livr.tasks.procedural import random_color

NAME = "semantic_correspondence"
SPAIR_SPLITS = {"train": "trn", "val": "val", "test": "test"}


def question(category: str) -> str:
    return mc_question(
        f"Both images show a {category}. A point on the first {category} is circled and labelled REF; four points "
        "labelled A, B, C and D are circled on the second. Which point is on the same part of the object as REF?",
        correspondence_options(4),
    )


def generate(n: int, *, seed: int = 0, image_size: int = 96) -> list[Example]:
    """Two instances of one procedural category (pose, size, flip, colours differ); REF on a named keypoint."""
    rng = random.Random(f"{NAME}:{seed}")  # per-task stream: equal seeds give unrelated images across tasks
    examples = []
    for slot in balanced_slots(n, 4, rng):
        category = SEMANTIC[rng.choice(sorted(SEMANTIC))]
        inst = [random_instance(rng, category) for _ in range(2)]
        images = [render(i, image_size, random_color(rng, 200, 255)) for i in inst]
        kps = [i.keypoints(image_size) for i in inst]
        name = rng.choice(sorted(category.keypoints))
        pool = [p for k, p in kps[1].items() if k != name]
        meta = {
            "task": NAME,
            "source": "generated",
            "category": category.name,
            "keypoints": [dict(k) for k in kps],
        }
        examples.append(
            keypoint_example(
                rng,
                images[0],
                images[1],
                kps[0][name],
                kps[1][name],
                pool,
                slot,
                question(category.name),
                meta,
            )
        )
    return examples


def solve(example: Example) -> str:
    """Names the first object's keypoint under REF and picks the candidate on the second object's keypoint of that name."""
    first, second = example.meta["keypoints"]
    ref = example.meta["ref"]
    name = min(first, key=lambda k: math.dist(first[k], ref))
    return LETTERS[nearest(second[name], example.meta["candidates"])]


def load(root, split: str, *, limit: int | None = 1000, seed: int = 0) -> list[Example]:
    """SPair-71k pairs with at least one shared keypoint; REF is a random shared keypoint."""
    root = require_dir(root, "SPair-71k root")
    folder = require_dir(
        root / "PairAnnotation" / SPAIR_SPLITS[normalize_split(split)], "SPair-71k pair annotations"
    )
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"SPair-71k: no pair annotation *.json files in {folder}")
    chosen = limit_and_shuffle(files, limit, seed)
    rng = random.Random(seed + 1)
    examples = []
    for path, slot in zip(chosen, balanced_slots(len(chosen), 4, rng), strict=True):
        ann = read_json(path)
        if not isinstance(ann, dict):
            raise bad_annotation(path, "expected a JSON object")
        for key in ("src_imname", "trg_imname", "category"):
            if not isinstance(ann.get(key), str):
                raise bad_annotation(path, f"missing or non-string {key!r}")
        src, trg = (
            point_list(ann.get("src_kps"), path, "src_kps"),
            point_list(ann.get("trg_kps"), path, "trg_kps"),
        )
        if len(src) != len(trg) or not src:
            raise bad_annotation(
                path, f"src_kps ({len(src)}) and trg_kps ({len(trg)}) must be equal, non-empty lists"
            )
        images = root / "JPEGImages" / ann["category"]
        (first, s1), (second, s2) = (
            shrink(open_image(images / ann[k])) for k in ("src_imname", "trg_imname")
        )
        for (x, y), im, s, key in [(p, first, s1, "src_kps") for p in src] + [
            (p, second, s2, "trg_kps") for p in trg
        ]:
            if not (-1 <= x * s <= im.width + 1 and -1 <= y * s <= im.height + 1):
                raise bad_annotation(path, f"{key} point ({x}, {y}) lies outside its image")
        k = rng.randrange(len(src))
        pool = [(x * s2, y * s2) for j, (x, y) in enumerate(trg) if j != k]
        ref, true = (src[k][0] * s1, src[k][1] * s1), (trg[k][0] * s2, trg[k][1] * s2)
        meta = {
            "task": NAME,
            "source": "spair-71k",
            "pair": path.name,
            "category": ann["category"],
            "keypoint": k,
        }
        examples.append(
            keypoint_example(rng, first, second, ref, true, pool, slot, question(ann["category"]), meta)
        )
    return examples
