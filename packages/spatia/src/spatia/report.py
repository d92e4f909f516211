"""``report.md`` of ``spatia reproduce``: the measured tables and what they say, written from ``results.json``."""

from __future__ import annotations

import math
from pathlib import Path


def _fmt(stat: dict) -> str:
    if not stat or stat.get("n", 0) == 0 or math.isnan(stat["mean"]):
        return "n/a"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f} (n={stat['n']})"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _num(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) and not math.isnan(x) else str(x)


def verdict(summary: dict) -> str:
    """Whether memory raised revisit consistency beyond the seed spread (the honest one-line answer)."""
    base = summary.get("no_memory", {}).get("psnr_c")
    mems = {k: v["psnr_c"] for k, v in summary.items() if k.startswith("memory_k")}
    if not base or not mems or base["n"] == 0:
        return "not measured"
    best_name, best = max(mems.items(), key=lambda kv: kv[1]["mean"] if kv[1]["n"] else -math.inf)
    diff = best["mean"] - base["mean"]
    spread = max(best["std"], base["std"])
    if diff > spread:
        return f"memory helps: {best_name} PSNR_C {diff:+.2f} dB over no memory (larger than the seed spread {spread:.2f})"
    if diff < -spread:
        return f"memory hurts: {best_name} PSNR_C {diff:+.2f} dB against no memory (seed spread {spread:.2f})"
    return f"no clear effect: best with-memory PSNR_C {diff:+.2f} dB against no memory, within the seed spread {spread:.2f}"


def _world_error(poses: list[dict]) -> str:
    """The unaligned error, in the memory's own frame (older results files lack it)."""
    world = [p for p in poses if math.isfinite(p.get("world_rotation_deg_mean", math.nan))]
    if not world:
        return ""
    return (
        f"; as estimated, in the memory's frame (no alignment: the memory fixes frame and scale), "
        f"{_mean([p['world_rotation_deg_mean'] for p in world]):.2f} degrees and "
        f"{_mean([p['world_centre_rmse'] for p in world]):.3f} units"
    )


def write_report(results: dict, path: str | Path) -> Path:
    """Markdown report of one reproduce run."""
    cfg, summary, t = results["config"], results["summary"], results["timings"]
    ae = results.get("autoencoder")
    ae_line = (
        f"Autoencoder: tiny causal VAE ({'loaded from the cache' if ae.get('cached') else 'trained'}), held-out "
        f"round trip {ae['heldout_psnr']:.2f} dB PSNR (train {ae['train_psnr']:.2f} dB), "
        f"{ae['config']['iterations']} steps, {ae['seconds']:.0f} s when trained."
        if ae
        else "Autoencoder: the configured model's VAE (not trained here)."
    )
    lines = [
        "# spatia reproduce",
        "",
        ae_line,
        f"Stage 0 (pretraining the random tiny main network; not in the paper) {cfg.get('stage0_iterations', 0)} "
        f"steps ({t.get('stage0_s', math.nan):.0f} s).",
        f"Tiny model: stage 1 {cfg['stage1_iterations']} steps, stage 2 {cfg['stage2_iterations']} steps on "
        f"{cfg['train']['data']['num_scenes']} procedural rooms at {cfg['train']['data']['height']}x"
        f"{cfg['train']['data']['width']}; evaluation on held-out rooms {list(cfg['eval_scenes'])}, loop trajectory "
        f"of {cfg['num_clips']} clips, sampling seeds {list(cfg['seeds'])}, {cfg['num_inference_steps']} steps.",
        f"Time: stage 1 {t['stage1_s']:.0f} s, stage 2 {t['stage2_s']:.0f} s, generation + evaluation "
        f"{t['generation_and_eval_s']:.0f} s, total {t['total_s']:.0f} s; load average at the end "
        f"{results.get('load_average')} (2 cores).",
        "",
        f"**Verdict:** {verdict(summary)}.",
        "",
        "| setting | PSNR_C (dB) | match accuracy | PSNR vs GT | SSIM vs GT | PSNR new vs memory render | "
        "PSNR new vs last context |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {_fmt(s['psnr_c'])} | {_fmt(s['match_accuracy'])} | {_fmt(s['psnr_gt'])} | "
            f"{_fmt(s['ssim_gt'])} | {_fmt(s['psnr_vs_memory_render'])} | {_fmt(s['psnr_vs_last_context'])} |"
        )
    lines += ["", "Reference points per scene (what a perfect generator would score):", ""]
    lines += [
        "| scene | GT PSNR_C | GT match accuracy | VAE round-trip PSNR | LPIPS |",
        "|---|---|---|---|---|",
    ]
    for scene, ref in results["references"].items():
        gt, vae = ref["ground_truth_closed_loop"], ref["vae_round_trip"]
        lines.append(
            f"| {scene} | {_num(gt['psnr_c'])} | {_num(gt['match_accuracy'])} | {_num(vae['psnr'])} | {vae['lpips']} |"
        )
    poses = [r["metrics"]["pose_error"] for r in results["runs"] if "pose_error" in r["metrics"]]
    if poses:
        reg = sum(p["num_registered"] for p in poses)
        total = sum(p["num_frames"] for p in poses)
        scored = [p for p in poses if math.isfinite(p["rotation_deg_mean"])]
        error = (
            f"over the {len(scored)} videos with at least 3 registered frames, the estimated path is off the "
            f"requested one by {_mean([p['rotation_deg_mean'] for p in scored]):.2f} degrees on average (worst "
            f"frame {max(p['rotation_deg_max'] for p in scored):.2f}) and {_mean([p['translation_rmse'] for p in scored]):.3f} "
            f"units RMSE of the camera centres (trajectory extent {_mean([p['trajectory_extent'] for p in scored]):.3f}), "
            "after a similarity alignment" + _world_error(scored)
            if scored
            else "no video has the 3 registered frames a pose error needs"
        )
        lines += [
            "",
            f"SLAM (pycolmap PnP on SIFT or dense matches) registered {reg} of {total} frames over the "
            f"with-memory runs (frame 0 counts as given); {error}. Per video in `results.json`.",
        ]
    lines += [
        "",
        "How to read it: PSNR_C compares the returning frames of the loop with the first-visit frames of nearest "
        "pose; match accuracy is the share of first-visit SIFT keypoints re-found within 2 px of their true "
        "place. 'PSNR new vs memory render' measures how closely new frames follow the rendered memory on the "
        "pixels it covers (does the control branch copy it?); 'PSNR new vs last context' how closely they repeat "
        "the last context frame (does the model copy its context?). `wrong_room_*` gives the model the memory "
        "of another room seen from the same start camera (a control that should lower PSNR_C). Decoded pixels "
        "are limited by the VAE round trip above: compare settings with each other, not with the paper's numbers.",
        "",
    ]
    path = Path(path)
    path.write_text("\n".join(lines))
    return path
