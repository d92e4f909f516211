"""Pretraining throughput of the internal-rl base models (tokens per second), and the latency of
cached one-token inference (``Backbone.step``) that the internal-RL rollouts use.

One token is one (observation, action) step of an expert episode. Each case times full
optimiser steps (forward, action + next-observation NLL, backward, AdamW) on batches of
random data with the shapes of the real datasets, after warm-up steps. Writes
``<out>/internal-rl-pretrain-<device>.json`` and ``.md``.

    python tools/bench_internal_rl_pretrain.py --out benchmarks/results [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from internal_rl.backbone import Backbone, BackboneConfig, ant_backbone_config
from internal_rl.pretrain import (
    Batch,
    PretrainConfig,
    make_optimizer,
    sequence_losses,
    tiny_ant_config,
    tiny_config,
)

GRID_OBS, ANT_OBS = 637, 41  # ant-pinpad: 27 proprioception + 2 global + 10 relative + 2 in-cell


@dataclass
class Case:
    name: str
    model: BackboneConfig
    batch: int
    steps_per_episode: int
    obs_loss_coef: float


def cases(quick: bool, device: torch.device) -> list[Case]:
    big = device.type == "cuda"
    grid_paper = BackboneConfig(obs_dim=GRID_OBS)
    ant_paper = ant_backbone_config(obs_dim=ANT_OBS)
    grid_tiny = BackboneConfig(obs_dim=GRID_OBS, n_layers=4, d_model=64, n_heads=4, mlp_hidden=128)
    ant_tiny = ant_backbone_config(
        obs_dim=ANT_OBS, n_layers=4, d_model=64, n_heads=4, mlp_hidden=128, lru_width=64
    )
    if quick:
        return [
            Case("grid tiny (4x64 Transformer)", grid_tiny, 32, 48, 0.01),
            Case("ant tiny (4x64 Hawk)", ant_tiny, 4, 128, 10.0),
        ]
    return [
        Case("grid tiny (4x64 Transformer)", grid_tiny, 32, 48, 0.01),
        Case("grid paper (6x256 Transformer)", grid_paper, 1024 if big else 32, 48, 0.01),
        Case("ant tiny (4x64 Hawk)", ant_tiny, 16, 500, 10.0),
        Case("ant paper (8x256 Hawk)", ant_paper, 512 if big else 4, 500, 10.0),
    ]


def time_case(case: Case, device: torch.device, warmup: int, iters: int, fast: bool = False) -> dict:
    """Seconds per optimiser step; ``fast`` (CUDA): bf16 autocast, fused AdamW and torch.compile, as
    ``internal-rl pretrain --bf16 --fused-adamw --compile`` trains."""
    torch.manual_seed(0)
    model = Backbone(case.model).to(device)
    optimizer = make_optimizer(model, PretrainConfig(), fused=fast)
    run = torch.compile(model) if fast else model
    t = case.steps_per_episode
    obs = (torch.rand(case.batch, t + 1, case.model.obs_dim, device=device) > 0.9).float()
    if case.model.discrete_actions:
        actions = torch.randint(0, case.model.action_dim, (case.batch, t), device=device)
    else:
        actions = torch.randn(case.batch, t, case.model.action_dim, device=device)
    lengths = torch.full((case.batch,), t, device=device)
    batch = Batch.from_trajectories(obs, actions, lengths, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            loss = sequence_losses(run, batch, case.obs_loss_coef)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / iters
    return {
        "case": case.name + (" + bf16, fused AdamW, compile" if fast else ""),
        "params": sum(p.numel() for p in model.parameters()),
        "batch_episodes": case.batch,
        "steps_per_episode": t,
        "seconds_per_step": seconds,
        "tokens_per_s": case.batch * t / seconds,
    }


@torch.no_grad()
def time_step_latency(name: str, cfg: BackboneConfig, batch: int, steps: int, device: torch.device) -> dict:
    """Mean seconds per ``Backbone.step`` over ``steps`` tokens, vs re-running ``forward`` on the prefix."""
    torch.manual_seed(0)
    model = Backbone(cfg).to(device).eval()
    obs = (torch.rand(batch, steps, cfg.obs_dim, device=device) > 0.9).float()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    state = model.init_state(batch, device)
    model.step(obs[:, 0], state)  # warm-up
    state = model.init_state(batch, device)
    sync()
    start = time.perf_counter()
    for t in range(steps):
        model.step(obs[:, t], state)
    sync()
    cached = (time.perf_counter() - start) / steps
    probes = list(range(0, steps, max(1, steps // 10)))  # full recomputation at a tenth of the positions
    sync()
    start = time.perf_counter()
    for t in probes:
        model(obs[:, : t + 1])
    sync()
    recompute = (time.perf_counter() - start) / len(probes)
    return {
        "case": name,
        "batch": batch,
        "tokens": steps,
        "step_ms": 1e3 * cached,
        "recompute_forward_ms": 1e3 * recompute,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true", help="small cases, few iterations (smoke run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warmup, iters = (1, 2) if args.quick else (2, 5)
    load = list(os.getloadavg())
    rows = [time_case(c, device, warmup, iters) for c in cases(args.quick, device)]
    if device.type == "cuda":  # issue 17's target: the paper grid case at >= 5x its fp32 rate
        paper = next(c for c in cases(args.quick, device) if c.name.startswith("grid paper"))
        rows.append(time_case(paper, device, max(warmup, 3), iters, fast=True))
    grid_tiny = dataclasses.replace(tiny_config().model, obs_dim=GRID_OBS)
    ant_tiny = dataclasses.replace(tiny_ant_config().model, obs_dim=ANT_OBS)
    latency = [
        time_step_latency(
            "grid tiny preset (Transformer)", grid_tiny, 256, 20 if args.quick else 100, device
        ),
        time_step_latency("ant tiny preset (Hawk)", ant_tiny, 256, 20 if args.quick else 100, device),
    ]
    label = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu-{torch.get_num_threads()}threads"
    )
    report = {
        "benchmark": "internal-rl pretraining throughput",
        "device": label,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "quick": args.quick,
        "note": "tokens = expert steps; full optimiser steps on random data with the datasets' shapes",
        "load_average_at_start": load,
        "results": rows,
        "step_latency": latency,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    card = label.lower().replace(" ", "-") if device.type == "cuda" else device.type
    stem = args.out / f"internal-rl-pretrain-{card}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# internal-rl pretraining throughput ({label}{', quick' if args.quick else ''})",
        "",
        "| case | params | batch x steps | s / step | tokens / s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['params']:,} | {r['batch_episodes']} x {r['steps_per_episode']} "
            f"| {r['seconds_per_step']:.3f} | {r['tokens_per_s']:,.0f} |"
        )
    lines += [
        "",
        f"Cached one-token inference (`Backbone.step`, no grad), batch 256; load average at start {load}:",
        "",
        "| model | tokens | ms / step (cached) | ms / forward on the prefix (mean over positions) |",
        "|---|---:|---:|---:|",
    ]
    for r in latency:
        lines.append(
            f"| {r['case']} | {r['tokens']} | {r['step_ms']:.2f} | {r['recompute_forward_ms']:.2f} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
