"""Accuracy of the SLAM memory update on procedural renders, per scene seed.

    .venv/bin/python packages/spatia/benchmarks/measure_slam.py [--seeds 8] [--out benchmarks/results]

Each seed: a room rendered at 96x128 along its orbit (10 frames); frames 0-3 with exact depth
fill the memory, frames 4-9 are the "generated" clip, requested along the true poses turned by
4 degrees and shifted by 0.2 units (so the estimate cannot just copy the request). Reports the
method (pnp / mapping / prior = fell back), registered frames, the worst rotation (degrees) and
camera-centre error (units; rooms are 4-7 units wide) of the registered frames against the true
poses, points added / triangulated and the update time. Writes ``spatia_slam_cpu.json`` with --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from spatia.data.procedural import sample_scene
from spatia.slam import pose_errors
from spatia.spatial_memory import SpatialMemory

H, W = 96, 128


def perturbed(w2c: torch.Tensor, degrees: float, shift: float) -> torch.Tensor:
    a = math.radians(degrees)
    turn = torch.tensor(
        [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=torch.float64
    )
    out = w2c.double().clone()
    out[:, :3, :3] = turn @ out[:, :3, :3]
    out[:, :3, 3] = out[:, :3, 3] @ turn.T + shift
    return out


def measure(seed: int) -> dict:
    _, clip = sample_scene(seed, 10, H, W, dynamic_object=True)
    memory = SpatialMemory(0.05)
    memory.add_frames(
        clip.images[:4],
        clip.depth[:4],
        clip.extrinsics_w2c[:4],
        clip.intrinsics[:4],
        dynamic_masks=clip.dynamic_mask[:4],
    )
    start = time.perf_counter()
    prior = perturbed(clip.extrinsics_w2c[4:], 4.0, 0.2)
    result = memory.update_from_clip(clip.images[4:], prior, clip.intrinsics[0], clip.dynamic_mask[4:])
    seconds = time.perf_counter() - start
    row = {"seed": seed, "method": result.method, "registered": int(result.registered.sum()), "frames": 6}
    if result.registered.any():
        rot, centre = pose_errors(
            result.estimated_w2c[result.registered], clip.extrinsics_w2c[4:][result.registered]
        )
        row |= {
            "max_rotation_deg": round(float(rot.max()), 3),
            "max_centre_error": round(float(centre.max()), 4),
        }
    return row | {
        "new_points": result.num_new_points,
        "triangulated": result.num_triangulated,
        "seconds": round(seconds, 2),
        "message": result.message,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = [measure(seed) for seed in range(args.seeds)]
    for row in rows:
        print(json.dumps(row))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "spatia_slam_cpu.json"
        path.write_text(
            json.dumps({"load_average_at_start": load, "size": [H, W], "rows": rows}, indent=2) + "\n"
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
