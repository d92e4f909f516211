"""Procedural scenes agree with projecting their points; clips carry the memory condition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from latentforge.kernels import project_points
from spatia.data.procedural import ProceduralClips, sample_scene, sample_surface_points
from spatia.spatial_memory import SpatialMemory, unproject_depth

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
    # The condition is the generation memory's: a SpatialMemory fed the same frames as generation feeds
    # it (add_frames with depth and dynamic masks) renders the same pixels and retrieves the same references.
    memory = SpatialMemory(voxel_size=data.voxel_size)
    memory.add_frames(
        scene.images[: history_start + 5],
        scene.depth[: history_start + 5],
        scene.extrinsics_w2c[: history_start + 5],
        scene.intrinsics[: history_start + 5],
        dynamic_masks=scene.dynamic_mask[: history_start + 5],
    )
    again, holes = memory.render(later.extrinsics_w2c, later.intrinsics, H, W)
    assert torch.equal(again * 2 - 1, later.render.permute(1, 0, 2, 3)) and torch.equal(
        holes[:, 0], later.holes
    )
    target = slice(history_start + 5, history_start + 9)
    refs = memory.retrieve(
        scene.extrinsics_w2c[target],
        scene.intrinsics[target],
        H,
        W,
        k=2,
        exclude=list(range(history_start, history_start + 5)),
    )
    assert len(refs) == 2
    for r, i in enumerate(sorted(refs)):
        assert torch.equal(scene.images[i] * 2 - 1, later.references[:, r])

    first = data.sample(0, first=True)
    assert first.num_history_frames == 1 and first.references.shape[1] == 0
    assert first.holes[0].float().mean() < 0.2  # the conditioning image's own points cover its view


def test_supersampling_blends_only_across_texture_borders():
    """Anti-aliased frames keep the pixel-centre depth and agree with one ray per pixel inside texture cells."""
    _, sharp = sample_scene(5, 2, H, W, cell_range=(0.8, 1.6))
    _, smooth = sample_scene(5, 2, H, W, cell_range=(0.8, 1.6), supersample=4)
    assert torch.equal(sharp.depth, smooth.depth) and torch.equal(sharp.dynamic_mask, smooth.dynamic_mask)
    same = (sharp.images - smooth.images).abs().amax(1) < 1e-6
    assert 0.5 < same.float().mean() < 1.0  # cell interiors agree; borders are blends


def test_patterns_change_only_the_textures():
    """The pattern draw takes the same random numbers: geometry, colours and cells stay; only textures change."""
    from spatia.data.procedural import random_scene

    mixed = random_scene(torch.Generator().manual_seed(4), patterns=(0, 1))
    tiles = random_scene(torch.Generator().manual_seed(4), patterns=(2,))
    assert [b.pattern for b in tiles.boxes] == [2] * len(tiles.boxes)
    for a, b in zip(mixed.boxes, tiles.boxes, strict=True):
        assert torch.equal(a.lo, b.lo) and torch.equal(a.colors, b.colors) and a.cell == b.cell
    with pytest.raises(ValueError, match="patterns"):
        random_scene(torch.Generator().manual_seed(4), patterns=(3,))


def test_tiles_are_unique_and_keep_neighbours_apart():
    """Tiles: every cell's colour lies between the box's two; edge neighbours differ; cells are not a 2-periodic
    checkerboard (what makes a patch of them placeable)."""
    from spatia.data.procedural import Box, _texture

    colors = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.6, 0.5]], dtype=torch.float64)
    box = Box(torch.full((3,), -5.0), torch.full((3,), 5.0), colors, pattern=2, cell=1.0)
    i, j = torch.meshgrid(torch.arange(-8, 8), torch.arange(-8, 8), indexing="ij")
    centres = torch.stack([torch.zeros_like(i), i, j], -1).double() + torch.tensor([0.0, 0.5, 0.5])
    tex = _texture(box, torch.zeros(i.shape, dtype=torch.long), centres)  # faces normal to x: cells in (y, z)
    weight = ((tex - colors[0]) / (colors[1] - colors[0]))[..., 0]
    torch.testing.assert_close(weight, ((tex - colors[0]) / (colors[1] - colors[0]))[..., 2])
    assert weight.min() >= 0 and weight.max() <= 1
    assert (weight[1:] - weight[:-1]).abs().min() >= 0.2 - 1e-9
    assert (weight[:, 1:] - weight[:, :-1]).abs().min() >= 0.2 - 1e-9
    # Unlike a checkerboard, a cell and the one two steps on (same parity) mostly differ.
    assert ((weight[2:] - weight[:-2]).abs() > 0.01).float().mean() > 0.9
    assert ((weight[:, 2:] - weight[:, :-2]).abs() > 0.01).float().mean() > 0.9
