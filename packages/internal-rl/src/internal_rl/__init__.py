"""Emergent temporal abstractions in autoregressive models enable hierarchical RL (arXiv 2512.20605).

Importing the package registers its gymnasium environments (``internal_rl/GridPinpad-v0``,
``internal_rl/GridPinpadSmall-v0``, ``internal_rl/AntPinpad-v0``), which is what
``gymnasium.make("internal_rl:<id>")`` expects of a plug-in module.
"""

from internal_rl.envs import register_envs

__version__ = "0.1.0"

register_envs()
