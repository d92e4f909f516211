"""``internal-rl generate-data``: help text and a tiny grid run that writes a loadable dataset."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from internal_rl.cli import main
from internal_rl.data import Trajectories


def test_generate_data_help_lists_documented_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate-data", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--env", "--task-set", "--num-episodes", "--epsilon", "--expert", "--shard-size"):
        assert option in out


def test_generate_data_writes_a_run_with_metrics_and_shards(tmp_path, capsys):
    main(["generate-data", "--num-episodes", "40", "--chunk", "16", "--num-envs", "16", "--shard-size", "25",
          "--runs-root", str(tmp_path), "--task-set", "posttrain"])  # fmt: skip
    (run_dir,) = (tmp_path / "internal-rl").iterdir()
    data = Trajectories.load(run_dir / "data")
    assert len(data) == 40 and data.task_set == "posttrain" and data.success.all()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [16, 32, 40] and all(r["data/success_rate"] == 1.0 for r in rows)
    assert json.loads((run_dir / "config.json").read_text())["num_episodes"] == 40
    assert "dataset:" in capsys.readouterr().out


def test_grid_commands_import_without_mujoco():
    # the grid pipeline must run where MuJoCo is not installed (the ant env imports it on use)
    code = "import sys, internal_rl.cli, internal_rl.pretrain; assert 'mujoco' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
