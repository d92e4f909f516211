"""Rank-aware logging: rank 0 speaks at INFO, the others only at WARNING and above."""

from __future__ import annotations

import logging
import os
import sys

_FORMAT = "%(asctime)s [rank {rank}] %(name)s: %(message)s"


def get_logger(name: str, level: int | None = None) -> logging.Logger:
    """A logger whose records carry the torchrun rank.

    Non-zero ranks are quiet by default so an N-process job prints one copy of each
    progress line; warnings and errors still come from every rank.
    """
    rank = int(os.environ.get("RANK", "0") or 0)
    logger = logging.getLogger(name)
    if level is None:
        level = logging.INFO if rank == 0 else logging.WARNING
    logger.setLevel(level)
    if not any(getattr(h, "_latentforge", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT.format(rank=rank), datefmt="%H:%M:%S"))
        handler._latentforge = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    return logger
