"""Run folders, metrics logs, configs and seeding."""

import dataclasses
import json
import random
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from latentforge.configs import config_from_dict, config_to_dict, load_config_file, resolve_config
from latentforge.runs import PROGRESS_ENV, MetricsLogger, create_run_dir, read_metrics, run_name
from latentforge.seeding import seed_everything


def test_run_name_and_dir(tmp_path):
    assert run_name("livr", "count", 3, timestamp=100) == "livr__count__3__100"
    with pytest.raises(ValueError):
        run_name("livr", "a__b", 0)
    run = create_run_dir(tmp_path, "livr", "count", 3, {"lr": 1e-4, "path": Path("/x")}, name="r1")
    assert run == tmp_path / "livr" / "r1"
    assert json.loads((run / "config.json").read_text()) == {"lr": 1e-4, "path": "/x"}


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.setattr("latentforge.runs.time.time", lambda: 1234.5)
    first = create_run_dir(tmp_path, "internal-rl", "meta", 0, {"alpha": 0.1})
    second = create_run_dir(tmp_path, "internal-rl", "meta", 0, {"alpha": 0.3})
    assert first.name == "internal-rl__meta__0__1234" and second.name == "internal-rl__meta__0__1234-2"
    assert json.loads((first / "config.json").read_text()) == {"alpha": 0.1}
    assert json.loads((second / "config.json").read_text()) == {"alpha": 0.3}
    # An explicit name (resuming) reuses its folder.
    assert create_run_dir(tmp_path, "internal-rl", "meta", 0, name=first.name) == first


def test_metrics_logger_writes_jsonl_tensorboard_and_progress(tmp_path):
    with MetricsLogger(tmp_path) as log:
        for step in log.progress(range(3), desc="t"):
            log.log(
                step,
                **{"losses/nll": torch.tensor(1.0 / (step + 1)), "charts/lr": np.float32(0.5), "note": "x"},
            )
        log.log(3, bad=float("nan"))
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert rows[1]["losses/nll"] == pytest.approx(0.5) and rows[0]["note"] == "x"
    assert rows[3]["bad"] == "nan"
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_progress_env_silences_the_bar_but_not_the_log(tmp_path, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "0")
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        bar = log.progress(range(2))
        assert bar.disable and list(bar) == [0, 1]
        log.log(0, x=1.0)
    assert read_metrics(tmp_path) == [{"step": 0, "time": read_metrics(tmp_path)[0]["time"], "x": 1.0}]
    monkeypatch.setenv(PROGRESS_ENV, "1")
    with MetricsLogger(tmp_path / "b", tensorboard=False) as log:
        assert not log.progress(range(2)).disable


def test_metrics_logger_is_silent_off_rank_zero(tmp_path):
    with MetricsLogger(tmp_path / "r", enabled=False) as log:
        log.log(0, x=1.0)
    assert not (tmp_path / "r").exists()


def test_read_metrics_reports_the_bad_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n{oops\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_metrics(tmp_path)


@dataclasses.dataclass
class Inner:
    rank: int = 16
    alpha: float = 32.0


@dataclasses.dataclass
class Cfg:
    name: str = "paper"
    steps: int = 10
    mode: Literal["a", "b"] = "a"
    betas: tuple[float, float] = (0.9, 0.999)
    out: Path | None = None
    lora: Inner = dataclasses.field(default_factory=Inner)


def test_configs_from_files_and_presets(tmp_path):
    (tmp_path / "c.toml").write_text("steps = 3\nbetas = [0.8, 0.9]\n[lora]\nrank = 4\n")
    cfg = load_config_file(Cfg, tmp_path / "c.toml")
    assert cfg == Cfg(steps=3, betas=(0.8, 0.9), lora=Inner(rank=4))
    (tmp_path / "c.json").write_text(json.dumps(config_to_dict(cfg)))
    assert load_config_file(Cfg, tmp_path / "c.json") == cfg
    assert resolve_config(Cfg, "tiny", {"tiny": lambda: Cfg(steps=1)}).steps == 1
    assert resolve_config(Cfg, str(tmp_path / "c.json"), {}) == cfg
    with pytest.raises(ValueError, match="unknown config"):
        resolve_config(Cfg, "huge", {"tiny": Cfg})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stepz": 1}, r"unknown key\(s\) \['stepz'\]"),
        ({"steps": "ten"}, r"config.steps: expected an integer"),
        ({"mode": "c"}, r"config.mode: 'c' is not one of"),
        ({"lora": {"rank": 1.5}}, r"config.lora.rank: expected an integer"),
        ({"betas": [0.9]}, r"config.betas: expected 2 items"),
    ],
)
def test_config_errors_name_the_key(data, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(Cfg, data)


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config_file(Cfg, tmp_path / "missing.json")
    (tmp_path / "bad.toml").write_text("steps = = 3")
    with pytest.raises(ValueError, match="could not be parsed"):
        load_config_file(Cfg, tmp_path / "bad.toml")


def test_seed_everything_repeats_and_offsets_by_rank(monkeypatch):
    def draws():
        return random.random(), float(np.random.rand()), torch.rand(1).item()

    monkeypatch.delenv("RANK", raising=False)
    assert seed_everything(7) == 7
    first = draws()
    seed_everything(7)
    assert draws() == first
    monkeypatch.setenv("RANK", "1")
    assert seed_everything(7) == 8
    assert draws() != first
    assert seed_everything(7, per_rank=False) == 7
