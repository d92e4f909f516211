"""The spatial memory: fusion, dynamic masking, revisits, retrieval, editing, save/load validation."""

from __future__ import annotations

import pytest
import torch

from spatia.data.procedural import sample_scene
from spatia.spatial_memory import MemoryFileError, SpatialMemory, unproject_depth

H, W = 24, 32
VOXEL = 0.05


@pytest.fixture(scope="module")
def scene_and_clip():
    return sample_scene(0, 10, H, W, dynamic_object=True)  # the moving box is in every view


def _memory(clip, frames: slice, voxel: float = VOXEL, **kw) -> SpatialMemory:
    memory = SpatialMemory(voxel, **kw)
    memory.add_frames(
        clip.images[frames],
        clip.depth[frames],
        clip.extrinsics_w2c[frames],
        clip.intrinsics[frames],
        dynamic_masks=clip.dynamic_mask[frames],
        frame_ids=list(range(frames.start, frames.stop)),
    )
    return memory


def test_fused_points_lie_on_the_scene_and_survive_save_and_load(scene_and_clip, tmp_path):
    _, clip = scene_and_clip
    memory = _memory(clip, slice(0, 4))
    assert len(memory) > 500
    assert set(memory.frame_ids.tolist()) <= {0, 1, 2, 3}
    assert (memory.confidence >= 1).all()
    # Seen from a fused frame, the memory's depth matches the exact depth (voxel averaging: < 1 voxel).
    depth = memory.depth(clip.extrinsics_w2c[1], clip.intrinsics[1], H, W)[0]
    static = (depth > 0) & ~clip.dynamic_mask[1]
    assert static.sum() > 0.9 * (~clip.dynamic_mask[1]).sum()
    error = (depth - clip.depth[1]).abs()[static]
    assert error.median() < VOXEL / 2 and (error < VOXEL).float().mean() > 0.8  # misses: silhouettes at 24x32

    memory.save(tmp_path / "mem")
    loaded = SpatialMemory.load(tmp_path / "mem")
    assert torch.equal(loaded.points, memory.points)
    torch.testing.assert_close(loaded.colors, memory.colors, atol=0.5 / 255 + 1e-6, rtol=0)
    assert torch.equal(loaded.confidence, memory.confidence)
    assert torch.equal(loaded.frame_ids, memory.frame_ids)
    assert loaded.voxel_size == memory.voxel_size and sorted(loaded.keyframes) == [0, 1, 2, 3]
    image, w2c, k = loaded.keyframe(2)
    assert torch.equal(w2c, clip.extrinsics_w2c[2].double()) and torch.equal(k, clip.intrinsics[2].double())
    torch.testing.assert_close(image, clip.images[2], atol=0.5 / 255 + 1e-6, rtol=0)
    a, holes_a = memory.render(clip.extrinsics_w2c[5:7], clip.intrinsics[0], H, W)
    b, holes_b = loaded.render(clip.extrinsics_w2c[5:7], clip.intrinsics[0], H, W)
    assert holes_a.shape == (2, 1, H, W) and torch.equal(holes_a, holes_b)
    torch.testing.assert_close(a, b, atol=0.5 / 255 + 1e-6, rtol=0)


def test_empty_memory_renders_holes_and_round_trips(tmp_path):
    memory = SpatialMemory()
    rgb, holes = memory.render(torch.eye(4), torch.eye(3), 4, 5)
    assert rgb.shape == (1, 3, 4, 5) and holes.all()
    assert len(SpatialMemory.load(memory.save(tmp_path / "m"))) == 0


