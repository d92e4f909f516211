"""Functional correspondence (FunKPoint): which marked point has REF's role for an action? 4-way.

FunKPoint (Lai et al., ICCV 2021) annotates images of objects from 20 categories for 10 actions
with keypoints that correspond by function across categories. We could not verify the file
layout of its release offline, so the loader reads one documented manifest, which a short
script can produce from any release::

    <root>/annotations.json = [{"image": "relative/path.jpg", "action": "pour", "category": "mug",
                                "keypoints": [[x, y] or null, ...]}, ...]

Keypoint lists of one action are index-aligned (point i has the same function on every
object); ``null`` marks a point not visible. Pairs join two images of one action and different
categories; images are split 70/10/20 by file name.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

from livr.data import Example
from livr.tasks.common import (
    LETTERS,
    bad_annotation,
    balanced_slots,
    correspondence_options,
    keypoint_example,
    mc_question,
    nearest,
    open_image,
    read_json,
    require_dir,
    shrink,
    split_by_name,
)
from livr.tasks.parts import FUNCTIONAL, random_instance, render
from livr.tasks.procedural import random_color

NAME = "functional_correspondence"


def question(action: str) -> str:
    return mc_question(
        f"The two images show different objects that can both be used to {action}. A point on the first object is "
        "circled and labelled REF; four points labelled A, B, C and D are circled on the second object. Which point "
        f"plays the same role as REF when the object is used to {action}?",
        correspondence_options(4),
    )


def generate(n: int, *, seed: int = 0, image_size: int = 96) -> list[Example]:
    """Two procedural objects of different categories sharing an action; keypoints named by role."""
    rng = random.Random(f"{NAME}:{seed}")  # per-task stream: equal seeds give unrelated images across tasks
    examples = []
    for slot in balanced_slots(n, 4, rng):
        action = rng.choice(sorted(FUNCTIONAL))
        cats = rng.sample(sorted(FUNCTIONAL[action]), 2)
        inst = [random_instance(rng, FUNCTIONAL[action][c]) for c in cats]
        images = [render(i, image_size, random_color(rng, 200, 255)) for i in inst]
        kps = [i.keypoints(image_size) for i in inst]
        role = rng.choice(sorted(kps[0]))
        pool = [p for k, p in kps[1].items() if k != role]
        meta = {"task": NAME, "source": "generated", "action": action, "categories": cats, "keypoints": kps}
        examples.append(
            keypoint_example(
                rng, images[0], images[1], kps[0][role], kps[1][role], pool, slot, question(action), meta
            )
        )
    return examples


def solve(example: Example) -> str:
    """The role of the first object's keypoint under REF, then the second object's keypoint with that role."""
    first, second = example.meta["keypoints"]
    ref = example.meta["ref"]
    role = min(first, key=lambda k: math.dist(first[k], ref))
    return LETTERS[nearest(second[role], example.meta["candidates"])]


def _read_manifest(root) -> list[dict]:
    path = root / "annotations.json"
    rows = read_json(path)
    if not isinstance(rows, list):
        raise bad_annotation(path, "expected a list of image entries")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not all(
            isinstance(row.get(k), str) for k in ("image", "action", "category")
        ):
            raise bad_annotation(path, f"entry {i} needs string 'image', 'action' and 'category'")
        kps = row.get("keypoints")
        if not isinstance(kps, list) or not kps:
            raise bad_annotation(path, f"entry {i} ({row['image']}): 'keypoints' must be a non-empty list")
        for j, p in enumerate(kps):
            ok = p is None or (
                isinstance(p, list)
                and len(p) == 2
                and all(isinstance(c, (int, float)) and math.isfinite(c) for c in p)
            )
            if not ok:
                raise bad_annotation(
                    path, f"entry {i} ({row['image']}): keypoints[{j}] = {p!r} is not [x, y] or null"
                )
    return rows


def load(root, split: str, *, limit: int | None = 1000, seed: int = 0) -> list[Example]:
    """Cross-category pairs of one action; REF is a keypoint visible on both objects."""
    root = require_dir(root, "FunKPoint root")
    rows = [r for r in _read_manifest(root) if split_by_name(r["image"], split)]
    by_action = defaultdict(list)
    for r in rows:
        by_action[r["action"]].append(r)
    pairs = [
        (a, b)
        for group in by_action.values()
        for a in group
        for b in group
        if a["category"] != b["category"]
        and any(p is not None and q is not None for p, q in zip(a["keypoints"], b["keypoints"], strict=False))
    ]
    rng = random.Random(seed)
    rng.shuffle(pairs)
    pairs = pairs if limit is None else pairs[:limit]
    examples = []
    for (a, b), slot in zip(pairs, balanced_slots(len(pairs), 4, rng), strict=True):
        (first, s1), (second, s2) = (shrink(open_image(root / r["image"])) for r in (a, b))
        shared = [
            j
            for j, (p, q) in enumerate(zip(a["keypoints"], b["keypoints"], strict=False))
            if p is not None and q is not None
        ]
        k = rng.choice(shared)
        ref = (a["keypoints"][k][0] * s1, a["keypoints"][k][1] * s1)
        true = (b["keypoints"][k][0] * s2, b["keypoints"][k][1] * s2)
        pool = [(q[0] * s2, q[1] * s2) for j, q in enumerate(b["keypoints"]) if q is not None and j != k]
        meta = {
            "task": NAME,
            "source": "funkpoint",
            "files": [a["image"], b["image"]],
            "action": a["action"],
            "keypoint": k,
        }
        examples.append(
            keypoint_example(rng, first, second, ref, true, pool, slot, question(a["action"]), meta)
        )
    return examples
