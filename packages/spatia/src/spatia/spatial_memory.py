"""The spatial memory: a fused static point cloud plus the keyframes behind it.

The one implementation of the memory, for training and generation alike: a training clip's
control input (``spatia.data.procedural.ProceduralClips``) is this class's ``render`` of a
memory filled by ``add_frames``, and its reference frames are this class's ``retrieve``, so
the condition is computed exactly as at generation time (same voxel keys, same fusion, same
outlier removal, same projection). Generation keeps one ``SpatialMemory`` per scene. Frames with depth enter through
``add_frames`` (unproject -> fuse on a global voxel grid -> statistical outlier removal);
generated clips enter through ``update_from_clip`` (visual SLAM with pycolmap, in
``spatia.slam``). The memory is rendered into target cameras with latentforge's
z-buffered projection (the condition of the next clip), picks reference keyframes by 3D
overlap, can be edited (``remove_box`` / ``insert_points``), and is saved as ``points.ply``
plus metadata.

Every point carries a position, a colour in [0, 1], a confidence (how many frames observed
its voxel, or the track length of a triangulated point) and the id of the frame that created
it. Conventions as the rest of the package: OpenCV world-to-camera, pixel centres on integers.
open3d is imported lazily (it needs system libraries some containers lack).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from latentforge.kernels import project_points

if TYPE_CHECKING:
    from spatia.slam import SlamConfig, SlamResult

FORMAT = "spatia-spatial-memory"
VERSION = 1


class MemoryFileError(ValueError):
    """A saved memory folder that is missing a file or holds a corrupt one; the message names the file."""


@dataclass
class Keyframe:
    """A frame the memory saw: image ``(3, H, W)``, pose, intrinsics and depth (0 where unknown)."""

    image: torch.Tensor
    w2c: torch.Tensor  # (4, 4) float64
    intrinsics: torch.Tensor  # (3, 3) float64
    depth: torch.Tensor  # (H, W) float32


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


def _as_batch(matrix: torch.Tensor, n: int, name: str, size: int) -> torch.Tensor:
    """``(size, size)`` or ``(n, size, size)`` -> ``(n, size, size)`` float64."""
    matrix = torch.as_tensor(matrix)
    if matrix.ndim == 2:
        matrix = matrix.expand(n, size, size)
    if matrix.shape != (n, size, size):
        raise ValueError(
            f"{name} must be ({size}, {size}) or ({n}, {size}, {size}), got {tuple(matrix.shape)}"
        )
    return matrix.double()


def _voxel_keys(cells: torch.Tensor) -> torch.Tensor:
    """One int64 per integer cell (21 bits per axis, offset so negative cells stay distinct)."""
    c = cells + (1 << 20)
    if (c < 0).any() or (c >= (1 << 21)).any():
        raise ValueError("points lie more than 2**20 voxels from the origin; use a larger voxel_size")
    return (c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2]


class SpatialMemory:
    """Static scene points with colours, confidences and creating-frame ids, and the keyframes seen.

    Args:
        voxel_size: fusion grid cell (world units); the paper's default is 1 cm at real scale.
        outlier_neighbors, outlier_std_ratio: open3d ``remove_statistical_outlier`` on newly fused points.
        merge_radius: a triangulated (SLAM) point closer than this to a stored point merges into it
            instead of being added; 0 uses ``3 * voxel_size``.
        retrieval_stride: pixel stride when lifting keyframe depth to score 3D overlap.
    """

    def __init__(
        self,
        voxel_size: float = 0.01,
        *,
        outlier_neighbors: int = 20,
        outlier_std_ratio: float = 2.0,
        merge_radius: float = 0.0,
        retrieval_stride: int = 4,
    ) -> None:
        if voxel_size <= 0:
            raise ValueError(f"voxel_size must be positive, got {voxel_size}")
        self.voxel_size = float(voxel_size)
        self.outlier_neighbors = int(outlier_neighbors)
        self.outlier_std_ratio = float(outlier_std_ratio)
        self.merge_radius = float(merge_radius) or 3 * self.voxel_size
        self.retrieval_stride = int(retrieval_stride)
        self.points = torch.zeros(0, 3)
        self.colors = torch.zeros(0, 3)
        self.confidence = torch.zeros(0)
        self.frame_ids = torch.zeros(0, dtype=torch.long)
        self.keyframes: dict[int, Keyframe] = {}

    def __len__(self) -> int:
        return self.points.shape[0]

    @property
    def next_frame_id(self) -> int:
        return max(self.keyframes, default=-1) + 1

    # ------------------------------------------------------------------ fusion

    def add_frames(
        self,
        frames: torch.Tensor,
        depths: torch.Tensor,
        w2c: torch.Tensor,
        intrinsics: torch.Tensor,
        *,
        frame_ids: list[int] | None = None,
        dynamic_masks: torch.Tensor | None = None,
        store_keyframes: bool = True,
    ) -> int:
        """Fuse ``(N, 3, H, W)`` frames with depth ``(N, H, W)`` into the memory; returns points added.

        Pixels with depth <= 0, non-finite depth or under ``dynamic_masks`` never enter. Points in
        voxels the memory already holds raise those points' confidence instead of being added.
        """
        n, _, h, w = frames.shape
        if depths.shape != (n, h, w):
            raise ValueError(f"depths {tuple(depths.shape)} do not match frames {tuple(frames.shape)}")
        w2c = _as_batch(w2c, n, "w2c", 4)
        intrinsics = _as_batch(intrinsics, n, "intrinsics", 3)
        ids = (
            list(range(self.next_frame_id, self.next_frame_id + n)) if frame_ids is None else list(frame_ids)
        )
        if len(ids) != n:
            raise ValueError(f"got {len(ids)} frame_ids for {n} frames")
        depths = torch.nan_to_num(depths.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0)
        keep = torch.ones(n, h, w, dtype=torch.bool)
        if dynamic_masks is not None:
            if dynamic_masks.shape != (n, h, w):
                raise ValueError(f"dynamic_masks {tuple(dynamic_masks.shape)} must be {(n, h, w)}")
            keep = ~dynamic_masks.bool()
        static_depth = depths * keep
        points, colors, fids = [], [], []
        for i in range(n):
            cloud = unproject_depth(
                frames[i : i + 1], static_depth[i : i + 1], intrinsics[i : i + 1], w2c[i : i + 1]
            )
            points.append(cloud.points)
            colors.append(cloud.colors)
            fids.append(torch.full((len(cloud),), ids[i], dtype=torch.long))
        if store_keyframes:
            for i, fid in enumerate(ids):
                self.keyframes[fid] = Keyframe(
                    frames[i].float().clone(), w2c[i].clone(), intrinsics[i].clone(), static_depth[i].clone()
                )
        return self._fuse(torch.cat(points), torch.cat(colors), torch.cat(fids))

    def _fuse(self, points: torch.Tensor, colors: torch.Tensor, fids: torch.Tensor) -> int:
        """Voxel-fuse observations: known voxels gain confidence, new voxels become (outlier-filtered) points."""
        if points.shape[0] == 0:
            return 0
        vs = self.voxel_size
        keys = _voxel_keys(torch.floor(points.double() / vs).long())
        old_keys = _voxel_keys(torch.floor(self.points.double() / vs).long())
        uniq, inverse = torch.unique(torch.cat([old_keys, keys]), return_inverse=True)
        n_old = old_keys.shape[0]
        inv_new = inverse[n_old:]
        # Each voxel's stored point (if any); several stored points can share a voxel after edits.
        owner = torch.full((uniq.shape[0],), -1, dtype=torch.long)
        owner[inverse[:n_old]] = torch.arange(n_old)
        # Distinct (voxel, frame) observations: a frame seeing a voxel counts once.
        pairs = torch.unique(torch.stack([inv_new, fids]), dim=1)
        views = torch.bincount(pairs[0], minlength=uniq.shape[0]).float()
        seen = owner >= 0
        if seen.any():
            self.confidence = self.confidence.clone()
            self.confidence.index_add_(0, owner[seen], views[seen])
        fresh = ~seen[inv_new]
        if not fresh.any():
            return 0
        voxel = inv_new[fresh]
        cells, slot = torch.unique(voxel, return_inverse=True)
        count = torch.bincount(slot, minlength=cells.shape[0]).double()[:, None]
        mean_p = (
            torch.zeros(cells.shape[0], 3, dtype=torch.float64).index_add_(0, slot, points[fresh].double())
            / count
        )
        mean_c = (
            torch.zeros(cells.shape[0], 3, dtype=torch.float64).index_add_(0, slot, colors[fresh].double())
            / count
        )
        first = torch.full((cells.shape[0],), torch.iinfo(torch.long).max, dtype=torch.long)
        first.scatter_reduce_(0, slot, fids[fresh], reduce="amin")
        kept = self._inliers(mean_p)
        return self._append(mean_p[kept].float(), mean_c[kept].float(), views[cells][kept], first[kept])

    def _inliers(self, points: torch.Tensor) -> torch.Tensor:
        """Mask of ``points`` that open3d's statistical outlier removal keeps, judged with the stored points.

        Judging new points together with the memory keeps the test stable: a point rejected once is
        rejected again when the same view is fused again, rather than passing among fewer peers.
        """
        n_old = len(self)
        if points.shape[0] + n_old <= self.outlier_neighbors or self.outlier_neighbors <= 0:
            return torch.ones(points.shape[0], dtype=torch.bool)
        import open3d as o3d

        everything = torch.cat([self.points.double(), points.double()]).numpy()
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(everything))
        _, index = cloud.remove_statistical_outlier(self.outlier_neighbors, self.outlier_std_ratio)
        mask = torch.zeros(n_old + points.shape[0], dtype=torch.bool)
        mask[torch.as_tensor(np.asarray(index), dtype=torch.long)] = True
        return mask[n_old:]

    def _append(self, points, colors, confidence, frame_ids) -> int:
        self.points = torch.cat([self.points, points.float()])
        self.colors = torch.cat([self.colors, colors.float().clamp(0, 1)])
        self.confidence = torch.cat([self.confidence, confidence.float()])
        self.frame_ids = torch.cat([self.frame_ids, frame_ids.long()])
        return int(points.shape[0])

    def merge_points(
        self, xyz: torch.Tensor, rgb: torch.Tensor, confidence: torch.Tensor, frame_ids: torch.Tensor
    ) -> int:
        """Add points (e.g. triangulated by SLAM) except those within ``merge_radius`` of stored ones.

        Points near the memory strengthen their nearest stored point's confidence instead: a
        clip that revisits known geometry adds nothing, new geometry is added. Returns points added.
        """
        xyz = torch.as_tensor(xyz).float().reshape(-1, 3)
        if xyz.shape[0] == 0:
            return 0
        near = torch.zeros(xyz.shape[0], dtype=torch.bool)
        if len(self):
            import open3d as o3d

            tree = o3d.geometry.KDTreeFlann(
                o3d.geometry.PointCloud(o3d.utility.Vector3dVector(self.points.double().numpy()))
            )
            self.confidence = self.confidence.clone()
            for i, p in enumerate(xyz.double().numpy()):
                found, index, _ = tree.search_radius_vector_3d(p, self.merge_radius)
                if found:
                    near[i] = True
                    self.confidence[index[0]] += 1
        # One point per voxel within the batch too (several views triangulate the same corner).
        keys = _voxel_keys(torch.floor(xyz.double() / self.voxel_size).long())
        _, first = np.unique(keys.numpy(), return_index=True)
        keep = torch.zeros_like(near)
        keep[torch.as_tensor(first)] = True
        keep &= ~near
        return self._append(
            xyz[keep],
            torch.as_tensor(rgb).float().reshape(-1, 3)[keep],
            torch.as_tensor(confidence).float().reshape(-1)[keep],
            torch.as_tensor(frame_ids).long().reshape(-1)[keep],
        )

    def add_keyframe(
        self,
        frame_id: int,
        image: torch.Tensor,
        w2c: torch.Tensor,
        intrinsics: torch.Tensor,
        depth: torch.Tensor | None = None,
    ) -> None:
        """Store a frame for retrieval; without ``depth`` the memory's own rendered depth stands in."""
        h, w = image.shape[-2:]
        if depth is None:
            _, depth, _ = project_points(
                self.points, self.colors, intrinsics.float()[None], w2c.float()[None], h, w
            )
            depth = depth[0]
        self.keyframes[int(frame_id)] = Keyframe(
            image.float().clone(), w2c.double().clone(), intrinsics.double().clone(), depth.float().clone()
        )

    # ------------------------------------------------------------------ rendering and retrieval

    def render(
        self,
        w2c: torch.Tensor,
        intrinsics: torch.Tensor,
        height: int,
        width: int,
        *,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, H, W)`` colours in [0, 1] and ``(N, 1, H, W)`` bool holes (pixels no point covers).

        ``device="cuda"`` renders there (latentforge's fused Triton projection); results come back
        on the memory's device (CPU).
        """
        w2c = torch.as_tensor(w2c)
        if w2c.ndim == 2:
            w2c = w2c[None]
        n = w2c.shape[0]
        k = _as_batch(intrinsics, n, "intrinsics", 3).float()
        if len(self) == 0:
            return torch.zeros(n, 3, height, width), torch.ones(n, 1, height, width, dtype=torch.bool)
        dev = self.points.device if device is None else torch.device(device)
        images, _, valid = project_points(
            self.points.to(dev), self.colors.to(dev), k.to(dev), w2c.float().to(dev), height, width
        )
        return images.to(self.points.device), ~valid[:, None].to(self.points.device)

    def depth(self, w2c: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``(N, H, W)`` rendered depth of the memory, 0 where no point lands."""
        w2c = torch.as_tensor(w2c)
        if w2c.ndim == 2:
            w2c = w2c[None]
        k = _as_batch(intrinsics, w2c.shape[0], "intrinsics", 3).float()
        return project_points(self.points, self.colors, k, w2c.float(), height, width)[1]

    def overlap_scores(
        self, w2c: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int
    ) -> dict[int, float]:
        """Per keyframe: share of the target views' pixels its own (static) points cover, at reduced resolution."""
        w2c = torch.as_tensor(w2c)
        if w2c.ndim == 2:
            w2c = w2c[None]
        s = max(self.retrieval_stride, 1)
        k = _as_batch(intrinsics, w2c.shape[0], "intrinsics", 3).clone()
        # Score at 1/s resolution: subsampled pixel j is full pixel j * s, so K's first two rows scale by 1/s.
        k[:, :2, :] /= s
        hh, ww = max(height // s, 1), max(width // s, 1)
        scores = {}
        for fid, kf in self.keyframes.items():
            depth = kf.depth[::s, ::s]
            kk = kf.intrinsics.clone()
            kk[:2, :] /= s
            cloud = unproject_depth(kf.image[None, :, ::s, ::s], depth[None], kk[None], kf.w2c[None])
            if len(cloud) == 0:
                scores[fid] = 0.0
                continue
            _, _, valid = project_points(cloud.points, cloud.colors, k.float(), w2c.float(), hh, ww, radius=1)
            scores[fid] = float(valid.float().mean())
        return scores

    def retrieve(
        self,
        w2c: torch.Tensor,
        intrinsics: torch.Tensor,
        height: int,
        width: int,
        k: int = 7,
        *,
        exclude: list[int] | tuple[int, ...] = (),
    ) -> list[int]:
        """Ids of up to ``k`` keyframes whose points cover most of the target views (best first)."""
        scores = {
            f: v
            for f, v in self.overlap_scores(w2c, intrinsics, height, width).items()
            if f not in set(exclude)
        }
        order = sorted(scores, key=lambda f: (-scores[f], f))
        return [f for f in order[: max(k, 0)] if scores[f] > 0]

    def keyframe(self, frame_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image (3, H, W), w2c (4, 4), intrinsics (3, 3))`` of a stored frame."""
        if frame_id not in self.keyframes:
            raise KeyError(f"no keyframe {frame_id}; the memory holds {sorted(self.keyframes)}")
        kf = self.keyframes[frame_id]
        return kf.image, kf.w2c, kf.intrinsics

    # ------------------------------------------------------------------ editing

    def remove_box(self, lo, hi) -> int:
        """Delete the points inside the axis-aligned box ``[lo, hi]``; returns how many."""
        lo, hi = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
        inside = ((self.points >= lo) & (self.points <= hi)).all(-1)
        self._select(~inside)
        # Keyframes forget the removed geometry too, so retrieval stops scoring them for it.
        for kf in self.keyframes.values():
            cloud = unproject_depth(kf.image[None], kf.depth[None], kf.intrinsics[None], kf.w2c[None])
            if len(cloud) == 0:
                continue
            gone = ((cloud.points >= lo) & (cloud.points <= hi)).all(-1)
            flat = kf.depth.reshape(-1)
            flat[torch.nonzero(flat > 0).squeeze(1)[gone]] = 0
        return int(inside.sum())

    def insert_points(self, xyz, rgb, *, confidence: float = 1.0, frame_id: int = -1) -> int:
        """Add user points (3D-aware editing), one per voxel, replacing nothing; returns points added."""
        xyz = torch.as_tensor(xyz, dtype=torch.float32).reshape(-1, 3)
        rgb = torch.as_tensor(rgb, dtype=torch.float32).reshape(-1, 3)
        if rgb.shape[0] == 1:
            rgb = rgb.expand(xyz.shape[0], 3)
        if rgb.shape != xyz.shape:
            raise ValueError(f"rgb {tuple(rgb.shape)} must match xyz {tuple(xyz.shape)} or be one colour")
        if xyz.shape[0] == 0:
            return 0
        keys = _voxel_keys(torch.floor(xyz.double() / self.voxel_size).long())
        _, first = np.unique(keys.numpy(), return_index=True)
        first = torch.as_tensor(np.sort(first))
        n = first.shape[0]
        return self._append(xyz[first], rgb[first], torch.full((n,), confidence), torch.full((n,), frame_id))

    def _select(self, keep: torch.Tensor) -> None:
        self.points, self.colors = self.points[keep], self.colors[keep]
        self.confidence, self.frame_ids = self.confidence[keep], self.frame_ids[keep]

    # ------------------------------------------------------------------ SLAM update

    def update_from_clip(
        self,
        frames: torch.Tensor,
        w2c_prior: torch.Tensor,
        intrinsics: torch.Tensor,
        dynamic_masks: torch.Tensor | None = None,
        *,
        frame_ids: list[int] | None = None,
        config: SlamConfig | None = None,
        segmenter: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> SlamResult:
        """Register a generated clip by visual SLAM (pycolmap) and add its new static points.

        See ``spatia.slam.update_memory_from_clip``; never raises on SLAM failure (the prior
        poses are used and the result says why). ``segmenter`` (``spatia.segmentation``) makes
        the dynamic masks when none are given.
        """
        from spatia.slam import update_memory_from_clip

        if dynamic_masks is None and segmenter is not None:
            dynamic_masks = segmenter(frames)
        return update_memory_from_clip(
            self, frames, w2c_prior, intrinsics, dynamic_masks, frame_ids=frame_ids, config=config
        )

    # ------------------------------------------------------------------ files

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``points.ply`` (open3d), ``attributes.npz``, ``keyframes.npz`` and ``memory.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _write_ply(folder / "points.ply", self.points, self.colors)
        np.savez(
            folder / "attributes.npz", confidence=self.confidence.numpy(), frame_ids=self.frame_ids.numpy()
        )
        arrays = {}
        for fid, kf in self.keyframes.items():
            arrays[f"{fid}_image"] = (kf.image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            arrays[f"{fid}_w2c"] = kf.w2c.numpy()
            arrays[f"{fid}_intrinsics"] = kf.intrinsics.numpy()
            arrays[f"{fid}_depth"] = kf.depth.numpy()
        np.savez_compressed(folder / "keyframes.npz", **arrays)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "num_points": len(self),
            "voxel_size": self.voxel_size,
            "outlier_neighbors": self.outlier_neighbors,
            "outlier_std_ratio": self.outlier_std_ratio,
            "merge_radius": self.merge_radius,
            "retrieval_stride": self.retrieval_stride,
            "keyframe_ids": sorted(self.keyframes),
        }
        (folder / "memory.json").write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> SpatialMemory:
        """Read a folder written by ``save``, validating every file (errors name the file and the problem)."""
        folder = Path(folder)
        meta_path = folder / "memory.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise MemoryFileError(f"{meta_path}: missing (not a saved spatial memory folder)") from None
        except (OSError, ValueError) as exc:
            raise MemoryFileError(f"{meta_path}: unreadable metadata: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise MemoryFileError(
                f"{meta_path}: not a spatia spatial-memory file (format {FORMAT!r} expected)"
            )
        if meta.get("version") != VERSION:
            raise MemoryFileError(f"{meta_path}: version {meta.get('version')!r}, this code reads {VERSION}")
        try:
            n = int(meta["num_points"])
            memory = cls(
                float(meta["voxel_size"]),
                outlier_neighbors=int(meta["outlier_neighbors"]),
                outlier_std_ratio=float(meta["outlier_std_ratio"]),
                merge_radius=float(meta["merge_radius"]),
                retrieval_stride=int(meta["retrieval_stride"]),
            )
            keyframe_ids = [int(i) for i in meta["keyframe_ids"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise MemoryFileError(f"{meta_path}: missing or invalid field: {exc}") from None
        points, colors = _read_ply(folder / "points.ply", n)
        attrs = _read_npz(folder / "attributes.npz")
        confidence, fids = attrs.get("confidence"), attrs.get("frame_ids")
        if confidence is None or fids is None or confidence.shape != (n,) or fids.shape != (n,):
            raise MemoryFileError(
                f"{folder / 'attributes.npz'}: expected 'confidence' and 'frame_ids' of length {n}"
            )
        memory.points, memory.colors = points, colors
        memory.confidence = torch.from_numpy(confidence.astype(np.float32))
        memory.frame_ids = torch.from_numpy(fids.astype(np.int64))
        kf_path = folder / "keyframes.npz"
        arrays = _read_npz(kf_path)
        for fid in keyframe_ids:
            try:
                image = torch.from_numpy(arrays[f"{fid}_image"]).float() / 255
                w2c = torch.from_numpy(arrays[f"{fid}_w2c"]).double()
                k = torch.from_numpy(arrays[f"{fid}_intrinsics"]).double()
                depth = torch.from_numpy(arrays[f"{fid}_depth"]).float()
            except KeyError as exc:
                raise MemoryFileError(f"{kf_path}: keyframe {fid} is missing array {exc}") from None
            if (
                image.ndim != 3
                or image.shape[0] != 3
                or depth.shape != image.shape[1:]
                or w2c.shape != (4, 4)
                or k.shape != (3, 3)
            ):
                raise MemoryFileError(f"{kf_path}: keyframe {fid} has inconsistent shapes")
            memory.keyframes[fid] = Keyframe(image, w2c, k, depth)
        return memory


def _write_ply(path: Path, points: torch.Tensor, colors: torch.Tensor) -> None:
    if points.shape[0] == 0:  # open3d refuses to write an empty cloud; a header-only PLY is valid
        path.write_bytes(
            b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty double x\nproperty double y\n"
            b"property double z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
        )
        return
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.double().numpy()))
    cloud.colors = o3d.utility.Vector3dVector(colors.double().clamp(0, 1).numpy())
    if not o3d.io.write_point_cloud(str(path), cloud):
        raise OSError(f"{path}: open3d could not write the point cloud")


def _read_ply(path: Path, expected: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the header and size ourselves (open3d reads truncated files without complaint)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MemoryFileError(f"{path}: missing point cloud file") from None
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise MemoryFileError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    header = data[:end].decode("ascii", errors="replace").splitlines()
    count, props, binary = None, [], False
    for line in header:
        words = line.split()
        if words[:2] == ["format", "binary_little_endian"]:
            binary = True
        elif words[:2] == ["element", "vertex"] and len(words) == 3 and words[2].isdigit():
            count = int(words[2])
        elif words[:1] == ["property"] and count is not None and len(words) == 3:
            props.append((words[1], words[2]))
    if count is None:
        raise MemoryFileError(f"{path}: PLY header declares no vertex element")
    if count != expected:
        raise MemoryFileError(f"{path}: holds {count} points, memory.json says {expected}")
    names = [name for _, name in props]
    if names[:3] != ["x", "y", "z"]:
        raise MemoryFileError(f"{path}: vertices lack x, y, z properties")
    if binary:
        sizes = {"double": 8, "float": 4, "uchar": 1, "float64": 8, "float32": 4, "uint8": 1}
        if any(t not in sizes for t, _ in props):
            raise MemoryFileError(f"{path}: unsupported property types {props}")
        need = end + len(b"end_header\n") + count * sum(sizes[t] for t, _ in props)
        if len(data) != need:
            raise MemoryFileError(
                f"{path}: corrupt or truncated ({len(data)} bytes, the header implies {need})"
            )
    if count == 0:
        return torch.zeros(0, 3), torch.zeros(0, 3)
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(path), format="ply")
    points = np.asarray(cloud.points)
    colors = np.asarray(cloud.colors)
    if points.shape != (count, 3) or colors.shape != (count, 3):
        raise MemoryFileError(
            f"{path}: open3d read {points.shape[0]} points with {colors.shape[0]} colours, expected {count}"
        )
    if not np.isfinite(points).all():
        raise MemoryFileError(f"{path}: non-finite point coordinates")
    return torch.from_numpy(points).float(), torch.from_numpy(colors).float()


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise MemoryFileError(f"{path}: missing") from None
    except (OSError, ValueError, EOFError) as exc:
        raise MemoryFileError(f"{path}: corrupt archive: {exc}") from None
