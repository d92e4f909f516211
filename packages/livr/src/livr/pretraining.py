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
from typing import Literal

import torch
from PIL import Image
from transformers import get_cosine_schedule_with_warmup

from livr.backbones import get_backbone
from livr.config import ModelConfig
from livr.data import Example
from livr.tasks.grid import COLOURS, SHAPES, draw_scene
from livr.tasks.grid import position_name as grid_position_name
from livr.tiny import build_tokenizer, build_word_tokenizer

PRETRAIN_FILE = "livr_pretrain.json"
# Short questions, each needing one thing read off the image: the colour of the object of a named
# shape, the colour or shape in a named cell, the cell of a named object; a lettered-option variant;
# a whole-scene caption, drawn rarely because the loss averages over answer tokens and a caption of
# ~10 words weighs like ten one-word answers. A mixture of BLINK-length questions (and captions
# drawn as often as the rest) left a small model answering from the language prior (README
# "Base-model search").
# "count" (how many objects in all) is also what puts digits into the vocabulary the model has
# trained: the embedding is tied to the output layer, so a digit never seen in pretraining keeps a
# random row that LoRA cannot make the model emit (Direct SFT then stayed at ~1 % per digit).
KINDS = ("describe", "colour", "colour_at", "shape_at", "where", "choice", "count")
KIND_WEIGHTS = (0.05, 0.2, 0.2, 0.15, 0.15, 0.1, 0.15)


@dataclass
class PretrainConfig:
    """Size of the small base model and its generic pretraining."""

    backbone: str = "qwen2_5_vl"
    """backbone adapter whose architecture the small model copies."""
    hidden_size: int = 64
    """language-model width."""
    head_dim: int = 8
    """language-model attention head size."""
    rope_theta: float = 10000.0
    """language-model RoPE base. Keep it large: the low frequencies are what lets a text query match an
    image token by content whatever the distance (a base of 5 left every frequency turning by more than
    0.2 rad per token); which cell a token shows comes from the board tint (``livr.tasks.grid.cell_tint``)."""
    mrope_section: tuple[int, ...] | None = None
    """rotary frequencies for (time, rows, columns), summing to ``head_dim // 2``; None: the tiny backbone's."""
    num_layers: int = 4
    """language-model layers."""
    vision_hidden_size: int = 64
    """vision-tower width."""
    vision_layers: int = 2
    """vision-tower blocks (all with full attention over the image)."""
    patch_size: int | None = None
    """vision patch side in pixels (2x2 patches merge into one image token); None: the backbone's."""
    image_tokens: int = 16
    """placeholder tokens per image after the 2x2 merge (16 = a 112 x 112 image at patch 14)."""
    max_objects: int = 3
    """most objects in one generated scene (at least 1, at most 9 grid cells)."""
    two_image_rate: float = 0.25
    """share of prompts with two images (the question names the first or the second)."""
    tokenizer: Literal["char", "word"] = "char"
    """``char``: one token per character (``livr.tiny.build_tokenizer``); ``word``: one per word of the
    pretraining and grid-task texts (``build_word_tokenizer``; other words become ``<|unk|>``)."""
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
    eval_every: int = 0
    """also score the held-out pairs every this many steps (0: only at the end); the curve is recorded."""


def position_name(row: int, col: int) -> str:
    return grid_position_name(3 * row + col)


def scene(rng: random.Random, size: int, max_objects: int = 3) -> tuple[Image.Image, list[dict]]:
    """An image of 1-``max_objects`` objects with distinct (colour, shape) pairs in distinct grid cells,
    drawn on the grid tasks' board (``livr.tasks.grid.draw_scene``)."""
    kinds = rng.sample([(c, s) for c in COLOURS for s in SHAPES], rng.randint(1, max_objects))
    slots = rng.sample(range(9), len(kinds))
    objects = [{"colour": c, "shape": s, "slot": slot} for (c, s), slot in zip(kinds, slots, strict=True)]
    image = draw_scene(objects, size, rng)
    for o in objects:
        o["where"] = grid_position_name(o["slot"])
    objects.sort(key=lambda o: o["slot"])
    return image, objects


