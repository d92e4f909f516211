"""Worker for test_distributed_discovery.py: metacontroller training on 2 CPU processes (gloo).

Usage: python dist_discovery_worker.py OUT_DIR
Each rank writes rank<r>.json with its world size, run folder and final metacontroller weights.
"""

import dataclasses
import json
import sys
from pathlib import Path

import torch

from internal_rl.backbone import Backbone, BackboneConfig
from internal_rl.data import generate_trajectories
from internal_rl.discovery import tiny_config, train_metacontroller
from latentforge.distributed import cleanup, init_distributed


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    env = init_distributed(device="cpu")
    torch.manual_seed(0)  # the same frozen base model on every rank, as loading one run would give
    base = Backbone(BackboneConfig(n_layers=2, d_model=16, n_heads=2, mlp_hidden=32))
    data = generate_trajectories(
        "internal_rl/GridPinpad-v0", "pretrain", num_episodes=40, seed=1, num_envs=40
    )
    cfg = dataclasses.replace(
        tiny_config(), steps=4, batch_size=4, log_every=2, eval_every=4, checkpoint_every=4,
        eval_episodes=8, run_root=out, device="cpu",
    )  # fmt: skip
    result = train_metacontroller(cfg, data=data, base=base)
    weights = {k: v.flatten()[:8].tolist() for k, v in result.model.meta.state_dict().items()}
    record = {"world_size": env.world_size, "run_dir": str(result.run_dir), "weights": weights}
    (out / f"rank{env.rank}.json").write_text(json.dumps(record))
    cleanup()


if __name__ == "__main__":
    main()
