"""A small random-weight base VLM given a short generic pretraining on generated image-text pairs.

LIVR fine-tunes a *pretrained* VLM; comparing LIVR with Direct SFT on a random-weight model says
little, because neither the vision tower (frozen during LIVR) nor the language model knows
anything. ``pretrain_base`` therefore builds a small model of the backbone's architecture and
trains *all* its weights for a few minutes on pairs that no evaluation task uses directly:
images of 1-3 coloured shapes (square, circle, triangle) on a 3x3 grid of positions, one or two
images per prompt, with questions about them (describe the image; the colour, shape or position
of an object; a multiple-choice variant of these answered with an option letter, the format the
tasks use). The folder it writes is a normal base-model folder (config, safetensors weights,
tokenizer, image processor) plus ``livr_pretrain.json`` recording the settings and the final
held-out caption accuracy, so a later run with the same settings reuses it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from transformers import get_cosine_schedule_with_warmup

from livr.backbones import get_backbone
from livr.config import ModelConfig
from livr.data import Example
from livr.tiny import build_tokenizer

PRETRAIN_FILE = "livr_pretrain.json"
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
    "white": (245, 245, 245),
    "purple": (150, 60, 200),
}
SHAPES = ("square", "circle", "triangle")
ROWS, COLS = ("top", "middle", "bottom"), ("left", "centre", "right")


@dataclass
class PretrainConfig:
    """Size of the small base model and its generic pretraining."""

    backbone: str = "qwen2_5_vl"
    """backbone adapter whose architecture the small model copies."""
    hidden_size: int = 64
    """language-model width (heads keep the tiny head size of 8)."""
    num_layers: int = 4
    """language-model layers."""
    vision_hidden_size: int = 64
    """vision-tower width (2 blocks)."""
    image_tokens: int = 16
    """placeholder tokens per image after the 2x2 merge (16 = a 112 x 112 image)."""
    image_size: int = 112
    """side of the generated pretraining images."""
    steps: int = 150
    """optimizer steps of pretraining."""
    batch_size: int = 16
    """examples per step."""
    lr: float = 2e-3
    """AdamW peak learning rate (5% warmup, cosine decay)."""
    seed: int = 0
    """weight-initialisation and data seed."""
    eval_examples: int = 64
    """held-out pairs for the caption exact match recorded with the model."""


def position_name(row: int, col: int) -> str:
    if row == 1 and col == 1:
        return "centre"
    if row == 1:
        return COLS[col]
    if col == 1:
        return ROWS[row]
    return f"{ROWS[row]} {COLS[col]}"


def draw_object(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, colour) -> None:
    if shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)


def scene(rng: random.Random, size: int) -> tuple[Image.Image, list[dict]]:
    """An image of 1-3 objects with distinct (colour, shape) pairs in distinct grid cells."""
    image = Image.new("RGB", (size, size), (0, 0, 0) if rng.random() < 0.5 else (90, 90, 90))
    draw = ImageDraw.Draw(image)
    cell = size / 3
    objects = []
    kinds = rng.sample([(c, s) for c in COLOURS for s in SHAPES], rng.randint(1, 3))
    for (colour, shape), slot in zip(kinds, rng.sample(range(9), len(kinds)), strict=False):
        row, col = divmod(slot, 3)
        r = cell * rng.uniform(0.25, 0.4)
        cx = (col + 0.5) * cell + rng.uniform(-0.08, 0.08) * cell
        cy = (row + 0.5) * cell + rng.uniform(-0.08, 0.08) * cell
        draw_object(draw, shape, cx, cy, r, COLOURS[colour])
        objects.append({"colour": colour, "shape": shape, "where": position_name(row, col), "slot": slot})
    objects.sort(key=lambda o: o["slot"])
    return image, objects


def describe(objects: list[dict]) -> str:
    return ", ".join(f"{o['colour']} {o['shape']} {o['where']}" for o in objects)


def caption_pairs(n: int, *, seed: int = 0, image_size: int = 112) -> list[Example]:
    """``n`` generated image-text pairs (see the module docstring); deterministic by seed."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        two = rng.random() < 0.25
        image, objects = scene(rng, image_size)
        images = [image]
        which = ""
        if two:
            other, other_objects = scene(rng, image_size)
            if rng.random() < 0.5:
                images, which = [image, other], " first"
            else:
                images, which = [other, image], " second"
            del other_objects
        obj = rng.choice(objects)
        kind = rng.choice(("describe", "colour", "shape", "where", "choice"))
        if kind == "describe":
            question, answer = f"Describe the{which} image.", describe(objects)
        elif kind == "colour":
            question, answer = (
                f"What colour is the {obj['shape']} at {obj['where']} in the{which} image?",
                obj["colour"],
            )
        elif kind == "shape":
            question, answer = f"What shape is at {obj['where']} in the{which} image?", obj["shape"]
        elif kind == "where":
            question, answer = (
                f"Where is the {obj['colour']} {obj['shape']} in the{which} image?",
                obj["where"],
            )
        else:
            wrong = rng.sample([c for c in COLOURS if c != obj["colour"]], rng.randint(1, 3))
            options = wrong[:]
            slot = rng.randint(0, len(wrong))
            options.insert(slot, obj["colour"])
            listed = " ".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(options))
            question = (
                f"What colour is the {obj['shape']} at {obj['where']} in the{which} image? Select from the "
                f"following options. {listed} Answer with the option's letter."
            )
            answer = "ABCD"[slot]
        examples.append(Example(images, question, answer, {"task": "pretrain_caption", "kind": kind}))
    return examples


