"""Atomic, resumable checkpoints: safetensors weights, optimizer, scheduler and RNG state.

Layout of a checkpoint folder (``save_checkpoint(root, ...)``)::

    root/
      latest                  # text: name of the newest complete checkpoint
      step-00000100/
        model.safetensors     # the unwrapped module's weights (shared tensors handled)
        optimizer.pt          # torch.save of the optimizer state dict (tensors and numbers only)
        scheduler.pt          # same for the LR scheduler, if any
        rng-rank0.pt          # python / NumPy / torch (/ CUDA) generator states, one file per rank
        state.json            # step and the caller's JSON-serialisable extras

A checkpoint is written into a hidden temporary folder and renamed into place only once
every file is complete and flushed, and ``latest`` is replaced atomically afterwards, so
a save killed half-way leaves the previous checkpoint as the one that loads. Everything
is read back with safetensors or ``torch.load(weights_only=True)``: no pickled code runs.

In a distributed job call :func:`save_checkpoint` and :func:`load_checkpoint` on every
rank: FSDP2 state is gathered collectively, rank 0 writes the shared files and every
rank writes and restores its own RNG state.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from latentforge.distributed.wrap import is_fsdp, unwrap_model

LATEST = "latest"
_PREFIX = "step-"


@dataclass
class CheckpointState:
    """What :func:`load_checkpoint` restores besides the modules themselves."""

    step: int
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(path)


def rng_state() -> dict[str, Any]:
    """Every generator state that a training step may draw from, in weights_only-safe types."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _model_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """Full state dict of an FSDP model (collective), or None for a plain one."""
    if not is_fsdp(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _optim_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    if not is_fsdp(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def checkpoint_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(_PREFIX) and (p / "state.json").is_file()
    ]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The checkpoint ``latest`` names, or None when ``root`` holds no complete checkpoint."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / "state.json").is_file():
            return candidate
    complete = list_checkpoints(root)
    return complete[-1] if complete else None


def save_checkpoint(
    root: str | os.PathLike,
    *,
    model: nn.Module,
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    extra: dict[str, Any] | None = None,
    keep_last: int | None = 3,
) -> Path:
    """Write ``root/step-XXXXXXXX`` atomically and point ``root/latest`` at it.

    ``extra`` must be JSON-serialisable (epoch, best validation loss, the run config...).
    ``keep_last`` older checkpoints are kept (``None`` keeps all); the newest is never pruned.
    Returns the checkpoint folder.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f".{final.name}.tmp"
    rank = _rank()
    extra = dict(extra or {})
    json.dumps(extra)  # fail before touching the disk if extras are not serialisable

    full_model = _model_state(model)  # collective under FSDP: every rank must take part
    full_optim = _optim_state(model, optimizer) if optimizer is not None else None

    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # left over from a save that died
            shutil.rmtree(tmp)
        tmp.mkdir()
    _barrier()

    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    _barrier()

    if rank == 0:
        if full_model is None:
            save_model(unwrap_model(model), str(tmp / "model.safetensors"))
        else:
            save_file({k: v.contiguous() for k, v in full_model.items()}, str(tmp / "model.safetensors"))
        if full_optim is not None:
            torch.save(full_optim, tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        (tmp / "state.json").write_text(
            json.dumps({"step": step, "world_size": world, "extra": extra}, indent=2)
        )
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer_tmp = root / f".{LATEST}.tmp"
        pointer_tmp.write_text(final.name)
        os.replace(pointer_tmp, root / LATEST)
        _fsync_dir(root)
        if keep_last is not None:
            for old in list_checkpoints(root)[:-keep_last]:
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
    strict: bool = True,
) -> CheckpointState:
    """Restore a checkpoint written by :func:`save_checkpoint`.

    ``path`` is either a checkpoint folder or a root holding several (then ``latest`` is
    used). Raises ``FileNotFoundError`` when there is nothing to load and ``ValueError``
    when a file is malformed, naming the file.
    """
    path = Path(path)
    if not (path / "state.json").is_file():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(
                f"no complete checkpoint in {path} (expected {path}/state.json or {path}/{LATEST})"
            )
        path = found
    try:
        state = json.loads((path / "state.json").read_text())
        step = int(state["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path / 'state.json'} is not a valid checkpoint state file: {exc}") from exc

    weights = path / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {path} has no model.safetensors")
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(
            model, load_file(str(weights)), options=StateDictOptions(full_state_dict=True, strict=strict)
        )
    else:
        missing, unexpected = load_model(unwrap_model(model), str(weights), strict=strict)
        del missing, unexpected  # strict=True already raised on any mismatch

    if optimizer is not None:
        optim_file = path / "optimizer.pt"
        if not optim_file.is_file():
            raise FileNotFoundError(f"checkpoint {path} has no optimizer.pt but an optimizer was given")
        optim_state = torch.load(optim_file, map_location="cpu", weights_only=True)
        if is_fsdp(model):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(
                model, optimizer, optim_state, options=StateDictOptions(full_state_dict=True)
            )
        else:
            optimizer.load_state_dict(optim_state)
    if scheduler is not None:
        sched_file = path / "scheduler.pt"
        if not sched_file.is_file():
            raise FileNotFoundError(f"checkpoint {path} has no scheduler.pt but a scheduler was given")
        scheduler.load_state_dict(torch.load(sched_file, map_location="cpu", weights_only=True))
    if restore_rng:
        rng_file = path / f"rng-rank{_rank()}.pt"
        if not rng_file.is_file():
            raise FileNotFoundError(
                f"{rng_file} is missing: the checkpoint was written by a job with fewer ranks "
                f"({state.get('world_size', '?')}); pass restore_rng=False to resume without it"
            )
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
    return CheckpointState(step=step, path=path, extra=state.get("extra", {}))
