"""Trajectory presets and the RealEstate10K camera-file writer."""

from __future__ import annotations

import math

import pytest
import torch

from spatia.data.procedural import intrinsics_from_fov, look_at_w2c
from spatia.data.realestate10k import CameraFileError, parse_camera_file, write_camera_file
from spatia.trajectories import PRESETS, preset_trajectory


def _centres(w2c: torch.Tensor) -> torch.Tensor:
    return torch.linalg.inv(w2c)[:, :3, 3]


def _is_rotation(w2c: torch.Tensor) -> bool:
    rot = w2c[:, :3, :3]
    eye = torch.eye(3, dtype=rot.dtype).expand_as(rot)
    return torch.allclose(rot @ rot.transpose(1, 2), eye, atol=1e-9) and bool(
        (torch.linalg.det(rot) > 0).all()
    )


START = look_at_w2c(
    torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64), torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_start_at_the_start_camera_with_valid_poses(name):
    w2c = preset_trajectory(name, 9, start_w2c=START)
    assert w2c.shape == (9, 4, 4) and w2c.dtype == torch.float64
    torch.testing.assert_close(w2c[0], START)
    assert _is_rotation(w2c)
    assert not torch.allclose(w2c[-1], w2c[0]) or name == "loop"


def test_preset_motions_do_what_their_names_say():
    forward = preset_trajectory("forward", 5, distance=2.0, start_w2c=START)
    step = _centres(forward)[-1] - _centres(forward)[0]
    torch.testing.assert_close(step, 2.0 * START[2, :3])  # along the start camera's +z (its 3rd row)
    pan = preset_trajectory("pan", 5, angle_degrees=30.0, start_w2c=START)
    torch.testing.assert_close(_centres(pan), _centres(pan)[:1].expand(5, 3))
    cos = (pan[-1, 2, :3] * START[2, :3]).sum()
    assert math.isclose(float(cos), math.cos(math.radians(30)), abs_tol=1e-9)
    orbit = preset_trajectory("orbit", 7, radius=2.0, start_w2c=START)
    focus = _centres(orbit)[0] + 2.0 * START[2, :3]
    distance = (_centres(orbit) - focus).norm(dim=-1)
    torch.testing.assert_close(distance, torch.full((7,), 2.0, dtype=torch.float64))
    # Every orbit camera looks at the focus: it projects to the optical axis.
    cam = torch.einsum("fij,j->fi", orbit[:, :3, :3], focus) + orbit[:, :3, 3]
    torch.testing.assert_close(cam[:, :2], torch.zeros(7, 2, dtype=torch.float64), atol=1e-9, rtol=0)


def test_loop_returns_to_its_start_after_travelling():
    w2c = preset_trajectory("loop", 17, radius=0.5)
    torch.testing.assert_close(w2c[-1], w2c[0], atol=1e-9, rtol=0)
    assert _centres(w2c)[8].norm() > 0.9  # halfway it is a diameter away


def test_unknown_preset_is_rejected():
    with pytest.raises(ValueError, match="unknown trajectory preset 'spiral'"):
        preset_trajectory("spiral", 4)


def test_camera_file_round_trip(tmp_path):
    w2c = preset_trajectory("orbit", 6, start_w2c=START)
    k = intrinsics_from_fov(48, 64, 70.0)
    path = write_camera_file(tmp_path / "seq.txt", w2c, k, 48, 64, fps=24.0)
    track = parse_camera_file(path)
    assert len(track) == 6 and track.url.startswith("https://")
    torch.testing.assert_close(track.extrinsics_w2c, w2c, atol=1e-12, rtol=0)
    torch.testing.assert_close(track.intrinsics(48, 64), k.expand(6, 3, 3), atol=1e-12, rtol=0)
    assert track.timestamps_us.tolist() == [round(i * 1e6 / 24) for i in range(6)]
    # A malformed line of a written file is reported with its line number.
    lines = path.read_text().splitlines()
    lines[3] = " ".join([*lines[3].split()[:-1], "nan"])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CameraFileError, match=r"seq\.txt: line 4: non-finite value"):
        parse_camera_file(path)


def test_offset_poses_turn_each_camera_by_the_angle_and_keep_single_and_batched_shapes():
    from spatia.slam import pose_errors
    from spatia.trajectories import offset_poses

    poses = preset_trajectory("orbit", 4, radius=2.0)
    moved = offset_poses(poses, 3.0, 0.05)
    rot, centre = pose_errors(moved, poses)
    torch.testing.assert_close(rot, torch.full((4,), 3.0, dtype=torch.float64))
    assert bool((centre > 0).all())
    torch.testing.assert_close(offset_poses(poses[2], 3.0, 0.05), moved[2])
    torch.testing.assert_close(offset_poses(poses, 0.0, 0.0), poses)
