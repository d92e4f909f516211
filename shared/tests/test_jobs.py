"""latentforge.jobs.map_runs: order, worker processes, quiet bars, errors."""

from __future__ import annotations

import os

import pytest

from latentforge.jobs import map_runs
from latentforge.runs import PROGRESS_ENV

# The job functions are stdlib ones: spawned workers import a job's function by module name, which a
# test module under pytest's importlib mode does not have.


def test_one_worker_runs_in_this_process_in_order():
    assert map_runs(pow, [(2, k) for k in range(5)]) == [1, 2, 4, 8, 16]
    assert map_runs(os.getpid, [(), ()]) == [os.getpid()] * 2
    assert map_runs(pow, []) == []


def test_workers_run_elsewhere_keep_the_order_and_silence_per_run_bars():
    assert map_runs(pow, [(3, k) for k in range(7)], workers=2) == [3**k for k in range(7)]
    pids = map_runs(os.getpid, [()] * 4, workers=2)
    assert os.getpid() not in pids and 1 <= len(set(pids)) <= 2
    assert map_runs(os.getenv, [(PROGRESS_ENV,)] * 2, workers=2) == ["0", "0"]
    assert os.environ.get(PROGRESS_ENV) != "0"  # the parent keeps its bars


def test_a_failing_job_raises_its_own_error():
    with pytest.raises(ValueError, match="invalid literal"):
        map_runs(int, [("1",), ("x",), ("3",)], workers=2)
    with pytest.raises(ValueError, match="at least 1"):
        map_runs(pow, [(1, 1)], workers=0)
