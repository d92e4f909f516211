"""The ant-pinpad MuJoCo model: gymnasium's Ant-v5 ant on a G x G floor of coloured tiles.

The XML is generated from gymnasium's own ``ant.xml`` (so the robot is exactly Ant-v5's) and
adds one flat tile per cell, ``num_walls`` wall markers, a solid fence around the arena and a
top-down camera. Tiles and wall markers do not collide: a colour is visited and a wall is hit
when the torso centre enters the cell (paper App. A.2); the env moves and recolours them at
every reset through ``model.geom_pos`` / ``model.geom_rgba``, so one compiled model serves
all layouts.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import gymnasium

ANT_XML = Path(os.path.dirname(gymnasium.__file__)) / "envs" / "mujoco" / "assets" / "ant.xml"
TILE_RGBA = "0.85 0.85 0.85 1"
FENCE_HEIGHT = 0.5


def _fmt(*values: float) -> str:
    return " ".join(f"{v:g}" for v in values)


def ant_pinpad_xml(grid_size: int = 4, cell_size: float = 2.0, num_walls: int = 1) -> str:
    """The model as an XML string (write it to a file for ``Ant-v5``'s ``xml_file``)."""
    if not ANT_XML.is_file():
        raise FileNotFoundError(
            f"{ANT_XML}: gymnasium's ant model is missing (is gymnasium[mujoco] installed?)"
        )
    root = ET.fromstring(ANT_XML.read_text())
    world = root.find("worldbody")
    if world is None:
        raise ValueError(f"{ANT_XML}: no <worldbody>")
    half = grid_size * cell_size / 2
    floor = world.find("geom[@name='floor']")
    if floor is not None:
        floor.set("size", _fmt(half + 2, half + 2, 40))
    tile = cell_size / 2 * 0.96  # a thin seam shows the cell borders
    for k in range(grid_size * grid_size):
        row, col = divmod(k, grid_size)
        x, y = (col + 0.5) * cell_size - half, half - (row + 0.5) * cell_size
        ET.SubElement(world, "geom", name=f"tile_{k}", type="box", pos=_fmt(x, y, 0.001), size=_fmt(tile, tile, 0.001),
                      rgba=TILE_RGBA, contype="0", conaffinity="0")  # fmt: skip
    for k in range(num_walls):
        ET.SubElement(world, "geom", name=f"wall_{k}", type="box", pos=_fmt(0, 0, 0.15),
                      size=_fmt(cell_size / 2, cell_size / 2, 0.15), rgba="0.2 0.2 0.2 0.6",
                      contype="0", conaffinity="0")  # fmt: skip
    # A solid fence keeps the ant inside the grid (the paper does not say what lies beyond it).
    for name, (x, y, sx, sy) in {
        "fence_n": (0, half + 0.1, half + 0.2, 0.1),
        "fence_s": (0, -half - 0.1, half + 0.2, 0.1),
        "fence_e": (half + 0.1, 0, 0.1, half + 0.2),
        "fence_w": (-half - 0.1, 0, 0.1, half + 0.2),
    }.items():
        ET.SubElement(world, "geom", name=name, type="box", pos=_fmt(x, y, FENCE_HEIGHT / 2),
                      size=_fmt(sx, sy, FENCE_HEIGHT / 2), rgba="0.4 0.3 0.2 1", contype="1", conaffinity="1")  # fmt: skip
    ET.SubElement(
        world, "camera", name="overview", pos=_fmt(0, 0, 2.6 * half), xyaxes="1 0 0 0 1 0", fovy="45"
    )
    return ET.tostring(root, encoding="unicode")
