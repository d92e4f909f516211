"""Update the spatial memory from a generated clip by visual SLAM with pycolmap.

The paper estimates the geometry of each generated clip with a feed-forward reconstructor
(MapAnything); this project uses pycolmap, as its design asks. One update:

1. Anchors: the memory keyframes that overlap the requested trajectory most (known poses and
   depth) are reconstructed together with the new frames.
2. SIFT features with the requested camera as a fixed PINHOLE camera, exhaustive matching and
   geometric verification (clips are short).
3. Registration into the existing reconstruction: RANSAC PnP of each new frame on 2D-3D
   matches (anchor keypoints lifted by their depth; registered new frames lifted by the
   memory's depth rendered at their pose, so registration grows outward along the clip).
   Frames SIFT leaves out (at 32 x 32 it finds almost nothing) are tracked against the anchors
   by dense patch matching, then the same PnP (``spatia.dense_tracking``), and those left after
   that by direct photometric alignment (``spatia.photometric_tracking``: striped rooms).
   Where fewer than ``min_registered_new`` frames register that way (no overlap, e.g. an empty
   memory), pycolmap's incremental mapping reconstructs the clip and a similarity fixes its
   gauge on the anchors or, lacking them, on the requested trajectory. The request is the prior
   throughout: fixed intrinsics, anchor choice, gauge, and a bound on how far a registered
   camera may turn from it.
4. New points: multi-view triangulation (pycolmap) of feature tracks of >= 3 registered views,
   one of them new, kept off dynamic pixels and out of the free space the anchors observed,
   then merged into the memory (points near stored ones only raise their confidence).

Generated frames may not register at all (an untrained model makes noise). Then the requested
poses stand in, no points are added (noise must not pollute the memory) and the result says
why. Nothing here raises on a SLAM failure: the generation loop always goes on. The new frames
always become keyframes (at their estimated or requested poses).
Pixel conventions: COLMAP puts pixel centres at +0.5, this project on integers; the shift is
applied when intrinsics go in and keypoints come out.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from spatia.dense_tracking import DenseTrackingConfig, register_dense
from spatia.photometric_tracking import PhotometricTrackingConfig, register_photometric

if TYPE_CHECKING:
    from spatia.spatial_memory import SpatialMemory

log = logging.getLogger(__name__)


@dataclass
class SlamConfig:
    """Options of the SLAM update (no paper values exist: the paper uses a feed-forward reconstructor)."""

    num_anchors: int = 4  # memory keyframes reconstructed with the clip
    min_anchors: int = 2  # registered anchors needed to align on them rather than on the requested poses
    min_registered_new: int = 2  # fewer registered new frames counts as a failed update
    max_num_features: int = 4096
    min_num_matches: int = 15
    min_pair_inliers: int = 15  # verified matches for an image pair to count (COLMAP's default 15)
    max_ratio: float = 0.8  # SIFT ratio test (COLMAP's default 0.8)
    sift_peak_threshold: float = (
        0.0066667  # COLMAP default; lower finds more features (did not help the flat-striped rooms)
    )
    max_alignment_error: float = 0.25  # of the trajectory's extent: worse alignment = failed update
    add_points: bool = True
    num_threads: int = 1
    quiet: bool = True  # COLMAP INFO log off during the update
    pnp_max_error: float = 4.0  # px, RANSAC threshold of the 2D-3D registration
    pnp_min_inliers: int = 24  # measured: wrong registrations on repetitive textures had <= 19
    max_prior_rotation_deg: float = 45.0  # a registration further from the requested view is rejected
    max_reprojection_error: float = 2.0  # px, triangulated points
    min_triangulation_angle: float = 2.0  # degrees
    min_track_length: int = 3  # views per triangulated point
    occlusion_tolerance: float = 0.1  # a triangulated point this far (relative) behind the memory is rejected
    dense: DenseTrackingConfig | None = field(default_factory=DenseTrackingConfig)
    # Frames SIFT leaves unregistered are tracked against the anchors by dense patch matching
    # (spatia.dense_tracking); at 32 x 32 SIFT registers nothing. None: skip it.
    photometric: PhotometricTrackingConfig | None = field(default_factory=PhotometricTrackingConfig)
    # Then by direct photometric alignment (spatia.photometric_tracking), which also tracks striped rooms,
    # where no patch peaks along both axes. None: skip it.
    seed: int = 0


@dataclass
class SlamResult:
    """What one update did. ``estimated_w2c`` holds the requested pose wherever a frame did not register."""

    estimated_w2c: torch.Tensor  # (N, 4, 4) float64
    registered: torch.Tensor  # (N,) bool
    num_new_points: int
    used_prior: bool  # True: SLAM failed, the requested poses were used
    message: str
    num_anchors: int = 0
    num_anchors_registered: int = 0
    num_triangulated: int = 0
    scale: float = float("nan")
    # "mapping" (incremental SfM), "prior", or the registrations that placed frames, joined by "+":
    # "pnp" (SIFT into the memory), "dense", "photometric" (e.g. "dense+photometric")
    method: str = "prior"
    rotation_error_deg: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # vs the request
    translation_error: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def summary(self) -> dict:
        """JSON-friendly digest for run logs."""
        return {
            "registered": int(self.registered.sum()),
            "frames": int(self.registered.numel()),
            "num_new_points": self.num_new_points,
            "used_prior": self.used_prior,
            "message": self.message,
            "num_anchors": self.num_anchors,
            "num_anchors_registered": self.num_anchors_registered,
            "num_triangulated": self.num_triangulated,
            "scale": self.scale,
            "method": self.method,
            "mean_rotation_error_deg": _nanmean(self.rotation_error_deg),
            "mean_translation_error": _nanmean(self.translation_error),
        }


def _nanmean(x: torch.Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.mean()) if x.numel() else float("nan")


# ---------------------------------------------------------------------------- geometry helpers


def pose_errors(
    estimated_w2c: torch.Tensor, reference_w2c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame rotation error (degrees) and camera-centre distance between two ``(N, 4, 4)`` w2c sets."""
    rel = estimated_w2c[:, :3, :3].double() @ reference_w2c[:, :3, :3].double().transpose(1, 2)
    cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    centres = torch.linalg.inv(estimated_w2c.double())[:, :3, 3]
    ref_centres = torch.linalg.inv(reference_w2c.double())[:, :3, 3]
    return torch.rad2deg(torch.arccos(cos)), (centres - ref_centres).norm(dim=-1)


