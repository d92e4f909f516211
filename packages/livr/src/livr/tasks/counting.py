"""Counting: PixMo-Count (counts 2-10, exact match) and a generated shape-counting task.

Real format (Hugging Face ``allenai/pixmo-count``): rows with ``image_url``, ``image_sha256``,
``count``, ``points``, ``label``; splits ``train`` / ``validation`` / ``test``. The images are
URLs, so users download them next to the rows. Accepted layout::

    <root>/<split>.jsonl                      (or <root>/data/<split>-*.parquet, needs pyarrow)
    <root>/images/<image_sha256>.<jpg|jpeg|png|webp>   (or a row field "image_path", relative to root)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from livr.data import Example
from livr.tasks.common import COUNT_SUFFIX, limit_and_shuffle, open_image, require_dir, shrink
from livr.tasks.procedural import SHAPES, draw_shape, random_color

NAME = "counting"
MIN_COUNT, MAX_COUNT = 2, 10  # the paper's PixMo-Count range
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
HF_SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


def question(label: str) -> str:
    return f"How many {label} are there in the image? {COUNT_SUFFIX}"


def generate(n: int, *, seed: int = 0, image_size: int = 96) -> list[Example]:
    """Shapes on a 4x4 jittered grid; count one kind (2-10, balanced) among 0-3 of another kind."""
    rng = random.Random(f"{NAME}:{seed}")  # per-task stream: equal seeds give unrelated images across tasks
    cells = 4
    counts = [MIN_COUNT + (i % (MAX_COUNT - MIN_COUNT + 1)) for i in range(n)]
    rng.shuffle(counts)
    examples = []
    cell = image_size / cells
    for count in counts:
        target, other = rng.sample(SHAPES, 2)
        n_other = rng.randint(0, min(3, cells * cells - count))
        slots = rng.sample(range(cells * cells), count + n_other)
        background = random_color(rng, 0, 60) if rng.random() < 0.5 else random_color(rng, 200, 255)
        image = Image.new("RGB", (image_size, image_size), background)
        draw = ImageDraw.Draw(image)
        shapes = []
        for j, s in enumerate(slots):
            kind = target if j < count else other
            r = rng.uniform(0.28, 0.4) * cell
            cx = (s % cells + 0.5) * cell + rng.uniform(-1, 1) * (0.5 * cell - r)
            cy = (s // cells + 0.5) * cell + rng.uniform(-1, 1) * (0.5 * cell - r)
            color = random_color(rng, 70, 255) if sum(background) < 300 else random_color(rng, 0, 150)
            draw_shape(draw, kind, cx, cy, r, color, rng.uniform(0, 6.3))
            shapes.append({"kind": kind, "x": round(cx, 2), "y": round(cy, 2), "r": round(r, 2)})
        meta = {"task": NAME, "source": "generated", "target": target, "shapes": shapes}
        examples.append(Example([image], question(f"{target}s"), str(count), meta))
    return examples


def solve(example: Example) -> str:
    """Counts the drawn shapes of the asked kind from the generation record."""
    return str(sum(s["kind"] == example.meta["target"] for s in example.meta["shapes"]))


def _read_rows(root: Path, split: str) -> tuple[list[dict], Path]:
    hf_split = HF_SPLITS.get(split)
    if hf_split is None:
        raise ValueError(f"unknown PixMo-Count split {split!r}; expected train, val (validation) or test")
    for name in (hf_split, split):
        path = root / f"{name}.jsonl"
        if path.is_file():
            rows = []
            try:
                with open(path, encoding="utf-8") as fh:
                    for lineno, line in enumerate(fh, 1):
                        if line.strip():
                            try:
                                rows.append(json.loads(line))
                            except json.JSONDecodeError as exc:
                                raise ValueError(f"{path}:{lineno}: not a JSON object: {exc}") from exc
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path} is not UTF-8 text: {exc}") from exc
            return rows, path
    shards = sorted((root / "data").glob(f"{hf_split}-*.parquet"))
    if shards:
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ImportError(
                f"{shards[0]} is parquet; install pyarrow to read it, or export the rows to {root}/{hf_split}.jsonl"
            ) from exc
        rows = []
        for shard in shards:
            try:
                rows.extend(pq.read_table(shard).to_pylist())
            except Exception as exc:  # pyarrow raises several types for a damaged file
                raise ValueError(f"{shard} is not a readable parquet file: {exc}") from exc
        return rows, shards[0].parent
    raise FileNotFoundError(
        f"PixMo-Count split {split!r}: neither {root / (hf_split + '.jsonl')} nor {root}/data/{hf_split}-*.parquet exists"
    )


def _image_path(root: Path, row: dict, where: str) -> Path:
    if isinstance(row.get("image_path"), str):
        return root / row["image_path"]
    sha = row.get("image_sha256")
    if not isinstance(sha, str) or not sha:
        raise ValueError(f"bad annotation in {where}: row has neither 'image_path' nor 'image_sha256'")
    for ext in IMAGE_EXTS:
        path = root / "images" / f"{sha}{ext}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"{where}: image {root / 'images' / sha}.(jpg|jpeg|png|webp) does not exist")


def load(root, split: str, *, limit: int | None = 1000, seed: int = 0) -> list[Example]:
    """PixMo-Count rows with counts 2-10 as "How many <label> ...?" questions (answer: the count)."""
    root = require_dir(root, "PixMo-Count root")
    rows, source = _read_rows(root, split)
    kept = []
    for i, row in enumerate(rows):
        where = f"{source} row {i}"
        if not isinstance(row, dict):
            raise ValueError(f"bad annotation in {where}: not an object")
        count, label = row.get("count"), row.get("label")
        if not isinstance(count, int) or isinstance(count, bool):
            raise ValueError(f"bad annotation in {where}: 'count' must be an integer, got {count!r}")
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"bad annotation in {where}: 'label' must be a non-empty string")
        if MIN_COUNT <= count <= MAX_COUNT:
            kept.append((i, row))
    examples = []
    for i, row in limit_and_shuffle(kept, limit, seed):
        image, _ = shrink(open_image(_image_path(root, row, f"{source} row {i}")))
        meta = {"task": NAME, "source": "pixmo-count", "row": i, "label": row["label"]}
        examples.append(Example([image], question(row["label"].strip()), str(row["count"]), meta))
    return examples
