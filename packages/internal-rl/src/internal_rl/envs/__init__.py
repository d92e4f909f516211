"""The pinpad environments of the paper, registered under the ``internal_rl/`` namespace.

``import internal_rl`` registers them (as gymnasium plug-ins do, so that the module syntax
``gymnasium.make("internal_rl:internal_rl/GridPinpadSmall-v0")`` works too); then

    gymnasium.make("internal_rl/GridPinpad-v0", task_set="pretrain")       # App. A.1, 7 x 7
    gymnasium.make("internal_rl/GridPinpadSmall-v0", task_set="posttrain") # the CPU-sized grid
    gymnasium.make("internal_rl/AntPinpad-v0")                              # App. A.2

Any other member of the grid family: ``gymnasium.make("internal_rl/GridPinpad-v0",
variant=GridSpec(size=6, ...))`` (see :class:`internal_rl.envs.tasks.GridSpec`).
"""

from __future__ import annotations

import gymnasium as gym

GRID_ID = "internal_rl/GridPinpad-v0"
GRID_SMALL_ID = "internal_rl/GridPinpadSmall-v0"
ANT_ID = "internal_rl/AntPinpad-v0"


def register_envs() -> None:
    """Register the pinpad envs with gymnasium (idempotent; ``import internal_rl`` calls it)."""
    # The envs count their own horizon so that ``info`` can name the timeout; no TimeLimit.
    if GRID_ID not in gym.registry:
        gym.register(GRID_ID, entry_point="internal_rl.envs.grid:GridPinpadEnv")
    if GRID_SMALL_ID not in gym.registry:
        gym.register(
            GRID_SMALL_ID, entry_point="internal_rl.envs.grid:GridPinpadEnv", kwargs={"variant": "small"}
        )
    if ANT_ID not in gym.registry:
        gym.register(ANT_ID, entry_point="internal_rl.envs.ant:AntPinpadEnv")


__all__ = ["ANT_ID", "GRID_ID", "GRID_SMALL_ID", "register_envs"]
