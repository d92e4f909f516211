"""RealEstate10K: the published camera files and the frames they describe.

A camera file (``<split>/<sequence id>.txt``) holds the video URL on its first line, then
one line per frame with 19 numbers::

    timestamp_us fx fy cx cy 0 0 r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3

Intrinsics are normalised by the image width (fx, cx) and height (fy, cy); the 3x4 matrix
is world-to-camera in OpenCV axes, the project convention. Frames come either from a
folder of images named by timestamp (``<timestamp_us>.png|.jpg``, how the common download
scripts write them) or from a video file, where the frame nearest each timestamp is used.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov")


class CameraFileError(ValueError):
    """A camera file that does not follow the published format; the message names file and line."""


@dataclass
class CameraTrack:
    """The parsed contents of one camera file."""

    url: str
    timestamps_us: torch.Tensor  # (N,) int64
    intrinsics_normalized: torch.Tensor  # (N, 4): fx, fy, cx, cy as fractions of width / height
    extrinsics_w2c: torch.Tensor  # (N, 4, 4) float64, OpenCV world-to-camera

    def __len__(self) -> int:
        return self.timestamps_us.shape[0]

    def intrinsics(self, height: int, width: int) -> torch.Tensor:
        """``(N, 3, 3)`` pixel intrinsics for frames resized to ``height x width``.

        The normalised principal point measures from the image's corner; the project puts
        pixel centres on integer coordinates, hence the half-pixel shift.
        """
        fx, fy, cx, cy = self.intrinsics_normalized.double().unbind(-1)
        k = torch.zeros(len(self), 3, 3, dtype=torch.float64)
        k[:, 0, 0], k[:, 1, 1] = fx * width, fy * height
        k[:, 0, 2], k[:, 1, 2] = cx * width - 0.5, cy * height - 0.5
        k[:, 2, 2] = 1
        return k


def parse_camera_file(path: str | os.PathLike) -> CameraTrack:
    """Read a RealEstate10K camera file, validating every line (errors name the file and line)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CameraFileError(f"{path}: cannot read camera file: {exc}") from exc
    if not lines or not lines[0].strip():
        raise CameraFileError(f"{path}: line 1: expected the video URL, found an empty line")
    url = lines[0].strip()
    if len(url.split()) != 1:
        raise CameraFileError(f"{path}: line 1: expected the video URL alone, got {url[:80]!r}")

    stamps, intr, w2c = [], [], []
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        fields = raw.split()
        where = f"{path}: line {number}"
        if len(fields) != 19:
            raise CameraFileError(
                f"{where}: expected 19 numbers (timestamp, 4 intrinsics, 0 0, 3x4 pose), got {len(fields)}"
            )
        try:
            stamp = int(fields[0])
        except ValueError:
            raise CameraFileError(
                f"{where}: timestamp {fields[0]!r} is not an integer (microseconds)"
            ) from None
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError as exc:
            raise CameraFileError(f"{where}: {exc}") from None
        if not all(math.isfinite(v) for v in values):
            raise CameraFileError(f"{where}: non-finite value")
        fx, fy = values[:2]
        if fx <= 0 or fy <= 0:
            raise CameraFileError(f"{where}: focal lengths must be positive, got fx={fx}, fy={fy}")
        pose = np.asarray(values[6:], dtype=np.float64).reshape(3, 4)
        rot = pose[:, :3]
        if not np.allclose(rot @ rot.T, np.eye(3), atol=1e-3) or np.linalg.det(rot) < 0:
            raise CameraFileError(f"{where}: the 3x3 part of the pose is not a rotation")
        if stamps and stamp <= stamps[-1]:
            raise CameraFileError(f"{where}: timestamp {stamp} does not increase (previous {stamps[-1]})")
        stamps.append(stamp)
        intr.append(values[:4])
        full = np.eye(4)
        full[:3] = pose
        w2c.append(full)
    if not stamps:
        raise CameraFileError(f"{path}: no camera lines after the URL")
    return CameraTrack(
        url=url,
        timestamps_us=torch.tensor(stamps, dtype=torch.int64),
        intrinsics_normalized=torch.tensor(intr, dtype=torch.float64),
        extrinsics_w2c=torch.from_numpy(np.stack(w2c)),
    )


