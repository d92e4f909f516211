"""DDP and FSDP2 wrapping, and the inverse: the plain module to save."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from latentforge.distributed.env import DistEnv

Strategy = Literal["none", "ddp", "fsdp"]


def wrap_model(
    model: nn.Module,
    env: DistEnv,
    strategy: Strategy = "ddp",
    *,
    shard_modules: Iterable[type[nn.Module]] = (),
    param_dtype: torch.dtype | None = None,
    find_unused_parameters: bool = False,
) -> nn.Module:
    """Wrap ``model`` (already on ``env.device``) for data-parallel training.

    - ``none`` or a single process: the model is returned unchanged.
    - ``ddp``: :class:`~torch.nn.parallel.DistributedDataParallel`; parameters are
      broadcast from rank 0 so every rank starts identical.
    - ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) on every submodule whose
      type is in ``shard_modules`` (the transformer blocks, typically), then on the root.
      ``param_dtype`` turns on mixed precision (e.g. ``torch.bfloat16``) with fp32 reduction.
      FSDP2 modifies the model in place and returns it.
    """
    if strategy not in ("none", "ddp", "fsdp"):
        raise ValueError(f"unknown strategy {strategy!r}; expected 'none', 'ddp' or 'fsdp'")
    if strategy == "none" or not env.is_distributed:
        return model
    if strategy == "ddp":
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
        )

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(env.device.type, (env.world_size,))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype else None
    kwargs = {"mesh": mesh} | ({"mp_policy": mp} if mp is not None else {})
    types = tuple(shard_modules)
    if types:
        for module in model.modules():
            if isinstance(module, types) and module is not model:
                fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP and ``torch.compile`` wrappers so state-dict keys match the bare model."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def is_fsdp(model: nn.Module) -> bool:
    """True when ``model`` (or any submodule) is sharded with FSDP2."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - very old torch
        return False
    return any(isinstance(m, FSDPModule) for m in model.modules())
