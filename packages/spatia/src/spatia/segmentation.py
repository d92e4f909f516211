"""Dynamic-content segmentation hooks: ``frames (N, 3, H, W) -> masks (N, H, W)``, true on moving content.

Moving objects must stay out of the static memory (the paper segments them with SAM2). A hook
is any callable with that signature; ``SpatialMemory.update_from_clip(segmenter=...)`` calls it
when no masks are given. Procedural scenes know their moving box, so their hook is exact: it
ray-casts the box where the scene puts it at each requested frame and camera.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch

from spatia.data.procedural import Scene, render

DynamicSegmenter = Callable[[torch.Tensor], torch.Tensor]


def no_dynamic_content(frames: torch.Tensor) -> torch.Tensor:
    """The hook for static scenes: nothing moves."""
    return torch.zeros(frames.shape[0], *frames.shape[-2:], dtype=torch.bool)


def procedural_dynamic_masks(
    scene: Scene,
    w2c: torch.Tensor,
    intrinsics: torch.Tensor,
    frame_indices: Sequence[int],
    height: int,
    width: int,
) -> torch.Tensor:
    """Exact ``(N, H, W)`` masks of the scene's moving boxes at scene frames ``frame_indices`` seen from ``w2c``."""
    masks = []
    for i, f in enumerate(frame_indices):
        moved = copy.copy(scene)
        # render() places moving boxes by the frame's index in its trajectory: shift them to frame f.
        moved.boxes = [copy.copy(b) for b in scene.boxes]
        for box in moved.boxes:
            if box.velocity is not None:
                box.lo, box.hi = box.at(f)
        masks.append(
            render(moved, intrinsics.double(), w2c[i : i + 1].double(), height, width).dynamic_mask[0]
        )
    return torch.stack(masks)


def procedural_segmenter(
    scene: Scene, w2c: torch.Tensor, intrinsics: torch.Tensor, frame_indices: Sequence[int]
) -> DynamicSegmenter:
    """Hook for a clip generated along ``w2c`` at scene frames ``frame_indices`` (one per frame)."""

    def segment(frames: torch.Tensor) -> torch.Tensor:
        if frames.shape[0] != len(frame_indices):
            raise ValueError(f"segmenter built for {len(frame_indices)} frames, got {frames.shape[0]}")
        return procedural_dynamic_masks(scene, w2c, intrinsics, frame_indices, *frames.shape[-2:])

    return segment