def test_dynamic_pixels_never_enter(scene_and_clip):
    scene, clip = scene_and_clip
    moving = next(b for b, d in zip(scene.boxes, scene.dynamic, strict=True) if d)

    def inside_moving_box(memory: SpatialMemory, frames: range) -> int:
        hits = torch.zeros(len(memory), dtype=torch.bool)
        for f in frames:
            lo, hi = (v.float() for v in moving.at(f))
            hits |= ((memory.points > lo - VOXEL) & (memory.points < hi + VOXEL)).all(-1)
        return int(hits.sum())

    seen = clip.dynamic_mask[:6].sum()
    assert seen > 20  # the moving box is in view, so the test can fail
    unmasked = SpatialMemory(VOXEL)
    unmasked.add_frames(clip.images[:6], clip.depth[:6], clip.extrinsics_w2c[:6], clip.intrinsics[:6])
    assert inside_moving_box(unmasked, range(6)) > 10
    assert inside_moving_box(_memory(clip, slice(0, 6)), range(6)) == 0
    assert (_memory(clip, slice(0, 6)).keyframes[0].depth[clip.dynamic_mask[0]] == 0).all()


def test_revisits_add_nothing_and_new_views_add_only_where_the_memory_had_holes(scene_and_clip):
    """Voxels coarser than a pixel's footprint (0.15 units at 5 units here), so a known surface seen
    anew fills no gaps between its samples: what is added is geometry the memory lacked."""
    _, clip = scene_and_clip
    voxel = 0.2
    memory = _memory(clip, slice(0, 3), voxel)
    before = len(memory)
    confidence = memory.confidence.clone()
    again = memory.add_frames(
        clip.images[:3],
        clip.depth[:3],
        clip.extrinsics_w2c[:3],
        clip.intrinsics[:3],
        dynamic_masks=clip.dynamic_mask[:3],
    )
    assert again == 0 and len(memory) == before
    assert (memory.confidence >= confidence + 1).float().mean() > 0.9  # revisits raise confidence instead

    f = 9
    old_depth = memory.depth(clip.extrinsics_w2c[f], clip.intrinsics[f], H, W).double()
    added = memory.add_frames(
        clip.images[f : f + 1],
        clip.depth[f : f + 1],
        clip.extrinsics_w2c[f],
        clip.intrinsics[f],
        dynamic_masks=clip.dynamic_mask[f : f + 1],
        frame_ids=[f],
    )
    assert added > 20 and len(memory) == before + added
    new = memory.points[before:]
    assert (memory.frame_ids[before:] == f).all()
    # Every new point is geometry the old memory lacked from this view: a hole there, or a surface
    # at another depth (in front of what the sparse old memory shows through).
    cam = new.double() @ clip.extrinsics_w2c[f, :3, :3].double().T + clip.extrinsics_w2c[f, :3, 3].double()
    pix = cam @ clip.intrinsics[f].double().T
    u = (pix[:, 0] / pix[:, 2]).round().long().clamp(0, W - 1)
    v = (pix[:, 1] / pix[:, 2]).round().long().clamp(0, H - 1)
    old_depth = old_depth[0, v, u]
    novel = (old_depth == 0) | ((cam[:, 2] - old_depth).abs() > 2 * voxel)
    assert novel.float().mean() > 0.95


def test_retrieval_ranks_keyframes_by_3d_overlap(scene_and_clip):
    _, clip = scene_and_clip
    memory = _memory(clip, slice(0, 10), retrieval_stride=2)
    target = clip.extrinsics_w2c[7]
    scores = memory.overlap_scores(target, clip.intrinsics[0], H, W)
    picked = memory.retrieve(target, clip.intrinsics[0], H, W, k=3)
    assert picked[0] == 7 and len(picked) == 3
    assert all(scores[p] >= scores[q] for p in picked for q in scores if q not in picked)
    # The orbit pans steadily: overlap falls with the distance to the target frame.
    assert scores[7] > scores[4] > scores[0]
    assert memory.retrieve(target, clip.intrinsics[0], H, W, k=2, exclude=[7])[0] in (6, 8)
    # A camera looking away from everything sees no keyframe's points.
    away = target.clone()
    away[:3, 3] = torch.tensor([0.0, 0.0, -100.0])
    assert memory.retrieve(away, clip.intrinsics[0], H, W) == []


