"""Independent runs (seeds, methods) on several CPU processes.

A pipeline of many small runs (one per seed and method) leaves all but one core idle when it runs
them one after another with one thread each, and more threads per run speed small models up little.
:func:`map_runs` spreads the runs over a pool of processes instead. A run that seeds itself from its
own config (``seed_everything``) and sets its own thread count computes the same numbers in a worker
as in the parent, so the pool changes the wall time and nothing else.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

from tqdm.auto import tqdm

from latentforge.runs import PROGRESS_ENV

T = TypeVar("T")


def _quiet_worker() -> None:
    # several workers drawing per-run bars on one terminal garble it; the parent draws one bar instead
    os.environ[PROGRESS_ENV] = "0"


def map_runs(
    fn: Callable[..., T], jobs: Sequence[tuple[Any, ...]], workers: int = 1, desc: str = "runs"
) -> list[T]:
    """``[fn(*job) for job in jobs]``, on ``workers`` processes when ``workers > 1``.

    The workers are spawned (not forked: torch's thread pools do not survive a fork), so ``fn`` must be
    a module-level function and the jobs and results must pickle (tensors and modules do), and a script
    that calls this needs the ``if __name__ == "__main__":`` guard (each worker imports the main module).
    Results come back in the order of ``jobs``; the first job to raise stops the map with its exception.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context, initializer=_quiet_worker) as pool:
        futures = [pool.submit(fn, *job) for job in jobs]
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc=desc, dynamic_ncols=True):
                future.result()  # raise as soon as any run fails
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return [future.result() for future in futures]
