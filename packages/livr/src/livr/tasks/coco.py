"""Reading COCO instance annotations (``annotations/instances_<set><year>.json`` + ``<set><year>/``).

Jigsaw and object localization both draw on COCO. The paper's test sets come from COCO val, so
``train`` reads train2017 and ``val`` / ``test`` are two fixed halves of val2017 (by image id).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from livr.tasks.common import bad_annotation, normalize_split, read_json, require_dir, stable_bucket


@dataclass(frozen=True)
class CocoImage:
    id: int
    path: Path
    width: int
    height: int


@dataclass(frozen=True)
class CocoObject:
    image_id: int
    category: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    iscrowd: bool


def _num(value, path, what) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise bad_annotation(path, f"{what} must be a number, got {value!r}")
    return float(value)


def read_coco(root, split: str, year: str = "2017") -> tuple[list[CocoImage], list[CocoObject], Path]:
    """Images and objects of ``split`` with every field checked (errors name the file and entry)."""
    root = require_dir(root, "COCO root")
    split = normalize_split(split)
    image_set = "train" if split == "train" else "val"
    ann_path = root / "annotations" / f"instances_{image_set}{year}.json"
    data = read_json(ann_path)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations")
    ):
        raise bad_annotation(ann_path, "expected an object with 'images' and 'annotations' lists")
    categories = {}
    for c in data.get("categories", []):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise bad_annotation(ann_path, f"category entry {c!r} needs an integer 'id' and a 'name'")
        categories[c["id"]] = c["name"]
    image_dir = root / f"{image_set}{year}"
    images = []
    for i, im in enumerate(data["images"]):
        if (
            not isinstance(im, dict)
            or not isinstance(im.get("id"), int)
            or not isinstance(im.get("file_name"), str)
        ):
            raise bad_annotation(ann_path, f"images[{i}] needs an integer 'id' and a 'file_name'")
        if split != "train" and (stable_bucket(str(im["id"]), 2) == 0) != (split == "test"):
            continue
        w, h = (
            _num(im.get("width"), ann_path, f"images[{i}].width"),
            _num(im.get("height"), ann_path, f"images[{i}].height"),
        )
        images.append(CocoImage(im["id"], image_dir / im["file_name"], int(w), int(h)))
    keep = {im.id for im in images}
    objects = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise bad_annotation(ann_path, f"annotations[{i}] is not an object")
        if ann.get("image_id") not in keep:
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise bad_annotation(
                ann_path, f"annotations[{i}].bbox must be [x, y, width, height], got {bbox!r}"
            )
        x, y, w, h = (_num(v, ann_path, f"annotations[{i}].bbox") for v in bbox)
        if w <= 0 or h <= 0:
            raise bad_annotation(ann_path, f"annotations[{i}].bbox has non-positive size {bbox!r}")
        if ann.get("category_id") not in categories:
            raise bad_annotation(
                ann_path, f"annotations[{i}].category_id {ann.get('category_id')!r} is not a category"
            )
        objects.append(
            CocoObject(
                ann["image_id"],
                categories[ann["category_id"]],
                (x, y, x + w, y + h),
                bool(ann.get("iscrowd", 0)),
            )
        )
    return images, objects, ann_path
