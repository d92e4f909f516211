"""Backbone adapters by name."""

from __future__ import annotations

from livr.backbones.base import BackboneAdapter
from livr.backbones.llava_onevision1_5 import LlavaOneVision15Adapter
from livr.backbones.qwen2_5_vl import Qwen25VLAdapter
from livr.backbones.qwen3_vl import Qwen3VLAdapter

BACKBONES: dict[str, type[BackboneAdapter]] = {
    Qwen25VLAdapter.name: Qwen25VLAdapter,
    Qwen3VLAdapter.name: Qwen3VLAdapter,
    LlavaOneVision15Adapter.name: LlavaOneVision15Adapter,
}


def get_backbone(name: str) -> BackboneAdapter:
    """The adapter registered under ``name``."""
    try:
        return BACKBONES[name]()
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}") from None


def backbone_for_model_type(model_type: str) -> BackboneAdapter:
    """The adapter whose checkpoints have ``config.model_type == model_type``."""
    for cls in BACKBONES.values():
        if model_type in cls.model_types:
            return cls()
    raise ValueError(f"no livr backbone handles model_type {model_type!r}; known: {sorted(BACKBONES)}")
