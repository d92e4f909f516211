"""Every real-format loader on its project-made fixture, and on corrupted copies (clear errors)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from livr.tasks import TASKS
from livr.tasks.common import LETTERS, split_by_name
from livr.tasks.fixtures import write_fixture


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("task-fixtures")
    return {name: write_fixture(name, root / name) for name in TASKS}


@pytest.fixture
def copy_of(fixtures, tmp_path):
    def make(name: str) -> Path:
        return Path(shutil.copytree(fixtures[name], tmp_path / name))

    return make


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_loader_reads_every_split_in_the_paper_format(name, split, fixtures):
    spec = TASKS[name]
    examples = spec.load(fixtures[name], split, limit=24, seed=0)
    assert 2 <= len(examples) <= 24
    n_images = {"jigsaw": 3, "art_style": 3, "visual_similarity": 3}.get(name, 1)
    if "correspondence" in name:
        n_images = 2
    for ex in examples:
        assert ex.meta["task"] == name and ex.meta["source"] != "generated"
        assert len(ex.images) == n_images
        if spec.answer_type == "choice":
            assert ex.answer in spec.choices
            assert tuple(re.findall(r"\(([A-F])\)", ex.question)) == spec.choices
        else:
            assert 2 <= int(ex.answer) <= 10
    answers = Counter(ex.answer for ex in examples)
    if spec.answer_type == "choice":
        assert max(answers.values()) - min(answers.get(c, 0) for c in spec.choices) <= 1  # balanced


def test_loader_is_deterministic_and_limited(fixtures):
    spec = TASKS["visual_correspondence"]
    a = spec.load(fixtures["visual_correspondence"], "train", limit=6, seed=1)
    b = spec.load(fixtures["visual_correspondence"], "train", limit=6, seed=1)
    assert len(a) == 6
    assert [e.meta["candidates"] for e in a] == [e.meta["candidates"] for e in b]
    assert [np.asarray(e.images[1]).tobytes() for e in a] == [np.asarray(e.images[1]).tobytes() for e in b]


def test_counting_keeps_counts_2_to_10_with_their_rows(fixtures):
    root = fixtures["counting"]
    rows = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    examples = TASKS["counting"].load(root, "train", limit=None)
    assert len(examples) == sum(2 <= r["count"] <= 10 for r in rows)  # the count-12 row is dropped
    for ex in examples:
        assert ex.answer == str(rows[ex.meta["row"]]["count"])
        assert ex.question.startswith(f"How many {rows[ex.meta['row']]['label']} ")


@pytest.mark.parametrize(
    "name", ["object_localization", "visual_correspondence", "art_style", "relative_reflectance"]
)
def test_loaded_answers_agree_with_the_annotations(name, fixtures):
    spec = TASKS[name]
    examples = spec.load(fixtures[name], "train", limit=24)
    assert [spec.solve(ex) for ex in examples] == [ex.answer for ex in examples]


@pytest.mark.parametrize("name", ["semantic_correspondence", "functional_correspondence"])
def test_keypoint_answer_is_the_annotated_match(name, fixtures):
    root = fixtures[name]
    for ex in TASKS[name].load(root, "train", limit=None):
        k = ex.meta["keypoint"]
        if name == "semantic_correspondence":
            ann = json.loads((root / "PairAnnotation" / "trn" / ex.meta["pair"]).read_text())
            true = ann["trg_kps"][k]
        else:
            rows = {r["image"]: r for r in json.loads((root / "annotations.json").read_text())}
            true = rows[ex.meta["files"][1]]["keypoints"][k]
        assert ex.meta["candidates"][LETTERS.index(ex.answer)] == pytest.approx(true)


def test_jigsaw_answer_is_the_cut_corner(fixtures):
    root = fixtures["jigsaw"]
    from livr.data import load_image

    for ex in TASKS["jigsaw"].load(root, "train", limit=None):
        original = load_image(root / "train2017" / f"{ex.meta['image_id']:012d}.jpg")
        x0, y0, x1, y1 = ex.meta["hole"]
        piece = ex.images[1 + "AB".index(ex.answer)]
        assert np.array_equal(np.asarray(piece), np.asarray(original.crop((x0, y0, x1, y1))))
        assert not np.asarray(ex.images[0])[y0:y1, x0:x1].any()  # the hole is black


def test_similarity_answer_is_the_majority_vote(fixtures):
    root = fixtures["visual_similarity"]
    from livr.data import load_image

    with open(root / "data.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    examples = TASKS["visual_similarity"].load(root, "train", limit=None)
    assert len(examples) == sum(r["split"] == "train" and int(r["votes"]) >= 6 for r in rows)
    for ex in examples:
        row = rows[ex.meta["row"] - 2]
        winner = row["left_path"] if int(row["left_vote"]) > int(row["right_vote"]) else row["right_path"]
        chosen = ex.images[1 + "AB".index(ex.answer)]
        assert np.array_equal(np.asarray(chosen), np.asarray(load_image(root / winner)))


def _garbage(path: Path) -> Path:
    path.write_bytes(b"this is not an image")
    return path


def _binary(path: Path) -> Path:
    path.write_bytes(bytes(range(128, 256)) * 4)
    return path


def _first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


def _edit_json(path: Path, edit) -> Path:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def _pixmo_train_image(root):
    sha = json.loads((root / "train.jsonl").read_text().splitlines()[0])["image_sha256"]
    return root / "images" / f"{sha}.png"


def _pixmo_bad_count(root):
    path = root / "train.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "count": "many"})
    path.write_text("\n".join(lines) + "\n")
    return path


def _coco_bad_bbox(root):
    return _edit_json(
        root / "annotations/instances_train2017.json", lambda d: d["annotations"][0].update(bbox=[1, 2, 3])
    )


def _spair_bad_kps(root):
    return _edit_json(
        _first(root, "PairAnnotation/trn/*.json"),
        lambda d: d.update(trg_kps=[[1.0, "x"]] * len(d["src_kps"])),
    )


def _funk_bad_kps(root):
    return _edit_json(root / "annotations.json", lambda d: d[0].update(keypoints=[[1.0]]))


def _nights_bad_vote(root):
    path = root / "data.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[1]["left_vote"] = "lots"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _truncate_json(path: Path) -> Path:
    path.write_text(path.read_text()[:40])
    return path


def _delete(path: Path) -> Path:
    path.unlink()
    return path


def _train_sequence(root: Path) -> Path:
    return next(p for p in sorted(root.iterdir()) if split_by_name(p.name, "train"))


def _bad_homography(root):
    path = _train_sequence(root) / "H_1_2"
    path.write_text("1 0 0\n0 1 0\n")
    return path


CORRUPTIONS = {
    # task: [(what, corrupt(root) -> the file the error must name, exception type, message fragment)]
    "counting": [
        ("corrupt image", lambda r: _garbage(_pixmo_train_image(r)), ValueError, "not a readable image"),
        ("bad count", _pixmo_bad_count, ValueError, "'count' must be an integer"),
        ("binary rows", lambda r: _binary(r / "train.jsonl"), ValueError, "not UTF-8 text"),
        ("missing rows", lambda r: _delete(r / "train.jsonl"), FileNotFoundError, "train.jsonl nor"),
    ],
    "jigsaw": [
        (
            "corrupt image",
            lambda r: _garbage(_first(r, "train2017/*.jpg")),
            ValueError,
            "not a readable image",
        ),
        ("bad bbox", _coco_bad_bbox, ValueError, "bbox must be"),
        (
            "missing json",
            lambda r: _delete(r / "annotations/instances_train2017.json"),
            FileNotFoundError,
            "does not exist",
        ),
    ],
    "object_localization": [
        (
            "corrupt image",
            lambda r: _garbage(_first(r, "train2017/*.jpg")),
            ValueError,
            "not a readable image",
        ),
        (
            "truncated json",
            lambda r: _truncate_json(r / "annotations/instances_train2017.json"),
            ValueError,
            "not valid JSON",
        ),
    ],
    "visual_correspondence": [
        ("bad homography", _bad_homography, ValueError, "expected 9 numbers"),
        (
            "missing homography",
            lambda r: _delete(_train_sequence(r) / "H_1_3"),
            FileNotFoundError,
            "does not exist",
        ),
    ],
    "art_style": [
        ("corrupt image", lambda r: _garbage(_first(r, "train/*/*.jpg")), ValueError, "not a readable image"),
    ],
    "semantic_correspondence": [
        ("bad keypoints", _spair_bad_kps, ValueError, "is not an \\[x, y\\] point"),
        (
            "truncated json",
            lambda r: _truncate_json(_first(r, "PairAnnotation/trn/*.json")),
            ValueError,
            "not valid JSON",
        ),
        (
            "corrupt image",
            lambda r: _garbage(_first(r, "JPEGImages/*/trn_*.jpg")),
            ValueError,
            "not a readable image",
        ),
    ],
    "functional_correspondence": [
        ("bad keypoints", _funk_bad_kps, ValueError, "is not \\[x, y\\] or null"),
        ("missing image", lambda r: _delete(_first(r, "*/*/img*.jpg")), FileNotFoundError, "does not exist"),
    ],
    "relative_reflectance": [
        ("missing albedo", lambda r: _delete(_first(r, "train/*/albedo.png")), FileNotFoundError, "albedo"),
        (
            "corrupt albedo",
            lambda r: _garbage(_first(r, "train/*/albedo.png")),
            ValueError,
            "not a readable image",
        ),
    ],
    "visual_similarity": [
        ("bad vote", _nights_bad_vote, ValueError, "'left_vote' must be a number"),
        ("binary csv", lambda r: _binary(r / "data.csv"), ValueError, "not a readable CSV file"),
        ("corrupt image", lambda r: _garbage(r / "ref/000001.png"), ValueError, "not a readable image"),
    ],
}


@pytest.mark.parametrize(
    ("name", "what"), [(name, what) for name, cases in CORRUPTIONS.items() for what, *_ in cases]
)
def test_corrupted_copy_fails_with_a_clear_error_naming_the_file(name, what, copy_of):
    _, corrupt, exc_type, fragment = next(c for c in CORRUPTIONS[name] if c[0] == what)
    root = copy_of(name)
    path = corrupt(root)
    with pytest.raises(exc_type, match=fragment) as info:
        TASKS[name].load(root, "train", limit=None)
    assert str(path) in str(info.value) or str(path.parent) in str(info.value)


def test_every_task_has_a_corruption_test():
    assert set(CORRUPTIONS) == set(TASKS)


def test_missing_root_and_unknown_split_are_refused(tmp_path, fixtures):
    for spec in TASKS.values():
        with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
            spec.load(tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match="unknown"):
        TASKS["art_style"].load(fixtures["art_style"], "dev")


def test_pixmo_parquet_shards_need_pyarrow_or_fail_clearly(copy_of):
    root = copy_of("counting")
    (root / "train.jsonl").unlink()
    (root / "data").mkdir()
    shard = root / "data" / "train-00000-of-00001.parquet"
    shard.write_bytes(b"PAR1 not really parquet")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="install pyarrow"):
            TASKS["counting"].load(root, "train")
    else:
        with pytest.raises(ValueError, match=re.escape(str(shard))):
            TASKS["counting"].load(root, "train")
