"""Spatia's networks, built on diffusers' Wan classes."""

from spatia.models.transformer_spatia import (
    SPATIA_CONTROL_LAYERS,
    WAN22_TI2V_5B,
    SpatiaControlBlock,
    SpatiaTransformer3DModel,
)

__all__ = ["SPATIA_CONTROL_LAYERS", "WAN22_TI2V_5B", "SpatiaControlBlock", "SpatiaTransformer3DModel"]
