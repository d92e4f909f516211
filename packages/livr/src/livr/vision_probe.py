"""What a base model's image tokens tell: linear probes on the vision tower's output for grid scenes.

Each generated image holds one object in one of the nine cells of ``livr.tasks.grid``. For the merged
image token that shows the object, a linear probe is fitted to read off the object's colour and its cell;
for every token, its own cell. Localization needs the second ("where is the red object?"): the
language model finds the object's token by content, and reads the answer from what that token holds,
because Qwen-style rotary positions enter the attention scores and never the values. A cell that
cannot be read from the object's token cannot be named by a frozen-vision fine-tune either.

    from livr.vision_probe import image_token_probe
    image_token_probe("runs/livr/<run>/base")   # {"object_colour": .96, "object_cell": .27, ...}
"""

from __future__ import annotations

import random

import torch
from torch.nn import functional as F

from livr.tasks.grid import COLOURS, SHAPES, draw_scene


def linear_probe_accuracy(
    features: torch.Tensor, labels: torch.Tensor, *, train_fraction: float = 0.7, l2: float = 1e-3
) -> tuple[float, float]:
    """Held-out accuracy of a multinomial logistic read-out, and the held-out majority rate.

    The first ``train_fraction`` of the rows fit it (features standardised on those rows; L-BFGS);
    the rest score it.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} do not match")
    n_train = int(train_fraction * len(features))
    if not 0 < n_train < len(features):
        raise ValueError(f"train_fraction {train_fraction} leaves no rows to fit or to score")
    x = features.float()
    mean, std = x[:n_train].mean(0), x[:n_train].std(0) + 1e-6
    x = (x - mean) / std
    classes = int(labels.max()) + 1
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x[:n_train] @ weight + bias, labels[:n_train]) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = (x[n_train:] @ weight + bias).argmax(1)
    test = labels[n_train:]
    majority = torch.bincount(labels[:n_train], minlength=classes).argmax()
    return float((predicted == test).float().mean()), float((test == majority).float().mean())


def single_object_scenes(
    num_images: int, *, image_size: int = 48, seed: int = 0
) -> tuple[list, torch.Tensor, torch.Tensor]:
    """``num_images`` grid scenes with one object each; returns the images, the cells and the colour ids."""
    rng = random.Random(seed)
    colours = list(COLOURS)
    images, cells, colour_ids = [], [], []
    for _ in range(num_images):
        cell, colour = rng.randrange(9), rng.randrange(len(colours))
        obj = {"colour": colours[colour], "shape": rng.choice(SHAPES), "slot": cell}
        images.append(draw_scene([obj], image_size, rng))
        cells.append(cell)
        colour_ids.append(colour)
    return images, torch.tensor(cells), torch.tensor(colour_ids)


@torch.no_grad()
def image_token_features(model, image_processor, images: list, batch_size: int = 100) -> torch.Tensor:
    """The merged image tokens the language model receives, ``(N, tokens, width)`` (row-major cells)."""
    out = []
    for i in range(0, len(images), batch_size):
        inputs = image_processor(images=images[i : i + batch_size], return_tensors="pt")
        per_image = model.model.get_image_features(
            inputs["pixel_values"], inputs["image_grid_thw"]
        ).pooler_output
        out.append(torch.stack(list(per_image)))
    return torch.cat(out)


def image_token_probe(
    base: str, *, num_images: int = 1200, image_size: int = 48, seed: int = 0
) -> dict[str, float]:
    """Linear read-outs of a base's image tokens on single-object 3 x 3 grid scenes (held-out 30 %).

    Returns ``object_colour`` and ``object_cell`` (from the object's own token), ``any_cell`` (the cell
    of any token, from that token) and the majority rate of each (``*_majority``).
    """
    from transformers import AutoImageProcessor, AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(base).eval()
    processor = AutoImageProcessor.from_pretrained(base)
    images, cells, colours = single_object_scenes(num_images, image_size=image_size, seed=seed)
    features = image_token_features(model, processor, images)
    if features.shape[1] != 9:
        raise ValueError(f"expected one image token per grid cell (9), got {features.shape[1]}")
    on_object = features[torch.arange(len(features)), cells]
    everywhere = features.reshape(-1, features.shape[-1])
    # A random subset of all tokens keeps the probe's cost at that of the others.
    pick = torch.randperm(len(everywhere), generator=torch.Generator().manual_seed(seed))[: 5 * num_images]
    result = {}
    for name, x, y in (
        ("object_colour", on_object, colours),
        ("object_cell", on_object, cells),
        ("any_cell", everywhere[pick], torch.arange(9).repeat(len(features))[pick]),
    ):
        result[name], result[f"{name}_majority"] = linear_probe_accuracy(x, y)
    return result
