"""Emergent temporal abstractions in autoregressive models enable hierarchical RL (arXiv 2512.20605)."""

__version__ = "0.1.0"
