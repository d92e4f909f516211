"""The two-stage LIVR trainer (and the Direct SFT baseline in the same loop).

Stage 1 trains with the bottleneck mask, stage 2 with the causal mask, both on the answer
NLL; Direct SFT is one causal stage of ``stage1_epochs + stage2_epochs`` epochs without
latents. Each stage gets a fresh AdamW and a 5%-warmup cosine schedule over its own steps.
After every epoch the validation NLL is measured and the best model of the stage is written
to ``<run>/best-stage<N>/`` (the last stage's also to ``<run>/best/``), loadable with
``LivrModel.from_pretrained``. Resumable checkpoints (trainable weights, optimizer,
scheduler, RNG, position in the data) go to ``<run>/checkpoints/`` through latentforge.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from latentforge.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from latentforge.distributed import all_reduce_mean, get_logger, grad_accum_steps_per_rank, init_distributed
from latentforge.runs import MetricsLogger, create_run_dir
from latentforge.seeding import seed_everything
from livr.config import TrainConfig
from livr.data import Example, load_examples, synthetic_counting
from livr.model import LivrModel

log = get_logger(__name__)


@dataclass(frozen=True)
class Stage:
    mask: int  # 1 = bottleneck, 2 = causal
    epochs: int


def stages_for(cfg: TrainConfig) -> list[Stage]:
    """LIVR: bottleneck then causal; Direct SFT: one causal stage with the same total epochs."""
    if cfg.method == "direct_sft":
        return [Stage(2, cfg.stage1_epochs + cfg.stage2_epochs)]
    if cfg.method == "latents_no_mask":
        return [s for s in (Stage(2, cfg.stage1_epochs), Stage(2, cfg.stage2_epochs)) if s.epochs > 0]
    # "mask_no_latents" keeps LIVR's two stages with K = 0 (set in train()): stage 1 is then blind to the image.
    return [s for s in (Stage(1, cfg.stage1_epochs), Stage(2, cfg.stage2_epochs)) if s.epochs > 0]


class TrainableState(nn.Module):
    """The trainable parameters (LoRA, latent rows) as one module, so checkpoints stay small.

    It holds the very same Parameter objects, so loading into it updates the model in place.
    """

    def __init__(self, named: list[tuple[str, nn.Parameter]]):
        super().__init__()
        self.params = nn.ParameterDict({name.replace(".", "__"): p for name, p in named})


def load_data(cfg: TrainConfig) -> tuple[list[Example], list[Example]]:
    if cfg.data == "synthetic":
        return (
            synthetic_counting(cfg.synthetic_train, seed=cfg.seed),
            synthetic_counting(cfg.synthetic_val, seed=cfg.seed + 10_000),
        )
    return load_examples(cfg.data, "train"), load_examples(cfg.data, "val")


def epoch_order(n: int, seed: int, stage_index: int, epoch: int) -> list[int]:
    """Data order of one epoch, a pure function of its position so that a resume replays it."""
    order = list(range(n))
    random.Random(f"{seed}-{stage_index}-{epoch}").shuffle(order)
    return order


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


@torch.no_grad()
def evaluate_nll(livr: LivrModel, examples: list[Example], stage: int, batch_size: int = 1) -> float:
    """Mean per-example answer NLL under the stage's mask."""
    was_training = livr.training
    livr.eval()
    losses = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        for ex in chunk:  # one at a time: the NLL is a per-example mean
            losses.append(float(livr(livr.encode([ex]), stage).loss))
    livr.train(was_training)
    value = torch.tensor(sum(losses) / max(len(losses), 1))
    return float(all_reduce_mean(value))


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns the run folder."""
    env = init_distributed()
    seed_everything(cfg.seed, per_rank=False)
    model_cfg = cfg.model
    if cfg.method == "direct_sft":
        model_cfg = dataclasses.replace(model_cfg, num_latents=0)
    elif cfg.method == "mask_no_latents":
        model_cfg = dataclasses.replace(model_cfg, num_latents=0, stage1_without_latents=True)
    elif model_cfg.num_latents <= 0:
        raise ValueError("method 'livr' needs num_latents > 0 (stage 1 routes the image through them)")
    train_set, val_set = load_data(cfg)
    if not train_set:
        raise ValueError("the training set is empty")
    dtype = resolve_dtype(cfg.dtype, env.device)
    livr = LivrModel.from_backbone(model_cfg, dtype=dtype)
    livr.to(env.device)
    grad_ckpt = (
        cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else env.device.type == "cuda"
    )
    if grad_ckpt:
        livr.base.activation_checkpointing_enable({"use_reentrant": False})
    if env.world_size > 1:
        from latentforge.distributed import wrap_model

        livr.model = wrap_model(livr.model, env, strategy=cfg.strategy)
    state_module = TrainableState(livr.trainable_named_parameters())

    run_dir = (
        Path(cfg.run_dir)
        if cfg.run_dir
        else create_run_dir(cfg.runs_root, "livr", cfg.exp_name, cfg.seed, cfg)
    )
    if cfg.run_dir:
        create_run_dir(
            run_dir.parent.parent, run_dir.parent.name, cfg.exp_name, cfg.seed, cfg, name=run_dir.name
        )
    ckpt_root = run_dir / "checkpoints"
    plan = stages_for(cfg)
    accum = grad_accum_steps_per_rank(cfg.grad_accum, env.world_size)
    shard = list(range(env.rank, len(train_set), env.world_size))
    micro_per_epoch = math.ceil(len(shard) / cfg.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / accum)

    position = {"stage_index": 0, "epoch": 0, "micro": 0, "global_step": 0, "best_val": None}
    found = latest_checkpoint(ckpt_root) if cfg.resume else None
    if found is not None:
        position = read_position(found)

    with MetricsLogger(run_dir) as metrics:
        metrics.log_text("config", f"```\n{dataclasses.asdict(cfg)}\n```")
        for stage_index in range(position["stage_index"], len(plan)):
            stage = plan[stage_index]
            total_steps = steps_per_epoch * stage.epochs
            optimizer = torch.optim.AdamW(
                livr.parameter_groups(cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps
            )
            scheduler = get_cosine_schedule_with_warmup(
                optimizer, round(cfg.warmup_ratio * total_steps), max(total_steps, 1)
            )
            if found is not None:
                load_checkpoint(found, model=state_module, optimizer=optimizer, scheduler=scheduler)
                log.info("resumed from %s at %s", found, position)
                found = None
            else:
                position.update(stage_index=stage_index, epoch=0, micro=0, best_val=None)

            for epoch in range(position["epoch"], stage.epochs):
                order = epoch_order(len(shard), cfg.seed, stage_index, epoch)
                micro_batches = [
                    [train_set[shard[j]] for j in order[k : k + cfg.batch_size]]
                    for k in range(0, len(order), cfg.batch_size)
                ]
                livr.train()
                start = position["micro"] if position["epoch"] == epoch else 0
                bar = metrics.progress(
                    range(start, len(micro_batches)),
                    total=len(micro_batches),
                    initial=start,
                    desc=f"stage {stage.mask} epoch {epoch + 1}/{stage.epochs}",
                )
                running = 0.0
                for micro in bar:
                    batch = livr.encode(micro_batches[micro])
                    loss = livr(batch, stage.mask).loss
                    (loss / accum).backward()
                    running += float(loss.detach()) / accum
                    last_in_epoch = micro == len(micro_batches) - 1
                    if (micro + 1) % accum and not last_in_epoch:
                        continue
                    if cfg.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(state_module.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    position.update(epoch=epoch, micro=micro + 1, global_step=position["global_step"] + 1)
                    metrics.log(
                        position["global_step"],
                        **{
                            "losses/nll": running,
                            "charts/lr": scheduler.get_last_lr()[0],
                            "charts/stage": stage.mask,
                        },
                    )
                    running = 0.0
                    stop = cfg.max_steps is not None and position["global_step"] >= cfg.max_steps
                    if stop or (cfg.save_every and position["global_step"] % cfg.save_every == 0):
                        _save(ckpt_root, state_module, optimizer, scheduler, position)
                    if stop:
                        log.info("stopping at max_steps=%d", cfg.max_steps)
                        return run_dir
                val = evaluate_nll(livr, val_set, stage.mask) if val_set else float("nan")
                metrics.log(position["global_step"], **{"eval/val_nll": val, "charts/epoch": epoch + 1})
                if val_set and (position["best_val"] is None or val < position["best_val"]):
                    position["best_val"] = val
                    if env.rank == 0:
                        livr.save_pretrained(run_dir / f"best-stage{stage.mask}")
                        if stage_index == len(plan) - 1:
                            livr.save_pretrained(run_dir / "best")
                position.update(epoch=epoch + 1, micro=0)
                _save(ckpt_root, state_module, optimizer, scheduler, position)
        if env.rank == 0:
            livr.save_pretrained(run_dir / "final")
    return run_dir


def read_position(checkpoint: Path) -> dict:
    """Where in the plan a resumable checkpoint was taken."""
    state_file = checkpoint / "state.json"
    try:
        position = json.loads(state_file.read_text())["extra"]["position"]
        keys = {"stage_index", "epoch", "micro", "global_step", "best_val"}
        if not isinstance(position, dict) or set(position) != keys:
            raise KeyError(f"position must hold {sorted(keys)}")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{state_file} is not a livr training checkpoint: {exc}") from exc
    return position


def _save(root: Path, state_module: nn.Module, optimizer, scheduler, position: dict) -> None:
    save_checkpoint(
        root,
        model=state_module,
        step=position["global_step"],
        optimizer=optimizer,
        scheduler=scheduler,
        extra={"position": dict(position)},
    )
