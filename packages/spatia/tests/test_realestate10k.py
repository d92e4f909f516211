"""RealEstate10K camera files (published format), malformed ones, and frames from folders or videos."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from spatia.data.realestate10k import CameraFileError, RealEstate10K, load_frames, parse_camera_file

FIXTURES = Path(__file__).parent / "fixtures" / "realestate10k"
SEQUENCE = "0a1b2c3d4e5f6789"


def test_parses_the_published_format():
    track = parse_camera_file(FIXTURES / "train" / f"{SEQUENCE}.txt")
    assert track.url == "https://www.youtube.com/watch?v=fixture0001"
    assert len(track) == 5
    assert track.timestamps_us.tolist() == [50000000 + 33367 * i for i in range(5)]
    a = 0.02
    expected = torch.tensor(
        [
            [math.cos(a), 0, math.sin(a), 0.01],
            [0, 1, 0, -0.002],
            [-math.sin(a), 0, math.cos(a), 0.05],
            [0, 0, 0, 1],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(track.extrinsics_w2c[1], expected, atol=1e-8, rtol=0)
    k = track.intrinsics(360, 640)
    assert k.shape == (5, 3, 3)
    assert k[0, 0, 0].item() == pytest.approx(0.518749 * 640)
    assert k[0, 1, 1].item() == pytest.approx(0.922222 * 360)
    assert (k[0, 0, 2].item(), k[0, 1, 2].item()) == pytest.approx(
        (319.5, 179.5)
    )  # centre of a 640x360 image


@pytest.mark.parametrize(
    ("name", "line", "message"),
    [
        ("malformed_short_line.txt", 4, "expected 19 numbers"),
        ("malformed_number.txt", 3, "could not convert"),
    ],
)
def test_malformed_fixture_names_file_and_line(name, line, message):
    with pytest.raises(CameraFileError, match=rf"{name}: line {line}: .*{message}"):
        parse_camera_file(FIXTURES / name)


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "cam.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _good_lines() -> list[str]:
    return (FIXTURES / "train" / f"{SEQUENCE}.txt").read_text().splitlines()


def test_rejects_bad_rotations_timestamps_and_empty_files(tmp_path):
    lines = _good_lines()
    fields = lines[2].split()
    fields[7] = "2.0"  # r11: no longer a rotation
    with pytest.raises(CameraFileError, match="line 3: the 3x3 part of the pose is not a rotation"):
        parse_camera_file(_write(tmp_path, [*lines[:2], " ".join(fields), *lines[3:]]))
    with pytest.raises(CameraFileError, match=r"line 3: timestamp .* does not increase"):
        parse_camera_file(_write(tmp_path, [lines[0], lines[2], lines[1]]))
    with pytest.raises(CameraFileError, match="no camera lines"):
        parse_camera_file(_write(tmp_path, [lines[0]]))
    with pytest.raises(CameraFileError, match="line 1: expected the video URL"):
        parse_camera_file(_write(tmp_path, ["", *lines[1:]]))
    fields = lines[1].split()
    fields[1] = "-0.5"
    with pytest.raises(CameraFileError, match="line 2: focal lengths must be positive"):
        parse_camera_file(_write(tmp_path, [lines[0], " ".join(fields)]))


def test_dataset_reads_frames_named_by_timestamp(tmp_path):
    import imageio.v3 as iio

    root = tmp_path / "re10k"
    (root / "train").mkdir(parents=True)
    (root / "train" / f"{SEQUENCE}.txt").write_text("\n".join(_good_lines()) + "\n")
    frames = root / "frames" / SEQUENCE
    frames.mkdir(parents=True)
    track = parse_camera_file(root / "train" / f"{SEQUENCE}.txt")
    for i, stamp in enumerate(track.timestamps_us.tolist()):
        iio.imwrite(frames / f"{stamp}.png", np.full((36, 64, 3), 40 * i, dtype=np.uint8))
    data = RealEstate10K(root, "train", height=18, width=32)
    seq = data[0]
    assert seq.sequence_id == SEQUENCE and seq.frames.shape == (5, 3, 18, 32)
    assert seq.frames[:, 0, 0, 0].tolist() == pytest.approx([40 * i / 255 for i in range(5)], abs=1e-6)
    assert seq.intrinsics[0, 0, 0].item() == pytest.approx(0.518749 * 32)
    (frames / f"{track.timestamps_us[2].item()}.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=f"no image for timestamps \\[{track.timestamps_us[2].item()}\\]"
    ):
        data[0]


def test_frames_from_a_video_file_follow_the_timestamps(tmp_path):
    import imageio.v2 as iio2

    video = tmp_path / "clip.mp4"
    with iio2.get_writer(
        video, format="FFMPEG", fps=30, codec="libx264", quality=10, macro_block_size=1
    ) as w:
        for i in range(10):
            w.append_data(np.full((32, 32, 3), 20 * i + 10, dtype=np.uint8))
    stamps = torch.tensor([0, 66_667, 133_333, 300_000])  # frames 0, 2, 4, 9 at 30 fps
    frames = load_frames(video, stamps)
    means = (frames.mean(dim=(1, 2, 3)) * 255).tolist()
    assert means == pytest.approx([10, 50, 90, 190], abs=4)
    with pytest.raises(ValueError, match="the video has 10 frames"):
        load_frames(video, torch.tensor([0, 1_000_000]))
    with pytest.raises(FileNotFoundError, match="expected a folder of frames or a video file"):
        load_frames(tmp_path / "missing.mp4", stamps)
