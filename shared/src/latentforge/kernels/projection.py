"""Render a coloured point cloud into a batch of pinhole cameras (z-buffer, nearest point wins).

Conventions:

- Cameras follow OpenCV: world-to-camera extrinsics ``[R | t]`` map a world point to camera coordinates with
  +z forward, +x right, +y down; intrinsics ``K`` map camera coordinates to pixels, ``u = (K[0] @ p) / z``,
  ``v = (K[1] @ p) / z`` (the third row of ``K`` must be ``[0, 0, 1]``).
- Pixel centres sit at integer coordinates: a point lands in pixel ``(floor(v + 0.5), floor(u + 0.5))``.
- Points with ``z <= 0`` (on or behind the camera plane) or landing outside the image are dropped.
- ``radius > 0`` splats each point onto the ``(2r+1) x (2r+1)`` square of pixels around it, all at the point's
  depth.
- The nearest point wins; exact depth ties go to the lower point index. Both backends compare the same packed
  int64 key ``(float32 depth bits << 32) | point index`` (positive float32 bits order like the floats), so they
  pick the same winner for the same depths.
- Empty pixels: colour 0, depth 0, ``valid`` False.

Differentiability: the winner per pixel is a discrete choice and carries no gradient. Given the winners,
``images`` is a gather of ``colors`` (gradients flow to the colours) and ``depth`` is a gather of each point's
camera-space z (gradients flow to ``points`` and ``extrinsics_w2c``, not to ``intrinsics``, which only move
points between pixels). ``valid`` is boolean.

Backends: ``reference`` (plain torch ``scatter_reduce``; exact, deterministic, any device) and ``fused`` (one
Triton kernel transforms, projects and z-tests every point with an atomic min on the packed keys; CUDA, or CPU
tensors under ``TRITON_INTERPRET=1``). ``auto`` picks ``fused`` on CUDA when Triton is importable, else
``reference``.
"""

from __future__ import annotations

import os

import torch

BACKENDS = ("auto", "reference", "fused")
EMPTY_KEY = torch.iinfo(torch.int64).max
# Bound the (frames x points x splat) keys the reference materialises at once.
_REFERENCE_CHUNK = 1 << 24


def _validate(points, colors, intrinsics, extrinsics_w2c, height, width, radius) -> None:
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(points.shape)}")
    if colors.ndim != 2 or colors.shape[0] != points.shape[0]:
        raise ValueError(f"colors must be (N, C) with N={points.shape[0]}, got {tuple(colors.shape)}")
    if not points.is_floating_point() or not colors.is_floating_point():
        raise ValueError(f"points and colors must be floating point, got {points.dtype} and {colors.dtype}")
    if intrinsics.ndim != 3 or intrinsics.shape[1:] != (3, 3):
        raise ValueError(f"intrinsics must be (F, 3, 3), got {tuple(intrinsics.shape)}")
    if extrinsics_w2c.ndim != 3 or extrinsics_w2c.shape[1:] != (4, 4):
        raise ValueError(f"extrinsics_w2c must be (F, 4, 4), got {tuple(extrinsics_w2c.shape)}")
    if intrinsics.shape[0] != extrinsics_w2c.shape[0]:
        raise ValueError(f"{intrinsics.shape[0]} intrinsics but {extrinsics_w2c.shape[0]} extrinsics")
    last = intrinsics[:, 2].detach().to(torch.float64).cpu()
    if not torch.equal(last, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64).expand_as(last)):
        raise ValueError("intrinsics: the third row of every K must be [0, 0, 1]")
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if points.shape[0] >= 2**31:
        raise ValueError("at most 2**31 - 1 points (the point index is packed into 32 bits)")
    devices = {t.device for t in (points, colors, intrinsics, extrinsics_w2c)}
    if len(devices) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(map(str, devices))}")


def camera_depth(points: torch.Tensor, extrinsics_w2c: torch.Tensor) -> torch.Tensor:
    """``(F, N)`` camera-space z of every point, written term by term in the same order as the fused kernel
    so both backends compute bit-identical depths for their z-test."""
    x, y, z = points.float().unbind(-1)
    e = extrinsics_w2c.float()
    return e[:, 2, 0, None] * x + e[:, 2, 1, None] * y + e[:, 2, 2, None] * z + e[:, 2, 3, None]


def _pixel_keys(points, intrinsics, extrinsics_w2c, height, width, radius):
    """Flat pixel index ``(F, M)`` (``-1`` where dropped) and packed key per (frame, point, splat offset)."""
    x, y, z = points.float().unbind(-1)
    e, k = extrinsics_w2c.float(), intrinsics.float()

    def row(i):
        return e[:, i, 0, None] * x + e[:, i, 1, None] * y + e[:, i, 2, None] * z + e[:, i, 3, None]

    xc, yc, zc = row(0), row(1), row(2)
    u = (k[:, 0, 0, None] * xc + k[:, 0, 1, None] * yc + k[:, 0, 2, None] * zc) / zc
    v = (k[:, 1, 0, None] * xc + k[:, 1, 1, None] * yc + k[:, 1, 2, None] * zc) / zc
    front = zc > 0
    # Clamp before the integer cast so far-off points cannot overflow; they are dropped by the bounds test.
    px = torch.floor(u + 0.5).clamp(-(2**20), 2**20).to(torch.int64)
    py = torch.floor(v + 0.5).clamp(-(2**20), 2**20).to(torch.int64)
    n = points.shape[0]
    idx = torch.arange(n, device=points.device, dtype=torch.int64)
    key = (zc.contiguous().view(torch.int32).to(torch.int64) << 32) | idx
    flats, keys = [], []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            qx, qy = px + dx, py + dy
            ok = front & (qx >= 0) & (qx < width) & (qy >= 0) & (qy < height)
            flats.append(torch.where(ok, qy * width + qx, -1))
            keys.append(key)
    return torch.cat(flats, dim=1), torch.cat(keys, dim=1)


