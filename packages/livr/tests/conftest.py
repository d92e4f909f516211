"""Tiny random-weight backbones, built once per test session (no network)."""

from __future__ import annotations

import pytest

from livr.tiny import make_tiny_backbone

BACKBONE_NAMES = ("qwen2_5_vl", "qwen3_vl", "llava_onevision1_5")


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny-backbones")
    return {name: str(make_tiny_backbone(name, root / name)) for name in BACKBONE_NAMES}
