"""tools/prepare_livr_data.py end to end on the project-made fixtures of all nine datasets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from livr.data import load_examples
from livr.tasks import TASKS
from livr.tasks.fixtures import write_fixture

TOOL = Path(__file__).resolve().parents[3] / "tools" / "prepare_livr_data.py"


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=300)


def test_help_lists_the_tasks():
    result = run_tool("--help")
    assert result.returncode == 0
    assert "--source TASK=ROOT" in result.stdout and "visual_similarity" in result.stdout


def test_prepares_every_real_dataset_into_the_folder_format(tmp_path):
    sources = []
    for name in TASKS:
        root = write_fixture(name, tmp_path / "raw" / name)
        sources += ["--source", f"{name}={root}"]
    out = tmp_path / "out"
    result = run_tool("--out", str(out), "--train-size", "4", "--val-size", "2", "--test-size", "3", *sources)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["tasks"]) == set(TASKS)
    for name, spec in TASKS.items():
        assert manifest["tasks"][name]["source"] == str(tmp_path / "raw" / name)
        for split, want in (("train", 4), ("val", 2), ("test", 3)):
            examples = load_examples(out / name, split)
            written = manifest["tasks"][name]["splits"][split]["written"]
            assert len(examples) == written and 1 <= written <= want
            for ex in examples:
                assert ex.meta["task"] == name
                assert ex.answer in (spec.choices or [str(c) for c in range(2, 11)])


def test_generated_versions_and_bad_arguments(tmp_path):
    out = tmp_path / "gen"
    result = run_tool(
        "--out", str(out), "--generated", "--train-size", "3", "--val-size", "1", "--test-size", "2"
    )
    assert result.returncode == 0, result.stderr
    for name, spec in TASKS.items():
        test = load_examples(out / name, "test")
        assert len(test) == 2
        assert all(spec.solve(ex) == ex.answer for ex in test)  # meta survives the jsonl round trip
    bad = run_tool("--out", str(out), "--source", "nonsense=/x")
    assert bad.returncode != 0 and "unknown task" in bad.stderr
    assert run_tool("--out", str(out)).returncode != 0  # nothing to do


@pytest.mark.parametrize("size", [None, 1])
def test_test_size_defaults_to_the_papers(size):
    sys.path.insert(0, str(TOOL.parent))
    try:
        import prepare_livr_data as tool
    finally:
        sys.path.pop(0)
    argv = ["--out", "x", "--generated"] + ([] if size is None else ["--test-size", str(size)])
    args = tool.parse_args(argv)
    assert tool.sizes("visual_correspondence", args)["test"] == (700 if size is None else 1)
    assert tool.sizes("counting", args)["train"] == 1000
