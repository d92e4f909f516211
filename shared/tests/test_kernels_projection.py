"""Point-cloud projection: the torch reference against independent numpy projection and known scenes."""

import math

import numpy as np
import pytest
import torch

from latentforge.kernels import project_points


def look_at_w2c(eye, target, up=(0.0, -1.0, 0.0)):
    """OpenCV world-to-camera for a camera at ``eye`` looking at ``target`` (+z forward, y down)."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, -np.asarray(up))
    x = -x / np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z])
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = -r @ eye
    return m


def random_scene(n=400, frames=3, h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(n, 3, generator=g) * torch.tensor([1.5, 1.0, 1.0])
    colors = torch.rand(n, 4, generator=g)
    ks, es = [], []
    for f in range(frames):
        ang = 2 * math.pi * f / frames
        eye = (4 * math.sin(ang), 0.3 * f - 0.3, -4 * math.cos(ang))
        es.append(look_at_w2c(eye, (0.0, 0.0, 0.0)))
        fx = 20.0 + 3 * f
        ks.append([[fx, 0.3 * f, w / 2 - 0.5 + f], [0.0, fx * 1.1, h / 2 - 0.5], [0.0, 0.0, 1.0]])
    return (
        points,
        colors,
        torch.tensor(ks, dtype=torch.float32),
        torch.tensor(np.stack(es), dtype=torch.float32),
    )


def numpy_render(points, colors, ks, es, h, w, radius=0):
    """Independent z-buffer: per point in float64, nearest wins, ties to the lower index."""
    p = points.double().numpy()
    c = colors.double().numpy()
    f_count = ks.shape[0]
    img = np.zeros((f_count, c.shape[1], h, w))
    depth = np.full((f_count, h, w), np.inf)
    owner = np.full((f_count, h, w), -1)
    for f in range(f_count):
        e, k = es[f].double().numpy(), ks[f].double().numpy()
        cam = p @ e[:3, :3].T + e[:3, 3]
        for i, (x, y, z) in enumerate(cam):
            if z <= 0:
                continue
            u = (k[0, 0] * x + k[0, 1] * y + k[0, 2] * z) / z
            v = (k[1, 1] * y + k[1, 2] * z) / z
            cx, cy = math.floor(u + 0.5), math.floor(v + 0.5)
            for yy in range(cy - radius, cy + radius + 1):
                for xx in range(cx - radius, cx + radius + 1):
                    if 0 <= xx < w and 0 <= yy < h and z < depth[f, yy, xx]:
                        depth[f, yy, xx], owner[f, yy, xx] = z, i
                        img[f, :, yy, xx] = c[i]
    valid = owner >= 0
    return img, np.where(valid, depth, 0.0), valid, owner


@pytest.mark.parametrize("radius", [0, 1, 2])
@pytest.mark.parametrize("n,frames,h,w", [(300, 2, 24, 32), (600, 3, 17, 23)])
def test_reference_matches_numpy(radius, n, frames, h, w):
    points, colors, ks, es = random_scene(n, frames, h, w, seed=n + radius)
    img, depth, valid = project_points(points, colors, ks, es, h, w, radius=radius, backend="reference")
    e_img, e_depth, e_valid, _ = numpy_render(points, colors, ks, es, h, w, radius)
    assert img.shape == (frames, 4, h, w) and depth.shape == (frames, h, w) and valid.dtype == torch.bool
    # float32 vs float64 can reorder two points within ~1e-6 of each other; demand near-total agreement.
    assert torch.equal(valid, torch.from_numpy(e_valid))
    agree = np.isclose(img.numpy(), e_img, atol=1e-6).all(axis=1)
    assert agree.mean() > 0.995
    np.testing.assert_allclose(depth.numpy(), e_depth, atol=1e-4, rtol=1e-4)
    assert valid.sum() > 0.2 * valid.numel() / (1 if radius else 10)


def test_plane_at_known_depth_renders_constant_depth():
    h, w, z0 = 20, 30, 3.5
    ys, xs = torch.meshgrid(torch.linspace(-5, 5, 200), torch.linspace(-5, 5, 200), indexing="ij")
    points = torch.stack([xs.flatten(), ys.flatten(), torch.full((xs.numel(),), z0)], dim=1)
    colors = torch.ones(points.shape[0], 1)
    k = torch.tensor([[[15.0, 0, (w - 1) / 2], [0, 15.0, (h - 1) / 2], [0, 0, 1]]])
    img, depth, valid = project_points(points, colors, k, torch.eye(4)[None], h, w)
    assert valid.all()
    torch.testing.assert_close(depth, torch.full_like(depth, z0))
    assert torch.equal(img, torch.ones_like(img))
    # Moved 1 unit further away along +z the plane renders 1 deeper: +z is forward.
    e = torch.eye(4)[None].clone()
    e[0, 2, 3] = 1.0
    torch.testing.assert_close(project_points(points, colors, k, e, h, w)[1], torch.full_like(depth, z0 + 1))


def test_axes_follow_opencv():
    k = torch.tensor([[[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]]])
    pts = torch.tensor([[0.0, 0.0, 1.0], [0.3, 0.0, 1.0], [0.0, 0.3, 1.0], [0.0, 0.0, -1.0]])
    cols = torch.arange(4.0)[:, None] + 1
    img, _depth, valid = project_points(pts, cols, k, torch.eye(4)[None], 11, 11)
    assert img[0, 0, 5, 5] == 1 and img[0, 0, 5, 8] == 2 and img[0, 0, 8, 5] == 3  # x right, y down
    assert valid.sum() == 3  # the point behind the camera is dropped
    # Pixel centres at integer coordinates: u = 5.49 stays in column 5, u = 5.5 moves to column 6.
    for u, col in ((5.49, 5), (5.5, 6)):
        p = torch.tensor([[(u - 5) / 10, 0.0, 1.0]])
        assert project_points(p, torch.ones(1, 1), k, torch.eye(4)[None], 11, 11)[2][0, 5, col]


def test_nearest_wins_and_ties_go_to_lower_index():
    k = torch.tensor([[[10.0, 0, 2], [0, 10.0, 2], [0, 0, 1]]])
    pts = torch.tensor([[0.0, 0, 2.0], [0.0, 0, 1.0], [0.0, 0, 1.0], [0.0, 0, 3.0]])
    cols = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    img, depth, _ = project_points(pts, cols, k, torch.eye(4)[None], 5, 5)
    assert img[0, 0, 2, 2] == 2 and depth[0, 2, 2] == 1
    img, _, _ = project_points(pts.flip(0), cols.flip(0), k, torch.eye(4)[None], 5, 5)
    assert img[0, 0, 2, 2] == 3  # after flipping, the tie at z=1 goes to the lower index, which is colour 3


def test_radius_splats_square():
    k = torch.tensor([[[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]])
    _, _, valid = project_points(
        torch.tensor([[0.0, 0, 1]]), torch.ones(1, 1), k, torch.eye(4)[None], 9, 9, radius=2
    )
    expect = torch.zeros(9, 9, dtype=torch.bool)
    expect[2:7, 2:7] = True
    assert torch.equal(valid[0], expect)


def test_gradients_reach_colors_and_depth_inputs():
    points, colors, ks, es = random_scene(200, 2, 16, 16)
    colors.requires_grad_()
    points.requires_grad_()
    img, depth, _valid = project_points(points, colors, ks, es, 16, 16, radius=1)
    w = torch.randn_like(img)
    (img * w).sum().backward()
    # d(sum img*w)/d colour[i] = sum of w over the pixels point i won.
    _, _, _, owner = numpy_render(points.detach(), colors.detach(), ks, es, 16, 16, radius=1)
    expect = torch.zeros_like(colors)
    for f, y, x in zip(*np.nonzero(owner >= 0), strict=True):
        expect[owner[f, y, x]] += w[f, :, y, x]
    torch.testing.assert_close(colors.grad, expect)
    depth.sum().backward()
    assert points.grad is not None and points.grad.abs().sum() > 0


def test_empty_cloud_renders_empty_images():
    k = torch.tensor([[[10.0, 0, 2], [0, 10.0, 2], [0, 0, 1]]])
    img, depth, valid = project_points(torch.zeros(0, 3), torch.zeros(0, 2), k, torch.eye(4)[None], 4, 5)
    assert img.shape == (1, 2, 4, 5) and not valid.any() and not depth.any() and not img.any()


def test_bad_inputs_raise_clear_errors():
    p, c, k, e = random_scene(10, 2)
    with pytest.raises(ValueError, match=r"points must be \(N, 3\)"):
        project_points(p[:, :2], c, k, e, 8, 8)
    with pytest.raises(ValueError, match="colors"):
        project_points(p, c[:5], k, e, 8, 8)
    with pytest.raises(ValueError, match="intrinsics"):
        project_points(p, c, k[:, :2], e, 8, 8)
    with pytest.raises(ValueError, match="1 extrinsics"):
        project_points(p, c, k, e[:1], 8, 8)
    bad_k = k.clone()
    bad_k[0, 2, 2] = 2
    with pytest.raises(ValueError, match="third row"):
        project_points(p, c, bad_k, e, 8, 8)
    with pytest.raises(ValueError, match="radius"):
        project_points(p, c, k, e, 8, 8, radius=-1)
    with pytest.raises(ValueError, match="backend"):
        project_points(p, c, k, e, 8, 8, backend="cuda")
