"""Backbone adapters: one module per vision-language model family."""

from livr.backbones.base import BackboneAdapter
from livr.backbones.registry import BACKBONES, backbone_for_model_type, get_backbone

__all__ = ["BACKBONES", "BackboneAdapter", "backbone_for_model_type", "get_backbone"]