def describe(objects: list[dict]) -> str:
    return ", ".join(f"{o['colour']} {o['shape']} {o['where']}" for o in objects)


def caption_pairs(
    n: int, *, seed: int = 0, image_size: int = 112, max_objects: int = 3, two_image_rate: float = 0.25
) -> list[Example]:
    """``n`` generated image-text pairs (see the module docstring); deterministic by seed."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        two = rng.random() < two_image_rate
        image, objects = scene(rng, image_size, max_objects)
        images, where_image = [image], ""
        if two:
            other, _ = scene(rng, image_size, max_objects)
            first = rng.random() < 0.5
            images = [image, other] if first else [other, image]
            where_image = " in the first image" if first else " in the second image"
        obj = rng.choice(objects)
        unique = [o for o in objects if sum(p["shape"] == o["shape"] for p in objects) == 1]
        kind = rng.choices(KINDS, weights=KIND_WEIGHTS)[0]
        if kind in ("colour", "choice") and not unique:
            kind = "colour_at"
        if kind == "describe":
            question, answer = (
                f"Describe the image{where_image}.".replace("the image in the", "the"),
                describe(objects),
            )
        elif kind == "colour_at":
            question, answer = f"What colour is the object at {obj['where']}{where_image}?", obj["colour"]
        elif kind == "shape_at":
            question, answer = f"What shape is at {obj['where']}{where_image}?", obj["shape"]
        elif kind == "count":
            question, answer = f"How many objects are there{where_image}?", str(len(objects))
        elif kind == "where":
            question, answer = f"Where is the {obj['colour']} {obj['shape']}{where_image}?", obj["where"]
        else:
            obj = rng.choice(unique)
            question, answer = f"What colour is the {obj['shape']}{where_image}?", obj["colour"]
            if kind == "choice":
                wrong = rng.sample([c for c in COLOURS if c != obj["colour"]], rng.randint(1, 3))
                slot = rng.randint(0, len(wrong))
                options = [*wrong[:slot], obj["colour"], *wrong[slot:]]
                listed = " ".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(options))
                question, answer = f"{question} {listed}", "ABCD"[slot]
        meta = {"task": "pretrain_caption", "kind": kind, "objects": objects, "image": images.index(image)}
        examples.append(Example(images, question, answer, meta))
    return examples


def vocabulary_texts() -> list[str]:
    """Texts whose words make the word tokenizer: pretraining pairs and the grid tasks' examples."""
    from livr.tasks import grid

    examples = caption_pairs(2000, seed=0, image_size=24, max_objects=3)
    examples += [ex for task in grid.GENERATORS for ex in grid.generate(task, 200, seed=0, image_size=24)]
    return [f"{ex.question} {ex.answer}" for ex in examples]


