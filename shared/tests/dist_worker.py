"""Worker launched by test_distributed.py under latentforge-launch (2 CPU processes, gloo).

Usage: python dist_worker.py OUT_DIR MODE   (MODE: ddp | fsdp)
Each rank writes rank<r>.json with what the test checks.
"""

import json
import sys
from pathlib import Path

import torch
from torch import nn

from latentforge.checkpoint import load_checkpoint, save_checkpoint
from latentforge.distributed import all_reduce_mean, cleanup, get_logger, init_distributed, wrap_model
from latentforge.seeding import seed_everything


def make_model() -> nn.Module:
    torch.manual_seed(0)  # identical init on every rank, as a real job would load one checkpoint
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    env = init_distributed()
    get_logger("dist_worker").info("world size %d", env.world_size)

    value = torch.tensor([float(env.rank + 1)])
    summed = value.clone()
    torch.distributed.all_reduce(summed)
    mean = all_reduce_mean(value.clone())

    data = torch.load(out / "data.pt", weights_only=True)
    x, y = data["x"].chunk(env.world_size)[env.rank], data["y"].chunk(env.world_size)[env.rank]
    model = wrap_model(make_model(), env, strategy=mode, shard_modules=(nn.Linear,))
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    if mode == "fsdp":
        grads = {n: p.grad.full_tensor().tolist() for n, p in model.named_parameters()}
    else:
        grads = {n.removeprefix("module."): p.grad.tolist() for n, p in model.named_parameters()}

    result = {"sum": summed.item(), "mean": mean.item(), "grads": grads, "world_size": env.world_size}
    if mode == "fsdp":
        # One optimiser step, a checkpoint, a second step; then restore and redo the second step.
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        opt.step()
        opt.zero_grad()
        seed_everything(3)
        save_checkpoint(out / "ckpt", model=model, optimizer=opt, step=1)

        def second_step() -> list[float]:
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            noise = torch.rand(2)  # RNG after the step must be restored too
            return [p.full_tensor().sum().item() for p in model.parameters()] + noise.tolist()

        first = second_step()
        load_checkpoint(out / "ckpt", model=model, optimizer=opt)
        result["resume"] = {"first": first, "again": second_step()}
    (out / f"rank{env.rank}.json").write_text(json.dumps(result))
    cleanup()


if __name__ == "__main__":
    main()
