"""The unit every data source produces: one training clip with its memory condition."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ClipSample:
    """A clip of history + target frames, the memory rendered along it, and reference frames.

    Pixels are in [-1, 1]; ``render`` is the memory rendered into the clip's cameras and
    ``holes`` marks the pixels no memory point covers.
    """

    video: torch.Tensor  # (3, F, H, W): the first num_history_frames are context
    render: torch.Tensor  # (3, F, H, W)
    holes: torch.Tensor  # (F, H, W) bool
    references: torch.Tensor  # (3, K, H, W), K may be 0
    num_history_frames: int
    prompt: str
    intrinsics: torch.Tensor  # (F, 3, 3) pixels
    extrinsics_w2c: torch.Tensor  # (F, 4, 4) OpenCV

    def __post_init__(self) -> None:
        c, f, h, w = self.video.shape
        if c != 3:
            raise ValueError(f"video must be (3, F, H, W), got {tuple(self.video.shape)}")
        if self.render.shape != self.video.shape:
            raise ValueError(f"render {tuple(self.render.shape)} != video {tuple(self.video.shape)}")
        if self.holes.shape != (f, h, w):
            raise ValueError(f"holes {tuple(self.holes.shape)} != {(f, h, w)}")
        if self.references.ndim != 4 or self.references.shape[0] != 3 or self.references.shape[2:] != (h, w):
            raise ValueError(f"references must be (3, K, {h}, {w}), got {tuple(self.references.shape)}")
        if not 1 <= self.num_history_frames < f:
            raise ValueError(f"num_history_frames={self.num_history_frames} must be in [1, {f})")
