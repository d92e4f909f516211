"""Procedural textured rooms rendered along camera trajectories, with exact depth and poses.

A scene is a room (the inside of an axis-aligned box: floor, ceiling, four walls) holding
a few axis-aligned boxes, optionally one box moving in a straight line (dynamic content).
Every face carries a procedural texture (checkerboard, stripes, or tiles: square cells shaded
between two colours) defined in the face's own 2D coordinates, so a surface point has one
colour from every view.

Frames are ray-cast analytically (slab intersection), so depth, intrinsics and poses are
exact. Cameras follow the project convention: OpenCV world-to-camera (+z forward, x right,
y down), pixel centres at integer pixel coordinates; world "up" is -y.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from spatia.data.clips import ClipSample

if TYPE_CHECKING:
    from spatia.spatial_memory import SpatialMemory


PATTERNS = {0: "checker", 1: "stripes", 2: "tiles"}
"""Texture patterns. Tiles shade every cell by a hash of its index on top of the checker parity:
unlike stripes (one-dimensional) or a checkerboard (the same corner everywhere) a patch of
tiles is both two-dimensional and unique, so trackers and matchers can place it."""


@dataclass
class Box:
    """Axis-aligned box ``[lo, hi]`` with a texture; ``velocity`` (world units per frame) makes it move."""

    lo: torch.Tensor
    hi: torch.Tensor
    colors: torch.Tensor  # (2, 3) in [0, 1]
    pattern: int  # 0 checker, 1 stripes, 2 tiles (see PATTERNS)
    cell: float
    velocity: torch.Tensor | None = None

    def at(self, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.velocity is None:
            return self.lo, self.hi
        return self.lo + frame * self.velocity, self.hi + frame * self.velocity


@dataclass
class Scene:
    """A room and its contents; ``boxes[0]`` is the room itself (seen from inside)."""

    boxes: list[Box]
    dynamic: list[bool] = field(default_factory=list)

    @property
    def room(self) -> Box:
        return self.boxes[0]


@dataclass
class RenderedClip:
    """Frames rendered along a trajectory with the exact geometry behind them."""

    images: torch.Tensor  # (F, 3, H, W) in [0, 1]
    depth: torch.Tensor  # (F, H, W) camera-space z
    intrinsics: torch.Tensor  # (F, 3, 3)
    extrinsics_w2c: torch.Tensor  # (F, 4, 4)
    dynamic_mask: torch.Tensor  # (F, H, W) true on moving-object pixels


def random_scene(
    generator: torch.Generator,
    *,
    num_boxes: int = 3,
    dynamic_object: bool = False,
    cell_range: tuple[float, float] = (0.3, 0.9),
    patterns: tuple[int, ...] = (0, 1),
) -> Scene:
    """A room of 4-7 units a side with ``num_boxes`` static boxes and an optional moving one.

    Texture cells are drawn uniformly from ``cell_range`` (world units): at 32x32 pixels the
    default cells are 1-3 pixels on far walls, which aliases into noise; tiny presets use larger ones.
    Each face's pattern is drawn uniformly from ``patterns`` (keys of ``PATTERNS``); the draw takes
    the same random numbers whatever the tuple, so rooms differ only in their patterns.
    """
    if not patterns or any(p not in PATTERNS for p in patterns):
        raise ValueError(f"patterns must be a non-empty tuple of {sorted(PATTERNS)}, got {patterns!r}")

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape or (1,), generator=generator, dtype=torch.float64)

    def texture() -> tuple[torch.Tensor, int, float]:
        colors = uniform(0.05, 0.95, 2, 3)
        pattern = patterns[int(torch.randint(0, len(patterns), (1,), generator=generator))]
        return colors, pattern, float(uniform(*cell_range))

    half = uniform(2.0, 3.5, 3)
    half[1] = uniform(1.2, 1.8)[0]  # y is vertical: rooms are lower than they are wide
    boxes = [Box(-half, half, *texture())]
    dynamic = [False]
    for i in range(num_boxes + int(dynamic_object)):
        size = uniform(0.3, 0.9, 3)
        floor_y = half[1]
        # Boxes stand on the floor (y = +half_y, since +y points down) near the walls, leaving the middle free.
        angle = uniform(0, 2 * math.pi)[0]
        radius = 0.65 * torch.minimum(half[0], half[2])
        cx, cz = radius * torch.cos(angle), radius * torch.sin(angle)
        centre = torch.stack([cx, floor_y - size[1], cz])
        is_dynamic = dynamic_object and i == num_boxes
        velocity = None
        if is_dynamic:
            heading = uniform(0, 2 * math.pi)[0]
            velocity = torch.stack([torch.cos(heading), torch.zeros(()), torch.sin(heading)]).double() * 0.04
        boxes.append(Box(centre - size, centre + size, *texture(), velocity=velocity))
        dynamic.append(is_dynamic)
    return Scene(boxes, dynamic)


def look_at_w2c(eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """OpenCV world-to-camera matrix of a camera at ``eye`` looking at ``target`` with world up -y."""
    forward = target - eye
    forward = forward / forward.norm()
    down = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype)
    right = torch.linalg.cross(down, forward)
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    rot = torch.stack([right, down, forward])  # rows: camera axes in world coordinates
    w2c = torch.eye(4, dtype=eye.dtype)
    w2c[:3, :3] = rot
    w2c[:3, 3] = -rot @ eye
    return w2c


def orbit_trajectory(
    scene: Scene, num_frames: int, generator: torch.Generator, *, sweep: float = 1.2
) -> torch.Tensor:
    """``(F, 4, 4)`` w2c: the camera circles the room's middle while panning, a path that revisits views."""
    half = scene.room.hi
    start = float(torch.rand((), generator=generator)) * 2 * math.pi
    radius = 0.25 * float(torch.minimum(half[0], half[2]))
    poses = []
    for i in range(num_frames):
        a = start + sweep * i / max(num_frames - 1, 1)
        eye = torch.tensor(
            [radius * math.cos(a), -0.1 * float(half[1]), radius * math.sin(a)], dtype=torch.float64
        )
        look = eye + torch.tensor([math.cos(a + 1.9), 0.15, math.sin(a + 1.9)], dtype=torch.float64)
        poses.append(look_at_w2c(eye, look))
    return torch.stack(poses)


