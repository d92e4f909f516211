"""Facts about the workspace layout shared by the cross-package tests."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# folder -> (distribution, import name, console script)
MEMBERS = {
    "shared": ("latentforge", "latentforge", "latentforge-launch"),
    "packages/livr": ("latentforge-livr", "livr", "livr"),
    "packages/internal-rl": ("latentforge-internal-rl", "internal_rl", "internal-rl"),
    "packages/spatia": ("latentforge-spatia", "spatia", "spatia"),
}
PAPER_IMPORTS = {"livr", "internal_rl", "spatia"}
