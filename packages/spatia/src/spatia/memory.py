"""The spatial memory: fused static points of seen frames, rendered along a target trajectory.

Training and inference share these functions, so a training clip's control input is
computed exactly as at generation time: unproject the depth of the frames the memory
holds (moving-object pixels left out), fuse them on a voxel grid, then render the points
into the target cameras with latentforge's z-buffered projection. Pixels no point covers
form the holes mask. Conventions: OpenCV world-to-camera extrinsics, pixel centres at
integer coordinates (as ``latentforge.kernels.project_points``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentforge.kernels import project_points


@dataclass
class PointCloud:
    """World-space points ``(N, 3)`` with colours ``(N, 3)`` in [0, 1]."""

    points: torch.Tensor
    colors: torch.Tensor

    def __len__(self) -> int:
        return self.points.shape[0]


def unproject_depth(
    images: torch.Tensor,
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    extrinsics_w2c: torch.Tensor,
    keep: torch.Tensor | None = None,
) -> PointCloud:
    """Lift every pixel with ``depth > 0`` (and ``keep``) of ``(F, 3, H, W)`` frames to world points."""
    f, _, h, w = images.shape
    if depth.shape != (f, h, w):
        raise ValueError(f"depth {tuple(depth.shape)} does not match images {tuple(images.shape)}")
    v, u = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(1, -1, 3)
    k_inv = torch.linalg.inv(intrinsics.double())
    cam = (pix @ k_inv.transpose(1, 2)) * depth.double().reshape(f, -1, 1)
    c2w = torch.linalg.inv(extrinsics_w2c.double())
    world = cam @ c2w[:, :3, :3].transpose(1, 2) + c2w[:, None, :3, 3]
    mask = depth.reshape(f, -1) > 0
    if keep is not None:
        mask &= keep.reshape(f, -1)
    colors = images.permute(0, 2, 3, 1).reshape(f, -1, 3)
    return PointCloud(world[mask].float(), colors[mask].float())


def voxel_downsample(cloud: PointCloud, voxel_size: float) -> PointCloud:
    """One point per occupied voxel (the first point of each voxel; its colour too); 0 keeps all."""
    if voxel_size <= 0 or len(cloud) == 0:
        return cloud
    cells = torch.floor(cloud.points / voxel_size).long()
    _, inverse = torch.unique(cells, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(cloud), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(cloud)), reduce="amin")
    return PointCloud(cloud.points[first], cloud.colors[first])


def render_memory(
    cloud: PointCloud, intrinsics: torch.Tensor, extrinsics_w2c: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render the memory into ``F`` cameras: ``(F, 3, H, W)`` colours in [0, 1] and ``(F, H, W)`` holes."""
    f = extrinsics_w2c.shape[0]
    if len(cloud) == 0:
        return torch.zeros(f, 3, height, width), torch.ones(f, height, width, dtype=torch.bool)
    images, _, valid = project_points(
        cloud.points, cloud.colors, intrinsics.float(), extrinsics_w2c.float(), height, width
    )
    return images, ~valid


def view_overlap(
    cloud: PointCloud, intrinsics: torch.Tensor, extrinsics_w2c: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Share of each target view's pixels that ``cloud`` covers, averaged over the ``F`` target cameras."""
    _, holes = render_memory(cloud, intrinsics, extrinsics_w2c, height, width)
    return (~holes).float().mean()


def select_references(
    candidates: list[PointCloud],
    intrinsics: torch.Tensor,
    extrinsics_w2c: torch.Tensor,
    height: int,
    width: int,
    k: int,
) -> list[int]:
    """Indices of the ``k`` candidate frames whose points cover most of the target views (3D overlap)."""
    if k <= 0 or not candidates:
        return []
    scores = torch.stack([view_overlap(c, intrinsics, extrinsics_w2c, height, width) for c in candidates])
    order = torch.argsort(scores, descending=True, stable=True)
    return [int(i) for i in order[:k] if scores[i] > 0]
