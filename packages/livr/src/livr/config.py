"""Configs for the LIVR model and trainer; defaults are the paper's values.

Presets: ``paper`` (single task: 4 + 6 epochs), ``multitask`` (2 + 3 epochs) and ``tiny``
(a CPU smoke run on a generated tiny backbone and a synthetic counting task).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal


@dataclass
class ModelConfig:
    """Which backbone to wrap and how (latents, LoRA, attention backend)."""

    backbone: str = "qwen2_5_vl"
    """backbone adapter name: ``qwen2_5_vl``, ``qwen3_vl`` or ``llava_onevision1_5`` (all native, no remote code)."""
    model_id: str | None = None
    """hub id or local folder of the base model; None uses the backbone's default hub id."""
    num_latents: int = 16
    """K, the number of latent tokens appended after the assistant header (paper: 16)."""
    lora_r: int = 16
    """LoRA rank on the language model's attention and MLP projections."""
    lora_alpha: int = 32
    """LoRA alpha."""
    lora_dropout: float = 0.05
    """LoRA dropout."""
    mask_route: Literal["registry", "dense"] = "registry"
    """how the bottleneck reaches the language model: ``registry`` = latentforge's attention function
    registered in transformers (roles passed as keyword arguments, SDPA inside); ``dense`` = a 4-D mask
    passed as ``attention_mask`` to ``attn_implementation``."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    """attention backend of the vision tower, and of the language model with ``mask_route=dense``;
    flash_attention_2 cannot take the bottleneck mask and is refused."""
    stage1_without_latents: bool = False
    """allow stage 1 with no latent after the image (the answer is then blind to it): only the paper's
    "bottleneck mask without latents" ablation (``--method mask_no_latents``) sets it; otherwise a stage-1
    batch without latents is refused as the bug it usually is."""
    latent_init_seed: int = 0
    """seed of the latent rows' random initialisation."""
    min_pixels: int | None = None
    """image processor's minimum pixels per image (None: the checkpoint's value)."""
    max_pixels: int | None = None
    """image processor's maximum pixels per image (None: the checkpoint's value)."""
    trust_remote_code: bool = False
    """allow code shipped in a hub repo (tokenizer only; every backbone is a native class, and
    ``llava_onevision1_5`` refuses it because its hub code cannot carry the bottleneck roles)."""


@dataclass
class TrainConfig:
    """Two-stage LIVR training (or the Direct SFT baseline) on one dataset."""

    model: ModelConfig = field(default_factory=ModelConfig)
    method: Literal["livr", "direct_sft", "latents_no_mask", "mask_no_latents"] = "livr"
    """``livr``: stage 1 (bottleneck) then stage 2 (causal) with latents; ``direct_sft``: same LoRA, no
    latents, no mask, ``stage1_epochs + stage2_epochs`` epochs. ``latents_no_mask`` is the paper's
    ablation "latents without the bottleneck mask" (latents, causal mask in both stages);
    ``mask_no_latents`` its "bottleneck mask without latents" (K = 0: stage 1 blind to the image, then causal)."""
    data: str = "synthetic"
    """dataset folder holding ``train.jsonl`` / ``val.jsonl`` (see livr.data), or ``synthetic``."""
    synthetic_train: int = 32
    """number of generated training examples when ``data == "synthetic"``."""
    synthetic_val: int = 8
    """number of generated validation examples when ``data == "synthetic"``."""
    stage1_epochs: int = 4
    """epochs of stage 1 (bottleneck mask)."""
    stage2_epochs: int = 6
    """epochs of stage 2 (causal mask, latents kept)."""
    lr: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay (LoRA matrices only; latent rows are kept out of it)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.999
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    batch_size: int = 1
    """per-device micro-batch size."""
    grad_accum: int = 8
    """gradient accumulation steps (total over all ranks)."""
    warmup_ratio: float = 0.05
    """fraction of each stage's optimizer steps spent in linear warmup before cosine decay."""
    max_grad_norm: float | None = None
    """gradient clipping (the paper reports none)."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """parameter dtype; auto = bfloat16 on GPU, float32 on CPU."""
    gradient_checkpointing: bool | None = None
    """None: on for GPU, off for CPU."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """multi-GPU strategy under latentforge-launch."""
    save_every: int = 0
    """optimizer steps between resumable checkpoints (0: only at the end of each epoch)."""
    max_steps: int | None = None
    """stop after this many optimizer steps in total (for smoke tests and resume tests)."""
    seed: int = 1
    """seed for data order, LoRA init and dropout."""
    exp_name: str = "livr"
    """experiment name used in the run folder name."""
    runs_root: str = "runs"
    """root folder for run folders (``<root>/livr/livr__<exp>__<seed>__<time>``)."""
    run_dir: str | None = None
    """explicit run folder (set to resume an interrupted run)."""
    resume: bool = True
    """resume from the run folder's latest checkpoint when there is one."""


def paper_preset() -> TrainConfig:
    return TrainConfig()


def multitask_preset() -> TrainConfig:
    return TrainConfig(stage1_epochs=2, stage2_epochs=3, exp_name="livr-multitask")


def tiny_preset() -> TrainConfig:
    """CPU smoke run: needs ``model.model_id`` pointing at a tiny backbone folder (``livr make-tiny``)."""
    return TrainConfig(
        model=replace(ModelConfig(), num_latents=4, lora_dropout=0.0),
        stage1_epochs=1,
        stage2_epochs=1,
        grad_accum=2,
        lr=1e-3,
        synthetic_train=8,
        synthetic_val=4,
        exp_name="tiny",
    )


PRESETS = {"paper": paper_preset, "multitask": multitask_preset, "tiny": tiny_preset}
