"""Frame-to-memory tracking by direct photometric alignment, for frames where patches cannot be matched.

Patch matching (:mod:`spatia.dense_tracking`) needs patches that peak along both image axes. On a room
papered with stripes every patch slides along its stripe (the aperture problem) and no pixel gives a
2D match, so such frames stayed unregistered. Direct alignment needs no matches: the textured pixels of
the memory keyframes (anchors, with known depth and pose) are lifted to 3D once, and the 6-DoF pose of
the new frame is the one under which their projections see the anchors' colours. Every pixel constrains
the pose only across its edge, but stripes on the floor, the walls and the boxes run in different
directions, so together they fix all six degrees of freedom. Gauss-Newton on a blurred pyramid, from
the requested pose, with Huber weights.

A pose is accepted when enough anchor pixels land in the frame, the colour residual is small, and the
pose is well determined: the standard deviations of its rotation and of its translation (as an angle at
the points' median depth) from the Gauss-Newton covariance, scaled by the residual, must stay under
``max_rotation_std`` and ``max_translation_std``. That rejects frames whose edges all run one way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from spatia.dense_tracking import lift_to_world, smooth_depth


@dataclass
class PhotometricTrackingConfig:
    """Options of the direct alignment (the paper is silent: it uses a feed-forward reconstructor)."""

    blur_sigmas: tuple[float, ...] = (1.5, 0.75)  # px, coarse to fine: wider basins first
    iterations: int = 20  # Gauss-Newton steps per level
    huber: float = 0.05  # colour residual (pixels in [0, 1]) beyond which a pixel's weight falls
    min_gradient: float = 0.02  # anchor pixels flatter than this (per px, blurred) say nothing about pose
    max_depth_kink: float = 0.2  # pixels next to an occlusion edge move with parallax: skip them
    min_points: int = 100  # anchor pixels landing inside the frame
    max_rms: float = 0.05  # final robust colour residual
    max_rotation_std: float = 0.2  # degrees, from the covariance scaled by the residual
    max_translation_std: float = 0.2  # degrees: the translation's std over the points' median depth
    noise_floor: float = 0.01  # the residual the covariance assumes at least (a perfect fit proves nothing)
    max_step: float = 0.05  # rad and world units per Gauss-Newton step (trust region)


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(C, H, W)`` Gaussian-blurred with replicated borders.

    Not torchvision's ``gaussian_blur``: it reflects the border, which at 32 x 32 mirrors texture into the
    outer pixels (measured on rooms 1000-1015: 91 frames registered instead of 95).
    """
    radius = max(1, math.ceil(2.5 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = image.shape[0]
    out = F.pad(image[None].double(), (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def _gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences along x and y of a ``(C, H, W)`` image (one-sided at the border)."""
    padded = F.pad(image[None], (1, 1, 1, 1), mode="replicate")[0]
    gx = 0.5 * (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2])
    gy = 0.5 * (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1])
    return gx, gy


def _sample(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples ``(N, C)`` of a ``(C, H, W)`` image at pixel coordinates ``uv`` (centres on integers)."""
    _, h, w = image.shape
    grid = torch.stack([uv[:, 0] / (w - 1) * 2 - 1, uv[:, 1] / (h - 1) * 2 - 1], -1)
    return F.grid_sample(image[None], grid[None, None], align_corners=True, padding_mode="border")[0, :, 0].T


def _rotation(omega: torch.Tensor) -> torch.Tensor:
    """The rotation matrix of the axis-angle vector ``omega``: the exponential of its cross-product matrix."""
    wx, wy, wz = omega.tolist()
    return torch.linalg.matrix_exp(
        torch.tensor([[0.0, -wz, wy], [wz, 0.0, -wx], [-wy, wx, 0.0]], dtype=omega.dtype)
    )


def _anchor_points(
    anchors: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    intrinsics: torch.Tensor,
    sigma: float,
    cfg: PhotometricTrackingConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """World points ``(N, 3)`` and blurred colours ``(N, C)`` of the anchors' textured, smooth-depth pixels."""
    points, colours = [], []
    for image, depth, w2c in anchors:
        blurred = _blur(image, sigma)
        gx, gy = _gradients(blurred)
        gradient = (gx.square() + gy.square()).sum(0).sqrt()
        smooth = smooth_depth(depth, 1, cfg.max_depth_kink)
        keep = (
            (gradient > cfg.min_gradient) & smooth
        ).flatten()  # smooth_depth is False where depth is unknown
        points.append(lift_to_world(depth, w2c, intrinsics)[keep])
        colours.append(blurred.flatten(1).T[keep])
    return torch.cat(points), torch.cat(colours)


def register_photometric(
    anchors: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    frame: torch.Tensor,
    guess_w2c: torch.Tensor,
    intrinsics: torch.Tensor,
    config: PhotometricTrackingConfig | None = None,
) -> torch.Tensor | None:
    """The ``(4, 4)`` w2c pose of ``frame`` against ``anchors`` [(image, depth, w2c)], or None.

    ``frame`` and the anchor images are ``(3, H, W)`` in [0, 1]; anchor depths are ``(H, W)`` with 0 where
    unknown. Starts at ``guess_w2c`` (the request).
    """
    cfg = config or PhotometricTrackingConfig()
    _, h, w = frame.shape
    k = intrinsics.double()
    fx, fy = float(k[0, 0]), float(k[1, 1])
    pose = guess_w2c.double().clone()
    for sigma in cfg.blur_sigmas:
        world, colours = _anchor_points(anchors, k, sigma, cfg)
        target = _blur(frame, sigma)
        gx, gy = _gradients(target)
        for _ in range(cfg.iterations):
            cam = world @ pose[:3, :3].T + pose[:3, 3]
            z = cam[:, 2]
            uv = (cam @ k.T)[:, :2] / z[:, None].clamp(min=1e-9)
            inside = (
                (z > 1e-6) & (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
            )
            if int(inside.sum()) < cfg.min_points:
                return None
            p, uv_in = cam[inside], uv[inside]
            residual = _sample(target, uv_in) - colours[inside]  # (N, C)
            grad_x, grad_y = _sample(gx, uv_in), _sample(gy, uv_in)  # (N, C)
            # d(u, v)/d(camera point), then d(camera point)/d(twist) = [I | -[p]x] for a left update.
            x, y, zz = p[:, 0], p[:, 1], p[:, 2]
            du = torch.stack([fx / zz, torch.zeros_like(zz), -fx * x / zz**2], 1)
            dv = torch.stack([torch.zeros_like(zz), fy / zz, -fy * y / zz**2], 1)
            dp = torch.zeros(len(p), 3, 6, dtype=torch.float64)
            dp[:, :, :3] = torch.eye(3, dtype=torch.float64)
            dp[:, 0, 4], dp[:, 0, 5] = zz, -y
            dp[:, 1, 3], dp[:, 1, 5] = -zz, x
            dp[:, 2, 3], dp[:, 2, 4] = y, -x
            duv = torch.stack([torch.einsum("nk,nkj->nj", du, dp), torch.einsum("nk,nkj->nj", dv, dp)], 1)
            jac = grad_x[..., None] * duv[:, None, 0] + grad_y[..., None] * duv[:, None, 1]  # (N, C, 6)
            r, jac = residual.reshape(-1), jac.reshape(-1, 6)
            weight = torch.where(r.abs() <= cfg.huber, 1.0, cfg.huber / r.abs().clamp(min=1e-12))
            hessian = (jac * weight[:, None]).T @ jac
            gradient = (jac * weight[:, None]).T @ r
            step = -torch.linalg.solve(hessian + 1e-9 * torch.eye(6, dtype=torch.float64), gradient)
            step = step * min(1.0, cfg.max_step / max(float(step.abs().max()), 1e-12))
            update = torch.eye(4, dtype=torch.float64)
            update[:3, :3], update[:3, 3] = _rotation(step[3:]), step[:3]
            pose = update @ pose
            if float(step.abs().max()) < 1e-6:
                break
    rms = math.sqrt(float((weight * r.square()).sum() / weight.sum()))
    noise = max(rms, cfg.noise_floor)
    covariance = torch.linalg.inv(hessian + 1e-12 * torch.eye(6, dtype=torch.float64)) * noise**2
    rotation_std = math.degrees(math.sqrt(max(float(torch.linalg.eigvalsh(covariance[3:, 3:]).max()), 0.0)))
    # A translation is judged by the angle it subtends at the points' median depth.
    depth = float(cam[inside][:, 2].median())
    translation_std = math.degrees(
        math.sqrt(max(float(torch.linalg.eigvalsh(covariance[:3, :3]).max()), 0.0)) / depth
    )
    if rms > cfg.max_rms or rotation_std > cfg.max_rotation_std or translation_std > cfg.max_translation_std:
        return None
    return pose
