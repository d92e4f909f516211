"""Gridworld-pinpad throughput: the batched torch env against the gymnasium env, in one run.

Both step random actions and start a new episode whenever one ends (layouts are redrawn and
checked for solvability at every reset, as in data generation). The gymnasium number is one
env stepped in a Python loop (the raw env, and the ``gymnasium.make`` stack with its checker
wrappers); the batched numbers are env-steps per second summed over all envs. The target is
a ratio of at least 100x at 4096 envs. Writes ``<out>/internal-rl-<device>.json`` and ``.md`` (``cpu`` or the GPU's name, e.g. ``nvidia-h200``).

    python tools/bench_internal_rl.py --out benchmarks/results [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from internal_rl.envs import GRID_ID, register_envs
from internal_rl.envs.grid import GridPinpadEnv
from internal_rl.envs.grid_batched import BatchedGridPinpad


def gym_steps_per_second(env: gym.Env, steps: int) -> float:
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    actions = rng.integers(4, size=steps)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(int(a))
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def batched_steps_per_second(num_envs: int, iters: int, device: torch.device) -> float:
    env = BatchedGridPinpad(num_envs, autoreset=True, device=device, seed=0)
    env.reset()
    gen = torch.Generator(device=device).manual_seed(0)
    for _ in range(5):  # warm-up (allocations, CUDA context)
        env.step(torch.randint(4, (num_envs,), generator=gen, device=device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        env.step(torch.randint(4, (num_envs,), generator=gen, device=device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return num_envs * iters / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true", help="fewer steps and env counts (CI smoke)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 matches the single-threaded gymnasium loop)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    register_envs()
    load = list(os.getloadavg())
    gym_steps = 2000 if args.quick else 20000
    raw = gym_steps_per_second(GridPinpadEnv(), gym_steps)
    made = gym_steps_per_second(gym.make(GRID_ID), gym_steps)
    env_counts = [64, 4096] if args.quick else [1, 64, 1024, 4096, 16384]
    rows = []
    for n in env_counts:
        iters = max(10, min(500, 200_000 // n)) if not args.quick else 20
        sps = batched_steps_per_second(n, iters, device)
        rows.append(
            {
                "num_envs": n,
                "iters": iters,
                "steps_per_s": sps,
                "x_gym_raw": sps / raw,
                "x_gym_make": sps / made,
            }
        )
        print(f"batched {n:>6} envs: {sps:12.0f} steps/s  ({sps / raw:7.1f}x raw gym env)")
    result = {
        "benchmark": "internal-rl gridworld-pinpad steps/s",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_at_start": load,
        "quick": args.quick,
        "gym_raw_steps_per_s": raw,
        "gym_make_steps_per_s": made,
        "batched": rows,
    }
    at_4096 = next(r for r in rows if r["num_envs"] == 4096)
    result["ratio_at_4096"] = at_4096["x_gym_raw"]
    result["target_met"] = at_4096["x_gym_raw"] >= 100
    args.out.mkdir(parents=True, exist_ok=True)
    # named for the card, as tools/bench.py does, so runs on different GPUs do not overwrite each other
    slug = (
        re.sub(r"[^a-z0-9]+", "-", result["device_name"].lower()).strip("-")
        if device.type == "cuda"
        else "cpu"
    )
    stem = args.out / f"internal-rl-{slug}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# internal-rl benchmark: gridworld-pinpad steps/s ({device.type})",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {result['device_name']}; "
        f"quick: {args.quick}; load average at start {[round(x, 2) for x in load]}.",
        "",
        "- Random actions, new solvable layout at every reset (auto-reset in the batched env). Random play ends"
        " episodes after a few steps (about 310 of 4096 envs reset per step), so layout drawing and the"
        " solvability search are a large share of the batched cost alongside the per-step tensor ops.",
        "- CPU numbers come from a 2-core machine shared with other jobs (see the load average): noisy.",
        f"- gymnasium env, one Python loop: raw {raw:,.0f} steps/s; through gymnasium.make {made:,.0f} steps/s.",
        f"- Target >= 100x the raw gymnasium env at 4096 envs: {'met' if result['target_met'] else 'NOT met'} "
        f"({result['ratio_at_4096']:.1f}x).",
        "",
        "| envs | steps/s | x raw gym | x gym.make |",
        "|---|---|---|---|",
        *[
            f"| {r['num_envs']} | {r['steps_per_s']:,.0f} | {r['x_gym_raw']:.1f} | {r['x_gym_make']:.1f} |"
            for r in rows
        ],
        "",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
