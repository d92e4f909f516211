"""``spatia generate``: run a ``SpatiaPipeline`` along a camera trajectory and write every output.

Outputs in ``--out``: ``video.mp4``, ``memory/`` (``points.ply`` plus metadata, the final spatial
memory), ``camera_path_estimated.{json,txt}`` (SLAM estimate; RealEstate10K-format txt),
``camera_path_requested.{json,txt}``, ``contact_sheet.png`` (generated frames over the memory
renders that conditioned them) and ``generation.json`` (per-clip references, SLAM outcome, edits).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # the pipeline pulls in diffusers: imported where used, so `spatia --help` stays quick
    from spatia.pipeline import MemoryEdit, SpatiaOutput, SpatiaPipeline


@dataclass
class GenerateConfig:
    """Options of ``spatia generate`` (paper sampling values as defaults)."""

    pipeline: str = "tiny"
    """A ``SpatiaPipeline.save_pretrained`` folder (``spatia reproduce`` writes one), or "tiny" (random tiny networks)."""
    prompt: str = "a camera moves through a room"
    """Text instruction."""
    image: str = "procedural:0"
    """Initial image file, or ``procedural:<seed>`` for a procedural room (exact depth)."""
    depth: str | None = None
    """``.npy`` depth map (H, W) of a real image (camera-space z); the paper estimates it with MapAnything."""
    plane_depth: float | None = None
    """Without ``--depth``: treat a real image as a fronto-parallel plane at this depth (crude, documented)."""
    trajectory: str = "loop"
    """A preset (orbit, forward, pan, loop) or a RealEstate10K-format camera file."""
    num_clips: int = 3
    """Clips to generate along a preset (frames: first clip + (num_clips - 1) * new frames)."""
    height: int = 32
    """Frame height (a multiple of the VAE's 16)."""
    width: int = 32
    """Frame width."""
    fov_degrees: float = 75.0
    """Horizontal field of view of preset trajectories and real images."""
    use_memory: bool = True
    """Condition on the spatial memory (off: empty memory render, no reference frames)."""
    num_reference_frames: int = 7
    """Most reference frames retrieved per clip (paper: 7)."""
    update_memory: bool = True
    """Update the memory from every clip by SLAM (pycolmap)."""
    voxel_size: float = 0.02
    """Memory voxel (world units; the paper's 1 cm at real scale)."""
    num_inference_steps: int = 50
    """Sampling steps (Wan2.2: 50)."""
    guidance_scale: float = 5.0
    """Classifier-free guidance (Wan2.2: 5.0; 1 disables it)."""
    seed: int = 0
    """Sampling seed."""
    remove_box: list[str] = field(default_factory=list)
    """Remove memory points in a box ``x0,y0,z0,x1,y1,z1`` before clip ``--edit-before-clip``."""
    insert_box: list[str] = field(default_factory=list)
    """Insert a box of points ``x0,y0,z0,x1,y1,z1[,r,g,b]`` before clip ``--edit-before-clip``."""
    edit_before_clip: int = 1
    """Clip index the edits apply before (0: before the first clip)."""
    fps: float = 8.0
    """Frames per second of the mp4."""
    video_scale: int = 4
    """Nearest-neighbour upscaling of the mp4 and contact sheet (tiny frames are 32 px)."""
    out: str = "runs/spatia/generate"
    """Output folder."""


def parse_box(text: str, *, with_color: bool) -> MemoryEdit:
    """``x0,y0,z0,x1,y1,z1`` (and optionally ``,r,g,b`` in [0, 1]) -> a ``MemoryEdit``."""
    from spatia.pipeline import MemoryEdit

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise ValueError(f"box {text!r}: expected comma-separated numbers") from exc
    allowed = (6, 9) if with_color else (6,)
    if len(values) not in allowed:
        raise ValueError(
            f"box {text!r}: expected {' or '.join(map(str, allowed))} numbers, got {len(values)}"
        )
    lo, hi = tuple(values[:3]), tuple(values[3:6])
    color = tuple(values[6:9]) if len(values) == 9 else (1.0, 0.0, 0.0)
    return MemoryEdit("insert" if with_color else "remove", lo, hi, color)  # type: ignore[arg-type]


def load_pipeline(spec: str) -> SpatiaPipeline:
    """The pipeline of ``--pipeline``: a saved folder, or random tiny networks."""
    from spatia.pipeline import SpatiaPipeline

    if spec == "tiny":
        from spatia.config import tiny_config
        from spatia.networks import build_networks
        from spatia.pipeline import tiny_tokenizer

        data = tiny_config().data
        return SpatiaPipeline.from_networks(
            build_networks(tiny_config().model),
            tokenizer=tiny_tokenizer(),
            first_clip_frames=data.first_clip_frames,
            history_frames=data.history_frames,
            new_frames=data.new_frames,
        )
    return SpatiaPipeline.from_pretrained(spec)


def _load_image(path: str, height: int, width: int) -> torch.Tensor:
    from PIL import Image

    try:
        img = Image.open(path).convert("RGB").resize((width, height), Image.BICUBIC)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the image: {exc}") from exc
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


def _load_depth(path: str, height: int, width: int) -> torch.Tensor:
    try:
        depth = torch.from_numpy(np.load(path, allow_pickle=False)).float()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the depth map: {exc}") from exc
    if depth.ndim != 2 or not torch.isfinite(depth).all():
        raise ValueError(f"{path}: depth must be a finite (H, W) array, got shape {tuple(depth.shape)}")
    if depth.shape != (height, width):
        depth = torch.nn.functional.interpolate(depth[None, None], (height, width), mode="nearest")[0, 0]
    return depth


@dataclass
class GenerationInputs:
    """Image, its depth, cameras, and (procedural scenes) the ground-truth frames along the cameras."""

    image: torch.Tensor
    depth: torch.Tensor | None
    w2c: torch.Tensor
    intrinsics: torch.Tensor
    ground_truth: torch.Tensor | None = None
    ground_truth_depth: torch.Tensor | None = None


def build_inputs(config: GenerateConfig, pipe: SpatiaPipeline) -> GenerationInputs:
    """Initial image, depth and trajectory of ``config`` (frame counts from the pipeline's clip lengths)."""
    from spatia.data.procedural import intrinsics_from_fov, random_scene, render
    from spatia.trajectories import PRESETS, preset_trajectory

    first, new = pipe.config.first_clip_frames, pipe.config.new_frames
    h, w = config.height, config.width
    k = intrinsics_from_fov(h, w, config.fov_degrees)
    procedural = config.image.startswith("procedural:")
    scene = None
    if procedural:
        from spatia.data.procedural import orbit_trajectory

        gen = torch.Generator().manual_seed(int(config.image.split(":", 1)[1]))
        scene = random_scene(gen, dynamic_object=False)
        start = orbit_trajectory(scene, 1, gen)[0]
    else:
        start = torch.eye(4, dtype=torch.float64)
    if config.trajectory in PRESETS:
        if config.num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {config.num_clips}")
        w2c = preset_trajectory(config.trajectory, first + (config.num_clips - 1) * new, start_w2c=start)
    else:
        from spatia.data.realestate10k import parse_camera_file

        track = parse_camera_file(config.trajectory)
        usable = first + max((len(track) - first) // new, 0) * new
        if len(track) < first:
            raise ValueError(f"{config.trajectory}: {len(track)} cameras, a first clip needs {first}")
        # The file's first camera is the initial image's view: express the path relative to it.
        rel = track.extrinsics_w2c[:usable].double() @ torch.linalg.inv(track.extrinsics_w2c[0].double())
        w2c = rel @ start
        k = track.intrinsics(h, w)[0]
    if procedural:
        clip = render(scene, k, w2c, h, w)
        return GenerationInputs(clip.images[0], clip.depth[0], w2c, k, clip.images, clip.depth)
    image = _load_image(config.image, h, w)
    if config.depth is not None:
        depth = _load_depth(config.depth, h, w)
    elif config.plane_depth is not None:
        depth = torch.full((h, w), float(config.plane_depth))
    else:
        depth = None
    return GenerationInputs(image, depth, w2c, k)


def memory_render_stream(output: SpatiaOutput) -> torch.Tensor:
    """``(T, 3, H, W)``: for every frame, the memory render that conditioned the clip generating it."""
    frames = torch.zeros_like(output.frames)
    for rec in output.clips:
        n = rec.stop - rec.start
        frames[rec.start : rec.stop] = rec.render[-n:]
    return frames


def write_outputs(
    config: GenerateConfig, inputs: GenerationInputs, output: SpatiaOutput, edits: dict, out: Path
) -> dict[str, str]:
    """Every file of a generation; returns their paths by name."""
    from spatia.video import contact_sheet, write_camera_path, write_mp4

    out.mkdir(parents=True, exist_ok=True)
    h, w = output.frames.shape[-2:]
    paths = {
        "video": str(write_mp4(out / "video.mp4", output.frames, fps=config.fps, scale=config.video_scale))
    }
    rows = {"generated": output.frames, "memory render": memory_render_stream(output)}
    if inputs.ground_truth is not None:
        rows["ground truth"] = inputs.ground_truth
    paths["contact_sheet"] = str(
        contact_sheet(rows, out / "contact_sheet.png", scale=max(config.video_scale // 2, 1))
    )
    k = output.intrinsics
    est = write_camera_path(
        out, "camera_path_estimated", output.estimated_w2c, k, h, w, registered=output.registered
    )
    req = write_camera_path(out, "camera_path_requested", output.requested_w2c, k, h, w)
    paths.update(camera_path_estimated=str(est[1]), camera_path_requested=str(req[1]))
    if output.memory is not None:
        paths["memory"] = str(output.memory.save(out / "memory"))
        paths["point_cloud"] = str(out / "memory" / "points.ply")
    summary = {
        "config": asdict(config),
        "num_frames": int(output.frames.shape[0]),
        "clips": [
            {
                "start": r.start,
                "stop": r.stop,
                "reference_ids": r.reference_ids,
                "holes": float(r.holes.float().mean()),
                "slam": r.slam,
            }
            for r in output.clips
        ],
        "edits": {str(c): [asdict(e) for e in es] for c, es in edits.items()},
        "registered_frames": int(output.registered.sum()),
        "files": paths,
    }
    (out / "generation.json").write_text(json.dumps(summary, indent=1, default=str))
    return paths


def generate(config: GenerateConfig) -> dict[str, str]:
    """Build inputs, run the pipeline, write the outputs (see the module docstring)."""
    torch.manual_seed(config.seed)
    edits_list = [parse_box(b, with_color=False) for b in config.remove_box]
    edits_list += [parse_box(b, with_color=True) for b in config.insert_box]
    pipe = load_pipeline(config.pipeline)
    inputs = build_inputs(config, pipe)
    edits = {config.edit_before_clip: edits_list} if edits_list else {}
    output = pipe(
        config.prompt,
        inputs.image,
        inputs.w2c,
        inputs.intrinsics,
        depth=inputs.depth,
        use_memory=config.use_memory,
        num_reference_frames=config.num_reference_frames,
        update_memory=config.update_memory,
        memory_voxel_size=config.voxel_size,
        edits=edits,
        num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale,
        generator=torch.Generator().manual_seed(config.seed),
    )
    return write_outputs(config, inputs, output, edits, Path(config.out))
