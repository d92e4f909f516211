"""Named camera trajectories for generation: ``orbit``, ``forward``, ``pan`` and ``loop`` (return to start).

Each preset is a motion relative to a start camera (``start_w2c``, identity by default), so
it can continue from wherever the previous clip ended. Output: ``(F, 4, 4)`` float64 OpenCV
world-to-camera matrices (+z forward, x right, y down); frame 0 is the start camera.
Distances are world units (metres for real scenes; procedural rooms are 4-7 units wide).
"""

from __future__ import annotations

import math

import torch

PRESETS = ("orbit", "forward", "pan", "loop")


def _yaw(angle: float) -> torch.Tensor:
    """Rotation about the camera's vertical (y, pointing down) axis; positive turns right."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)


def offset_poses(w2c: torch.Tensor, degrees: float, shift: float) -> torch.Tensor:
    """``(..., 4, 4)`` cameras turned ``degrees`` about their own y axis and moved by ``shift`` along each of
    their axes: a requested trajectory deliberately off the true one, so that a SLAM estimate cannot
    pass by copying the request (tests, ``benchmarks/measure_slam.py``)."""
    turn = _yaw(math.radians(degrees))
    out = w2c.double().clone()
    out[..., :3, :3] = turn @ out[..., :3, :3]
    out[..., :3, 3] = out[..., :3, 3] @ turn.T + shift
    return out


def _compose(
    start_w2c: torch.Tensor | None, rotations: list[torch.Tensor], centres: list[torch.Tensor]
) -> torch.Tensor:
    """Poses given in the start camera's frame (camera-to-start rotation and centre) -> world w2c."""
    start_c2w = (
        torch.eye(4, dtype=torch.float64) if start_w2c is None else torch.linalg.inv(start_w2c.double())
    )
    out = []
    for rot, centre in zip(rotations, centres, strict=True):
        rel = torch.eye(4, dtype=torch.float64)
        rel[:3, :3], rel[:3, 3] = rot, centre
        out.append(torch.linalg.inv(start_c2w @ rel))
    return torch.stack(out)


def orbit(
    num_frames: int, *, radius: float = 1.5, angle_degrees: float = 60.0, start_w2c=None
) -> torch.Tensor:
    """Circle ``angle_degrees`` around the point ``radius`` ahead of the start camera, looking at it."""
    rots, centres = [], []
    for t in _times(num_frames):
        a = math.radians(angle_degrees) * t
        rots.append(_yaw(-a))
        centres.append(
            torch.tensor([radius * math.sin(a), 0.0, radius * (1 - math.cos(a))], dtype=torch.float64)
        )
    return _compose(start_w2c, rots, centres)


def forward(num_frames: int, *, distance: float = 1.0, start_w2c=None) -> torch.Tensor:
    """Dolly ``distance`` straight ahead."""
    centres = [torch.tensor([0.0, 0.0, distance * t], dtype=torch.float64) for t in _times(num_frames)]
    return _compose(start_w2c, [torch.eye(3, dtype=torch.float64)] * num_frames, centres)


def pan(num_frames: int, *, angle_degrees: float = 45.0, start_w2c=None) -> torch.Tensor:
    """Turn in place by ``angle_degrees`` (positive: to the right)."""
    rots = [_yaw(math.radians(angle_degrees) * t) for t in _times(num_frames)]
    return _compose(start_w2c, rots, [torch.zeros(3, dtype=torch.float64)] * num_frames)


def loop(
    num_frames: int, *, radius: float = 0.5, angle_degrees: float = 60.0, start_w2c=None
) -> torch.Tensor:
    """A closed loop: the camera drives a circle of ``radius`` while looking up to ``angle_degrees`` away
    and back, so the last frame is the first one again (the closed-loop revisit test)."""
    rots, centres = [], []
    for t in _times(num_frames):
        a = 2 * math.pi * t
        rots.append(_yaw(math.radians(angle_degrees) * math.sin(a)))
        centres.append(
            torch.tensor([radius * (1 - math.cos(a)), 0.0, radius * math.sin(a)], dtype=torch.float64)
        )
    return _compose(start_w2c, rots, centres)


def _times(num_frames: int) -> list[float]:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return [i / max(num_frames - 1, 1) for i in range(num_frames)]


def preset_trajectory(
    name: str, num_frames: int, *, start_w2c: torch.Tensor | None = None, **params
) -> torch.Tensor:
    """``(F, 4, 4)`` w2c of the named preset (``orbit``, ``forward``, ``pan``, ``loop``) from ``start_w2c``."""
    makers = {"orbit": orbit, "forward": forward, "pan": pan, "loop": loop}
    if name not in makers:
        raise ValueError(f"unknown trajectory preset {name!r}; choose one of {', '.join(PRESETS)}")
    return makers[name](num_frames, start_w2c=start_w2c, **params)
