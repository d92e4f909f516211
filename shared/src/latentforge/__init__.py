"""latentforge: the layer the three paper packages share.

Nothing here is paper-specific. Submodules are imported explicitly so that
``import latentforge`` stays cheap:

- :mod:`latentforge.distributed`: torchrun-aware process groups, rank-aware logging,
  DDP / FSDP2 wrapping and the ``latentforge-launch`` entry point.
- :mod:`latentforge.kernels`: attention and point-cloud kernels with exact CPU references.
- :mod:`latentforge.checkpoint`: atomic safetensors checkpoints with optimizer and RNG state.
- :mod:`latentforge.runs`: run directories, JSONL + TensorBoard metrics, progress bars.
- :mod:`latentforge.seeding`: one call that seeds python, NumPy and torch (per rank).
"""

__version__ = "0.1.0"
