"""Metacontroller training through latentforge-launch with 2 CPU processes (DDP over gloo)."""

import json
from pathlib import Path

from latentforge.distributed.launch import run_local

WORKER = Path(__file__).with_name("dist_discovery_worker.py")


def test_two_process_metacontroller_training(tmp_path):
    proc = run_local(WORKER, [tmp_path], nproc=2, timeout_s=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["run_dir"] == ranks[1]["run_dir"]
    # DDP averages gradients, so both ranks hold the same weights after every step.
    assert ranks[0]["weights"] == ranks[1]["weights"]
    run_dir = Path(ranks[0]["run_dir"])
    assert (run_dir / "results.json").is_file()
    assert (run_dir / "checkpoints" / "step-00000004" / "model.safetensors").is_file()
