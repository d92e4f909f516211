"""Latent Implicit Visual Reasoning (arXiv 2512.21218)."""

__version__ = "0.1.0"
