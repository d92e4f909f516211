"""results.json and the paper-style markdown table."""

from __future__ import annotations

import json

import pytest

from livr.report import markdown_table, read_results, summarise, unparseable_table, write_results

TASKS = ["counting", "jigsaw"]


def rec(method, seed, counting, jigsaw, unparseable=0):
    def s(v):
        return {"metric": "accuracy", "score": v, "n": 10, "correct": int(v / 10), "unparseable": unparseable}

    return {"method": method, "seed": seed, "scores": {"counting": s(counting), "jigsaw": s(jigsaw)}}


RECORDS = [
    rec("direct_sft", 1, 40.0, 50.0),
    rec("direct_sft", 2, 60.0, 50.0),
    rec("livr", 1, 50.0, 70.0, unparseable=2),
    rec("livr", 2, 70.0, 50.0),
]


def test_summary_means_and_sample_std_over_seeds():
    summary = summarise(RECORDS, TASKS)
    assert list(summary) == ["direct_sft", "livr"]
    assert summary["direct_sft"]["counting"]["mean"] == pytest.approx(50.0)
    assert summary["direct_sft"]["counting"]["std"] == pytest.approx(14.1421, abs=1e-3)
    assert summary["livr"]["average"]["mean"] == pytest.approx(60.0)
    assert summary["livr"]["average"]["values"] == [60.0, 60.0]


def test_markdown_table_rows_and_paired_difference():
    table = markdown_table(RECORDS, TASKS).splitlines()
    assert table[0] == "| method | seeds | counting | jigsaw | Avg |"
    assert table[2] == "| Direct SFT | 2 | 50.0 ± 14.1 | 50.0 ± 0.0 | 50.0 ± 7.1 |"
    assert table[3] == "| LIVR | 2 | 60.0 ± 14.1 | 60.0 ± 14.1 | 60.0 ± 0.0 |"
    assert table[4] == "| LIVR − Direct SFT (paired by seed) | 2 | +10.0 ± 0.0 | +10.0 ± 14.1 | +10.0 ± 7.1 |"
    assert "| LIVR | 2/20 | 2/20 |" in unparseable_table(RECORDS, TASKS)


def test_results_json_round_trip_and_errors(tmp_path):
    path = write_results(tmp_path, RECORDS, TASKS, {"note": "x"})
    data = read_results(path)
    assert data["runs"] == RECORDS and data["note"] == "x"
    assert data["livr_minus_direct_sft"]["average"]["mean"] == pytest.approx(10.0)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"runs": []}))
    with pytest.raises(ValueError, match=r"bad\.json"):
        read_results(bad)
    with pytest.raises(ValueError, match="no score"):
        summarise([rec("livr", 1, 1.0, 1.0)], ["counting", "missing"])
