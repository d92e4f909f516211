"""Evaluation of generated videos: image metrics, camera-pose error and closed-loop revisit consistency.

- ``image_metrics``: PSNR and SSIM (torchmetrics, data range 1) and LPIPS (torchmetrics'
  ``LearnedPerceptualImagePatchSimilarity``, AlexNet, as the paper's peers). LPIPS needs
  torchvision's ImageNet AlexNet weights, which this machine cannot download: it is computed only
  when they are in the torch hub cache, otherwise reported as unavailable with the reason.
- ``pose_error``: the SLAM-estimated camera path of a generated video against the requested one,
  after a similarity alignment (rotation from the cameras' orientations, scale and shift from their
  centres; ``slam.similarity_from_poses``), and as estimated: rotation error in degrees and translation error (RMSE of centres) in the requested
  trajectory's units.
- ``closed_loop``: on a trajectory that returns to its start (paper's closed-loop table), each
  returning frame is paired with the first-visit frame of nearest pose; PSNR_C is their PSNR and
  the matching accuracy the share of the first frame's SIFT keypoints (pycolmap) whose mutual
  nearest-neighbour match in the returning frame lands within ``tolerance_px`` of where the
  geometry puts it (same pixel for equal poses; reprojected with depth when given).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from spatia.slam import pose_errors, similarity_from_poses, transform_w2c

#: torchvision's ImageNet AlexNet (the LPIPS backbone); torchmetrics ships the LPIPS linear layers itself.
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] (mean squared error over every pixel of the batch)."""
    return float(peak_signal_noise_ratio(pred.float(), target.float(), data_range=1.0))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean SSIM of ``(N, 3, H, W)`` images in [0, 1] (Gaussian window 11, sigma 1.5)."""
    return float(structural_similarity_index_measure(pred.float(), target.float(), data_range=1.0))


def lpips_status() -> tuple[bool, str]:
    """Whether LPIPS can run offline: the AlexNet backbone weights must be in the torch hub cache."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS
    if path.is_file():
        return True, str(path)
    return (
        False,
        f"unavailable: torchvision AlexNet weights not in the torch hub cache ({path}); no download here",
    )


def lpips(pred: torch.Tensor, target: torch.Tensor) -> float | str:
    """LPIPS (AlexNet) of images in [0, 1], or the reason it is unavailable."""
    ok, reason = lpips_status()
    if not ok:
        return reason
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
    return float(metric(pred.float().clamp(0, 1), target.float().clamp(0, 1)))


def image_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float | str]:
    """PSNR, SSIM and LPIPS of ``(N, 3, H, W)`` frames in [0, 1] against their targets."""
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"need two (N, 3, H, W) batches of one shape, got {tuple(pred.shape)}, {tuple(target.shape)}"
        )
    return {"psnr": psnr(pred, target), "ssim": ssim(pred, target), "lpips": lpips(pred, target)}


# ---------------------------------------------------------------------------- camera poses


