"""Writing what generation produces: the mp4 (imageio-ffmpeg), a contact sheet and the camera path files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def to_uint8(frames: torch.Tensor, scale: int = 1) -> np.ndarray:
    """``(T, 3, H, W)`` in [0, 1] -> ``(T, H*scale, W*scale, 3)`` uint8 (nearest upscaling keeps pixels crisp)."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (T, 3, H, W), got {tuple(frames.shape)}")
    x = frames.float().clamp(0, 1)
    if scale > 1:
        x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    return (x * 255).round().byte().permute(0, 2, 3, 1).contiguous().numpy()


def write_mp4(path: str | Path, frames: torch.Tensor, *, fps: float = 8.0, scale: int = 1) -> Path:
    """H.264 mp4 of ``(T, 3, H, W)`` frames in [0, 1] (sizes must be even after ``scale``)."""
    import imageio.v2 as imageio

    video = to_uint8(frames, scale)
    if video.shape[1] % 2 or video.shape[2] % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {video.shape[1:3]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(
        path,
        format="FFMPEG",
        mode="I",
        fps=fps,
        codec="libx264",
        macro_block_size=1,
        quality=8,
        output_params=["-pix_fmt", "yuv420p"],
    ) as writer:
        for frame in video:
            writer.append_data(frame)
    return path


def read_mp4(path: str | Path) -> np.ndarray:
    """All frames of a video file as ``(T, H, W, 3)`` uint8."""
    import imageio.v2 as imageio

    with imageio.get_reader(path, format="FFMPEG") as reader:
        return np.stack([np.asarray(frame) for frame in reader])


def contact_sheet(rows: dict[str, torch.Tensor], path: str | Path, *, scale: int = 2, every: int = 1) -> Path:
    """A PNG grid: one labelled row per ``(T, 3, H, W)`` video in [0, 1] (every ``every``-th frame)."""
    from PIL import Image, ImageDraw

    label_w = 110
    strips = []
    for name, frames in rows.items():
        tiles = to_uint8(frames[::every], scale)
        strip = np.concatenate(list(tiles), axis=1)
        label = Image.new("RGB", (label_w, strip.shape[0]), (255, 255, 255))
        ImageDraw.Draw(label).text((4, 4), name, fill=(0, 0, 0))
        strips.append(np.concatenate([np.asarray(label), strip], axis=1))
    width = max(s.shape[1] for s in strips)
    strips = [np.pad(s, ((0, 2), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(strips, axis=0)).save(path)
    return path


def write_camera_path(
    out_dir: str | Path,
    name: str,
    w2c: torch.Tensor,
    intrinsics: torch.Tensor,
    height: int,
    width: int,
    *,
    registered: torch.Tensor | None = None,
    fps: float = 8.0,
) -> list[Path]:
    """``<name>.json`` (w2c, pixel K, registered flags) and ``<name>.txt`` in RealEstate10K format."""
    from spatia.data.realestate10k import write_camera_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = out / f"{name}.json"
    js.write_text(
        json.dumps(
            {
                "convention": "OpenCV world-to-camera; pixel centres on integer coordinates",
                "height": height,
                "width": width,
                "extrinsics_w2c": w2c.double().tolist(),
                "intrinsics": intrinsics.double().tolist(),
                "registered": None if registered is None else registered.bool().tolist(),
            },
            indent=1,
        )
    )
    txt = write_camera_file(out / f"{name}.txt", w2c.double(), intrinsics.double(), height, width, fps=fps)
    return [js, txt]
