"""``spatia reproduce`` (``make train-spatia``): train, then measure closed-loop consistency with and without memory.

CPU default (``--config tiny``-sized, minutes): stage 1 (control branch) then stage 2 (LoRA) of the
existing trainer on procedural rooms, a ``SpatiaPipeline`` saved from the result, then generation
along a return-to-start ``loop`` trajectory in held-out procedural rooms: without memory and with
memory at several reference-frame counts, for several sampling seeds. Per run: closed-loop PSNR_C /
SSIM_C / SIFT matching accuracy, PSNR / SSIM / LPIPS against the ground-truth frames, the SLAM pose
error, and two probes of what the model does with its inputs (agreement of new frames with the
memory render on covered pixels, and with the last context frame). Everything lands in
``runs/spatia/<run>/``: ``results.json``, ``report.md``, ``video.mp4``, ``contact_sheet.png``,
``pipeline/`` and the two training runs.

``--config paper`` sets the paper's scale (Wan2.2-TI2V-5B, 8,000 + 5,000 iterations, 81-frame clips at
704x1280, 50 sampling steps, guidance 5): a GPU-cluster run, not run here.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from latentforge.runs import create_run_dir
from latentforge.seeding import seed_everything
from spatia.autoencoder import AutoencoderConfig
from spatia.config import TrainConfig, paper_config, tiny_config


@dataclass
class ReproduceConfig:
    """What ``spatia reproduce`` trains and evaluates."""

    train: TrainConfig = field(default_factory=tiny_config)
    """Training base values (stage, iterations and learning rate are set per stage below)."""
    use_trained_autoencoder: bool = False
    """Tiny networks: train (or load the cached) tiny causal autoencoder first and use it as the VAE
    (False keeps ``train.model``'s VAE: Wan2.2's at paper scale)."""
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    """The tiny autoencoder and its training (cached under ``<runs_root>/spatia/cache``)."""
    stage0_iterations: int = 0
    """Tiny networks: steps pretraining the random main network before stage 1 (a stand-in for
    Wan2.2's pretraining; the paper starts from the pretrained model, so 0 there)."""
    stage0_learning_rate: float = 1e-3
    """Stage 0 learning rate."""
    stage1_iterations: int = 150
    """Stage 1 optimizer steps (paper: 8,000)."""
    stage1_learning_rate: float = 1e-3
    """Stage 1 learning rate (paper: 1e-5)."""
    stage2_iterations: int = 60
    """Stage 2 optimizer steps (paper: 5,000)."""
    stage2_learning_rate: float = 1e-3
    """Stage 2 learning rate (paper: 1e-4)."""
    eval_scenes: tuple[int, ...] = (1000, 1001)
    """Procedural scene seeds of the evaluation (held out: training scenes use other seeds)."""
    seeds: tuple[int, ...] = (0, 1)
    """Sampling seeds per scene and setting."""
    reference_counts: tuple[int, ...] = (1, 3, 7)
    """Reference-frame counts of the with-memory runs (paper sweeps 1..7)."""
    wrong_room_control: bool = False
    """Also run with the memory of another room (seen from the same start camera): a control that must hurt."""
    there_and_back: bool = False
    """Evaluate on the first half of the loop followed by the same path backwards, so the whole last
    quarter revisits the first (the plain loop revisits its start only at its last frame)."""
    num_clips: int = 5
    """Clips along the loop (frames: first clip + (num_clips - 1) * new frames)."""
    loop_radius: float = 0.4
    """Radius of the loop trajectory (procedural rooms are 4-7 units wide)."""
    loop_angle_degrees: float = 40.0
    """How far the loop looks away before coming back."""
    num_inference_steps: int = 10
    """Sampling steps (paper: 50)."""
    guidance_scale: float = 1.0
    """CFG scale (paper: 5.0; the tiny model is trained with one prompt, so guidance has nothing to use)."""
    update_memory: bool = True
    """SLAM-update the memory after every clip (pycolmap)."""
    fov_degrees: float = 75.0
    """Field of view of the evaluation cameras (the procedural training data's)."""
    from_run: str | None = None
    """Reuse the stage-1 / stage-2 exports of an earlier reproduce run folder instead of training again."""
    exp_name: str = "reproduce"
    """Experiment name of the run folder."""
    runs_root: str = "runs"
    """Root of run folders."""


def tiny_reproduce() -> ReproduceConfig:
    """The CPU default of ``make train-spatia`` (about 17 minutes on 2 cores)."""
    base = tiny_config()
    train = replace(
        base,
        batch_size=4,
        # Wan's patch 2: 64 tokens a frame. Patch 4 (16 tokens of 192 latent values in a width of 72)
        # was 3x faster a step but could not copy even a perfect memory render (README, "Measured").
        model=replace(base.model, tiny_heads=6, tiny_ffn_dim=192, tiny_patch=2),
        data=replace(
            base.data,
            num_scenes=48,
            clips_per_scene=2,
            cell_range=(0.8, 1.6),
            supersample=2,
            first_clip_probability=0.25,
        ),
    )
    return ReproduceConfig(
        train=train,
        use_trained_autoencoder=True,
        autoencoder=AutoencoderConfig(cell_range=(0.8, 1.6), supersample=2),
        # 600 / 450 / 200 steps took 12 minutes; these sharpen the frames (SSIM vs GT 0.44 -> 0.50) in 17.
        stage0_iterations=1000,
        stage1_iterations=800,
        stage2_iterations=400,
        eval_scenes=(1000, 1001, 1002),
        seeds=(0, 1),
        wrong_room_control=True,
        there_and_back=True,
        # About 5 degrees and 0.07 units a frame at the fastest, near the training orbits' 3.4 degrees a frame.
        loop_radius=0.25,
        loop_angle_degrees=20.0,
    )


def paper_reproduce() -> ReproduceConfig:
    """Paper scale (GPUs): Wan2.2-TI2V-5B, RealEstate10K, the paper's iterations and sampling."""
    return ReproduceConfig(
        train=paper_config(),
        stage1_iterations=8000,
        stage1_learning_rate=1e-5,
        stage2_iterations=5000,
        stage2_learning_rate=1e-4,
        seeds=(0, 1, 2),
        reference_counts=(1, 3, 5, 7),
        num_inference_steps=50,
        guidance_scale=5.0,
    )


PRESETS = {"tiny": tiny_reproduce, "paper": paper_reproduce}


# ---------------------------------------------------------------------------- training


def train_stages(config: ReproduceConfig, run_dir: Path) -> tuple[Path, Path, dict]:
    """Stage 1 then stage 2 with the existing trainer; returns the two export folders and timings."""
    from spatia.trainer import train

    timings = {}
    start_from = None
    if config.stage0_iterations > 0:
        t0 = time.time()
        s0 = replace(
            config.train,
            stage=0,
            iterations=config.stage0_iterations,
            learning_rate=config.stage0_learning_rate,
            checkpoint_every=max(config.stage0_iterations, 1),
        )
        stage0_dir = train(s0, run_dir=_fresh(run_dir / "stage0"))
        start_from = str(stage0_dir / "export" / "transformer")
        timings["stage0_s"] = time.time() - t0
    t0 = time.time()
    s1 = replace(
        config.train,
        stage=1,
        iterations=config.stage1_iterations,
        learning_rate=config.stage1_learning_rate,
        checkpoint_every=max(config.stage1_iterations, 1),
        stage1_checkpoint=start_from,
    )
    stage1_dir = train(s1, run_dir=_fresh(run_dir / "stage1"))
    timings["stage1_s"] = time.time() - t0
    t0 = time.time()
    s2 = replace(
        config.train,
        stage=2,
        iterations=config.stage2_iterations,
        learning_rate=config.stage2_learning_rate,
        checkpoint_every=max(config.stage2_iterations, 1),
        stage1_checkpoint=str(stage1_dir / "export" / "transformer"),
    )
    stage2_dir = train(s2, run_dir=_fresh(run_dir / "stage2"))
    timings["stage2_s"] = time.time() - t0
    return stage1_dir / "export" / "transformer", stage2_dir / "export" / "lora", timings


def reuse_training(run: Path) -> tuple[Path, Path, dict]:
    """The exports of an earlier run, and its training time from the first to the last metrics record."""
    transformer_dir, lora_dir = run / "stage1" / "export" / "transformer", run / "stage2" / "export" / "lora"
    for path in (transformer_dir, lora_dir):
        if not path.is_dir():
            raise FileNotFoundError(
                f"{path}: missing; --from-run needs a reproduce run whose two stages finished"
            )
    from latentforge.runs import read_metrics

    timings: dict = {"reused_from": str(run)}
    # Stage 0 is optional (the paper preset starts from pretrained weights); stages 1 and 2 are not.
    stages = ("stage0",) * (run / "stage0" / "metrics.jsonl").is_file() + ("stage1", "stage2")
    for stage in stages:
        records = read_metrics(run / stage)
        timings[f"{stage}_s"] = records[-1]["time"] - records[0]["time"] if records else math.nan
    return transformer_dir, lora_dir, timings


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_trained_pipeline(config: ReproduceConfig, transformer_dir: Path, lora_dir: Path | None):
    """The pipeline of the trained model: stage-1 transformer with the stage-2 LoRA fused in."""
    from spatia.networks import build_networks
    from spatia.pipeline import SpatiaPipeline, tiny_tokenizer

    networks = build_networks(config.train.model, stage1_checkpoint=str(transformer_dir))
    if lora_dir is not None:
        networks.transformer.load_lora_adapter(
            str(lora_dir), weight_name="pytorch_lora_weights.safetensors", adapter_name="stage2"
        )
        networks.transformer.fuse_lora(lora_scale=1.0)
        networks.transformer.unload_lora()
    networks.transformer.eval()
    tokenizer = tiny_tokenizer() if config.train.model.pretrained == "tiny" else None
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(config.train.model.pretrained, subfolder="tokenizer")
    data = config.train.data
    return SpatiaPipeline.from_networks(
        networks,
        tokenizer=tokenizer,
        first_clip_frames=data.first_clip_frames,
        history_frames=data.history_frames,
        new_frames=data.new_frames,
        shift=config.train.timestep_shift,
    )


# ---------------------------------------------------------------------------- evaluation


@dataclass
class EvalScene:
    """A held-out procedural room with its loop trajectory and ground truth."""

    seed: int
    w2c: torch.Tensor
    intrinsics: torch.Tensor
    frames: torch.Tensor
    depth: torch.Tensor


def eval_trajectory(config: ReproduceConfig, num_frames: int, start: torch.Tensor) -> torch.Tensor:
    """The evaluation cameras: the ``loop`` preset, or its first half then the same path back."""
    from spatia.trajectories import loop

    kw = {"radius": config.loop_radius, "angle_degrees": config.loop_angle_degrees, "start_w2c": start}
    if not config.there_and_back:
        return loop(num_frames, **kw)
    full = loop(num_frames, **kw)
    # Frame i and frame F-1-i share a pose: the way back revisits the way out, frame for frame.
    return full[[min(i, num_frames - 1 - i) for i in range(num_frames)]]


def eval_scene(seed: int, config: ReproduceConfig, num_frames: int) -> EvalScene:
    from spatia.data.procedural import intrinsics_from_fov, orbit_trajectory, random_scene, render

    data = config.train.data
    gen = torch.Generator().manual_seed(seed)
    scene = random_scene(gen, dynamic_object=False, cell_range=data.cell_range, patterns=data.patterns)
    start = orbit_trajectory(scene, 1, gen)[0]
    w2c = eval_trajectory(config, num_frames, start)
    h, w = data.height, data.width
    k = intrinsics_from_fov(h, w, config.fov_degrees)
    clip = render(scene, k, w2c, h, w, supersample=data.supersample)
    return EvalScene(seed, w2c, k, clip.images, clip.depth)


def wrong_room_memory(config: ReproduceConfig, scene: EvalScene):
    """A memory of another room (seed + 7919) seen from this scene's start camera: the wrong-memory control."""
    from spatia.data.procedural import random_scene, render
    from spatia.spatial_memory import SpatialMemory

    data = config.train.data
    other = random_scene(
        torch.Generator().manual_seed(scene.seed + 7919), cell_range=data.cell_range, patterns=data.patterns
    )
    h, w = data.height, data.width
    view = render(other, scene.intrinsics, scene.w2c[:1], h, w, supersample=data.supersample)
    memory = SpatialMemory(voxel_size=data.memory_voxel_size)
    memory.add_frames(view.images, view.depth, scene.w2c[:1], scene.intrinsics, frame_ids=[0])
    return memory


def _masked_psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    m = mask[:, None].expand_as(a).float()
    if m.sum() == 0:
        return math.nan
    mse = ((a - b).pow(2) * m).sum() / m.sum()
    return float(10 * torch.log10(1 / mse.clamp_min(1e-10)))


def probes(output) -> dict[str, float]:
    """What the model did with its inputs: agreement with the memory render and with the last context frame."""
    from spatia.evaluation import psnr

    render_agree, copy_context = [], []
    for rec in output.clips[1:]:
        n = rec.stop - rec.start
        new = output.frames[rec.start : rec.stop]
        render_agree.append(_masked_psnr(new, rec.render[-n:], ~rec.holes[-n:]))
        last = output.frames[rec.start - 1].expand_as(new)
        copy_context.append(psnr(new, last))
    finite = [x for x in render_agree if not math.isnan(x)]
    return {
        "psnr_new_vs_memory_render_covered": float(np.mean(finite)) if finite else math.nan,
        "psnr_new_vs_last_context_frame": float(np.mean(copy_context)) if copy_context else math.nan,
    }


def evaluate_run(output, scene: EvalScene) -> dict:
    """Every metric of one generated loop video."""
    from spatia.evaluation import closed_loop, image_metrics, pose_error, revisit_pairs

    pairs = revisit_pairs(scene.w2c)
    loop_res = closed_loop(
        output.frames, scene.w2c, intrinsics=scene.intrinsics, depths=scene.depth, pairs=pairs
    )
    result = {
        "closed_loop": {
            "psnr_c": loop_res.psnr_c,
            "ssim_c": loop_res.ssim_c,
            "match_accuracy": loop_res.match_accuracy,
            "num_pairs": loop_res.num_pairs,
        },
        "vs_ground_truth": image_metrics(output.frames[1:], scene.frames[1:]),
        "probes": probes(output),
    }
    if output.memory is not None:
        result["pose_error"] = asdict(
            pose_error(output.estimated_w2c, output.requested_w2c, output.registered)
        )
        result["slam_registered_frames"] = int(output.registered[1:].sum())
    return result


def reference_points(pipe, scene: EvalScene) -> dict:
    """Ceilings that put the numbers in context: ground truth's own closed-loop scores and the VAE round trip."""
    from spatia.conditioning import decode_latents, encode_video
    from spatia.evaluation import closed_loop, image_metrics

    gt_loop = closed_loop(scene.frames, scene.w2c, intrinsics=scene.intrinsics, depths=scene.depth)
    video = (scene.frames[: pipe.config.first_clip_frames] * 2 - 1).permute(1, 0, 2, 3)[None]
    recon = (decode_latents(pipe.vae, encode_video(pipe.vae, video))[0].permute(1, 0, 2, 3) + 1) / 2
    return {
        "ground_truth_closed_loop": {
            "psnr_c": gt_loop.psnr_c,
            "ssim_c": gt_loop.ssim_c,
            "match_accuracy": gt_loop.match_accuracy,
        },
        "vae_round_trip": image_metrics(recon.clamp(0, 1), scene.frames[: pipe.config.first_clip_frames]),
    }


def _settings(config: ReproduceConfig) -> list[tuple[str, bool, int]]:
    settings = [("no_memory", False, 0)] + [(f"memory_k{k}", True, k) for k in config.reference_counts]
    if config.wrong_room_control:
        settings.append((f"wrong_room_k{max(config.reference_counts)}", True, max(config.reference_counts)))
    return settings


def summarise(runs: list[dict]) -> dict:
    """Mean and standard deviation over scenes and seeds of each setting's headline metrics."""
    keys = {
        "psnr_c": ("closed_loop", "psnr_c"),
        "match_accuracy": ("closed_loop", "match_accuracy"),
        "psnr_gt": ("vs_ground_truth", "psnr"),
        "ssim_gt": ("vs_ground_truth", "ssim"),
        "psnr_vs_memory_render": ("probes", "psnr_new_vs_memory_render_covered"),
        "psnr_vs_last_context": ("probes", "psnr_new_vs_last_context_frame"),
    }
    out: dict[str, dict] = {}
    for setting in dict.fromkeys(r["setting"] for r in runs):
        rows = [r for r in runs if r["setting"] == setting]
        stats = {}
        for name, (a, b) in keys.items():
            vals = [r["metrics"][a][b] for r in rows]
            vals = [v for v in vals if isinstance(v, float) and not math.isnan(v)]
            stats[name] = {
                "mean": float(np.mean(vals)) if vals else math.nan,
                "std": float(np.std(vals)) if vals else math.nan,
                "n": len(vals),
            }
        out[setting] = stats
    return out


def check_autoencoder_rooms(config: ReproduceConfig) -> None:
    """The trained autoencoder must learn the rooms the transformer trains on; fail before any work if not."""
    if not config.use_trained_autoencoder:
        return
    data, ae = config.train.data, config.autoencoder
    names = ("height", "width", "cell_range", "patterns", "supersample")
    differ = [n for n in names if getattr(data, n) != getattr(ae, n)]
    if differ:
        pairs = ", ".join(
            f"{n}: train.data {getattr(data, n)} vs autoencoder {getattr(ae, n)}" for n in differ
        )
        raise ValueError(f"the autoencoder's rooms differ from the training data's ({pairs}); set both")


def reproduce(config: ReproduceConfig) -> Path:
    """Train, generate along loops with and without memory, evaluate, write results and the report."""
    from spatia.autoencoder import cached_autoencoder
    from spatia.report import write_report
    from spatia.video import contact_sheet, write_mp4

    check_autoencoder_rooms(config)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    seed_everything(config.train.seed)
    run_dir = create_run_dir(config.runs_root, "spatia", config.exp_name, config.train.seed, config)
    started = time.time()
    autoencoder_metrics = None
    if config.use_trained_autoencoder:
        vae_dir, autoencoder_metrics = cached_autoencoder(
            config.autoencoder, Path(config.runs_root) / "spatia" / "cache"
        )
        model = replace(config.train.model, vae=str(vae_dir))
        config = replace(config, train=replace(config.train, model=model))
    if config.from_run is None:
        transformer_dir, lora_dir, timings = train_stages(config, run_dir)
    else:
        transformer_dir, lora_dir, timings = reuse_training(Path(config.from_run))
    pipe = build_trained_pipeline(config, transformer_dir, lora_dir)
    pipe.save_pretrained(run_dir / "pipeline")
    data = config.train.data
    num_frames = data.first_clip_frames + (config.num_clips - 1) * data.new_frames
    runs, references, showcase = [], {}, {}
    t0 = time.time()
    for scene_seed in config.eval_scenes:
        scene = eval_scene(scene_seed, config, num_frames)
        references[str(scene_seed)] = reference_points(pipe, scene)
        for seed in config.seeds:
            for name, use_memory, k in _settings(config):
                output = pipe(
                    "a camera moves through a room",
                    scene.frames[0],
                    scene.w2c,
                    scene.intrinsics,
                    depth=scene.depth[0],
                    memory=wrong_room_memory(config, scene) if name.startswith("wrong_room") else None,
                    use_memory=use_memory,
                    num_reference_frames=k,
                    update_memory=config.update_memory,
                    memory_voxel_size=config.train.data.memory_voxel_size,
                    num_inference_steps=config.num_inference_steps,
                    guidance_scale=config.guidance_scale,
                    generator=torch.Generator().manual_seed(seed),
                    show_progress=False,
                )
                runs.append(
                    {
                        "scene": scene_seed,
                        "seed": seed,
                        "setting": name,
                        "metrics": evaluate_run(output, scene),
                    }
                )
                if scene_seed == config.eval_scenes[0] and seed == config.seeds[0]:
                    showcase[name] = output.frames
                    if use_memory and "memory render" not in showcase:
                        from spatia.generate import memory_render_stream

                        showcase["memory render"] = memory_render_stream(output)
                    if use_memory and output.memory is not None and not (run_dir / "memory").exists():
                        output.memory.save(run_dir / "memory")
        showcase.setdefault("ground truth", scene.frames)
    timings["generation_and_eval_s"] = time.time() - t0
    timings["total_s"] = time.time() - started
    best = f"memory_k{max(config.reference_counts)}"
    write_mp4(run_dir / "video.mp4", torch.cat([showcase[best], showcase["no_memory"]], dim=3), scale=4)
    contact_sheet(showcase, run_dir / "contact_sheet.png", scale=2)
    results = {
        "config": asdict(config),
        "timings": timings,
        "load_average": _load_average(),
        "autoencoder": autoencoder_metrics,
        "references": references,
        "summary": summarise(runs),
        "runs": runs,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    write_report(results, run_dir / "report.md")
    return run_dir


def _load_average() -> list[float] | None:
    try:
        import os

        return list(os.getloadavg())
    except OSError:
        return None
