"""Run folders, metrics logs and progress bars.

A run lives in ``runs/<package>/<package>__<exp>__<seed>__<unix time>/`` (CleanRL's
naming) and holds ``config.json``, ``metrics.jsonl`` (one JSON object per log call), the
TensorBoard event files and whatever the trainer adds (checkpoints, plots, reports).
Only rank 0 writes; on other ranks the logger and the progress bar are silent no-ops,
so trainers call them unconditionally.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch.distributed as dist
from tqdm.auto import tqdm

from latentforge.distributed.env import is_main_process

PROGRESS_ENV = "LATENTFORGE_PROGRESS"
"""Set to ``0`` to silence the progress bars of every run in this process (``latentforge.jobs`` workers)."""


def run_name(package: str, exp_name: str, seed: int, *, timestamp: int | None = None) -> str:
    """``<package>__<exp_name>__<seed>__<unix time>``."""
    for part, label in ((package, "package"), (exp_name, "exp_name")):
        if not part or "/" in part or "__" in part:
            raise ValueError(f"{label} {part!r} must be non-empty and contain neither '/' nor '__'")
    return f"{package}__{exp_name}__{seed}__{int(time.time()) if timestamp is None else timestamp}"


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):  # torch / numpy scalars
        return value.item()
    return value


def create_run_dir(
    root: str | os.PathLike,
    package: str,
    exp_name: str,
    seed: int,
    config: Any = None,
    *,
    name: str | None = None,
) -> Path:
    """Make ``root/<package>/<run name>`` and write ``config.json`` into it (rank 0 only).

    ``name`` overrides the generated run name (e.g. to resume a named run).
    """
    run_dir = Path(root) / package / (name or run_name(package, exp_name, seed))
    if name is None and _world_size() == 1:
        # Two runs with the same name and seed started in the same second would share a folder and
        # overwrite each other's checkpoints; the second gets a suffix. With several ranks every rank
        # must compute the same folder, so there the timestamp alone names it.
        run_dir = _claim_unique(run_dir)
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        if config is not None:
            (run_dir / "config.json").write_text(json.dumps(_jsonable(config), indent=2))
    return run_dir


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _claim_unique(run_dir: Path) -> Path:
    """Create ``run_dir``, or ``run_dir-2``, ``-3``, ... if it exists (mkdir is atomic across processes)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    candidate, k = run_dir, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            k += 1
            candidate = run_dir.with_name(f"{run_dir.name}-{k}")


class MetricsLogger:
    """Append-only JSONL metrics with optional TensorBoard mirroring and a progress bar.

    >>> with MetricsLogger(run_dir) as log:
    ...     for step in log.progress(range(100), desc="train"):
    ...         log.log(step, **{"losses/nll": loss})

    Metric names may use ``group/name`` (CleanRL's ``charts/``, ``losses/``, ``eval/``),
    which TensorBoard shows as sections. The latest scalars appear in the bar's postfix.
    """

    def __init__(self, run_dir: str | os.PathLike, *, tensorboard: bool = True, enabled: bool | None = None):
        self.run_dir = Path(run_dir)
        self.enabled = is_main_process() if enabled is None else enabled
        self._bar: tqdm | None = None
        self._writer = None
        self._file = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 - closed in close()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir))

    def progress(
        self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", initial: int = 0
    ) -> tqdm:
        """A tqdm bar (disabled off rank 0 and where ``PROGRESS_ENV`` is 0) showing the last logged scalars."""
        disable = not self.enabled or os.environ.get(PROGRESS_ENV) == "0"
        self._bar = tqdm(
            iterable, total=total, desc=desc, initial=initial, disable=disable, dynamic_ncols=True
        )
        return self._bar

    def log(self, step: int, **metrics: Any) -> None:
        """Record ``metrics`` at ``step``; tensors and NumPy scalars are converted to numbers."""
        if not self.enabled:
            return
        row = {k: _jsonable(v) for k, v in metrics.items()}
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = str(value)  # JSON has no NaN/inf; keep them visible rather than crash
        assert self._file is not None
        self._file.write(json.dumps({"step": int(step), "time": round(time.time(), 3), **row}) + "\n")
        scalars = {
            k: v
            for k, v in metrics.items()
            if isinstance(_jsonable(v), (int, float)) and not isinstance(v, bool)
        }
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(key, float(_jsonable(value)), global_step=int(step))
        if self._bar is not None and scalars:
            self._bar.set_postfix(
                {k.split("/")[-1]: f"{float(_jsonable(v)):.4g}" for k, v in scalars.items()}, refresh=False
            )

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        """A markdown blob (e.g. the hyperparameter table) in TensorBoard's text tab."""
        if self._writer is not None:
            self._writer.add_text(tag, text, global_step=step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` file (or of the one inside a run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    rows = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not a JSON object: {exc}") from exc
    return rows
