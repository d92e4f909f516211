"""Process-group setup from the torchrun environment."""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job. A single process has rank 0 of world size 1."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from exc


def init_distributed(
    backend: str | None = None, *, device: str | None = None, timeout_s: float = 1800.0
) -> DistEnv:
    """Initialise the default process group from torchrun's environment variables.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing is initialised and a
    single-process :class:`DistEnv` is returned. The backend defaults to NCCL when the
    process owns a GPU and gloo otherwise; each process binds to ``cuda:LOCAL_RANK``.
    Calling it twice returns the same environment.
    """
    rank = _int_env("RANK", 0)
    local_rank = _int_env("LOCAL_RANK", 0)
    world_size = _int_env("WORLD_SIZE", 1)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world_size}")

    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)

    if world_size == 1:
        return DistEnv(rank=0, local_rank=0, world_size=1, device=dev, backend=None)

    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            timeout=_dt.timedelta(seconds=timeout_s),
            device_id=dev if dev.type == "cuda" else None,
        )
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=dev, backend=backend)


def is_main_process() -> bool:
    """True on rank 0, and in any process that is not part of a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return _int_env("RANK", 0) == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over all ranks in place (a no-op for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def grad_accum_steps_per_rank(total_accum_steps: int, world_size: int) -> int:
    """Split a global gradient-accumulation count over data-parallel ranks.

    The effective batch (per-device batch x accumulation x world size) then stays the
    paper's value whatever the number of GPUs.
    """
    if total_accum_steps % world_size != 0:
        raise ValueError(
            f"gradient accumulation {total_accum_steps} is not divisible by world size {world_size}; "
            "pick a number of processes that divides it"
        )
    return total_accum_steps // world_size


def cleanup() -> None:
    """Destroy the process group if one was created, once every rank has reached this call.

    Without the barrier a rank that finishes first can tear down its gloo pairs while a peer
    is still sending into them (the likeliest cause of a rank that once aborted in CI at exit).
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
