"""GPU kernels with exact CPU references.

Holds the masked bottleneck attention used by livr and the fused point-cloud
projection used by spatia (see the kernels issue); each kernel ships a plain-torch
``reference`` backend that is the ground truth its tests compare against.

- :mod:`.roles`: :class:`Role` (PROMPT, IMAGE, LATENT, ANSWER, PAD) and role validation.
- :mod:`.bottleneck_mask`: the LIVR mask as a dense ``(B, 1, Sq, S)`` bool tensor, a flex ``mask_mod`` and a
  ``BlockMask``; padding queries attend only to themselves, so no row is empty.
- :mod:`.bottleneck_attention`: :func:`bottleneck_attention` with ``reference`` (SDPA + dense mask), ``flex``
  and ``split`` backends; ``auto`` = split on CUDA for full-length calls (flex / reference when decoding),
  reference on CPU. The rule and what GPU numbers are owed: that module's docstring.
- :mod:`.bottleneck_split`: the bottleneck as two ``is_causal`` SDPA calls (with and without the image keys)
  merged row by row, no mask; exact forward and backward, any layout (padding, several images, batches of
  different layouts).
- :mod:`.transformers_attention`: :func:`register_transformers_bottleneck` (attention + mask registries;
  the route livr should use, reasons in that module; ``backend="auto"`` runs split on CUDA) and
  :func:`bottleneck_roles` for ``generate``.
- :mod:`.projection`: :func:`project_points` (OpenCV cameras, z-buffer, splat radius), ``reference`` in
  torch and ``fused`` in Triton (:mod:`.projection_triton`), bit-identical winners.

Benchmarks: ``python tools/bench.py --out benchmarks/results`` (``--quick`` for a smoke run).
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
