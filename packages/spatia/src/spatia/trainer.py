"""Two-stage flow-matching training of the Spatia transformer (paper Sec. 4).

Stage 1 trains the control branch (patch embedding + control blocks) with every main
weight frozen; stage 2 freezes the control branch too and trains LoRA adapters on the
main blocks' attention and feed-forward projections. Run it with::

    spatia train --config tiny                             # seconds on a CPU
    latentforge-launch --nproc 8 -m spatia.cli train       # paper scale (FSDP2, bf16)

Everything a run writes lives in ``runs/spatia/<run>/``: ``config.json``, ``metrics.jsonl``,
TensorBoard events, resumable ``checkpoints/`` (weights, optimizer, RNG: resuming gives the
same result as not stopping) and ``export/`` in diffusers' format (stage 1:
``transformer/`` via ``save_pretrained``; stage 2: ``lora/`` in Wan's pipeline LoRA format).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from peft import LoraConfig

from latentforge.checkpoint import load_checkpoint, save_checkpoint
from latentforge.distributed import (
    all_reduce_mean,
    get_logger,
    init_distributed,
    is_fsdp,
    unwrap_model,
    wrap_model,
)
from latentforge.runs import MetricsLogger, create_run_dir
from latentforge.seeding import seed_everything
from spatia.conditioning import FrameLayout, assemble_sequence, encode_control, encode_video, latent_frames
from spatia.config import DataConfig, TrainConfig
from spatia.data.clips import ClipSample
from spatia.flow_matching import flow_matching_loss, make_training_inputs
from spatia.models import SpatiaControlBlock, SpatiaTransformer3DModel
from spatia.networks import Networks, build_networks, encode_prompts

log = get_logger(__name__)

#: LoRA targets of stage 2: attention and FFN projections of the main blocks only (not ``vace_blocks``).
MAIN_BLOCK_LORA_TARGETS = (
    r"blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|blocks\.\d+\.ffn\.net\.(0\.proj|2)"
)


def configure_stage(
    model: SpatiaTransformer3DModel, stage: int, *, lora_rank: int = 64, lora_alpha: int = 64
) -> list[torch.nn.Parameter]:
    """Freeze what the stage keeps fixed and return the parameters it trains.

    Stage 0 (not in the paper; the tiny preset's stand-in for Wan2.2's video pretraining): every
    main-network weight, the control branch frozen (its zero projectors keep it silent). Stage 1:
    the control branch. Stage 2: new LoRA adapters on the main blocks (zero-initialised B, so the
    model's output is unchanged until they train).
    """
    model.requires_grad_(False)
    if stage == 0:
        control = {id(p) for p in model.control_parameters()}
        params = [p for p in model.parameters() if id(p) not in control]
    elif stage == 1:
        params = model.control_parameters()
    elif stage == 2:
        model.add_adapter(
            LoraConfig(
                r=lora_rank, lora_alpha=lora_alpha, target_modules=MAIN_BLOCK_LORA_TARGETS, lora_dropout=0.0
            )
        )
        model.requires_grad_(False)
        params = [p for n, p in model.named_parameters() if "lora_" in n]
    else:
        raise ValueError(f"stage must be 0, 1 or 2, got {stage}")
    for p in params:
        p.requires_grad_(True)
    return params


@dataclass
class EncodedBatch:
    """Transformer inputs of a batch, before noising."""

    latents: torch.Tensor  # (B, C, K + h + n, H, W)
    control: torch.Tensor  # (B, Cc, K + h + n, H, W)
    text: torch.Tensor  # (B, L, D)
    layout: FrameLayout


@torch.no_grad()
def encode_samples(networks: Networks, samples: list[ClipSample], device: torch.device) -> EncodedBatch:
    """VAE-encode clips, memory renders, holes masks and reference frames; embed the prompts."""
    if len({(s.num_history_frames, s.references.shape[1], s.video.shape) for s in samples}) != 1:
        raise ValueError("a batch needs clips of one shape, history length and reference count")
    vae = networks.vae
    video = torch.stack([s.video for s in samples]).to(device)
    clip_latents = encode_video(vae, video)
    control = encode_control(
        vae,
        torch.stack([s.render for s in samples]).to(device),
        torch.stack([s.holes for s in samples]).to(device),
    )
    num_history = latent_frames(samples[0].num_history_frames, vae.config.scale_factor_temporal)
    refs = None
    k = samples[0].references.shape[1]
    if k:
        frames = torch.stack([s.references for s in samples]).to(device)  # (B, 3, K, H, W)
        b, _, _, h, w = frames.shape
        per_frame = encode_video(vae, frames.permute(0, 2, 1, 3, 4).reshape(b * k, 3, 1, h, w))
        refs = per_frame.reshape(b, k, *per_frame.shape[1:]).squeeze(3).permute(0, 2, 1, 3, 4)
    latents, control, layout = assemble_sequence(clip_latents, refs, control, num_history)
    text = encode_prompts(networks, [s.prompt for s in samples], device)
    return EncodedBatch(latents, control, text, layout)


def training_loss(model: torch.nn.Module, batch: EncodedBatch, config: TrainConfig) -> torch.Tensor:
    """Flow-matching loss of one batch (noise draws come from torch's global generator)."""
    patch = tuple(unwrap_model(model).config.patch_size)
    inputs = make_training_inputs(
        batch.latents,
        batch.layout,
        patch,
        shift=config.timestep_shift,
        history_noise_max=config.history_noise_max,
    )
    autocast = (
        torch.autocast(batch.latents.device.type, dtype=torch.bfloat16)
        if config.mixed_precision == "bf16"
        else contextlib.nullcontext()
    )
    with autocast:
        prediction = model(
            inputs.latents,
            inputs.timesteps,
            batch.text,
            control_hidden_states=batch.control,
            return_dict=False,
        )[0]
    return flow_matching_loss(prediction, inputs)


def build_dataset(data: DataConfig, seed: int):
    """The clip source the config names."""
    if data.source == "procedural":
        from spatia.data.procedural import ProceduralClips

        return ProceduralClips(
            num_scenes=data.num_scenes,
            height=data.height,
            width=data.width,
            first_clip_frames=data.first_clip_frames,
            history_frames=data.history_frames,
            new_frames=data.new_frames,
            num_reference_frames=data.num_reference_frames,
            dynamic_object=data.dynamic_object,
            voxel_size=data.memory_voxel_size,
            cell_range=data.cell_range,
            patterns=data.patterns,
            supersample=data.supersample,
            prompt=data.prompt,
            seed=seed,
            clips_per_scene=data.clips_per_scene,
        )
    raise NotImplementedError(
        f"data.source={data.source!r}: real videos need their memory reconstructed (pycolmap, part 2 of the "
        "issue); the loaders in spatia.data.realestate10k / spatia.data.spatialvid read frames and cameras. "
        "Use --data.source procedural for now."
    )


class BatchSampler:
    """Draws homogeneous batches (all first clips or all later clips) and caches each clip's encoding.

    Draws use torch's global generator, which checkpoints restore, so a resumed run sees
    the same batches; a clip is a pure function of its index and kind and its encoding is
    deterministic (posterior mode), so caching per clip is exact.
    """

    def __init__(self, dataset, networks: Networks, data: DataConfig, device: torch.device, cache: bool):
        self.dataset, self.networks, self.data, self.device = dataset, networks, data, device
        self._cache: dict[tuple[int, bool], EncodedBatch] | None = {} if cache else None
        if data.first_clip_frames != data.history_frames + data.new_frames:
            # Keeping both kinds the same length lets one latent shape serve every batch (81 = 9 + 72).
            raise ValueError(
                f"first_clip_frames ({data.first_clip_frames}) must equal history_frames + new_frames "
                f"({data.history_frames} + {data.new_frames})"
            )

    def _encoded(self, index: int, first: bool) -> EncodedBatch:
        key = (index, first)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        batch = encode_samples(self.networks, [self.dataset.sample(index, first)], self.device)
        if self._cache is not None:
            self._cache[key] = batch
        return batch

    def next(self, batch_size: int) -> EncodedBatch:
        first = bool(torch.rand(()) < self.data.first_clip_probability)
        indices = [int(i) for i in torch.randint(0, len(self.dataset), (batch_size,))]
        if self._cache is None:
            return encode_samples(
                self.networks, [self.dataset.sample(i, first) for i in indices], self.device
            )
        parts = [self._encoded(i, first) for i in indices]
        return EncodedBatch(
            torch.cat([p.latents for p in parts]),
            torch.cat([p.control for p in parts]),
            torch.cat([p.text for p in parts]),
            parts[0].layout,
        )


def train(config: TrainConfig, *, run_dir: Path | None = None) -> Path:
    """Run (or resume) a training stage; returns the run folder."""
    env = init_distributed()
    seed_everything(config.seed)
    if config.batch_size % env.world_size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by {env.world_size} ranks")
    dtype = torch.bfloat16 if config.mixed_precision == "bf16" else torch.float32
    dataset = build_dataset(config.data, config.seed)  # before the networks: fail fast on bad data options
    networks = build_networks(config.model, stage1_checkpoint=config.stage1_checkpoint, dtype=torch.float32)
    model = networks.transformer
    params = configure_stage(model, config.stage, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha)
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.to(env.device).train()
    networks.vae.to(env.device)
    networks.text_encoder.to(env.device)
    model = wrap_model(
        model,
        env,
        config.strategy,
        shard_modules=(WanTransformerBlock, SpatiaControlBlock),
        param_dtype=dtype if config.strategy == "fsdp" and dtype != torch.float32 else None,
    )
    # FSDP2 swaps parameters for sharded ones: take the trainable set from the wrapped model.
    del params
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)

    if config.resume is not None:
        run_dir = Path(config.resume)
        run_dir = run_dir.parent if run_dir.name == "checkpoints" else run_dir
    elif run_dir is None:
        run_dir = create_run_dir(config.runs_root, "spatia", config.exp_name, config.seed, config)
    ckpt_root = run_dir / "checkpoints"
    start = 0
    if config.resume is not None:
        state = load_checkpoint(ckpt_root, model=model, optimizer=optimizer)
        start = state.step
        log.info("resumed %s at step %d", state.path, start)

    sampler = BatchSampler(
        dataset,
        networks,
        config.data,
        env.device,
        cache=config.data.source == "procedural" and config.model.pretrained == "tiny",
    )
    per_rank = config.batch_size // env.world_size
    with MetricsLogger(run_dir) as metrics:
        for step in metrics.progress(
            range(start, config.iterations),
            total=config.iterations,
            initial=start,
            desc=f"stage {config.stage}",
        ):
            batch = sampler.next(per_rank)
            loss = training_loss(model, batch, config)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            if done % config.log_every == 0 or done == config.iterations:
                metrics.log(
                    done,
                    **{
                        "losses/flow_matching": all_reduce_mean(loss.detach()),
                        "charts/grad_norm": grad_norm,
                        "charts/learning_rate": config.learning_rate,
                    },
                )
            if done % config.checkpoint_every == 0 or done == config.iterations:
                save_checkpoint(
                    ckpt_root, model=model, step=done, optimizer=optimizer, extra={"stage": config.stage}
                )
    full_state = _gather_full_state(model)  # collective under FSDP: every rank takes part
    if env.is_main:
        export_pretrained(unwrap_model(model), run_dir / "export", config.stage, state_dict=full_state)
    return run_dir


def _gather_full_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The unsharded state dict of an FSDP2 model (on CPU), None for an unsharded one."""
    if not is_fsdp(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def export_pretrained(
    model: SpatiaTransformer3DModel,
    out_dir: Path,
    stage: int,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Diffusers-format export: the whole transformer after stage 0 or 1, the LoRA after stage 2.

    The LoRA is written with Wan's pipeline LoRA format (keys under ``transformer.``), so
    ``WanPipeline.load_lora_weights`` and ``model.load_lora_adapter(path)`` both read it.
    ``state_dict`` is the gathered state of an FSDP-sharded ``model`` (whose own parameters
    are shards).
    """
    if stage == 0:
        # Stage 1 starts each control block from the pretrained main block at its layer (ControlNet's
        # initialisation, as from Wan2.2's blocks); the zero projectors keep the output unchanged.
        for block, layer in zip(model.vace_blocks, model.config.vace_layers, strict=True):
            block.load_state_dict(model.blocks[layer].state_dict(), strict=False)
    if stage in (0, 1):
        path = out_dir / "transformer"
        if state_dict is not None:
            full = SpatiaTransformer3DModel.from_config(model.config)
            full.load_state_dict(state_dict)
            model = full
        model.save_pretrained(path)
        return path
    from diffusers.loaders import WanLoraLoaderMixin
    from peft.utils import get_peft_model_state_dict

    path = out_dir / "lora"
    WanLoraLoaderMixin.save_lora_weights(
        path,
        transformer_lora_layers=get_peft_model_state_dict(model, state_dict=state_dict),
        transformer_lora_adapter_metadata=model.peft_config["default"].to_dict(),
    )
    return path