def _winners_reference(points, intrinsics, extrinsics_w2c, height, width, radius) -> torch.Tensor:
    """``(F, H*W)`` int64 packed key of the winning point per pixel, ``EMPTY_KEY`` where none."""
    n_frames, hw = intrinsics.shape[0], height * width
    out = torch.full((n_frames, hw), EMPTY_KEY, dtype=torch.int64, device=points.device)
    per_frame = max(1, points.shape[0] * (2 * radius + 1) ** 2)
    step = max(1, _REFERENCE_CHUNK // per_frame)
    for f0 in range(0, n_frames, step):
        sl = slice(f0, f0 + step)
        flat, key = _pixel_keys(points, intrinsics[sl], extrinsics_w2c[sl], height, width, radius)
        nf = flat.shape[0]
        # Dropped entries go to a spare slot per frame, which is cut off afterwards.
        target = torch.where(flat >= 0, flat, hw) + (hw + 1) * torch.arange(nf, device=flat.device)[:, None]
        buf = torch.full((nf * (hw + 1),), EMPTY_KEY, dtype=torch.int64, device=points.device)
        buf.scatter_reduce_(0, target.flatten(), key.flatten(), reduce="amin")
        out[sl] = buf.view(nf, hw + 1)[:, :hw]
    return out


def _fused_available(device: torch.device) -> bool:
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend ``backend`` means on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown projection backend {backend!r}: expected one of {BACKENDS}")
    if backend == "auto":
        return "fused" if device.type == "cuda" and _fused_available(device) else "reference"
    if backend == "fused" and not _fused_available(device):
        raise RuntimeError(
            "backend='fused' needs CUDA tensors with Triton, or CPU tensors with TRITON_INTERPRET=1 set before the "
            f"call; got device {device}"
        )
    return backend


def project_points(
    points: torch.Tensor,
    colors: torch.Tensor,
    intrinsics: torch.Tensor,
    extrinsics_w2c: torch.Tensor,
    height: int,
    width: int,
    *,
    radius: int = 0,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render ``points`` with ``colors`` into ``F`` cameras (conventions in the module docstring).

    Args:
        points: ``(N, 3)`` world coordinates.
        colors: ``(N, C)`` per-point features (any C); the images keep their dtype.
        intrinsics: ``(F, 3, 3)`` pinhole ``K`` in pixels.
        extrinsics_w2c: ``(F, 4, 4)`` world-to-camera transforms (OpenCV axes).
        height, width: image size in pixels.
        radius: splat half-width in pixels (0 = one pixel per point).
        backend: "auto", "reference" or "fused".

    Returns:
        ``images (F, C, H, W)``, ``depth (F, H, W)`` float32 with 0 where empty, ``valid (F, H, W)`` bool.
    """
    _validate(points, colors, intrinsics, extrinsics_w2c, height, width, radius)
    which = resolve_backend(backend, points.device)
    with torch.no_grad():
        if which == "reference":
            keys = _winners_reference(points, intrinsics, extrinsics_w2c, height, width, radius)
        else:
            from latentforge.kernels.projection_triton import winners_fused

            keys = winners_fused(points, intrinsics, extrinsics_w2c, height, width, radius)
    return _gather(keys, points, colors, extrinsics_w2c, height, width)


def _gather(keys, points, colors, extrinsics_w2c, height, width):
    n_frames = keys.shape[0]
    valid = keys != EMPTY_KEY
    if points.shape[0] == 0:  # nothing to gather from; every pixel is empty
        images = colors.new_zeros(n_frames, colors.shape[1], height, width)
        depth = torch.zeros(n_frames, height, width, device=keys.device)
        return images, depth, valid.view(n_frames, height, width)
    idx = torch.where(valid, keys & 0xFFFFFFFF, 0)
    # Gradients reach colours (and depth's inputs) through these gathers only.
    images = colors[idx.flatten()].view(n_frames, height * width, -1)
    images = torch.where(valid[..., None], images, torch.zeros((), dtype=colors.dtype, device=colors.device))
    images = images.permute(0, 2, 1).reshape(n_frames, -1, height, width)
    z = camera_depth(points, extrinsics_w2c)
    depth = torch.where(valid, torch.gather(z, 1, idx), torch.zeros((), device=z.device))
    return images, depth.view(n_frames, height, width), valid.view(n_frames, height, width)
