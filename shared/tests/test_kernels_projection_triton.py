"""The fused Triton projection against the torch reference: under the Triton CPU interpreter here, on CUDA
when there is one."""

import pytest
import torch

pytest.importorskip("triton")

from latentforge.kernels import project_points


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def scene(n, frames, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(n, 3, generator=g) * 2
    points[: n // 10, 2] = -3.0  # a tenth behind every camera that looks down +z from the origin
    points = torch.cat([points, points[:7]])  # exact duplicates: ties that must go to the lower index
    colors = torch.rand(points.shape[0], 3, generator=g)
    ks, es = [], []
    for f in range(frames):
        a = 0.3 * f
        rot = torch.tensor([[1.0, 0, 0], [0, torch.cos(torch.tensor(a)), -torch.sin(torch.tensor(a))]])
        rot = torch.cat([rot, torch.linalg.cross(rot[0], rot[1])[None]])
        e = torch.eye(4)
        e[:3, :3] = rot
        e[:3, 3] = torch.tensor([0.1 * f, -0.2, 6.0])
        es.append(e)
        ks.append(torch.tensor([[30.0 + f, 0.5, 15.5], [0.0, 31.0, 11.5], [0.0, 0.0, 1.0]]))
    return points.to(device), colors.to(device), torch.stack(ks).to(device), torch.stack(es).to(device)


@pytest.mark.parametrize("radius", [0, 1, 2])
@pytest.mark.parametrize("n,frames,h,w", [(500, 1, 24, 32), (700, 3, 19, 27)])
def test_fused_matches_reference_exactly(interpret, radius, n, frames, h, w):
    p, c, k, e = scene(n, frames, seed=radius)
    ref = project_points(p, c, k, e, h, w, radius=radius, backend="reference")
    out = project_points(p, c, k, e, h, w, radius=radius, backend="fused")
    assert ref[2].any() and not ref[2].all()
    for a, b in zip(out, ref, strict=True):
        assert torch.equal(a, b)


def test_fused_gradients_match_reference(interpret):
    p, c, k, e = scene(400, 2)
    grads = []
    for backend in ("reference", "fused"):
        cc = c.clone().requires_grad_()
        pp = p.clone().requires_grad_()
        img, depth, _ = project_points(pp, cc, k, e, 16, 20, radius=1, backend=backend)
        (img.square().sum() + depth.sum()).backward()
        grads.append((cc.grad, pp.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0, atol=0)
    assert grads[0][0].abs().sum() > 0


def test_fused_bf16_colors_keep_dtype(interpret):
    p, c, k, e = scene(300, 1)
    img, _, _ = project_points(p, c.bfloat16(), k, e, 16, 16, backend="fused")
    ref, _, _ = project_points(p, c.bfloat16(), k, e, 16, 16, backend="reference")
    assert img.dtype == torch.bfloat16 and torch.equal(img, ref)


def test_fused_empty_cloud(interpret):
    k = torch.tensor([[[10.0, 0, 2], [0, 10.0, 2], [0, 0, 1]]])
    _, _, valid = project_points(
        torch.zeros(0, 3), torch.zeros(0, 2), k, torch.eye(4)[None], 4, 5, backend="fused"
    )
    assert valid.shape == (1, 4, 5) and not valid.any()


def test_fused_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    p, c, k, e = scene(10, 1)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        project_points(p, c, k, e, 8, 8, backend="fused")
    # auto never picks the interpreter: it is for tests, far slower than the reference.
    assert torch.equal(
        project_points(p, c, k, e, 8, 8)[1], project_points(p, c, k, e, 8, 8, backend="reference")[1]
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("radius", [0, 1])
def test_fused_matches_reference_on_gpu(radius):
    p, c, k, e = scene(200_000, 5, device="cuda")
    ref = project_points(p, c, k, e, 120, 160, radius=radius, backend="reference")
    out = project_points(p, c, k, e, 120, 160, radius=radius, backend="fused")
    for a, b in zip(out, ref, strict=True):
        assert torch.equal(a, b)
