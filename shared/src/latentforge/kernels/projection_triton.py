"""The ``fused`` projection backend: one Triton kernel transforms, projects and z-tests every point.

Each program takes a block of points and one camera, computes camera coordinates, pixel and the packed key
``(float32 depth bits << 32) | point index`` and does an ``atomic_min`` into that camera's key buffer, for every
pixel of the splat square. The winners are then gathered in torch (shared with the reference backend).

The arithmetic is written term by term in the same order as the torch reference, and FMA contraction is
switched off at launch, so depths, pixels and therefore winners match the reference bit for bit.

The kernel is JIT-decorated on first use, not at import: Triton decides between compiling and its CPU
interpreter (``TRITON_INTERPRET=1``) at decoration time, and tests set that variable at run time.
"""

import functools

import torch
import triton
import triton.language as tl

from latentforge.kernels.projection import EMPTY_KEY

BLOCK = 256


def _project_kernel_src(
    points_ptr, k_ptr, e_ptr, keys_ptr, n_points, height, width, RADIUS: tl.constexpr, BLOCK: tl.constexpr
):
    pid = tl.program_id(0)
    f = tl.program_id(1)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n_points
    x = tl.load(points_ptr + offs * 3 + 0, mask=inside, other=0.0)
    y = tl.load(points_ptr + offs * 3 + 1, mask=inside, other=0.0)
    z = tl.load(points_ptr + offs * 3 + 2, mask=inside, other=0.0)
    e = e_ptr + f * 16
    xc = tl.load(e + 0) * x + tl.load(e + 1) * y + tl.load(e + 2) * z + tl.load(e + 3)
    yc = tl.load(e + 4) * x + tl.load(e + 5) * y + tl.load(e + 6) * z + tl.load(e + 7)
    zc = tl.load(e + 8) * x + tl.load(e + 9) * y + tl.load(e + 10) * z + tl.load(e + 11)
    k = k_ptr + f * 9
    front = inside & (zc > 0)
    zs = tl.where(front, zc, 1.0)
    u = tl.math.div_rn(tl.load(k + 0) * xc + tl.load(k + 1) * yc + tl.load(k + 2) * zc, zs)
    v = tl.math.div_rn(tl.load(k + 3) * xc + tl.load(k + 4) * yc + tl.load(k + 5) * zc, zs)
    px = tl.floor(tl.minimum(tl.maximum(u + 0.5, -1048576.0), 1048576.0)).to(tl.int64)
    py = tl.floor(tl.minimum(tl.maximum(v + 0.5, -1048576.0), 1048576.0)).to(tl.int64)
    key = (zc.to(tl.int32, bitcast=True).to(tl.int64) << 32) | offs.to(tl.int64)
    base = keys_ptr + f.to(tl.int64) * height * width
    for dy in tl.static_range(-RADIUS, RADIUS + 1):
        for dx in tl.static_range(-RADIUS, RADIUS + 1):
            qx = px + dx
            qy = py + dy
            ok = front & (qx >= 0) & (qx < width) & (qy >= 0) & (qy < height)
            tl.atomic_min(base + tl.where(ok, qy * width + qx, 0), key, mask=ok)


@functools.cache
def _kernel(interpreted: bool):
    # Keyed on the mode so a process that flips TRITON_INTERPRET gets a kernel of the right kind.
    return triton.jit(_project_kernel_src)


def winners_fused(
    points: torch.Tensor,
    intrinsics: torch.Tensor,
    extrinsics_w2c: torch.Tensor,
    height: int,
    width: int,
    radius: int,
) -> torch.Tensor:
    """``(F, H*W)`` int64 packed key of the winning point per pixel, ``EMPTY_KEY`` where none."""
    pts = points.detach().float().contiguous()
    ks = intrinsics.detach().float().contiguous()
    es = extrinsics_w2c.detach().float().contiguous()
    n_frames = ks.shape[0]
    keys = torch.full((n_frames, height * width), EMPTY_KEY, dtype=torch.int64, device=pts.device)
    if pts.shape[0] == 0:
        return keys
    extra = {"enable_fp_fusion": False} if pts.device.type == "cuda" else {}
    grid = (triton.cdiv(pts.shape[0], BLOCK), n_frames)
    _kernel(pts.device.type == "cpu")[grid](
        pts, ks, es, keys, pts.shape[0], height, width, RADIUS=radius, BLOCK=BLOCK, **extra
    )
    return keys
