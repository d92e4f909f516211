"""SpatialVID-style annotation folders: poses, intrinsics, indices, captions, frames, and bad files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from spatia.data.spatialvid import AnnotationError, SpatialVID, read_clip_annotations


def _write_clip(root: Path, n: int = 3) -> Path:
    folder = root / "annotations" / "group_0001" / "clip-a"
    folder.mkdir(parents=True)
    angles = [0.1 * i for i in range(n)]
    # Rotation about +y by a: quaternion (0, sin(a/2), 0, cos(a/2)), scalar last.
    poses = np.array(
        [[0.1 * i, 0.0, -0.2 * i, 0.0, math.sin(a / 2), 0.0, math.cos(a / 2)] for i, a in enumerate(angles)]
    )
    np.save(folder / "poses.npy", poses)
    np.save(folder / "intrinsics.npy", np.tile([0.6, 0.9, 0.5, 0.5], (n, 1)))
    (folder / "indexes.txt").write_text("\n".join(str(2 * i) for i in range(n)))
    (folder / "caption.json").write_text(json.dumps({"caption": "a hallway with wooden floors", "other": 1}))
    return folder


def test_reads_poses_intrinsics_indices_and_caption(tmp_path):
    clip = read_clip_annotations(_write_clip(tmp_path))
    assert clip.clip_id == "clip-a" and clip.caption == "a hallway with wooden floors"
    assert clip.frame_indices.tolist() == [0, 2, 4]
    a = 0.1
    expected = torch.tensor(
        [
            [math.cos(a), 0, math.sin(a), 0.1],
            [0, 1, 0, 0],
            [-math.sin(a), 0, math.cos(a), -0.2],
            [0, 0, 0, 1],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(clip.extrinsics_w2c[1], expected)
    k = clip.intrinsics(36, 64)
    assert k[0, 0, 0].item() == pytest.approx(0.6 * 64) and k[0, 0, 2].item() == pytest.approx(31.5)


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("poses.npy", np.zeros((3, 6)), r"poses.npy: expected an \(N, 7\) array"),
        ("poses.npy", np.zeros((3, 7)), "poses.npy: row 0 has a zero quaternion"),
        ("intrinsics.npy", np.ones((2, 4)), "3 poses but 2 intrinsics"),
        ("intrinsics.npy", np.full((3, 4), np.nan), "intrinsics.npy: expected finite numbers"),
        ("indexes.txt", "0 2", "indexes.txt: 2 indices for 3 poses"),
        ("indexes.txt", "0 4 2", "indexes.txt: frame indices must be non-negative and increasing"),
        ("caption.json", "{not json", "caption.json: invalid JSON"),
    ],
)
def test_bad_annotation_files_are_named(tmp_path, file, content, message):
    folder = _write_clip(tmp_path)
    if isinstance(content, np.ndarray):
        np.save(folder / file, content)
    else:
        (folder / file).write_text(content)
    with pytest.raises(AnnotationError, match=message):
        read_clip_annotations(folder)


def test_dataset_reads_the_annotated_frames_from_the_clip_video(tmp_path):
    import imageio.v2 as iio2

    _write_clip(tmp_path)
    video = tmp_path / "videos" / "group_0001" / "clip-a.mp4"
    video.parent.mkdir(parents=True)
    with iio2.get_writer(
        video, format="FFMPEG", fps=24, codec="libx264", quality=10, macro_block_size=1
    ) as w:
        for i in range(6):
            w.append_data(np.full((32, 32, 3), 30 * i + 20, dtype=np.uint8))
    data = SpatialVID(tmp_path, height=16, width=16)
    sample = data[0]
    assert sample.frames.shape == (3, 3, 16, 16)
    assert (sample.frames.mean(dim=(1, 2, 3)) * 255).tolist() == pytest.approx([20, 80, 140], abs=4)
    assert sample.intrinsics.shape == (3, 3, 3)
