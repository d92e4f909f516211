"""Examples (image(s), question, answer), a dataset-folder reader and a synthetic task.

The nine paper tasks (issue 7) fill :class:`Example` lists; this module holds the interface,
the on-disk format they will be written in, and a tiny generated counting task for tests
and CPU smoke runs.

Dataset folder format: ``<folder>/<split>.jsonl``, one object per line with
``{"images": ["relative/path.png", ...], "question": "...", "answer": "..."}``.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError


@dataclass
class Example:
    """One training or evaluation item."""

    images: list[Image.Image]
    question: str
    answer: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, image in enumerate(self.images):
            if not isinstance(image, Image.Image):
                raise TypeError(
                    f"Example image {i} is a {type(image).__name__}, not a PIL image "
                    "(load files with livr.data.load_image)"
                )


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` as an RGB image, with an error naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path} is not a readable image: {exc}") from exc


def load_examples(folder: str | os.PathLike, split: str) -> list[Example]:
    """Read ``<folder>/<split>.jsonl`` (format in the module docstring)."""
    path = Path(folder) / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"dataset split file {path} does not exist")
    examples = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not a JSON object: {exc}") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object")
            missing = [k for k in ("images", "question", "answer") if k not in row]
            if missing:
                raise ValueError(f"{where}: missing key(s) {missing}")
            if not isinstance(row["images"], list) or not all(isinstance(p, str) for p in row["images"]):
                raise ValueError(f"{where}: 'images' must be a list of relative paths")
            images = [load_image(path.parent / p) for p in row["images"]]
            meta = {k: v for k, v in row.items() if k not in ("images", "question", "answer")}
            examples.append(Example(images, str(row["question"]), str(row["answer"]), meta))
    return examples


def synthetic_counting(n: int, *, seed: int = 0, size: int = 56, max_count: int = 4) -> list[Example]:
    """Images with 1..max_count white squares on black; the answer is their number.

    A task whose answer needs the image, small enough for a CPU test to learn it.
    """
    rng = random.Random(seed)
    examples = []
    cell = size // 4
    for _ in range(n):
        count = rng.randint(1, max_count)
        image = Image.new("RGB", (size, size))
        for c in rng.sample(range(16), count):
            x, y = (c % 4) * cell, (c // 4) * cell
            image.paste((255, 255, 255), (x + 2, y + 2, x + cell - 2, y + cell - 2))
        examples.append(Example([image], "How many squares?", str(count), {"count": count}))
    return examples


def write_examples(examples: Sequence[Example], folder: str | os.PathLike, split: str) -> Path:
    """Write ``examples`` in the dataset folder format (PNG images); returns the jsonl path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.jsonl"
    with open(path, "w") as fh:
        for i, ex in enumerate(examples):
            names = []
            for j, image in enumerate(ex.images):
                name = f"images/{split}-{i:06d}-{j}.png"
                image.save(folder / name)
                names.append(name)
            fh.write(
                json.dumps({"images": names, "question": ex.question, "answer": ex.answer, **ex.meta}) + "\n"
            )
    return path
