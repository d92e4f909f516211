"""Distributed helpers: one code path for 1 CPU process and N GPU processes.

Scripts are launched with ``latentforge-launch`` (a thin front of ``torchrun``) or with
``torchrun`` itself; both set ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, which
:func:`init_distributed` reads. Without them the script runs as a single process and
no process group is created, so the same training code runs under ``pytest`` too.

Typical use (nanoGPT's pattern)::

    env = init_distributed()
    log = get_logger(__name__)            # INFO on rank 0 only
    model = wrap_model(model.to(env.device), env, strategy="ddp")
    ...
    save_checkpoint(..., model=model)     # unwraps, writes on rank 0
    cleanup()
"""

from latentforge.distributed.env import (
    DistEnv,
    all_reduce_mean,
    barrier,
    cleanup,
    grad_accum_steps_per_rank,
    init_distributed,
    is_main_process,
)
from latentforge.distributed.log import get_logger
from latentforge.distributed.wrap import is_fsdp, unwrap_model, wrap_model

__all__ = [
    "DistEnv",
    "all_reduce_mean",
    "barrier",
    "cleanup",
    "get_logger",
    "grad_accum_steps_per_rank",
    "init_distributed",
    "is_fsdp",
    "is_main_process",
    "unwrap_model",
    "wrap_model",
]
