"""The pinpad environments of the paper, registered under the ``internal_rl/`` namespace.

Call :func:`register_envs` once, then ``gymnasium.make("internal_rl/GridPinpad-v0",
task_set="pretrain")`` or ``"internal_rl/AntPinpad-v0"``. Registration is explicit (not an
import side effect) so importing the package never mutates gymnasium's global registry.
"""

from __future__ import annotations

import gymnasium as gym

GRID_ID = "internal_rl/GridPinpad-v0"
ANT_ID = "internal_rl/AntPinpad-v0"


def register_envs() -> None:
    """Register both pinpad envs with gymnasium (idempotent)."""
    # The envs count their own horizon so that ``info`` can name the timeout; no TimeLimit.
    if GRID_ID not in gym.registry:
        gym.register(GRID_ID, entry_point="internal_rl.envs.grid:GridPinpadEnv")
    if ANT_ID not in gym.registry:
        gym.register(ANT_ID, entry_point="internal_rl.envs.ant:AntPinpadEnv")


__all__ = ["ANT_ID", "GRID_ID", "register_envs"]