def test_remove_box_and_insert_points_edit_what_renders(scene_and_clip):
    _, clip = scene_and_clip
    memory = _memory(clip, slice(0, 4))
    lo, hi = memory.points.quantile(0.3, dim=0), memory.points.quantile(0.7, dim=0)
    inside = ((memory.points >= lo) & (memory.points <= hi)).all(-1)
    assert inside.sum() > 0
    n = len(memory)
    assert memory.remove_box(lo, hi) == int(inside.sum())
    assert len(memory) == n - int(inside.sum())
    assert not ((memory.points >= lo) & (memory.points <= hi)).all(-1).any()
    kf = memory.keyframes[0]
    lifted = unproject_depth(kf.image[None], kf.depth[None], kf.intrinsics[None], kf.w2c[None])
    assert len(lifted) > 0 and not ((lifted.points >= lo) & (lifted.points <= hi)).all(-1).any()

    # A red wall 1 unit in front of camera 0 covers the middle of its view.
    w2c = clip.extrinsics_w2c[0].double()
    c2w = torch.linalg.inv(w2c)
    u, v = torch.meshgrid(torch.linspace(-0.2, 0.2, 41), torch.linspace(-0.2, 0.2, 41), indexing="ij")
    cam = torch.stack([u.flatten(), v.flatten(), torch.ones(u.numel())], -1).double()
    wall = (cam @ c2w[:3, :3].T + c2w[:3, 3]).float()
    added = memory.insert_points(wall, [[1.0, 0.0, 0.0]], frame_id=-7)
    assert 0 < added <= wall.shape[0] and (memory.frame_ids[-added:] == -7).all()
    rgb, holes = memory.render(clip.extrinsics_w2c[0], clip.intrinsics[0], H, W)
    centre = rgb[0, :, H // 2, W // 2]
    assert torch.equal(centre, torch.tensor([1.0, 0.0, 0.0])) and not holes[0, 0, H // 2, W // 2]


def _saved(clip, tmp_path):
    return _memory(clip, slice(0, 2)).save(tmp_path / "mem")


def test_corrupt_or_missing_files_are_rejected_naming_the_file(scene_and_clip, tmp_path):
    _, clip = scene_and_clip
    folder = _saved(clip, tmp_path)
    ply = folder / "points.ply"
    data = ply.read_bytes()
    ply.write_bytes(data[: len(data) - 100])
    with pytest.raises(MemoryFileError, match=r"points\.ply: corrupt or truncated"):
        SpatialMemory.load(folder)
    ply.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(MemoryFileError, match=r"points\.ply: not a PLY file"):
        SpatialMemory.load(folder)
    ply.write_bytes(data.replace(b"element vertex ", b"element vertex 1", 1))
    with pytest.raises(MemoryFileError, match=r"points\.ply: holds \d+ points, memory.json says"):
        SpatialMemory.load(folder)
    ply.unlink()
    with pytest.raises(MemoryFileError, match=r"points\.ply: missing"):
        SpatialMemory.load(folder)
    ply.write_bytes(data)
    SpatialMemory.load(folder)  # intact again
    (folder / "attributes.npz").write_bytes(b"not a zip")
    with pytest.raises(MemoryFileError, match=r"attributes\.npz: corrupt"):
        SpatialMemory.load(folder)
    (folder / "memory.json").write_text("{")
    with pytest.raises(MemoryFileError, match=r"memory\.json: unreadable"):
        SpatialMemory.load(folder)
    with pytest.raises(MemoryFileError, match=r"memory\.json: missing"):
        SpatialMemory.load(tmp_path / "nowhere")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the fused projection)")
def test_rendering_on_the_gpu_matches_the_cpu(scene_and_clip):
    _, clip = scene_and_clip
    memory = _memory(clip, slice(0, 4))
    cpu_rgb, cpu_holes = memory.render(clip.extrinsics_w2c[4:8], clip.intrinsics[0], H, W)
    gpu_rgb, gpu_holes = memory.render(clip.extrinsics_w2c[4:8], clip.intrinsics[0], H, W, device="cuda")
    assert gpu_rgb.device.type == "cpu"
    # Depth ties may resolve differently across backends: compare where both cover, and coverage.
    assert (cpu_holes != gpu_holes).float().mean() < 0.01
    both = ~(cpu_holes | gpu_holes).expand_as(cpu_rgb)
    assert (cpu_rgb[both] - gpu_rgb[both]).abs().gt(1e-4).float().mean() < 0.01