def similarity_from_poses(
    source_w2c: torch.Tensor, target_w2c: torch.Tensor
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """``(s, R, t)`` with ``X_target = s R X_source + t`` that best maps the source cameras onto the target.

    Rotation: the SO(3) projection of the summed relative rotations (robust where camera centres
    barely move, unlike centre-only Umeyama); then scale and translation by least squares on the
    centres (scale 1 if the centres do not spread).
    """
    rs, rt = source_w2c[:, :3, :3].double(), target_w2c[:, :3, :3].double()
    u, _, vh = torch.linalg.svd((rt.transpose(1, 2) @ rs).sum(0))
    d = torch.sign(torch.linalg.det(u @ vh))
    rot = u @ torch.diag(torch.tensor([1.0, 1.0, float(d)], dtype=torch.float64)) @ vh
    cs = torch.linalg.inv(source_w2c.double())[:, :3, 3]
    ct = torch.linalg.inv(target_w2c.double())[:, :3, 3]
    ds, dt = (cs - cs.mean(0)) @ rot.T, ct - ct.mean(0)
    spread = (ds**2).sum()
    scale = float((ds * dt).sum() / spread) if spread > 1e-12 else 1.0
    if not math.isfinite(scale) or scale <= 0:
        scale = 1.0
    trans = ct.mean(0) - scale * rot @ cs.mean(0)
    return scale, rot, trans


def transform_w2c(w2c: torch.Tensor, scale: float, rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """Camera poses after the world moves by ``X' = s R X + t`` (the cameras keep metric scale ``s``)."""
    out = torch.eye(4, dtype=torch.float64).repeat(w2c.shape[0], 1, 1)
    r_new = w2c[:, :3, :3].double() @ rot.T
    out[:, :3, :3] = r_new
    out[:, :3, 3] = scale * w2c[:, :3, 3].double() - (r_new @ trans)
    return out


# ---------------------------------------------------------------------------- the update


def _write_png(path: Path, image: torch.Tensor) -> None:
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)


def _fallback(prior: torch.Tensor, n: int, message: str, **extra) -> SlamResult:
    log.warning("SLAM update fell back to the requested poses: %s", message)
    return SlamResult(
        estimated_w2c=prior.clone(),
        registered=torch.zeros(n, dtype=torch.bool),
        num_new_points=0,
        used_prior=True,
        message=message,
        rotation_error_deg=torch.full((n,), float("nan")),
        translation_error=torch.full((n,), float("nan")),
        **extra,
    )


def colmap_camera(intrinsics: torch.Tensor, height: int, width: int):
    """pycolmap PINHOLE camera of project intrinsics (COLMAP's pixel centres sit at +0.5)."""
    import pycolmap

    k = intrinsics.double()
    return pycolmap.Camera(
        model="PINHOLE",
        width=width,
        height=height,
        params=[float(k[0, 0]), float(k[1, 1]), float(k[0, 2]) + 0.5, float(k[1, 2]) + 0.5],
    )


def extract_and_match(
    images: list[torch.Tensor], intrinsics: torch.Tensor, workdir: Path, config: SlamConfig
):
    """SIFT features of ``images`` (one shared, fixed PINHOLE camera) and exhaustive verified matches.

    Returns the database path, the image names (in order) and their database ids.
    """
    import pycolmap

    image_dir = workdir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    names = [f"{i:05d}.png" for i in range(len(images))]
    for name, image in zip(names, images, strict=True):
        _write_png(image_dir / name, image)
    k = intrinsics.double()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    reader.camera_params = ",".join(f"{v:.10f}" for v in (k[0, 0], k[1, 1], k[0, 2] + 0.5, k[1, 2] + 0.5))
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = config.num_threads
    extraction.use_gpu = False
    extraction.sift.max_num_features = config.max_num_features
    extraction.sift.peak_threshold = config.sift_peak_threshold
    database = workdir / "database.db"
    pycolmap.extract_features(
        database,
        image_dir,
        image_names=names,
        camera_mode=pycolmap.CameraMode.SINGLE,
        reader_options=reader,
        extraction_options=extraction,
        device=pycolmap.Device.cpu,
    )
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = config.num_threads
    matching.use_gpu = False
    matching.sift.max_ratio = config.max_ratio
    verification = pycolmap.TwoViewGeometryOptions()
    verification.min_num_inliers = config.min_pair_inliers
    pycolmap.match_exhaustive(
        database, matching_options=matching, verification_options=verification, device=pycolmap.Device.cpu
    )
    db = pycolmap.Database.open(str(database))
    try:
        ids = {im.name: im.image_id for im in db.read_all_images()}
    finally:
        db.close()
    return database, names, [ids[name] for name in names]


def read_matches(
    database: Path, image_ids: list[int]
) -> tuple[list[np.ndarray], dict[tuple[int, int], np.ndarray]]:
    """Keypoints (COLMAP pixel coordinates) per slot and verified inlier matches per slot pair ``(a < b)``."""
    import pycolmap

    db = pycolmap.Database.open(str(database))
    try:
        keypoints = [np.asarray(db.read_keypoints(i))[:, :2].astype(np.float64) for i in image_ids]
        matches = {}
        for a in range(len(image_ids)):
            for b in range(a + 1, len(image_ids)):
                if db.exists_two_view_geometry(image_ids[a], image_ids[b]):
                    m = np.asarray(db.read_two_view_geometry(image_ids[a], image_ids[b]).inlier_matches)
                    if len(m):
                        matches[(a, b)] = m.reshape(-1, 2).astype(np.int64)
    finally:
        db.close()
    return keypoints, matches


def run_mapping(database: Path, image_dir: Path, output: Path, config: SlamConfig):
    """pycolmap incremental mapping with the intrinsics held constant; the largest model or None."""
    import pycolmap

    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = config.num_threads
    options.random_seed = config.seed
    options.min_model_size = 3
    options.min_num_matches = config.min_num_matches
    options.multiple_models = False
    options.ba_refine_focal_length = False
    options.ba_refine_principal_point = False
    options.ba_refine_extra_params = False
    options.extract_colors = True
    models = pycolmap.incremental_mapping(database, image_dir, output, options)
    if not models:
        return None
    return max(models.values(), key=lambda r: r.num_reg_images())


def _sample(image: torch.Tensor, xy: np.ndarray) -> torch.Tensor:
    """Nearest-pixel values of ``(H, W)`` or ``(C, H, W)`` at COLMAP keypoints (centres at +0.5)."""
    h, w = image.shape[-2:]
    u = torch.from_numpy(np.clip(np.round(xy[:, 0] - 0.5), 0, w - 1).astype(np.int64))
    v = torch.from_numpy(np.clip(np.round(xy[:, 1] - 0.5), 0, h - 1).astype(np.int64))
    return image[..., v, u]


def register_by_pnp(memory, anchors, keypoints, matches, new_slots, intrinsics, h, w, config: SlamConfig):
    """Register new slots into the memory by RANSAC PnP on 2D-3D matches, growing outward.

    3D comes from the anchors' stored depth and, once a new frame is registered, from the
    memory's depth rendered at its estimated pose, so frames far from every anchor can still
    register through their registered neighbours. Each round registers the frame with the most
    2D-3D matches; it stops when no frame reaches ``pnp_min_inliers`` inliers.
    """
    import pycolmap

    camera = colmap_camera(intrinsics, h, w)
    k_inv = torch.linalg.inv(intrinsics.double())
    options = pycolmap.AbsolutePoseEstimationOptions()
    options.ransac.max_error = config.pnp_max_error
    options.ransac.random_seed = config.seed
    sources = {a: (kf.w2c.double(), kf.depth) for a, kf in enumerate(anchors)}
    poses: dict[int, torch.Tensor] = {}
    failed: set[int] = set()

    def correspondences(slot):
        pts2d, pts3d = [], []
        for src, (w2c, depth_map) in sources.items():
            pair = (src, slot) if src < slot else (slot, src)
            m = matches.get(pair)
            if m is None:
                continue
            i_src, i_slot = (m[:, 0], m[:, 1]) if src < slot else (m[:, 1], m[:, 0])
            xy = keypoints[src][i_src]
            depth = _sample(depth_map, xy).double()
            ok = depth > 0
            if not ok.any():
                continue
            pix = torch.cat([torch.from_numpy(xy - 0.5), torch.ones(len(xy), 1, dtype=torch.float64)], 1)
            c2w = torch.linalg.inv(w2c)
            world = ((pix @ k_inv.T) * depth[:, None]) @ c2w[:3, :3].T + c2w[:3, 3]
            pts3d.append(world[ok].numpy())
            pts2d.append(keypoints[slot][i_slot][ok.numpy()])
        if not pts2d:
            return np.zeros((0, 2)), np.zeros((0, 3))
        return np.concatenate(pts2d), np.concatenate(pts3d)

    while True:
        todo = [s for s in new_slots if s not in poses and s not in failed]
        if not todo:
            break
        found = {s: correspondences(s) for s in todo}
        slot = max(todo, key=lambda s: len(found[s][0]))
        pts2d, pts3d = found[slot]
        if len(pts2d) < config.pnp_min_inliers:
            break
        answer = pycolmap.estimate_and_refine_absolute_pose(pts2d, pts3d, camera, options)
        if answer is None or answer["num_inliers"] < config.pnp_min_inliers:
            failed.add(slot)
            continue
        w2c = torch.eye(4, dtype=torch.float64)
        w2c[:3] = torch.from_numpy(np.asarray(answer["cam_from_world"].matrix(), dtype=np.float64))
        poses[slot] = w2c
        sources[slot] = (w2c, memory.depth(w2c, intrinsics, h, w)[0])
        failed.clear()  # a new source may give a failed frame enough matches
    return poses


def _tracks(matches: dict[tuple[int, int], np.ndarray], slots: set[int]) -> list[list[tuple[int, int]]]:
    """Feature tracks (lists of ``(slot, keypoint)``) joined over the verified matches between ``slots``."""
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for (a, b), m in matches.items():
        if a in slots and b in slots:
            for i, j in m:
                ra, rb = find((a, int(i))), find((b, int(j)))
                if ra != rb:
                    parent[ra] = rb
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for node in parent:
        groups.setdefault(find(node), []).append(node)
    return list(groups.values())


def triangulate_new_points(
    keypoints,
    matches,
    poses,
    intrinsics,
    images,
    new_slots,
    dynamic,
    config: SlamConfig,
    known_depth=None,
    free_space=None,
):
    """Multi-view triangulation (pycolmap, RANSAC) of feature tracks over registered views, one of them new.

    A track needs ``min_track_length`` views with one keypoint each (two keypoints of one image in
    a track is a mismatch); a point must reproject within ``max_reprojection_error`` px in at least
    ``min_track_length`` of them, be seen under ``min_triangulation_angle`` degrees, stay off
    dynamic pixels, and not lie behind the memory's surface in a view that saw it (``known_depth``:
    slot -> ``(H, W)`` depth, 0 where unknown), nor in the free space of ``free_space`` views
    (``(w2c, depth)`` of frames that really observed their depth: a point in front of a surface
    such a view saw would have hidden it; static scenes only). Two-view points on repetitive textures were mostly
    wrong (measured): hence tracks of three. Returns ``xyz (M, 3)``, ``rgb (M, 3)``, first new slot per point.
    """
    import pycolmap

    h, w = images[0].shape[-2:]
    camera = colmap_camera(intrinsics, h, w)
    options = pycolmap.EstimateTriangulationOptions()
    options.min_tri_angle = math.radians(config.min_triangulation_angle)
    options.residual_type = pycolmap.TriangulationResidualType.REPROJECTION_ERROR
    options.ransac.max_error = config.max_reprojection_error
    options.ransac.random_seed = config.seed
    rigs = {s: pycolmap.Rigid3d(poses[s][:3].numpy()) for s in poses}
    xyz, rgb, owner = [], [], []
    for track in _tracks(matches, set(poses)):
        slots = [s for s, _ in track]
        if len(set(slots)) != len(slots) or len(slots) < config.min_track_length:
            continue
        seen_new = [s for s in slots if s in new_slots]
        if not seen_new:
            continue
        xy = np.stack([keypoints[s][i] for s, i in track])
        if any(s in dynamic and bool(_sample(dynamic[s], xy[n : n + 1])[0]) for n, s in enumerate(slots)):
            continue
        answer = pycolmap.estimate_triangulation(xy, [rigs[s] for s in slots], [camera] * len(slots), options)
        if answer is None or int(np.sum(answer["inliers"])) < config.min_track_length:
            continue
        point = np.asarray(answer["xyz"], dtype=np.float64).reshape(3)
        if known_depth is not None:
            behind = False
            for n, s in enumerate(slots):
                if s in known_depth and answer["inliers"][n]:
                    cam = poses[s][:3, :3].numpy() @ point + poses[s][:3, 3].numpy()
                    surface = float(_sample(known_depth[s], xy[n : n + 1])[0])
                    behind |= surface > 0 and cam[2] > surface * (1 + config.occlusion_tolerance)
            if behind:
                continue
        if free_space is not None and _carved(
            point, free_space, intrinsics, h, w, config.occlusion_tolerance
        ):
            continue
        first = min(seen_new)
        xyz.append(point)
        rgb.append(_sample(images[first], xy[slots.index(first) : slots.index(first) + 1])[:, 0].numpy())
        owner.append(first)
    if not xyz:
        return np.zeros((0, 3)), np.zeros((0, 3)), []
    return np.stack(xyz), np.stack(rgb), owner


def _carved(point: np.ndarray, views, intrinsics: torch.Tensor, h: int, w: int, tolerance: float) -> bool:
    """Whether ``point`` lies in front of the observed surface of any ``(w2c, depth)`` view that sees it."""
    k = intrinsics.double().numpy()
    for w2c, depth in views:
        cam = w2c[:3, :3].numpy() @ point + w2c[:3, 3].numpy()
        if cam[2] <= 1e-6:
            continue
        u, v = (k @ cam)[:2] / cam[2]
        ui, vi = round(float(u)), round(float(v))
        if 0 <= ui < w and 0 <= vi < h:
            surface = float(depth[vi, ui])
            if surface > 0 and cam[2] < surface * (1 - tolerance):
                return True
    return False


def update_memory_from_clip(
    memory: SpatialMemory,
    frames: torch.Tensor,
    w2c_prior: torch.Tensor,
    intrinsics: torch.Tensor,
    dynamic_masks: torch.Tensor | None = None,
    *,
    frame_ids: list[int] | None = None,
    config: SlamConfig | None = None,
    workdir: str | Path | None = None,
) -> SlamResult:
    """Register ``(N, 3, H, W)`` generated frames, add their new static points and keyframes to ``memory``."""
    config = config or SlamConfig()
    n, _, h, w = frames.shape
    prior = w2c_prior.double()
    k = intrinsics.double()
    if k.ndim == 3:  # one camera for the clip (the generator's); the first frame's stands for all
        k = k[0]
    ids = (
        list(range(memory.next_frame_id, memory.next_frame_id + n)) if frame_ids is None else list(frame_ids)
    )
    if dynamic_masks is None:
        dynamic_masks = torch.zeros(n, h, w, dtype=torch.bool)
    dynamic_masks = dynamic_masks.bool()

    anchor_ids = [
        f
        for f in memory.retrieve(prior, k, h, w, k=config.num_anchors * 2)
        if memory.keyframes[f].image.shape[-2:] == (h, w)
        and torch.allclose(memory.keyframes[f].intrinsics, k, atol=1e-6)
    ][: config.num_anchors]
    anchors = [memory.keyframes[f] for f in anchor_ids]
    extra = {"num_anchors": len(anchors)}
    import pycolmap

    level = pycolmap.logging.minloglevel
    if config.quiet:  # COLMAP logs every step at INFO; a generation loop wants its progress bar
        pycolmap.logging.minloglevel = max(level, 1)
    try:
        with tempfile.TemporaryDirectory(prefix="spatia_slam_", dir=workdir) as tmp:
            result = _update(memory, anchors, frames, prior, k, ids, dynamic_masks, Path(tmp), config, extra)
    except Exception as exc:  # pycolmap raises C++ errors as Python exceptions; the loop must go on
        result = _fallback(prior, n, f"pycolmap failed: {type(exc).__name__}: {exc}", **extra)
    finally:
        pycolmap.logging.minloglevel = level
    for i, fid in enumerate(ids):
        memory.add_keyframe(fid, frames[i], result.estimated_w2c[i], k)
        memory.keyframes[fid].depth[dynamic_masks[i]] = 0
    return result


def _update(
    memory, anchors, frames, prior, k, ids, dynamic_masks, tmp: Path, config: SlamConfig, extra
) -> SlamResult:
    n, _, h, w = frames.shape
    first_new = len(anchors)
    new_slots = list(range(first_new, first_new + n))
    images = [kf.image for kf in anchors] + list(frames)
    database, names, image_ids = extract_and_match(images, k, tmp, config)
    keypoints, matches = read_matches(database, image_ids)
    poses: dict[int, torch.Tensor] = {a: kf.w2c.double() for a, kf in enumerate(anchors)}
    new_poses = (
        register_by_pnp(memory, anchors, keypoints, matches, new_slots, k, h, w, config) if anchors else {}
    )
    methods, scale = ["pnp"] if new_poses else [], 1.0
    if anchors:
        # Frames SIFT leaves out go to the trackers that need no keypoints, most precise first.
        sources = [(kf.image, kf.depth, kf.w2c.double()) for kf in anchors]
        trackers = (
            ("dense", register_dense, config.dense),
            ("photometric", register_photometric, config.photometric),
        )
        for name, register, options in trackers:
            if options is None:
                continue
            found = {}
            for s in new_slots:
                if s not in new_poses:
                    pose = register(sources, images[s], prior[s - first_new], k, options)
                    if pose is not None:
                        found[s] = pose
            if found:
                methods.append(name)
                new_poses.update(found)
    method = "+".join(methods) or "pnp"
    if len(new_poses) < config.min_registered_new:
        # Too little overlap with the memory: reconstruct from scratch, then fix the gauge on the anchors
        # (if enough registered) or on the requested trajectory.
        method = "mapping"
        model = run_mapping(database, tmp / "images", tmp / "sparse", config)
        if model is None:
            return _fallback(
                prior,
                n,
                f"PnP registered {len(new_poses)} of {n} frames (too few matches to the memory) and pycolmap mapped no model",
                **extra,
            )
        mapped = {}
        for slot, name in enumerate(names):
            img = model.find_image_with_name(name)
            if img is not None and img.has_pose:
                w2c = torch.eye(4, dtype=torch.float64)
                w2c[:3] = torch.from_numpy(np.asarray(img.cam_from_world().matrix(), dtype=np.float64))
                mapped[slot] = w2c
        reference = {a: kf.w2c.double() for a, kf in enumerate(anchors)} | {
            s: prior[s - first_new] for s in new_slots
        }
        reg_anchors = [s for s in mapped if s < first_new]
        extra["num_anchors_registered"] = len(reg_anchors)
        basis = reg_anchors if len(reg_anchors) >= config.min_anchors else sorted(mapped)
        if len([s for s in mapped if s >= first_new]) < config.min_registered_new or len(basis) < 3:
            return _fallback(prior, n, f"mapping registered {len(mapped)} of {len(names)} images", **extra)
        src = torch.stack([mapped[s] for s in basis])
        dst = torch.stack([reference[s] for s in basis])
        scale, rot, trans = similarity_from_poses(src, dst)
        aligned = transform_w2c(torch.stack([mapped[s] for s in sorted(mapped)]), scale, rot, trans)
        aligned = dict(zip(sorted(mapped), aligned, strict=True))
        _, centre_error = pose_errors(torch.stack([aligned[s] for s in basis]), dst)
        centres = torch.linalg.inv(dst)[:, :3, 3]
        extent = float((centres - centres.mean(0)).norm(dim=-1).max())
        if len(basis) >= 3 and float(centre_error.max()) > config.max_alignment_error * max(extent, 1e-3):
            return _fallback(
                prior,
                n,
                f"SLAM poses disagree with the reference after alignment "
                f"(max centre error {float(centre_error.max()):.3g}, extent {extent:.3g})",
                scale=scale,
                **extra,
            )
        new_poses = {s: aligned[s] for s in aligned if s >= first_new}
    else:
        extra["num_anchors_registered"] = len(anchors)
    # The request is the prior: a registration that turns the camera implausibly far from it is wrong.
    for s in list(new_poses):
        rot_err, _ = pose_errors(new_poses[s][None], prior[s - first_new][None])
        if float(rot_err[0]) > config.max_prior_rotation_deg:
            del new_poses[s]
    if len(new_poses) < config.min_registered_new:
        return _fallback(prior, n, f"only {len(new_poses)} of {n} new frames registered ({method})", **extra)
    registered = torch.tensor([s in new_poses for s in new_slots])
    estimated = torch.stack([new_poses.get(s, prior[s - first_new]) for s in new_slots])
    rot_err, trans_err = pose_errors(estimated, prior)
    rot_err[~registered], trans_err[~registered] = float("nan"), float("nan")

    num_added, num_tri = 0, 0
    if config.add_points:
        poses.update(new_poses)
        dynamic = {s: dynamic_masks[s - first_new] for s in new_slots}
        # Depth the memory already explains, per registered view (before this clip's points go in).
        known_depth = {a: kf.depth for a, kf in enumerate(anchors)} | {
            s: memory.depth(poses[s], k, h, w)[0] for s in new_poses
        }
        xyz, rgb, owner = triangulate_new_points(
            keypoints,
            matches,
            poses,
            k,
            images,
            set(new_slots),
            dynamic,
            config,
            known_depth,
            free_space=[(kf.w2c.double(), kf.depth) for kf in anchors],
        )
        num_tri = len(owner)
        if num_tri:
            num_added = memory.merge_points(
                torch.from_numpy(xyz).float(),
                torch.from_numpy(rgb).float(),
                torch.full((num_tri,), 2.0),
                torch.tensor([ids[s - first_new] for s in owner]),
            )
    return SlamResult(
        estimated_w2c=estimated,
        registered=registered,
        num_new_points=num_added,
        used_prior=False,
        message=f"{method}: registered {int(registered.sum())}/{n} new frames with {len(anchors)} anchors",
        num_triangulated=num_tri,
        scale=scale,
        rotation_error_deg=rot_err,
        translation_error=trans_err,
        method=method,
        **extra,
    )
