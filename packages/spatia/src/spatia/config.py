"""Training configuration: the paper's values as defaults, plus a tiny CPU preset.

Paper facts (arXiv 2512.15716, Sec. 4 and the notes in ``shared/papers/spatia.md``):
Wan2.2-TI2V-5B backbone; stage 1 trains the control blocks 8,000 iterations with AdamW
lr 1e-5 and the main network frozen; stage 2 freezes them and trains LoRA rank 64 on the
main blocks for 5,000 iterations at lr 1e-4; batch 64; first clip 81 frames, later clips
72 new frames after 9 context frames; up to 7 reference frames; history noise t in [0, 50].
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal


@dataclass
class ModelConfig:
    """Which networks to build."""

    pretrained: str = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    """Diffusers-format Wan2.2 pipeline (hub id or local folder) for transformer, VAE and text encoder;
    "tiny" builds random tiny networks from configs (CPU, tests)."""
    control_layers: tuple[int, ...] = (0, 4, 8, 12, 16, 20, 24, 28)
    """Main layers that receive a control block's hint (one per group of four main blocks)."""
    init_control_from_main: bool = True
    """Start each control block from the main block at its layer (ControlNet-style)."""
    revision: str | None = None
    """Hub revision of ``pretrained`` (pin it for reproducible runs)."""
    vae: str | None = None
    """A VAE folder (``AutoencoderKLWan`` or ``spatia.models.TinyCausalVAE``) used instead of
    ``pretrained``'s; with "tiny", the tiny transformer's latent channels follow its ``z_dim``."""
    tiny_heads: int = 2
    """Tiny networks only: attention heads of the tiny transformer (head dim 12)."""
    tiny_ffn_dim: int = 32
    """Tiny networks only: feed-forward width of the tiny transformer."""
    tiny_patch: int = 2
    """Tiny networks only: spatial patch of the tiny transformer (Wan's is 2)."""


@dataclass
class DataConfig:
    """Where training clips come from and their shape."""

    source: Literal["procedural", "realestate10k", "spatialvid"] = "realestate10k"
    """Clip source: generated textured rooms (offline), RealEstate10K or SpatialVID-style folders."""
    root: str = "data/realestate10k"
    """Dataset root (camera files in ``<root>/<split>/*.txt`` and frames in ``<root>/frames/<id>``)."""
    split: str = "train"
    """Dataset split folder."""
    height: int = 704
    """Frame height in pixels (a multiple of the VAE's spatial factor times the patch size)."""
    width: int = 1280
    """Frame width in pixels."""
    first_clip_frames: int = 81
    """Frames of the first, image-conditioned clip."""
    new_frames: int = 72
    """New frames of every later clip."""
    history_frames: int = 9
    """Frames of the preceding clip given as clean context (3 latent frames)."""
    num_reference_frames: int = 7
    """Most reference frames retrieved from earlier clips by 3D overlap with the target view."""
    first_clip_probability: float = 0.1
    """Share of training clips that are first clips (image-conditioned, no history)."""
    prompt: str = "a camera moves through a room"
    """Caption used when a source has none (RealEstate10K ships no captions)."""
    num_scenes: int = 64
    """Procedural source: how many scenes to generate."""
    clips_per_scene: int = 1
    """Procedural source: distinct clips (start frames) cut from each scene's trajectory, per clip kind."""
    dynamic_object: bool = True
    """Procedural source: add a moving box (kept out of the memory, as the paper does)."""
    cell_range: tuple[float, float] = (0.3, 0.9)
    """Procedural source: texture cell sizes (world units)."""
    patterns: tuple[int, ...] = (0, 1)
    """Procedural source: texture patterns drawn per face (0 checker, 1 stripes, 2 tiles)."""
    supersample: int = 1
    """Procedural source: anti-aliasing rays per pixel side (1: one ray per pixel)."""
    memory_voxel_size: float = 0.01
    """Voxel of the spatial memory that makes the training clips' control input (world units; the
    paper's 1 cm). Generation must fuse with the same value (``spatia reproduce`` passes it on)."""


@dataclass
class TrainConfig:
    """``spatia train``: flow-matching training of the control branch (stage 1) or LoRA (stage 2)."""

    exp_name: str = "spatia"
    """Experiment name in the run folder's name."""
    seed: int = 1
    """Seed for python, NumPy and torch."""
    stage: Literal[0, 1, 2] = 1
    """1: train the control blocks, main network frozen; 2: freeze them, LoRA on the main blocks;
    0 (tiny networks, not in the paper): pretrain the random main network, standing in for Wan2.2's pretraining."""
    iterations: int = 8000
    """Optimizer steps (paper: 8,000 in stage 1, 5,000 in stage 2)."""
    learning_rate: float = 1e-5
    """AdamW learning rate (paper: 1e-5 in stage 1, 1e-4 in stage 2)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    batch_size: int = 64
    """Global batch (split over the ranks latentforge-launch starts)."""
    lora_rank: int = 64
    """Stage 2 LoRA rank on the main blocks' attention and FFN projections."""
    lora_alpha: int = 64
    """Stage 2 LoRA alpha."""
    stage1_checkpoint: str | None = None
    """Stage 2: the stage-1 export folder (``.../export/transformer``) whose control blocks are frozen;
    stage 1: a stage-0 export to start from (tiny networks)."""
    timestep_shift: float = 5.0
    """Shift of the flow-matching sigma distribution (Wan2.2-TI2V-5B samples with flow shift 5.0)."""
    history_noise_max: float = 50.0
    """History latents get noise t ~ U[0, this] of 1000 in training; their timestep token stays 0."""
    mixed_precision: Literal["bf16", "no"] = "bf16"
    """Autocast dtype for the transformer (bf16 at paper scale)."""
    gradient_checkpointing: bool = True
    """Recompute block activations in the backward pass."""
    strategy: Literal["ddp", "fsdp"] = "fsdp"
    """How latentforge wraps the transformer across ranks."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    log_every: int = 10
    """Steps between metric records."""
    checkpoint_every: int = 500
    """Steps between resumable checkpoints."""
    runs_root: str = "runs"
    """Root of run folders (``runs/spatia/<run>``)."""
    resume: str | None = None
    """Run folder (or its ``checkpoints`` folder) to resume from."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)


def paper_config() -> TrainConfig:
    """Stage 1 at paper scale (stage 2: ``--stage 2 --iterations 5000 --learning-rate 1e-4``)."""
    return TrainConfig()


def tiny_config() -> TrainConfig:
    """Seconds on a CPU: tiny random networks, procedural rooms at 32x32, 9-frame clips."""
    return replace(
        TrainConfig(),
        exp_name="tiny",
        iterations=20,
        learning_rate=1e-3,
        batch_size=2,
        lora_rank=4,
        lora_alpha=4,
        mixed_precision="no",
        gradient_checkpointing=False,
        strategy="ddp",
        log_every=1,
        checkpoint_every=10,
        model=ModelConfig(pretrained="tiny", control_layers=(0, 2)),
        data=DataConfig(
            source="procedural",
            root="",
            height=32,
            width=32,
            first_clip_frames=9,
            new_frames=4,
            history_frames=5,
            num_reference_frames=2,
            num_scenes=2,
            memory_voxel_size=0.02,
        ),
    )


PRESETS = {"paper": paper_config, "tiny": tiny_config}
