"""SpatialVID(-HQ)-style clips: per-clip annotation folders beside the clip videos.

Layout (as the dataset card describes it)::

    <root>/annotations/<group>/<clip id>/{poses.npy, intrinsics.npy, indexes.txt, caption.json, ...}
    <root>/videos/<group>/<clip id>.mp4

Formats, as read by the dataset's own conversion utilities: ``poses.npy`` is ``(N, 7)``
world-to-camera ``[tx, ty, tz, qx, qy, qz, qw]`` (translation, then a scalar-last
quaternion); ``intrinsics.npy`` is ``(N, 4)`` ``[fx, fy, cx, cy]`` normalised by the image
width / height; ``indexes.txt`` lists the video frame index of each annotated frame (if it
is missing, annotations are taken to cover frames 0..N-1). Poses use OpenCV axes, the
project convention. Every file is validated with errors naming it.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spatia.data.realestate10k import load_frames

CAPTION_KEYS = ("caption", "text", "description", "scene_description")


class AnnotationError(ValueError):
    """A SpatialVID annotation file with the wrong shape or content; the message names the file."""


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """``(N, 4)`` scalar-last quaternions (normalised here) to ``(N, 3, 3)`` rotation matrices."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def _load_array(path: Path, columns: int) -> np.ndarray:
    if not path.is_file():
        raise AnnotationError(f"{path}: missing")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AnnotationError(f"{path}: not a readable .npy array: {exc}") from exc
    if array.ndim != 2 or array.shape[1] != columns or array.shape[0] == 0:
        raise AnnotationError(f"{path}: expected an (N, {columns}) array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise AnnotationError(f"{path}: expected finite numbers")
    return array.astype(np.float64)


@dataclass
class SpatialVIDClip:
    """Cameras and caption of one clip."""

    clip_id: str
    intrinsics_normalized: torch.Tensor  # (N, 4)
    extrinsics_w2c: torch.Tensor  # (N, 4, 4) float64
    frame_indices: torch.Tensor  # (N,) int64 video frame of each annotation
    caption: str

    def intrinsics(self, height: int, width: int) -> torch.Tensor:
        """``(N, 3, 3)`` pixel intrinsics (pixel centres on integers, as everywhere in the project)."""
        fx, fy, cx, cy = self.intrinsics_normalized.unbind(-1)
        k = torch.zeros(fx.shape[0], 3, 3, dtype=torch.float64)
        k[:, 0, 0], k[:, 1, 1] = fx * width, fy * height
        k[:, 0, 2], k[:, 1, 2] = cx * width - 0.5, cy * height - 0.5
        k[:, 2, 2] = 1
        return k


def read_clip_annotations(folder: str | os.PathLike) -> SpatialVIDClip:
    """Read and validate one annotation folder."""
    folder = Path(folder)
    poses = _load_array(folder / "poses.npy", 7)
    intr = _load_array(folder / "intrinsics.npy", 4)
    if len(intr) != len(poses):
        raise AnnotationError(f"{folder}: {len(poses)} poses but {len(intr)} intrinsics")
    if (intr[:, :2] <= 0).any():
        raise AnnotationError(f"{folder / 'intrinsics.npy'}: focal lengths must be positive")
    norms = np.linalg.norm(poses[:, 3:], axis=1)
    if (norms < 1e-6).any():
        raise AnnotationError(f"{folder / 'poses.npy'}: row {int(np.argmin(norms))} has a zero quaternion")
    w2c = np.tile(np.eye(4), (len(poses), 1, 1))
    w2c[:, :3, :3] = quaternion_to_matrix(poses[:, 3:])
    w2c[:, :3, 3] = poses[:, :3]

    index_file = folder / "indexes.txt"
    if index_file.is_file():
        try:
            indices = [int(v) for v in index_file.read_text().split()]
        except ValueError as exc:
            raise AnnotationError(f"{index_file}: {exc}") from None
        if len(indices) != len(poses):
            raise AnnotationError(f"{index_file}: {len(indices)} indices for {len(poses)} poses")
        if any(b <= a for a, b in itertools.pairwise(indices)) or (indices and indices[0] < 0):
            raise AnnotationError(f"{index_file}: frame indices must be non-negative and increasing")
    else:
        indices = list(range(len(poses)))

    caption = ""
    caption_file = folder / "caption.json"
    if caption_file.is_file():
        try:
            data = json.loads(caption_file.read_text())
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"{caption_file}: invalid JSON: {exc}") from exc
        if isinstance(data, str):
            caption = data
        elif isinstance(data, dict):
            found = [data[k] for k in CAPTION_KEYS if isinstance(data.get(k), str)]
            caption = found[0] if found else next((v for v in data.values() if isinstance(v, str)), "")
    return SpatialVIDClip(
        clip_id=folder.name,
        intrinsics_normalized=torch.from_numpy(intr),
        extrinsics_w2c=torch.from_numpy(w2c),
        frame_indices=torch.tensor(indices, dtype=torch.int64),
        caption=caption,
    )


@dataclass
class SpatialVIDSample:
    """A clip's annotated frames with cameras at the training size."""

    clip: SpatialVIDClip
    frames: torch.Tensor  # (N, 3, H, W) in [0, 1]
    intrinsics: torch.Tensor  # (N, 3, 3)
    extrinsics_w2c: torch.Tensor  # (N, 4, 4)


class SpatialVID:
    """All clips under ``<root>/annotations/<group>/<id>/`` with videos in ``<root>/videos/<group>/<id>.mp4``."""

    def __init__(self, root: str | os.PathLike, *, height: int, width: int) -> None:
        self.root = Path(root)
        annotations = self.root / "annotations"
        if not annotations.is_dir():
            raise FileNotFoundError(
                f"{annotations}: no annotations folder (expected annotations/<group>/<clip id>/)"
            )
        self.folders = sorted(p for p in annotations.glob("*/*") if (p / "poses.npy").is_file())
        if not self.folders:
            raise FileNotFoundError(f"{annotations}: no clip folders with poses.npy")
        self.height, self.width = height, width

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index: int) -> SpatialVIDSample:
        folder = self.folders[index]
        clip = read_clip_annotations(folder)
        video = self.root / "videos" / folder.parent.name / f"{folder.name}.mp4"
        frames = load_frames_by_index(video, clip.frame_indices, height=self.height, width=self.width)
        return SpatialVIDSample(clip, frames, clip.intrinsics(self.height, self.width), clip.extrinsics_w2c)


def load_frames_by_index(
    video: Path, indices: torch.Tensor, *, height: int | None = None, width: int | None = None
) -> torch.Tensor:
    """Frames ``indices`` of ``video`` as ``(N, 3, H, W)`` in [0, 1] (timestamps at a nominal 1 fps)."""
    return load_frames(video, indices * 1_000_000, height=height, width=width, fps=1.0)
