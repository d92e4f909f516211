"""GPU kernels with exact CPU references.

Holds the masked bottleneck attention used by livr and the fused point-cloud
projection used by spatia (see the kernels issue); each kernel ships a plain-torch
``reference`` backend that is the ground truth its tests compare against.
"""

from latentforge.kernels.bottleneck_attention import bottleneck_attention
from latentforge.kernels.bottleneck_mask import bottleneck_block_mask, bottleneck_mask, bottleneck_mask_mod
from latentforge.kernels.projection import project_points
from latentforge.kernels.roles import Role
from latentforge.kernels.transformers_attention import bottleneck_roles, register_transformers_bottleneck

__all__ = [
    "Role",
    "bottleneck_attention",
    "bottleneck_block_mask",
    "bottleneck_mask",
    "bottleneck_mask_mod",
    "bottleneck_roles",
    "project_points",
    "register_transformers_bottleneck",
]
