"""Accuracy of the SLAM memory update on procedural renders, per scene seed.

    .venv/bin/python packages/spatia/benchmarks/measure_slam.py [--seeds 8] [--out benchmarks/results]
    .venv/bin/python packages/spatia/benchmarks/measure_slam.py --low-res [--seeds 16] [--out ...]

Each seed: a room rendered at 96x128 along its orbit (10 frames); frames 0-3 with exact depth
fill the memory, frames 4-9 are the "generated" clip, requested along the true poses turned by
4 degrees and shifted by 0.2 units (so the estimate cannot just copy the request). Reports the
method (pnp / mapping / prior = fell back), registered frames, the worst rotation (degrees) and
camera-centre error (units; rooms are 4-7 units wide) of the registered frames against the true
poses, points added / triangulated and the update time. Writes ``spatia_slam_cpu.json`` with --out.

``--low-res``: the CPU reproduction's 32 x 32 evaluation rooms (seeds 1000 + i, `spatia reproduce`'s
cameras and texture scale), where SIFT finds almost nothing. Frame 0 with exact depth fills the
memory; frames 1-12 of the way out are the clip, requested 3 degrees and 0.05 units off the truth;
the update goes through SIFT, dense patch tracking and photometric tracking. Writes ``spatia_slam_32px_cpu.json``.
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
from spatia.trajectories import offset_poses

H, W = 96, 128


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
    prior = offset_poses(clip.extrinsics_w2c[4:], 4.0, 0.2)
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


def measure_low_resolution(seed: int) -> dict:
    from spatia.reproduce import eval_scene, tiny_reproduce

    config = tiny_reproduce()
    scene = eval_scene(seed, config, 25)
    memory = SpatialMemory(config.train.data.memory_voxel_size)
    memory.add_frames(scene.frames[:1], scene.depth[:1], scene.w2c[:1], scene.intrinsics, frame_ids=[0])
    truth = scene.w2c[1:13]
    start = time.perf_counter()
    result = memory.update_from_clip(scene.frames[1:13], offset_poses(truth, 3.0, 0.05), scene.intrinsics)
    seconds = time.perf_counter() - start
    rot, centre = pose_errors(result.estimated_w2c, truth)
    reg = result.registered
    return {
        "seed": seed,
        "method": result.method,
        "registered": int(reg.sum()),
        "frames": len(truth),
        "rotation_deg": [round(float(r), 3) for r in rot[reg]],
        "centre_error": [round(float(c), 4) for c in centre[reg]],
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=None, help="rooms (default 8, or 16 with --low-res)")
    parser.add_argument(
        "--low-res", action="store_true", help="32 x 32 evaluation rooms, SIFT + dense + photometric tracking"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    if args.low_res:
        rows = [measure_low_resolution(1000 + i) for i in range(args.seeds or 16)]
        rot = [r for row in rows for r in row["rotation_deg"]]
        summary = {
            "registered": sum(row["registered"] for row in rows),
            "frames": sum(row["frames"] for row in rows),
            "rotation_deg_mean": sum(rot) / len(rot) if rot else math.nan,
            "rotation_deg_max": max(rot, default=math.nan),
            "request_rotation_deg": 3.0,
        }
        name, size = "spatia_slam_32px_cpu.json", [32, 32]
    else:
        rows = [measure(seed) for seed in range(args.seeds or 8)]
        summary, name, size = None, "spatia_slam_cpu.json", [H, W]
    for row in rows:
        print(json.dumps(row))
    if summary is not None:
        print(json.dumps(summary))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / name
        payload = {"load_average_at_start": load, "size": size, "rows": rows}
        path.write_text(json.dumps(payload | ({"summary": summary} if summary else {}), indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
