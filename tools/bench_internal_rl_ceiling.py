"""Bayes ceiling of next-action accuracy on gridworld-pinpad expert data.

The expert picks uniformly among the moves that tie for the shortest path to the next colour,
so even a model that knows the next colour predicts its move with probability at most
1 / (number of tied moves). The mean of that over expert steps bounds held-out action accuracy.

    python tools/bench_internal_rl_ceiling.py [--episodes 12000] [--seed 0]
"""

from __future__ import annotations

import argparse

import torch

from internal_rl.envs.grid_batched import BatchedGridExpert, BatchedGridPinpad


def ceiling(episodes: int, seed: int, num_envs: int = 1024) -> tuple[float, int]:
    """(mean of 1 / tied optimal moves over expert steps, number of steps) for fresh episodes."""
    total, steps, done = 0.0, 0, 0
    while done < episodes:
        n = min(num_envs, episodes - done)
        env = BatchedGridPinpad(n, seed=seed + done)
        expert = BatchedGridExpert(env, seed=seed + done + 1)
        env.reset()
        alive = torch.ones(n, dtype=torch.bool)
        while alive.any():
            costs = expert.action_costs()
            ties = (costs == costs.min(1, keepdim=True).values).sum(1)
            total += float((1.0 / ties.float())[alive].sum())
            steps += int(alive.sum())
            _, _, terminated, truncated, _ = env.step(expert.act())
            alive &= ~(terminated | truncated)
        done += n
    return total / steps, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=12_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    value, steps = ceiling(args.episodes, args.seed)
    print(
        f"Bayes ceiling (next colour known): {value:.3f} over {steps} expert steps of {args.episodes} episodes"
    )


if __name__ == "__main__":
    main()
