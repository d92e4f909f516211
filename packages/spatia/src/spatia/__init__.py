"""Spatia: video generation with updatable spatial memory (arXiv 2512.15716)."""

__version__ = "0.1.0"