def small_config(cfg: PretrainConfig):
    """The backbone's tiny config widened and deepened to ``cfg``'s size (head sizes unchanged)."""
    adapter = get_backbone(cfg.backbone)
    tokenizer = build_tokenizer()
    config = adapter.tiny_config(tokenizer.get_vocab(), 128)
    text, vision = config.text_config, config.vision_config
    head_dim = text.hidden_size // text.num_attention_heads
    text.num_attention_heads = cfg.hidden_size // head_dim
    text.num_key_value_heads = max(1, text.num_attention_heads // 2)
    if getattr(text, "head_dim", None) is not None:
        text.head_dim = head_dim
    text.hidden_size = cfg.hidden_size
    text.intermediate_size = 2 * cfg.hidden_size
    text.num_hidden_layers = cfg.num_layers
    if hasattr(text, "layer_types") and text.layer_types is not None:
        text.layer_types = [text.layer_types[0]] * cfg.num_layers
    vision_head = vision.hidden_size // vision.num_heads
    vision.num_heads = cfg.vision_hidden_size // vision_head
    vision.hidden_size = cfg.vision_hidden_size
    vision.intermediate_size = 2 * cfg.vision_hidden_size
    vision.out_hidden_size = cfg.hidden_size
    return adapter, tokenizer, config


def write_initial_model(cfg: PretrainConfig, folder: Path) -> None:
    adapter, tokenizer, config = small_config(cfg)
    torch.manual_seed(cfg.seed)
    model = adapter.model_class(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    side = config.vision_config.patch_size * config.vision_config.spatial_merge_size
    pixels = side * side * cfg.image_tokens
    adapter.image_processor(min_pixels=pixels, max_pixels=pixels).save_pretrained(folder)


def cached_base(folder: str | os.PathLike, cfg: PretrainConfig) -> bool:
    """True when ``folder`` holds a finished pretraining with exactly ``cfg``'s settings."""
    meta = Path(folder) / PRETRAIN_FILE
    if not meta.is_file():
        return False
    try:
        recorded = json.loads(meta.read_text())["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{meta} is not a livr pretraining record: {exc}") from exc
    # settings added after a base was written count as their defaults
    return {**dataclasses.asdict(PretrainConfig()), **recorded} == dataclasses.asdict(cfg)


@torch.no_grad()
def caption_accuracy(livr, examples: list[Example], batch_size: int = 32) -> float:
    from livr.evaluate import generate_answers, normalise

    predictions = generate_answers(livr, examples, batch_size=batch_size, max_new_tokens=48)
    hits = sum(normalise(p) == normalise(ex.answer) for p, ex in zip(predictions, examples, strict=True))
    return hits / max(len(examples), 1)


def pretrain_base(
    folder: str | os.PathLike, cfg: PretrainConfig | None = None, *, reuse: bool = True, progress: bool = True
) -> Path:
    """Build and pretrain the small base model into ``folder`` (reused when already done there)."""
    from tqdm.auto import tqdm

    from livr.model import LivrModel

    cfg = cfg or PretrainConfig()
    folder = Path(folder)
    if reuse and cached_base(folder, cfg):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PRETRAIN_FILE).unlink(missing_ok=True)
    write_initial_model(cfg, folder)
    model_cfg = ModelConfig(backbone=cfg.backbone, model_id=str(folder), num_latents=0, mask_route="dense")
    livr = LivrModel.from_backbone(model_cfg, lora=False)
    livr.model.requires_grad_(True)
    livr.train()
    torch.manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(livr.model.parameters(), lr=cfg.lr, weight_decay=0.01)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, math.ceil(0.05 * cfg.steps)), cfg.steps)
    start = time.time()
    losses = []
    bar = tqdm(range(cfg.steps), desc="pretraining the base model", disable=not progress)
    for step in bar:
        batch = caption_pairs(cfg.batch_size, seed=cfg.seed * 1_000_003 + step, image_size=cfg.image_size)
        loss = livr(livr.encode(batch), 2).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(livr.model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        bar.set_postfix(nll=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    held_out = caption_pairs(cfg.eval_examples, seed=-1 - cfg.seed, image_size=cfg.image_size)
    accuracy = caption_accuracy(livr, held_out)
    livr.base.save_pretrained(folder)
    record = {
        "config": dataclasses.asdict(cfg),
        "final_nll": sum(losses[-20:]) / max(len(losses[-20:]), 1),
        "held_out_exact_match": accuracy,
        "seconds": time.time() - start,
        "parameters": sum(p.numel() for p in livr.model.parameters()),
    }
    (folder / PRETRAIN_FILE).write_text(json.dumps(record, indent=2))
    return folder


def pretrain_record(folder: str | os.PathLike) -> dict:
    path = Path(folder) / PRETRAIN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {folder} is not a pretrained livr base")
    return json.loads(path.read_text())
