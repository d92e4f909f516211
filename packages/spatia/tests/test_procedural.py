"""Procedural scenes agree with projecting their points; clips carry the memory condition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from latentforge.kernels import project_points
from spatia.data.procedural import ProceduralClips, sample_scene, sample_surface_points
from spatia.memory import PointCloud, render_memory, select_references, unproject_depth, voxel_downsample

H, W = 24, 32


@pytest.fixture(scope="module")
def scene_and_clip():
    return sample_scene(3, 6, H, W, dynamic_object=True)


def test_unprojected_pixels_project_back_onto_themselves(scene_and_clip):
    _, clip = scene_and_clip
    for f in (0, 5):
        cloud = unproject_depth(
            clip.images[f : f + 1], clip.depth[f : f + 1], clip.intrinsics[:1], clip.extrinsics_w2c[f : f + 1]
        )
        assert len(cloud) == H * W
        images, depth, valid = project_points(
            cloud.points, cloud.colors, clip.intrinsics[f : f + 1], clip.extrinsics_w2c[f : f + 1], H, W
        )
        assert valid.all()
        assert torch.equal(images[0], clip.images[f])
        torch.testing.assert_close(depth[0], clip.depth[f], rtol=1e-5, atol=1e-5)


def test_rendered_frames_agree_with_projecting_the_scene_surfaces(scene_and_clip):
    """The ray caster and latentforge's z-buffered projection of independent surface samples see the same scene.

    A pixel's z-buffer winner is the nearest sample anywhere in the pixel, the ray caster's
    depth is at its centre: away from silhouettes (and from faces so close that samples are
    sparser than pixels) they agree to the depth change across one pixel, and no sample
    from a surface behind the ray-cast one ever wins.
    """
    scene, clip = scene_and_clip
    for f in (0, 3, 5):
        points, colors = sample_surface_points(scene, frame=f, spacing=0.02)
        images, depth, valid = project_points(
            points, colors, clip.intrinsics[f : f + 1], clip.extrinsics_w2c[f : f + 1], H, W
        )
        assert valid.all()
        ray = clip.depth[f]
        local_max = F.max_pool2d(ray[None, None], 3, 1, 1)[0, 0]
        local_min = -F.max_pool2d(-ray[None, None], 3, 1, 1)[0, 0]
        smooth = (local_max / local_min < 1.15) & (ray > 1.0)
        assert smooth.float().mean() > 0.4
        rel = (depth[0] - ray)[smooth] / ray[smooth]
        assert rel.max() < 1e-3  # nothing behind the ray-cast surface shows through
        assert (rel.abs() < 0.06).float().mean() > 0.95
        same_colour = (images[0] - clip.images[f]).abs().amax(0)[smooth] < 1e-6
        assert same_colour.float().mean() > 0.75  # the rest: texture-cell borders inside a pixel


def test_dynamic_mask_marks_the_moving_box_only(scene_and_clip):
    scene, clip = scene_and_clip
    assert scene.dynamic == [False, False, False, False, True]
    moving = scene.boxes[-1]
    frac = clip.dynamic_mask.float().mean(dim=(1, 2))
    assert torch.all((frac >= 0) & (frac < 0.9))
    # A masked pixel's 3D point lies on the moving box at that frame.
    for f in range(clip.images.shape[0]):
        if not clip.dynamic_mask[f].any():
            continue
        cloud = unproject_depth(
            clip.images[f : f + 1],
            clip.depth[f : f + 1],
            clip.intrinsics[:1],
            clip.extrinsics_w2c[f : f + 1],
            keep=clip.dynamic_mask[f : f + 1],
        )
        lo, hi = (v.float() for v in moving.at(f))
        assert torch.all((cloud.points >= lo - 1e-3) & (cloud.points <= hi + 1e-3))


def test_voxel_downsample_keeps_one_point_per_voxel():
    pts = torch.tensor([[0.01, 0.01, 0.01], [0.02, 0.02, 0.02], [0.5, 0.5, 0.5]])
    cloud = voxel_downsample(PointCloud(pts, torch.eye(3)), 0.1)
    assert len(cloud) == 2
    assert torch.equal(cloud.points[0], pts[0]) and torch.equal(cloud.colors[0], torch.eye(3)[0])


def test_select_references_prefers_views_that_overlap_the_target(scene_and_clip):
    _, clip = scene_and_clip
    same = unproject_depth(clip.images[4:5], clip.depth[4:5], clip.intrinsics[:1], clip.extrinsics_w2c[4:5])
    behind = PointCloud(
        same.points * torch.tensor([1.0, 1.0, -1.0]) + torch.tensor([0, 0, -50.0]), same.colors
    )
    empty = PointCloud(torch.zeros(0, 3), torch.zeros(0, 3))
    picked = select_references(
        [behind, empty, same], clip.intrinsics[4:5], clip.extrinsics_w2c[4:5], H, W, k=2
    )
    assert picked == [2]  # the others cover nothing of the target view


def test_training_clips_carry_the_memory_condition():
    data = ProceduralClips(
        num_scenes=1,
        height=H,
        width=W,
        first_clip_frames=9,
        history_frames=5,
        new_frames=4,
        num_reference_frames=2,
        seed=0,
    )
    later = data.sample(0, first=False)
    assert later.video.shape == (3, 9, H, W) and later.num_history_frames == 5
    assert later.references.shape == (3, 2, H, W)
    scene = data.scene(0)
    # Every reference is a real frame from before the history.
    history_start = next(
        s for s in range(scene.images.shape[0]) if torch.equal(scene.images[s] * 2 - 1, later.video[:, 0])
    )
    for r in range(2):
        assert any(torch.equal(scene.images[s] * 2 - 1, later.references[:, r]) for s in range(history_start))
    # History frames are in the memory: their static pixels render back as themselves.
    static = ~scene.dynamic_mask[history_start : history_start + 5] & ~later.holes[:5]
    match = (later.render[:, :5] - later.video[:, :5]).abs().amax(0) < 1e-5
    assert static.float().mean() > 0.5
    assert match[static].float().mean() > 0.7  # other views' points of the same surface compete in the z-test
    assert torch.all(later.render[:, later.holes] == -1)  # holes are black in [-1, 1]
    # Renders equal rendering the same memory at inference time.
    again, holes = render_memory(
        data._cloud(scene, range(0, history_start + 5)), later.intrinsics, later.extrinsics_w2c, H, W
    )
    assert torch.equal(again * 2 - 1, later.render.permute(1, 0, 2, 3)) and torch.equal(holes, later.holes)

    first = data.sample(0, first=True)
    assert first.num_history_frames == 1 and first.references.shape[1] == 0
    assert first.holes[0].float().mean() < 0.2  # the conditioning image's own points cover its view
