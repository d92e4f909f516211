"""Tiny datasets in each real task's on-disk format, drawn procedurally (no downloads).

``write_fixture(task, root)`` writes one; the tests run every real loader on them (and on
corrupted copies), and ``tools/prepare_livr_data.py`` is tested end to end on them. They show a
user the exact layout each loader expects. Images are 64-80 px, a few dozen files per task.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from livr.tasks import art_style, counting, reflectance, visual_correspondence
from livr.tasks.common import split_by_name, stable_bucket
from livr.tasks.parts import FUNCTIONAL, SEMANTIC, random_instance, render
from livr.tasks.procedural import SHAPES, draw_shape, random_color, textured_scene

SIZE = 72


def _names_covering_splits(prefix: str, per_split: int) -> list[str]:
    """Names whose fixed hash split puts at least ``per_split`` in each of train / val / test."""
    names, need = [], {"train": per_split, "val": per_split, "test": per_split}
    i = 0
    while any(need.values()):
        name = f"{prefix}{i}"
        i += 1
        for split in need:
            if need[split] and split_by_name(name, split):
                need[split] -= 1
                names.append(name)
    return names


def _pixmo(root: Path, rng: random.Random) -> None:
    (root / "images").mkdir(parents=True)
    for split in ("train", "validation", "test"):
        rows = []
        for i, ex in enumerate(counting.generate(8, seed=rng.randrange(10**6), image_size=SIZE)):
            data = ex.images[0].tobytes() + f"{split}{i}".encode()
            sha = hashlib.sha256(data).hexdigest()
            ex.images[0].save(root / "images" / f"{sha}.png")
            points = [{"x": s["x"], "y": s["y"]} for s in ex.meta["shapes"] if s["kind"] == ex.meta["target"]]
            rows.append(
                {
                    "image_url": f"https://example.invalid/{sha}.png",
                    "image_sha256": sha,
                    "count": int(ex.answer),
                    "points": points,
                    "label": ex.meta["target"] + "s",
                }
            )
        rows.append({**rows[0], "count": 12})  # outside the paper's 2-10 range: the loader must drop it
        with open(root / f"{split}.jsonl", "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)


def _coco(root: Path, rng: random.Random) -> None:
    (root / "annotations").mkdir(parents=True)
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)]
    for image_set, n in (("train", 6), ("val", 12)):
        folder = root / f"{image_set}2017"
        folder.mkdir()
        images, annotations = [], []
        for i in range(n):
            image_id = 1000 * (image_set == "val") + i + 1
            image = textured_scene(rng, SIZE, n_blobs=3)
            draw = ImageDraw.Draw(image)
            cat = rng.randrange(len(SHAPES))
            r = rng.uniform(0.15, 0.25) * SIZE
            cx, cy = (rng.uniform(r + 1, SIZE - r - 1) for _ in range(2))
            draw_shape(draw, "circle", cx, cy, r, random_color(rng, 0, 120))
            name = f"{image_id:012d}.jpg"
            image.save(folder / name, quality=92)
            images.append({"id": image_id, "file_name": name, "width": SIZE, "height": SIZE})
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat + 1,
                    "bbox": [round(cx - r, 2), round(cy - r, 2), round(2 * r, 2), round(2 * r, 2)],
                    "area": round(3.14159 * r * r, 2),
                    "iscrowd": 0,
                }
            )
        data = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{image_set}2017.json").write_text(json.dumps(data))


def _hpatches(root: Path, rng: random.Random) -> None:
    for name in _names_covering_splits("v_fixture", 1) + _names_covering_splits("i_fixture", 1):
        seq = root / name
        seq.mkdir(parents=True)
        scene = textured_scene(rng, SIZE)
        scene.save(seq / "1.ppm")
        corners = [(0, 0), (SIZE, 0), (SIZE, SIZE), (0, SIZE)]
        for k in range(2, 7):
            moved = [
                (x + rng.uniform(-0.12, 0.12) * SIZE, y + rng.uniform(-0.12, 0.12) * SIZE) for x, y in corners
            ]
            h = visual_correspondence.homography_from_corners(corners, moved)
            visual_correspondence.warp(scene, h, (SIZE, SIZE)).save(seq / f"{k}.ppm")
            (seq / f"H_1_{k}").write_text("\n".join(" ".join(f"{v:.10e}" for v in row) for row in h) + "\n")


def _artbench(root: Path, rng: random.Random) -> None:
    for style, kind in (("baroque", "rings"), ("impressionism", "dots"), ("ukiyo_e", "stripes")):
        names = [f"{style}_test{i}.jpg" for i in range(3)]
        val = train = 0
        i = 0
        while val < 2 or train < 4:  # the validation tenth of train is fixed by file name
            name = f"{style}_{i:03d}.jpg"
            i += 1
            if stable_bucket(name) == 0 and val < 2:
                val += 1
            elif stable_bucket(name) != 0 and train < 4:
                train += 1
            else:
                continue
            names.append(name)
        for name in names:
            folder = root / ("test" if "_test" in name else "train") / style
            folder.mkdir(parents=True, exist_ok=True)
            art_style.render_style(kind, rng, SIZE).save(folder / name, quality=92)


def _spair(root: Path, rng: random.Random) -> None:
    for split, n in (("trn", 4), ("val", 3), ("test", 3)):
        (root / "PairAnnotation" / split).mkdir(parents=True)
        for i in range(n):
            name = sorted(SEMANTIC)[i % len(SEMANTIC)]
            category = SEMANTIC[name]
            folder = root / "JPEGImages" / name
            folder.mkdir(parents=True, exist_ok=True)
            insts = [random_instance(rng, category) for _ in range(2)]
            files = [f"{split}_{i:03d}_{j}.jpg" for j in range(2)]
            for inst, f in zip(insts, files, strict=True):
                render(inst, SIZE, random_color(rng, 200, 255)).save(folder / f, quality=92)
            kps = [list(inst.keypoints(SIZE).values()) for inst in insts]
            ann = {
                "pair_id": i,
                "src_imname": files[0],
                "trg_imname": files[1],
                "category": name,
                "src_kps": [[round(x, 2), round(y, 2)] for x, y in kps[0]],
                "trg_kps": [[round(x, 2), round(y, 2)] for x, y in kps[1]],
                "kps_ids": list(range(len(kps[0]))),
                "src_bndbox": [0, 0, SIZE - 1, SIZE - 1],
                "trg_bndbox": [0, 0, SIZE - 1, SIZE - 1],
            }
            (
                root / "PairAnnotation" / split / f"{i:06d}-{files[0][:-4]}-{files[1][:-4]}:{name}.json"
            ).write_text(json.dumps(ann))


def _funkpoint(root: Path, rng: random.Random) -> None:
    rows = []
    counter = 0
    for split in ("train", "val", "test"):
        for j in range(4):  # alternate actions and categories, so every split has cross-category pairs
            action = sorted(FUNCTIONAL)[j % 2]
            cat_name = sorted(FUNCTIONAL[action])[(j // 2) % len(FUNCTIONAL[action])]
            while True:  # the split is fixed by the image path
                path = f"{action}/{cat_name}/img{counter}.jpg"
                counter += 1
                if split_by_name(path, split):
                    break
            inst = random_instance(rng, FUNCTIONAL[action][cat_name])
            (root / action / cat_name).mkdir(parents=True, exist_ok=True)
            render(inst, SIZE, random_color(rng, 200, 255)).save(root / path, quality=92)
            kps = [[round(x, 2), round(y, 2)] for x, y in inst.keypoints(SIZE).values()]
            if j == 0:
                kps[-1] = None  # an occluded point
            rows.append({"image": path, "action": action, "category": cat_name, "keypoints": kps})
    (root / "annotations.json").write_text(json.dumps(rows, indent=1))


def _mid(root: Path, rng: random.Random) -> None:
    names, val, train, i = [], 0, 0, 0
    while val < 2 or train < 4:  # the validation tenth of train is fixed by scene name
        name = f"fixture_scene{i}"
        i += 1
        if stable_bucket(name) == 0 and val < 2:
            val += 1
        elif stable_bucket(name) != 0 and train < 4:
            train += 1
        else:
            continue
        names.append(("train", name))
    for split, name in [*names, ("test", "fixture_test0"), ("test", "fixture_test1")]:
        scene = root / split / name
        scene.mkdir(parents=True)
        image, albedo = reflectance.patchwork_scene(rng, SIZE)
        for k in range(3):
            lit = np.asarray(image, dtype=np.float32) * (0.6 + 0.2 * k)
            Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8)).save(
                scene / f"dir_{k}_mip2.jpg", quality=95
            )
        Image.fromarray((albedo / albedo.max() * 255).astype(np.uint8)).convert("RGB").save(
            scene / "albedo.png"
        )
        Image.fromarray((albedo * 10).astype(np.uint8)).save(scene / "materials_mip2.png")
        (scene / "meta.json").write_text(json.dumps({"scene": scene.name}))


def _nights(root: Path, rng: random.Random) -> None:
    (root / "ref").mkdir(parents=True)
    (root / "distort").mkdir()
    from livr.tasks.similarity import distort

    rows = []
    for split, n in (("train", 6), ("val", 3), ("test", 4)):
        for i in range(n):
            uid = len(rows)
            ref = textured_scene(rng, SIZE)
            near = distort(ref, "blur", 0.15, rng)
            far = distort(ref, "shapes", 0.9, rng)
            left, right = (near, far) if rng.random() < 0.5 else (far, near)
            ref.save(root / "ref" / f"{uid:06d}.png")
            left.save(root / "distort" / f"{uid:06d}_0.png")
            right.save(root / "distort" / f"{uid:06d}_1.png")
            left_vote = 6 if left is near else 0
            rows.append(
                {
                    "id": uid,
                    "left_vote": left_vote,
                    "right_vote": 6 - left_vote,
                    "ref_path": f"ref/{uid:06d}.png",
                    "left_path": f"distort/{uid:06d}_0.png",
                    "right_path": f"distort/{uid:06d}_1.png",
                    "votes": 6 if i else 4,  # the first of each split has too few votes: dropped
                    "split": split,
                    "is_imagenet": False,
                    "prompt": "fixture",
                }
            )
    with open(root / "data.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


BUILDERS = {
    "counting": _pixmo,
    "jigsaw": _coco,
    "object_localization": _coco,
    "visual_correspondence": _hpatches,
    "art_style": _artbench,
    "semantic_correspondence": _spair,
    "functional_correspondence": _funkpoint,
    "relative_reflectance": _mid,
    "visual_similarity": _nights,
}


def write_fixture(task: str, root, *, seed: int = 0) -> Path:
    """Write the tiny real-format dataset ``task``'s loader reads into ``root`` (created); returns ``root``."""
    if task not in BUILDERS:
        raise KeyError(f"no fixture for task {task!r}; known: {', '.join(BUILDERS)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    BUILDERS[task](root, random.Random(f"fixture:{task}:{seed}"))
    return root