def small_config(cfg: PretrainConfig):
    """The backbone's tiny config widened and deepened to ``cfg``'s size (head sizes unchanged)."""
    adapter = get_backbone(cfg.backbone)
    tokenizer = build_tokenizer() if cfg.tokenizer == "char" else build_word_tokenizer(vocabulary_texts())
    # spare rows past the tokenizer, as Qwen's checkpoints have, for the latent tokens
    config = adapter.tiny_config(tokenizer.get_vocab(), max(128, len(tokenizer) + 32))
    text, vision = config.text_config, config.vision_config
    head_dim = cfg.head_dim
    text.num_attention_heads = cfg.hidden_size // head_dim
    text.num_key_value_heads = max(1, text.num_attention_heads // 2)
    if getattr(text, "head_dim", None) is not None:
        text.head_dim = head_dim
    rope = dict(text.rope_parameters)
    rope["rope_theta"] = cfg.rope_theta
    if cfg.mrope_section is not None:
        if sum(cfg.mrope_section) != head_dim // 2:
            raise ValueError(f"mrope_section {cfg.mrope_section} must sum to head_dim // 2 = {head_dim // 2}")
        rope["mrope_section"] = list(cfg.mrope_section)
    text.rope_parameters = rope
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
    vision.depth = cfg.vision_layers
    if cfg.patch_size is not None:
        vision.patch_size = cfg.patch_size
    if hasattr(vision, "fullatt_block_indexes"):
        # Qwen2.5-VL's windowed blocks would split a small image into windows; full attention everywhere
        vision.fullatt_block_indexes = list(range(cfg.vision_layers))
    return adapter, tokenizer, config


def write_initial_model(cfg: PretrainConfig, folder: Path) -> None:
    adapter, tokenizer, config = small_config(cfg)
    torch.manual_seed(cfg.seed)
    model = adapter.model_class(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    side = config.vision_config.patch_size * config.vision_config.spatial_merge_size
    pixels = side * side * cfg.image_tokens
    patch = {"patch_size": cfg.patch_size} if cfg.patch_size is not None else {}
    adapter.image_processor(min_pixels=pixels, max_pixels=pixels, **patch).save_pretrained(folder)


def cached_base(folder: str | os.PathLike, cfg: PretrainConfig) -> bool:
    """True when ``folder`` holds a finished pretraining with exactly ``cfg``'s settings."""
    meta = Path(folder) / PRETRAIN_FILE
    if not meta.is_file():
        return False
    try:
        recorded = json.loads(meta.read_text())["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{meta} is not a livr pretraining record: {exc}") from exc
    # settings added after a base was written count as their defaults; the JSON round trip turns
    # tuples into lists on both sides
    wanted = json.loads(json.dumps(dataclasses.asdict(cfg)))
    return {**json.loads(json.dumps(dataclasses.asdict(PretrainConfig()))), **recorded} == wanted


@torch.no_grad()
def caption_accuracy(livr, examples: list[Example], batch_size: int = 32) -> float:
    """Exact match of the generated answers over ``examples`` (every question kind together)."""
    return accuracy_by_kind(livr, examples, batch_size)["all"]


@torch.no_grad()
def accuracy_by_kind(livr, examples: list[Example], batch_size: int = 32) -> dict[str, float]:
    """Exact match per question kind (``describe``, ``colour``, ``shape``, ``where``, ``choice``) and ``all``.

    Whole-caption exact match alone hides a model that reads single attributes well but drops
    one object of three from a caption; the per-kind rates say which.
    """
    from livr.evaluate import generate_answers, normalise

    predictions = generate_answers(livr, examples, batch_size=batch_size, max_new_tokens=64)
    hits: dict[str, list[bool]] = {"all": []}
    for p, ex in zip(predictions, examples, strict=True):
        ok = normalise(p) == normalise(ex.answer)
        hits["all"].append(ok)
        hits.setdefault(ex.meta["kind"], []).append(ok)
    return {k: sum(v) / max(len(v), 1) for k, v in hits.items()}


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
    held_out = caption_pairs(
        cfg.eval_examples,
        seed=-1 - cfg.seed,
        image_size=cfg.image_size,
        max_objects=cfg.max_objects,
        two_image_rate=cfg.two_image_rate,
    )
    start = time.time()
    losses, curve = [], []
    bar = tqdm(range(cfg.steps), desc="pretraining the base model", disable=not progress)
    for step in bar:
        batch = caption_pairs(
            cfg.batch_size,
            seed=cfg.seed * 1_000_003 + step,
            image_size=cfg.image_size,
            max_objects=cfg.max_objects,
            two_image_rate=cfg.two_image_rate,
        )
        loss = livr(livr.encode(batch), 2).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(livr.model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        bar.set_postfix(nll=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            curve.append({"step": step + 1, **accuracy_by_kind(livr, held_out)})
            livr.train()
    livr.eval()
    by_kind = accuracy_by_kind(livr, held_out)
    curve.append({"step": cfg.steps, **by_kind})
    livr.base.save_pretrained(folder)
    record = {
        "config": dataclasses.asdict(cfg),
        "final_nll": sum(losses[-20:]) / max(len(losses[-20:]), 1),
        "held_out_exact_match": by_kind["all"],
        "held_out_by_kind": by_kind,
        "held_out_curve": curve,
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