def intrinsics_from_fov(height: int, width: int, fov_x_degrees: float = 75.0) -> torch.Tensor:
    """Pinhole ``K`` with the principal point at the image centre (pixel centres on integers)."""
    fx = 0.5 * width / math.tan(math.radians(fov_x_degrees) / 2)
    return torch.tensor(
        [[fx, 0.0, (width - 1) / 2], [0.0, fx, (height - 1) / 2], [0.0, 0.0, 1.0]], dtype=torch.float64
    )


def _texture(box: Box, axis: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """Colour of surface points on faces normal to ``axis`` (0, 1, 2): pattern in the other two coordinates."""
    coords = torch.stack([point[..., 0], point[..., 1], point[..., 2]], dim=-1)
    # The two in-face coordinates of each point: drop the normal axis.
    keep = torch.tensor([[1, 2], [0, 2], [0, 1]], device=point.device)[axis]
    uv = torch.gather(coords, -1, keep) / box.cell
    cells = torch.floor(uv).long()
    colors = box.colors.to(point)
    if box.pattern == 2:
        parity = ((cells[..., 0] + cells[..., 1]) % 2).to(point)
        # Neighbours differ by at least 0.2 of the colour gap (parity 0.6, hash at most 0.4).
        weight = (0.6 * parity + 0.4 * _cell_hash(cells).to(point))[..., None]
        return colors[0] + weight * (colors[1] - colors[0])
    which = (cells[..., 0] + cells[..., 1]) % 2 if box.pattern == 0 else cells[..., 0] % 2
    return colors[which]


def _cell_hash(cells: torch.Tensor) -> torch.Tensor:
    """A fixed pseudo-random value in [0, 1] per integer cell ``(..., 2)``, the same on every machine."""
    h = (cells[..., 0] * 73_856_093) ^ (cells[..., 1] * 19_349_663)
    # Kept below 2**31 before the multiply, so the product never overflows int64.
    h = ((h ^ (h >> 13)) & 0x7FFF_FFFF) * 1_274_126_177
    return h.remainder(1021).to(torch.float64) / 1020


def _slab(origin: torch.Tensor, direction: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Per-axis entry and exit ray parameters of the box ``[lo, hi]``."""
    inv = 1.0 / torch.where(direction.abs() < 1e-12, torch.full_like(direction, 1e-12), direction)
    t0 = (lo - origin) * inv
    t1 = (hi - origin) * inv
    return torch.minimum(t0, t1), torch.maximum(t0, t1)


def surface_points_to_colors(scene: Scene, points: torch.Tensor, frame: int = 0) -> torch.Tensor:
    """Colours of points lying on box faces of ``scene`` at ``frame`` (the face is found by proximity)."""
    best = torch.full(points.shape[:-1], float("inf"), dtype=points.dtype)
    colors = torch.zeros(*points.shape[:-1], 3, dtype=points.dtype)
    for box in scene.boxes:
        lo, hi = (v.to(points) for v in box.at(frame))
        dist = torch.minimum((points - lo).abs(), (points - hi).abs())
        axis_dist, axis = dist.min(dim=-1)
        inside = ((points >= lo - 1e-6) & (points <= hi + 1e-6)).all(-1)
        use = inside & (axis_dist < best)
        best = torch.where(use, axis_dist, best)
        colors = torch.where(use[..., None], _texture(box, axis, points), colors)
    return colors


def render(
    scene: Scene,
    intrinsics: torch.Tensor,
    extrinsics_w2c: torch.Tensor,
    height: int,
    width: int,
    *,
    supersample: int = 1,
) -> RenderedClip:
    """Ray-cast every frame (float64): colour, exact camera-space depth and the moving-object mask.

    ``supersample > 1`` averages ``supersample**2`` rays per pixel for the colour (anti-aliasing:
    a small frame then shows a blend of texture cells instead of aliased noise); depth and the
    mask stay those of the pixel-centre ray.
    """
    frames = extrinsics_w2c.shape[0]
    if intrinsics.ndim == 2:
        intrinsics = intrinsics.expand(frames, 3, 3)
    if supersample > 1:
        s = supersample
        fine_k = intrinsics.double().clone()
        # Pixel centres on integers: fine pixel j of coarse pixel u sits at u + (j + 0.5) / s - 0.5.
        fine_k[:, :2, :] *= s
        fine_k[:, :2, 2] += (s - 1) / 2
        fine = render(scene, fine_k, extrinsics_w2c, height * s, width * s)
        coarse = render(scene, intrinsics, extrinsics_w2c, height, width)
        coarse.images = torch.nn.functional.avg_pool2d(fine.images, s)
        return coarse
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (H, W, 3)
    images, depths, dyn = [], [], []
    for f in range(frames):
        k, w2c = intrinsics[f].double(), extrinsics_w2c[f].double()
        rot, trans = w2c[:3, :3], w2c[:3, 3]
        cam_dirs = pix @ torch.linalg.inv(k).T  # z = 1, so the ray parameter is camera depth
        dirs = cam_dirs @ rot  # rotate to world: R^T d, written as d R
        origin = -rot.T @ trans
        room_lo, room_hi = scene.room.at(f)
        _, t_far = _slab(origin, dirs, room_lo, room_hi)
        t_hit, axis = t_far.min(dim=-1)
        owner = torch.zeros(t_hit.shape, dtype=torch.long)
        for b, box in enumerate(scene.boxes[1:], start=1):
            lo, hi = box.at(f)
            t_near, t_exit = _slab(origin, dirs, lo, hi)
            t_in, ax = t_near.max(dim=-1)
            hit = (t_in <= t_exit.min(dim=-1).values) & (t_in > 1e-9) & (t_in < t_hit)
            t_hit = torch.where(hit, t_in, t_hit)
            axis = torch.where(hit, ax, axis)
            owner = torch.where(hit, torch.full_like(owner, b), owner)
        points = origin + dirs * t_hit[..., None]
        color = torch.zeros(height, width, 3, dtype=torch.float64)
        for b, box in enumerate(scene.boxes):
            sel = owner == b
            if sel.any():
                color[sel] = _texture(box, axis[sel], points[sel])
        images.append(color.permute(2, 0, 1))
        depths.append(t_hit)
        dyn.append(torch.tensor([scene.dynamic[b] for b in range(len(scene.boxes))])[owner])
    return RenderedClip(
        images=torch.stack(images).float(),
        depth=torch.stack(depths).float(),
        intrinsics=intrinsics.float().clone(),
        extrinsics_w2c=extrinsics_w2c.float().clone(),
        dynamic_mask=torch.stack(dyn),
    )


def sample_scene(
    seed: int,
    num_frames: int,
    height: int,
    width: int,
    *,
    dynamic_object: bool = False,
    cell_range: tuple[float, float] = (0.3, 0.9),
    patterns: tuple[int, ...] = (0, 1),
    supersample: int = 1,
) -> tuple[Scene, RenderedClip]:
    """A random scene rendered along its orbit trajectory, fully determined by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    scene = random_scene(generator, dynamic_object=dynamic_object, cell_range=cell_range, patterns=patterns)
    w2c = orbit_trajectory(scene, num_frames, generator)
    k = intrinsics_from_fov(height, width)
    return scene, render(scene, k, w2c, height, width, supersample=supersample)


# ---------------------------------------------------------------------------- training clips


class ProceduralClips:
    """Training clips cut from procedural scenes, with the memory condition computed as at inference.

    A first clip is ``first_clip_frames`` frames whose first frame is the conditioning image;
    its memory holds that image's points. A later clip is ``history_frames`` frames of the
    preceding clip plus ``new_frames`` new ones; its memory holds the static points of every
    frame before the new ones, and its reference frames are the earlier frames (before the
    history) whose points overlap the target views most. Moving-object pixels never enter
    the memory. Scenes are generated on first use and kept; clip ``i`` is a pure function of
    ``(seed, i, first)``.
    """

    def __init__(
        self,
        *,
        num_scenes: int,
        height: int,
        width: int,
        first_clip_frames: int,
        history_frames: int,
        new_frames: int,
        num_reference_frames: int,
        dynamic_object: bool = True,
        voxel_size: float = 0.02,
        cell_range: tuple[float, float] = (0.3, 0.9),
        patterns: tuple[int, ...] = (0, 1),
        supersample: int = 1,
        prompt: str = "a camera moves through a room",
        seed: int = 0,
        extra_frames: int = 8,
        clips_per_scene: int = 1,
    ) -> None:
        if num_scenes < 1:
            raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
        self.num_scenes = num_scenes
        self.clips_per_scene = clips_per_scene
        self.height, self.width = height, width
        self.first_clip_frames = first_clip_frames
        self.history_frames = history_frames
        self.new_frames = new_frames
        self.num_reference_frames = num_reference_frames
        self.dynamic_object = dynamic_object
        self.voxel_size = voxel_size
        self.cell_range = cell_range
        self.patterns = patterns
        self.supersample = supersample
        self.prompt = prompt
        self.seed = seed
        # Room before the first later clip for earlier frames to act as references.
        self.frames_per_scene = (
            max(first_clip_frames, history_frames + num_reference_frames) + new_frames + extra_frames
        )
        self._scenes: dict[int, RenderedClip] = {}

    def __len__(self) -> int:
        # Clip i is cut from scene i % num_scenes, at a start frame drawn from (seed, i, kind).
        return self.num_scenes * self.clips_per_scene

    def scene(self, index: int) -> RenderedClip:
        index %= self.num_scenes
        if index not in self._scenes:
            _, clip = sample_scene(
                self.seed * 100_003 + index,
                self.frames_per_scene,
                self.height,
                self.width,
                dynamic_object=self.dynamic_object,
                cell_range=self.cell_range,
                patterns=self.patterns,
                supersample=self.supersample,
            )
            self._scenes[index] = clip
        return self._scenes[index]

    def memory(self, index: int, frames: range) -> SpatialMemory:
        """The memory holding the static pixels of ``frames`` of scene ``index``, built as generation builds one.

        ``SpatialMemory.add_frames`` with the frames' exact depth and moving-object masks: the same
        voxel keys, fusion and outlier removal as the generation memory; keyframe ids are frame indices.
        """
        from spatia.spatial_memory import SpatialMemory

        clip = self.scene(index)
        sl = slice(frames.start, frames.stop)
        memory = SpatialMemory(voxel_size=self.voxel_size)
        memory.add_frames(
            clip.images[sl],
            clip.depth[sl],
            clip.extrinsics_w2c[sl],
            clip.intrinsics[sl],
            frame_ids=list(frames),
            dynamic_masks=clip.dynamic_mask[sl],
        )
        return memory

    def sample(self, index: int, first: bool, num_references: int | None = None) -> ClipSample:
        """Clip ``index`` (a first clip or a later one) with its memory render, holes and reference frames.

        ``num_references`` (default ``num_reference_frames``) reference frames are retrieved by
        ``SpatialMemory.retrieve`` among the frames before the history, as generation retrieves
        them; when fewer overlap the target, the latest remaining earlier frames fill the count, so
        every later clip of a batch has the same number.
        """
        clip = self.scene(index)
        h, w = self.height, self.width
        k = self.num_reference_frames if num_references is None else num_references
        rng = torch.Generator().manual_seed(self.seed * 7919 + index * 2 + int(first))
        if first:
            start = int(
                torch.randint(0, self.frames_per_scene - self.first_clip_frames + 1, (1,), generator=rng)
            )
            frames = range(start, start + self.first_clip_frames)
            memory = self.memory(index, range(start, start + 1))
            num_history, refs = 1, []
        else:
            lo = self.history_frames + self.num_reference_frames
            new_start = int(
                torch.randint(lo, self.frames_per_scene - self.new_frames + 1, (1,), generator=rng)
            )
            frames = range(new_start - self.history_frames, new_start + self.new_frames)
            memory = self.memory(index, range(0, new_start))
            num_history = self.history_frames
            target = slice(new_start, frames.stop)
            history = list(range(frames.start, new_start))
            refs = memory.retrieve(
                clip.extrinsics_w2c[target], clip.intrinsics[target], h, w, k=k, exclude=history
            )
            spare = [i for i in range(frames.start - 1, -1, -1) if i not in refs]
            refs = sorted(refs + spare[: k - len(refs)])
        sl = slice(frames.start, frames.stop)
        render, holes = memory.render(clip.extrinsics_w2c[sl], clip.intrinsics[sl], h, w)
        ref_images = torch.stack([memory.keyframe(i)[0] for i in refs]) if refs else clip.images[:0]
        return ClipSample(
            video=clip.images[sl].permute(1, 0, 2, 3) * 2 - 1,
            render=render.permute(1, 0, 2, 3) * 2 - 1,
            holes=holes[:, 0],
            references=ref_images.permute(1, 0, 2, 3) * 2 - 1,
            num_history_frames=num_history,
            prompt=self.prompt,
            intrinsics=clip.intrinsics[sl],
            extrinsics_w2c=clip.extrinsics_w2c[sl],
        )


def sample_surface_points(
    scene: Scene, frame: int = 0, spacing: float = 0.02
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on a regular grid over every face of every box at ``frame``, with their texture colours.

    An independent description of the scene's geometry: projecting these points must give
    the ray-cast frames (the renderer test does exactly that).
    """
    points, colors = [], []
    for box in scene.boxes:
        lo, hi = box.at(frame)
        for axis in range(3):
            others = [a for a in range(3) if a != axis]
            grids = [
                torch.arange(float(lo[a]) + spacing / 2, float(hi[a]), spacing, dtype=torch.float64)
                for a in others
            ]
            g0, g1 = torch.meshgrid(*grids, indexing="ij")
            for side in (lo[axis], hi[axis]):
                p = torch.empty(g0.numel(), 3, dtype=torch.float64)
                p[:, others[0]], p[:, others[1]] = g0.flatten(), g1.flatten()
                p[:, axis] = side
                points.append(p)
                colors.append(_texture(box, torch.full((p.shape[0],), axis), p))
    return torch.cat(points).float(), torch.cat(colors).float()
