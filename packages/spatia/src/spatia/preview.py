"""Save what the model is fed: each clip beside its memory render and holes mask, plus its cameras.

Users of point-cloud video models ask to see the condition (GEN3C #4); this writes, per clip,
``clip_<i>.gif`` (panels: frames | memory render | holes, white = hole), ``clip_<i>_references.png``
and ``clip_<i>_cameras.json`` (OpenCV world-to-camera extrinsics and pixel intrinsics).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from spatia.data.clips import ClipSample


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """``(3, F, H, W)`` in [-1, 1] -> ``(F, H, W, 3)`` uint8."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()


def preview_panels(sample: ClipSample) -> np.ndarray:
    """``(F, H, 3W, 3)`` uint8: the clip, the memory render and the holes mask side by side."""
    holes = (sample.holes.float() * 2 - 1).unsqueeze(0).expand(3, -1, -1, -1)
    return np.concatenate([_to_uint8(sample.video), _to_uint8(sample.render), _to_uint8(holes)], axis=2)


def save_clip_preview(sample: ClipSample, out_dir: str | Path, name: str, *, fps: float = 8.0) -> list[Path]:
    """Write the preview files of one clip; returns their paths."""
    import imageio.v3 as iio

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gif = out / f"{name}.gif"
    iio.imwrite(gif, preview_panels(sample), duration=1000 / fps, loop=0)
    paths = [gif]
    if sample.references.shape[1]:
        refs = _to_uint8(sample.references)  # (K, H, W, 3)
        png = out / f"{name}_references.png"
        iio.imwrite(png, np.concatenate(list(refs), axis=1))
        paths.append(png)
    cams = out / f"{name}_cameras.json"
    cams.write_text(
        json.dumps(
            {
                "convention": "OpenCV world-to-camera; pixel centres on integer coordinates",
                "num_history_frames": sample.num_history_frames,
                "prompt": sample.prompt,
                "intrinsics": sample.intrinsics.tolist(),
                "extrinsics_w2c": sample.extrinsics_w2c.tolist(),
            },
            indent=1,
        )
    )
    paths.append(cams)
    return paths
