"""Frame-to-memory tracking by dense patch matching, for frames too small for SIFT.

At the CPU reproduction's 32 x 32 pixels SIFT finds almost no keypoints, even on ground-truth
frames, so the SIFT registration of :mod:`spatia.slam` registers nothing. Tracking here needs no
keypoints: every textured pixel of a memory keyframe (an anchor, with known pose and depth) is
lifted to 3D, projected into the new frame at a guessed pose (the request, then the estimate),
and its patch is searched for around that place by normalised cross-correlation. The 2D-3D
matches go to pycolmap's RANSAC PnP, as in the SIFT path. A second round starts from the
first estimate, so a request several pixels off still converges.

A match must be textured, correlate above ``min_ncc``, peak sharply along both axes (a patch on
a straight edge slides along it: the aperture problem), beat every shift outside its 3 x 3
neighbourhood by ``min_margin`` (repetitive textures otherwise match a period away) and lie
inside the search window, not on its edge. Noise and flat frames give no matches (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class DenseTrackingConfig:
    """Options of the dense registration (the paper is silent: it uses a feed-forward reconstructor)."""

    search_radius: int = 3  # px around the predicted place, per round
    patch_radius: int = 2  # 5 x 5 patches
    min_ncc: float = 0.8
    min_margin: float = 0.05  # best NCC minus the best outside its 3 x 3 neighbourhood
    min_curvature: float = (
        0.05  # NCC drop one pixel off the peak, along x and along y (edges slide: aperture)
    )
    min_texture: float = 0.1  # norm of the zero-mean RGB patch (pixels in [0, 1])
    max_depth_kink: float = 0.2  # patches across an occlusion edge change with parallax: skip them
    rounds: int = 2  # correspondences re-predicted from the previous round's estimate
    max_error: float = 1.0  # px, RANSAC threshold
    min_inliers: int = 40
    min_inlier_ratio: float = 0.5
    max_rotation_std: float = 1.5  # degrees per pixel of noise (pycolmap's pose covariance); more: ill-posed
    seed: int = 0


def _unit(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    centred = patches - patches.mean(-1, keepdim=True)
    norm = centred.norm(dim=-1, keepdim=True)
    return centred / norm.clamp(min=1e-6), norm[..., 0]


def lift_to_world(depth: torch.Tensor, w2c: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """World points ``(H*W, 3)`` of every pixel (integer centres) of a ``(H, W)`` depth map."""
    h, w = depth.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pix = torch.stack([xs.flatten(), ys.flatten(), torch.ones(h * w, dtype=torch.long)], 1).double()
    cam = (pix @ torch.linalg.inv(intrinsics.double()).T) * depth.flatten().double()[:, None]
    c2w = torch.linalg.inv(w2c.double())
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def smooth_depth(depth: torch.Tensor, radius: int, max_kink: float) -> torch.Tensor:
    """``(H, W)`` bool: known depth with no occlusion edge or crease within ``radius`` pixels.

    Inverse depth is affine in the pixel coordinates on a plane, so a large second difference (relative to
    the inverse depth) marks an edge; pixels across one move with parallax, not with the camera alone.
    """
    inv = torch.where(depth > 0, 1.0 / depth.double().clamp(min=1e-9), 0.0)[None, None]
    lap = F.conv2d(F.pad(inv, (1, 1, 1, 1), mode="replicate"), torch.tensor(
        [[[[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]]], dtype=torch.float64))  # fmt: skip
    kink = torch.where(inv > 0, lap.abs() / inv.clamp(min=1e-9), torch.inf)
    return F.max_pool2d(kink, 2 * radius + 1, stride=1, padding=radius)[0, 0] <= max_kink


def dense_correspondences(
    anchor: torch.Tensor,
    anchor_depth: torch.Tensor,
    anchor_w2c: torch.Tensor,
    frame: torch.Tensor,
    guess_w2c: torch.Tensor,
    intrinsics: torch.Tensor,
    config: DenseTrackingConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """2D points in ``frame`` (project pixel convention, float64) and their 3D points, from one anchor.

    ``anchor`` and ``frame`` are ``(3, H, W)`` in [0, 1]; ``anchor_depth`` is ``(H, W)`` with 0 where
    unknown; ``guess_w2c`` is where the frame is believed to have been seen from.
    """
    cfg = config or DenseTrackingConfig()
    c, h, w = anchor.shape
    r, big = cfg.patch_radius, cfg.search_radius
    world = lift_to_world(anchor_depth, anchor_w2c, intrinsics)
    cam = world @ guess_w2c[:3, :3].double().T + guess_w2c[:3, 3].double()
    uvz = cam @ intrinsics.double().T
    z = uvz[:, 2]
    uv = uvz[:, :2] / z[:, None].clamp(min=1e-9)
    anchor_patches = F.unfold(anchor[None].double(), 2 * r + 1, padding=r)[0]  # (C*P, H*W), channel-major
    anchor_patches, texture = _unit(anchor_patches.view(c, -1, h * w).permute(2, 1, 0).reshape(h * w, -1))
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    interior = (xs.flatten() >= r) & (xs.flatten() < w - r) & (ys.flatten() >= r) & (ys.flatten() < h - r)
    lands = (uv[:, 0] >= r) & (uv[:, 0] <= w - 1 - r) & (uv[:, 1] >= r) & (uv[:, 1] <= h - 1 - r)
    smooth = smooth_depth(anchor_depth, r, cfg.max_depth_kink).flatten()
    keep = smooth & (z > 1e-6) & interior & lands & (texture > cfg.min_texture)
    idx = keep.nonzero().squeeze(1)
    if idx.numel() == 0:
        return torch.zeros(0, 2, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.float64)

    def grid(radius: int) -> torch.Tensor:  # (n, 2) integer (dx, dy), x fastest
        a = torch.arange(-radius, radius + 1, dtype=torch.float64)
        dy, dx = torch.meshgrid(a, a, indexing="ij")
        return torch.stack([dx.flatten(), dy.flatten()], 1)

    offsets, shifts = grid(r), grid(big)
    places = uv[idx][:, None, None] + shifts[None, :, None] + offsets[None, None]  # (N, S, P, 2)
    norm_xy = torch.stack([places[..., 0] / (w - 1) * 2 - 1, places[..., 1] / (h - 1) * 2 - 1], -1)
    sampled = F.grid_sample(
        frame[None].double(), norm_xy.reshape(1, -1, offsets.shape[0], 2), align_corners=True,
        padding_mode="border",
    )  # fmt: skip
    n, s = idx.numel(), shifts.shape[0]
    frame_patches, _ = _unit(sampled[0].permute(1, 2, 0).reshape(n, s, -1))
    scores = (frame_patches * anchor_patches[idx][:, None]).sum(-1)  # (N, S) NCC
    best, arg = scores.max(1)
    side = 2 * big + 1
    bx, by = arg % side, arg // side
    sub = shifts[arg].clone()
    sharp = torch.ones_like(best, dtype=torch.bool)
    for axis, (b, step) in enumerate(((bx, 1), (by, side))):
        lo = scores.gather(1, (arg - step).clamp(0, s - 1)[:, None])[:, 0]
        hi = scores.gather(1, (arg + step).clamp(0, s - 1)[:, None])[:, 0]
        curv = lo - 2 * best + hi
        peak = (b > 0) & (b < side - 1) & (curv < 0)
        sharp &= curv < -cfg.min_curvature
        sub[:, axis] += torch.where(peak, 0.5 * (lo - hi) / torch.where(peak, curv, -1.0), 0.0).clamp(
            -0.5, 0.5
        )
    near = (shifts[None] - shifts[arg][:, None]).abs().amax(-1) <= 1
    second = scores.masked_fill(near, -2.0).amax(1)
    inside = (bx > 0) & (bx < side - 1) & (by > 0) & (by < side - 1)
    ok = (best > cfg.min_ncc) & inside & sharp & (best - second > cfg.min_margin)
    return (uv[idx] + sub)[ok], world[idx][ok]


def register_dense(
    anchors: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    frame: torch.Tensor,
    guess_w2c: torch.Tensor,
    intrinsics: torch.Tensor,
    config: DenseTrackingConfig | None = None,
) -> torch.Tensor | None:
    """The ``(4, 4)`` w2c pose of ``frame`` against ``anchors`` [(image, depth, w2c)], or None.

    Starts at ``guess_w2c`` (the request) and re-matches from each estimate for ``config.rounds``.
    """
    import pycolmap

    from spatia.slam import colmap_camera  # slam imports this module: import at call time

    cfg = config or DenseTrackingConfig()
    h, w = frame.shape[-2:]
    camera = colmap_camera(intrinsics, h, w)
    options = pycolmap.AbsolutePoseEstimationOptions()
    options.ransac.max_error = cfg.max_error
    options.ransac.random_seed = cfg.seed
    guess, pose = guess_w2c.double(), None
    for _ in range(cfg.rounds):
        found = [dense_correspondences(a, d, p, frame, guess, intrinsics, cfg) for a, d, p in anchors]
        pts2d = torch.cat([f[0] for f in found]) if found else torch.zeros(0, 2, dtype=torch.float64)
        pts3d = torch.cat([f[1] for f in found]) if found else torch.zeros(0, 3, dtype=torch.float64)
        if len(pts2d) < cfg.min_inliers:
            break
        # COLMAP's pixel centres sit at +0.5 (``slam.colmap_camera`` shifts the principal point likewise).
        answer = pycolmap.estimate_and_refine_absolute_pose(
            (pts2d + 0.5).numpy(), pts3d.numpy(), camera, options, return_covariance=True
        )
        if answer is None:
            break
        count = int(answer["num_inliers"])
        # Few matches on one plane or one far wall let rotation trade off against translation; the
        # pose covariance (per pixel of noise) says so, where the inlier count does not.
        cov = np.asarray(answer["covariance"], dtype=np.float64)[:3, :3]
        rotation_std = math.degrees(math.sqrt(max(float(np.linalg.eigvalsh(cov).max()), 0.0)))
        if (
            count < cfg.min_inliers
            or count < cfg.min_inlier_ratio * len(pts2d)
            or rotation_std > cfg.max_rotation_std
        ):
            break
        guess = torch.eye(4, dtype=torch.float64)
        guess[:3] = torch.from_numpy(np.asarray(answer["cam_from_world"].matrix(), dtype=np.float64))
        pose = guess
    return pose
