"""Spatia CPU benchmark: parameter counts of the 5B layout, tiny training-step and data-pipeline timings.

    .venv/bin/python packages/spatia/benchmarks/bench_spatia.py [--out benchmarks/results] [--repeats 5]

Writes ``spatia_<device>.json`` and ``.md``. Timings on a shared 2-core machine are noisy:
the load average at start is recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, lazy imports)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def parameter_counts() -> dict[str, int]:
    from peft import LoraConfig

    from spatia.models import SpatiaTransformer3DModel
    from spatia.trainer import MAIN_BLOCK_LORA_TARGETS

    with torch.device("meta"):
        model = SpatiaTransformer3DModel()
        total = sum(p.numel() for p in model.parameters())
        control = sum(p.numel() for p in model.control_parameters())
        model.add_adapter(LoraConfig(r=64, lora_alpha=64, target_modules=MAIN_BLOCK_LORA_TARGETS))
        lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    return {"base": total - control, "control_branch": control, "lora_r64_stage2": lora}


def tiny_training_steps(repeats: int) -> dict[str, float]:
    from dataclasses import replace

    from spatia.conditioning import FrameLayout
    from spatia.config import tiny_config
    from spatia.tiny import tiny_spatia_transformer
    from spatia.trainer import EncodedBatch, configure_stage, training_loss

    layout = FrameLayout(2, 2, 1)  # the tiny preset's later clip: 2 references, 5 history + 4 new frames
    batch = EncodedBatch(
        torch.randn(2, 4, layout.num_frames, 2, 2),
        torch.randn(2, 8, layout.num_frames, 2, 2),
        torch.randn(2, 16, 16),
        layout,
    )
    out = {}
    for stage in (1, 2):
        model = tiny_spatia_transformer()
        params = configure_stage(model, stage, lora_rank=4, lora_alpha=4)
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        config = replace(tiny_config(), stage=stage)

        def step(model=model, optimizer=optimizer, config=config):
            training_loss(model, batch, config).backward()
            optimizer.step()
            optimizer.zero_grad()

        out[f"stage{stage}_step_ms"] = _median_ms(step, repeats)
    return out


def data_pipeline(repeats: int, height: int, width: int) -> dict[str, float]:
    from spatia.config import ModelConfig
    from spatia.data.procedural import ProceduralClips, sample_scene
    from spatia.networks import build_networks
    from spatia.trainer import encode_samples

    out = {"size": f"{height}x{width}"}
    out["render_scene_21_frames_ms"] = _median_ms(
        lambda: sample_scene(0, 21, height, width, dynamic_object=True), repeats
    )
    data = ProceduralClips(
        num_scenes=1,
        height=height,
        width=width,
        first_clip_frames=9,
        history_frames=5,
        new_frames=4,
        num_reference_frames=2,
    )
    data.scene(0)
    out["later_clip_with_memory_and_references_ms"] = _median_ms(lambda: data.sample(0, first=False), repeats)
    if height % 16 == 0 and width % 16 == 0:
        networks = build_networks(ModelConfig(pretrained="tiny", control_layers=(0, 2)))
        sample = data.sample(0, first=False)
        out["tiny_vae_encode_batch2_ms"] = _median_ms(
            lambda: encode_samples(networks, [sample, sample], torch.device("cpu")), repeats
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 repeats, tiny frame size only")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 2
    result = {
        "device": "cpu",
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "load_average_1_5_15_at_start": [round(v, 2) for v in os.getloadavg()],
        "parameters_wan22_ti2v_5b": parameter_counts(),
        "tiny_training": tiny_training_steps(args.repeats),
        "quick": args.quick,
        "procedural_data": [data_pipeline(args.repeats, 32, 32)]
        + ([] if args.quick else [data_pipeline(args.repeats, 96, 160)]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spatia_cpu.json").write_text(json.dumps(result, indent=2))
    p = result["parameters_wan22_ti2v_5b"]
    lines = [
        "# spatia benchmark: cpu",
        "",
        f"torch {result['torch']}, {result['platform']}, {result['cpu_threads']} threads, load average at start "
        f"{result['load_average_1_5_15_at_start']} (shared machine: timings are noisy).",
        "",
        "## Wan2.2-TI2V-5B layout (meta device)",
        "",
        "| part | parameters |",
        "|---|---|",
        f"| base transformer (30 blocks) | {p['base']:,} |",
        f"| control branch (8 blocks at 0, 4, ..., 28 + 96-channel patch embedding) | {p['control_branch']:,} |",
        f"| stage-2 LoRA r64 on main-block attention + FFN | {p['lora_r64_stage2']:,} |",
        "",
        "## Tiny training step (batch 2, median ms)",
        "",
        *(f"- {k}: {v}" for k, v in result["tiny_training"].items()),
        "",
        "## Procedural data (median ms)",
        "",
    ]
    for row in result["procedural_data"]:
        lines += [f"- {row['size']}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "size")]
    (out / "spatia_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
