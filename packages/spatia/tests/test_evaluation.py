"""Evaluation metrics: torchmetrics agreement, hand-checked PSNR, LPIPS availability, pose error, closed loop."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from spatia.data.procedural import intrinsics_from_fov, orbit_trajectory, random_scene, render
from spatia.evaluation import (
    closed_loop,
    image_metrics,
    lpips,
    lpips_status,
    matching_accuracy,
    pose_error,
    psnr,
    revisit_pairs,
    ssim,
)
from spatia.trajectories import _yaw


def test_psnr_hand_checked_and_ssim_of_identical_images():
    target = torch.zeros(2, 3, 16, 16)
    pred = torch.full_like(target, 0.1)  # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB
    assert psnr(pred, target) == pytest.approx(20.0, abs=1e-4)
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-6)


def test_metrics_agree_with_torchmetrics_modules():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(3, 3, 32, 32, generator=g)
    pred = (target + 0.1 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    out = image_metrics(pred, target)
    assert out["psnr"] == pytest.approx(float(PeakSignalNoiseRatio(data_range=1.0)(pred, target)), rel=1e-6)
    assert out["ssim"] == pytest.approx(
        float(StructuralSimilarityIndexMeasure(data_range=1.0)(pred, target)), rel=1e-6
    )
    assert 10 < out["psnr"] < 30 and 0 < out["ssim"] < 1


def test_lpips_reports_why_it_is_unavailable_without_the_backbone_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    ok, reason = lpips_status()
    assert not ok and reason.startswith("unavailable") and str(tmp_path) in reason
    assert lpips(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)) == reason


@pytest.mark.skipif(
    not lpips_status()[0], reason="torchvision AlexNet weights are not in the torch hub cache"
)
def test_lpips_matches_torchmetrics_when_weights_exist():
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    ref = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)(a, b)
    assert lpips(a, b) == pytest.approx(float(ref), rel=1e-5)


def _path(n: int = 8) -> torch.Tensor:
    poses = []
    for i in range(n):
        w2c = torch.eye(4, dtype=torch.float64)
        w2c[:3, :3] = _yaw(0.1 * i)
        w2c[:3, 3] = torch.tensor([0.3 * i, 0.05 * i * i, 1.0 - 0.1 * i])
        poses.append(w2c)
    return torch.stack(poses)


def test_pose_error_is_zero_up_to_similarity_and_sees_a_rotated_frame():
    req = _path()
    # The same path in another world frame and scale: c2w' = S c2w, so w2c' = w2c S^-1 (with scaled translation).
    world = torch.eye(4, dtype=torch.float64)
    world[:3, :3], world[:3, 3] = _yaw(1.1), torch.tensor([5.0, 1.0, -2.0])
    est = req @ torch.linalg.inv(world)
    est[:, :3, 3] *= 3.0
    err = pose_error(est, req)
    assert err.num_registered == 8 and err.rotation_deg_max < 1e-5 and err.translation_rmse < 1e-6
    bent = est.clone()
    bent[4, :3, :3] = _yaw(math.radians(5.0)) @ bent[4, :3, :3]
    bent[4, :3, 3] = _yaw(math.radians(5.0)) @ bent[4, :3, 3]  # rotate the camera about its own centre
    err = pose_error(bent, req)
    # The alignment spreads one camera's 5 degrees over the path a little (orientations count too).
    assert 4.0 < err.rotation_deg_max <= 5.0 + 1e-9 and err.translation_rmse < 0.01
    few = pose_error(est, req, registered=torch.tensor([True, True] + [False] * 6))
    assert few.num_registered == 2 and math.isnan(few.rotation_deg_mean)
    # As estimated (no alignment), every camera is off by the world's 1.1 rad turn.
    assert pose_error(est, req).world_rotation_deg_mean == pytest.approx(math.degrees(1.1), abs=1e-6)
    assert pose_error(req, req).world_centre_rmse < 1e-9


def test_pose_error_on_collinear_centres_takes_the_rotation_from_the_cameras():
    """Centres on a line leave Umeyama's rotation about it free (a few frames of a short arc are nearly
    that); the cameras' orientations fix it, so an exact path in another frame still scores zero."""
    req = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
    for i in range(5):
        req[i, :3, :3] = _yaw(0.05 * i)
        req[i, :3, 3] = -req[i, :3, :3] @ torch.tensor([0.1 * i, 0.0, 0.0], dtype=torch.float64)
    world = torch.eye(4, dtype=torch.float64)
    world[:3, :3], world[:3, 3] = _yaw(0.7), torch.tensor([1.0, 0.5, -2.0])
    est = req @ torch.linalg.inv(world)
    err = pose_error(est, req)
    assert err.rotation_deg_max < 1e-5 and err.translation_rmse < 1e-9
    noisy = est.clone()
    noisy[2, :3, :3] = _yaw(math.radians(3.0)) @ noisy[2, :3, :3]
    err = pose_error(noisy, req)
    assert 1.0 < err.rotation_deg_max < 3.0 + 1e-6  # the one turned camera, not an arbitrary roll


@pytest.fixture(scope="module")
def out_and_back():
    """A procedural room filmed along a path and back along the same path: returning frames equal the first."""
    gen = torch.Generator().manual_seed(3)
    room = random_scene(gen)
    out = orbit_trajectory(room, 6, gen, sweep=0.5)
    w2c = torch.cat([out, out.flip(0)[1:]])  # 11 frames, frame 10 - i has frame i's pose
    k = intrinsics_from_fov(64, 64)
    return render(room, k, w2c, 64, 64), k


def test_revisit_pairs_find_the_returning_frames(out_and_back):
    clip, _ = out_and_back
    pairs = revisit_pairs(clip.extrinsics_w2c)
    assert pairs and all(i + j == 10 for i, j in pairs)


def test_closed_loop_identical_revisits_score_perfectly_and_noise_does_not(out_and_back):
    clip, _ = out_and_back
    res = closed_loop(clip.images, clip.extrinsics_w2c)
    assert res.num_pairs >= 2 and math.isinf(res.psnr_c) and res.match_accuracy == 1.0
    noisy = clip.images.clone()
    g = torch.Generator().manual_seed(0)
    for _, j in res.pairs:
        noisy[j] = torch.rand(noisy[j].shape, generator=g)
    bad = closed_loop(noisy, clip.extrinsics_w2c, pairs=res.pairs)
    assert bad.psnr_c < 12 and bad.match_accuracy < 0.2


def test_matching_accuracy_uses_depth_for_different_poses(out_and_back):
    clip, k = out_and_back
    # Frames 0 and 1 differ in pose: with their exact geometry most keypoints land where predicted,
    # while assuming equal poses (no geometry) misplaces them.
    geo = matching_accuracy(
        clip.images[0],
        clip.images[1],
        first_w2c=clip.extrinsics_w2c[0],
        returning_w2c=clip.extrinsics_w2c[1],
        intrinsics=k,
        first_depth=clip.depth[0],
    )
    naive = matching_accuracy(clip.images[0], clip.images[1])
    assert geo > naive and geo > 0.3