def normalize_intrinsics(intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, 3, 3)`` pixel ``K`` -> ``(N, 4)`` normalised fx, fy, cx, cy (the inverse of ``CameraTrack.intrinsics``)."""
    k = intrinsics.double()
    return torch.stack(
        [k[:, 0, 0] / width, k[:, 1, 1] / height, (k[:, 0, 2] + 0.5) / width, (k[:, 1, 2] + 0.5) / height],
        dim=-1,
    )


def write_camera_file(
    path: str | os.PathLike,
    extrinsics_w2c: torch.Tensor,
    intrinsics: torch.Tensor,
    height: int,
    width: int,
    *,
    timestamps_us: torch.Tensor | None = None,
    url: str = "https://example.invalid/generated",
    fps: float = 30.0,
) -> Path:
    """Write a RealEstate10K-format camera file that ``parse_camera_file`` reads back exactly.

    ``intrinsics`` are pixel ``K`` for ``height x width`` frames, ``(3, 3)`` or ``(N, 3, 3)``;
    timestamps default to ``fps`` spacing. Numbers are written with 17 significant digits.
    """
    n = extrinsics_w2c.shape[0]
    k = intrinsics.double().expand(n, 3, 3) if intrinsics.ndim == 2 else intrinsics.double()
    if extrinsics_w2c.shape != (n, 4, 4) or k.shape != (n, 3, 3):
        raise ValueError(
            f"need (N, 4, 4) poses and (N, 3, 3) intrinsics, got {tuple(extrinsics_w2c.shape)}, {tuple(k.shape)}"
        )
    if len(url.split()) != 1:
        raise ValueError(f"url must be one word, got {url!r}")
    stamps = (
        torch.round(torch.arange(n, dtype=torch.float64) * 1e6 / fps).long()
        if timestamps_us is None
        else timestamps_us
    )
    norm = normalize_intrinsics(k, height, width)
    lines = [url]
    for i in range(n):
        values = [*norm[i].tolist(), 0.0, 0.0, *extrinsics_w2c[i, :3].double().flatten().tolist()]
        lines.append(" ".join([str(int(stamps[i])), *(f"{v:.17g}" for v in values)]))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _resize(frames: np.ndarray, height: int | None, width: int | None) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float in [0, 1], bilinearly resized if asked."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
    if height is not None and width is not None and video.shape[-2:] != (height, width):
        video = torch.nn.functional.interpolate(video, size=(height, width), mode="bilinear", antialias=True)
    return video.clamp(0, 1)


def load_frames(
    source: str | os.PathLike,
    timestamps_us: torch.Tensor,
    *,
    height: int | None = None,
    width: int | None = None,
    fps: float | None = None,
) -> torch.Tensor:
    """Frames at ``timestamps_us`` from an image folder or a video file, ``(N, 3, H, W)`` in [0, 1].

    ``fps`` overrides the video's own frame rate when mapping timestamps to frames.
    """
    import imageio.v3 as iio

    source = Path(source)
    if source.is_dir():
        by_stamp = {p.stem: p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        missing = [int(t) for t in timestamps_us if str(int(t)) not in by_stamp]
        if missing:
            raise FileNotFoundError(
                f"{source}: no image for timestamps {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                f"(expected files named <timestamp_us>{IMAGE_SUFFIXES})"
            )
        frames = [iio.imread(by_stamp[str(int(t))]) for t in timestamps_us]
        shapes = {f.shape for f in frames}
        if len(shapes) != 1 or frames[0].ndim != 3 or frames[0].shape[2] < 3:
            raise ValueError(f"{source}: frames must be RGB images of one size, got shapes {sorted(shapes)}")
        return _resize(np.stack([f[..., :3] for f in frames]), height, width)
    if source.suffix.lower() in VIDEO_SUFFIXES and source.is_file():
        import imageio.v2 as iio2

        with iio2.get_reader(source, format="FFMPEG") as reader:
            fps = fps or reader.get_meta_data().get("fps")
            if not fps:
                raise ValueError(
                    f"{source}: the video reports no frame rate, cannot map timestamps to frames"
                )
            count = reader.count_frames()
            index = torch.round(timestamps_us.double() * fps / 1e6).long()
            if int(index.max()) >= count:
                raise ValueError(
                    f"{source}: timestamp {int(timestamps_us[index.argmax()])} us is frame {int(index.max())}, "
                    f"but the video has {count} frames"
                )
            video = np.stack([reader.get_data(int(i)) for i in index])
        return _resize(video[..., :3], height, width)
    raise FileNotFoundError(
        f"{source}: expected a folder of frames or a video file ({', '.join(VIDEO_SUFFIXES)})"
    )


@dataclass
class Sequence:
    """One RealEstate10K sequence: its cameras and frames resized to the training size."""

    sequence_id: str
    track: CameraTrack
    frames: torch.Tensor  # (N, 3, H, W) in [0, 1]
    intrinsics: torch.Tensor  # (N, 3, 3) pixels at the resized size
    extrinsics_w2c: torch.Tensor  # (N, 4, 4)


class RealEstate10K:
    """``<root>/<split>/<id>.txt`` camera files with frames in ``<root>/frames/<id>/`` or ``<root>/videos/<id>.mp4``."""

    def __init__(self, root: str | os.PathLike, split: str = "train", *, height: int, width: int) -> None:
        self.root = Path(root)
        cameras = self.root / split
        if not cameras.is_dir():
            raise FileNotFoundError(f"{cameras}: no such split folder of RealEstate10K camera files")
        self.files = sorted(cameras.glob("*.txt"))
        if not self.files:
            raise FileNotFoundError(f"{cameras}: holds no camera files (*.txt)")
        self.height, self.width = height, width

    def __len__(self) -> int:
        return len(self.files)

    def frames_source(self, sequence_id: str) -> Path:
        folder = self.root / "frames" / sequence_id
        if folder.is_dir():
            return folder
        for suffix in VIDEO_SUFFIXES:
            video = self.root / "videos" / f"{sequence_id}{suffix}"
            if video.is_file():
                return video
        raise FileNotFoundError(
            f"{self.root}: no frames/{sequence_id}/ folder or videos/{sequence_id}.* file"
        )

    def __getitem__(self, index: int) -> Sequence:
        path = self.files[index]
        track = parse_camera_file(path)
        frames = load_frames(
            self.frames_source(path.stem), track.timestamps_us, height=self.height, width=self.width
        )
        return Sequence(
            path.stem, track, frames, track.intrinsics(self.height, self.width), track.extrinsics_w2c
        )