def camera_centres(w2c: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` camera centres ``-R^T t`` of ``(N, 4, 4)`` world-to-camera matrices."""
    w2c = w2c.double()
    return -(w2c[:, :3, :3].transpose(1, 2) @ w2c[:, :3, 3:])[..., 0]


@dataclass
class PoseError:
    """Camera-path error of the registered frames: after a similarity alignment, and as estimated.

    The aligned errors are the usual trajectory metric (they forgive one world rotation, shift and
    scale). The ``world_*`` errors take the estimate as it is: the memory fixes the world frame and
    its scale (frame 0 with depth), so a pose off in that frame is what misplaces fused points.
    """

    num_frames: int
    num_registered: int
    rotation_deg_mean: float
    rotation_deg_max: float
    translation_rmse: float
    trajectory_extent: float
    world_rotation_deg_mean: float = math.nan
    world_centre_rmse: float = math.nan


def pose_error(
    estimated_w2c: torch.Tensor, requested_w2c: torch.Tensor, registered: torch.Tensor | None = None
) -> PoseError:
    """Error of the estimated path on the frames SLAM registered (unregistered frames carry the request).

    Needs 3 registered frames for the alignment; fewer gives NaN errors (and says how many registered).
    """
    n = requested_w2c.shape[0]
    reg = torch.ones(n, dtype=torch.bool) if registered is None else registered.bool()
    req_c = camera_centres(requested_w2c)
    extent = float((req_c - req_c.mean(0)).norm(dim=-1).max()) if n else 0.0
    count = int(reg.sum())
    if count < 3:
        return PoseError(n, count, math.nan, math.nan, math.nan, extent)
    est, req = estimated_w2c[reg].double(), requested_w2c[reg].double()
    # The rotation comes from the cameras' orientations: centre-only Umeyama leaves the roll about a
    # (nearly) straight run of centres free, and a few frames of a short arc read rolls up to 180 degrees.
    aligned = transform_w2c(est, *similarity_from_poses(est, req))
    angles, centres = pose_errors(aligned, req)
    world, world_centres = pose_errors(est, req)
    return PoseError(
        n,
        count,
        float(angles.mean()),
        float(angles.max()),
        float(centres.pow(2).mean().sqrt()),
        extent,
        float(world.mean()),
        float(world_centres.pow(2).mean().sqrt()),
    )


# ---------------------------------------------------------------------------- closed loop


def revisit_pairs(
    w2c: torch.Tensor, *, fraction: float = 0.25, max_rotation_deg: float = 15.0, max_distance: float = 0.15
) -> list[tuple[int, int]]:
    """``(first, returning)`` frame pairs of a trajectory that comes back to its start.

    Returning frames are the last ``fraction`` of the trajectory; each is paired with the frame of
    the first ``fraction`` whose pose is nearest (rotation angle plus centre distance relative to the
    trajectory's extent), kept when within ``max_rotation_deg`` and ``max_distance`` of the extent.
    """
    n = w2c.shape[0]
    m = max(round(n * fraction), 1)
    centres = camera_centres(w2c)
    extent = float((centres - centres.mean(0)).norm(dim=-1).max()) or 1.0
    rots = w2c[:, :3, :3].double()
    pairs = []
    for i in range(n - m, n):
        best, best_cost = None, math.inf
        for j in range(m):
            if j >= i:
                continue
            cos = (((rots[i] @ rots[j].T).trace() - 1) / 2).clamp(-1, 1)
            angle = math.degrees(float(torch.arccos(cos)))
            dist = float((centres[i] - centres[j]).norm()) / extent
            if (
                angle <= max_rotation_deg
                and dist <= max_distance
                and angle / max_rotation_deg + dist < best_cost
            ):
                best, best_cost = j, angle / max_rotation_deg + dist
        if best is not None:
            pairs.append((best, i))
    return pairs


def _sift(image: torch.Tensor, upscale: int):
    """pycolmap SIFT of a ``(3, H, W)`` image in [0, 1], upscaled so small frames still give keypoints.

    Returns keypoints ``(N, 2)`` in this project's pixel convention (centres on integers) of the original
    image, and L2-normalised descriptors ``(N, 128)``.
    """
    import pycolmap

    gray = image.float().mean(0, keepdim=True)[None]
    if upscale > 1:
        gray = F.interpolate(gray, scale_factor=upscale, mode="bilinear", align_corners=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sift = pycolmap.Sift()
    keypoints, descriptors = sift.extract(np.ascontiguousarray(gray[0, 0].numpy(), dtype=np.float32))
    # COLMAP puts pixel centres at +0.5; undo the upscale in that convention, then shift to ours.
    xy = torch.from_numpy(keypoints[:, :2].copy()).double() / upscale - 0.5
    desc = torch.from_numpy(descriptors.astype(np.float32))
    return xy, F.normalize(desc, dim=-1)


def _mutual_matches(d0: torch.Tensor, d1: torch.Tensor, ratio: float) -> list[tuple[int, int]]:
    """Mutual nearest neighbours of two descriptor sets that also pass Lowe's ratio test."""
    if len(d0) == 0 or len(d1) == 0:
        return []
    dist = torch.cdist(d0, d1)
    nn01, nn10 = dist.argmin(1), dist.argmin(0)
    out = []
    for a in range(len(d0)):
        b = int(nn01[a])
        if int(nn10[b]) != a:
            continue
        if len(d1) > 1:
            best2 = torch.topk(dist[a], 2, largest=False).values
            if best2[0] > ratio * best2[1]:
                continue
        out.append((a, b))
    return out


def matching_accuracy(
    first: torch.Tensor,
    returning: torch.Tensor,
    *,
    first_w2c: torch.Tensor | None = None,
    returning_w2c: torch.Tensor | None = None,
    intrinsics: torch.Tensor | None = None,
    first_depth: torch.Tensor | None = None,
    tolerance_px: float = 2.0,
    ratio: float = 0.9,
    upscale: int = 4,
) -> float:
    """Share of ``first``'s SIFT keypoints re-found in ``returning`` within ``tolerance_px`` of their true place.

    The true place is the same pixel when no geometry is given (the poses are equal); with both poses,
    the intrinsics and ``first_depth`` it is the keypoint reprojected into the returning camera.
    Returns NaN when ``first`` has no keypoint.
    """
    xy0, d0 = _sift(first, upscale)
    if len(xy0) == 0:
        return math.nan
    xy1, d1 = _sift(returning, upscale)
    expected = xy0.clone()
    if (
        first_depth is not None
        and first_w2c is not None
        and returning_w2c is not None
        and intrinsics is not None
    ):
        k = intrinsics.double()
        h, w = first_depth.shape
        u = xy0[:, 0].round().long().clamp(0, w - 1)
        v = xy0[:, 1].round().long().clamp(0, h - 1)
        z = first_depth.double()[v, u]
        pix = torch.stack([xy0[:, 0], xy0[:, 1], torch.ones_like(z)], -1)
        cam = (pix @ torch.linalg.inv(k).T) * z[:, None]
        world = (cam - first_w2c[:3, 3].double()) @ first_w2c[:3, :3].double()
        cam1 = world @ returning_w2c[:3, :3].double().T + returning_w2c[:3, 3].double()
        proj = cam1 @ k.T
        expected = proj[:, :2] / proj[:, 2:].clamp_min(1e-9)
    correct = 0
    for a, b in _mutual_matches(d0, d1, ratio):
        if float((xy1[b] - expected[a]).norm()) <= tolerance_px:
            correct += 1
    return correct / len(xy0)


@dataclass
class ClosedLoopResult:
    """Closed-loop revisit consistency of one video."""

    num_pairs: int
    psnr_c: float
    ssim_c: float
    match_accuracy: float
    pairs: list[tuple[int, int]]


def closed_loop(
    frames: torch.Tensor,
    w2c: torch.Tensor,
    *,
    intrinsics: torch.Tensor | None = None,
    depths: torch.Tensor | None = None,
    pairs: list[tuple[int, int]] | None = None,
) -> ClosedLoopResult:
    """PSNR_C, SSIM_C and matching accuracy of the returning frames of ``frames`` ``(T, 3, H, W)`` against the first.

    ``depths`` ``(T, H, W)`` (e.g. exact procedural depth) lets matching account for pose differences
    within a pair; without it the pairs' poses are taken as equal.
    """
    pairs = revisit_pairs(w2c) if pairs is None else pairs
    if not pairs:
        return ClosedLoopResult(0, math.nan, math.nan, math.nan, [])
    a = torch.stack([frames[i] for i, _ in pairs])
    b = torch.stack([frames[j] for _, j in pairs])
    accs = []
    for i, j in pairs:
        geometry = {}
        if depths is not None and intrinsics is not None:
            k = intrinsics if intrinsics.ndim == 2 else intrinsics[i]
            geometry = {
                "first_w2c": w2c[i],
                "returning_w2c": w2c[j],
                "intrinsics": k,
                "first_depth": depths[i],
            }
        accs.append(matching_accuracy(frames[i], frames[j], **geometry))
    valid = [x for x in accs if not math.isnan(x)]
    return ClosedLoopResult(
        len(pairs), psnr(b, a), ssim(b, a), float(np.mean(valid)) if valid else math.nan, pairs
    )


def as_dict(result) -> dict:
    """A dataclass result as a JSON-friendly dict."""
    return asdict(result)
