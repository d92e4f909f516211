"""Where the latent tokens look: their attention over the image patches, from the model itself.

The language model is switched to transformers' ``eager`` attention (the only implementation that
returns attention probabilities) with the dense 4-D stage mask, and run with
``output_attentions=True``; the weights are restored to the model's own implementation afterwards.
From the probabilities of the latent queries (mean over heads and layers) come a map per image
(on its merged patch grid) and two numbers used as evidence in the report:

- ``image_mass``: the share of the latents' attention that lands on image tokens;
- ``entropy``: the normalised entropy (1 = uniform) of each latent's attention over the image
  tokens, averaged over latents;

and, from the answer tokens' queries, the share of their attention on the latents and on the image
(in stage 1 the latter is zero by construction).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentforge.kernels import Role
from livr.data import Example


@dataclass
class LatentAttention:
    maps: list[np.ndarray]
    """per image, the latents' attention over its merged patch grid (rows, cols), summing to 1."""
    image_mass: float
    entropy: float
    answer_on_latents: float
    answer_on_image: float


@contextmanager
def eager_attention(livr) -> Iterator[None]:
    """Run ``livr`` with eager attention and the dense mask route, restoring both afterwards."""
    config, text_config = livr.config, livr.base.config.get_text_config()
    before = text_config._attn_implementation
    livr.config = dataclasses.replace(config, mask_route="dense")
    livr.base.set_attn_implementation({"text_config": "eager"})
    try:
        yield
    finally:
        livr.base.set_attn_implementation({"text_config": before})
        livr.config = config


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Normalised entropy along the last axis (0 = one patch, 1 = uniform)."""
    n = p.shape[-1]
    if n <= 1:
        return torch.zeros(p.shape[:-1])
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
    return -(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(n)


@torch.no_grad()
def latent_attention(livr, example: Example, *, stage: int = 2) -> LatentAttention:
    """The latents' (and answer's) attention for one example under ``stage``'s mask."""
    if not livr.latent_ids:
        raise ValueError("this model has no latent tokens (a Direct SFT checkpoint?)")
    if not example.images:
        raise ValueError("the example has no image")
    was_training = livr.training
    livr.eval()
    batch = livr.encode([example])
    with eager_attention(livr):
        out = livr(batch, stage, output_attentions=True)
    livr.train(was_training)
    if not out.attentions or out.attentions[0] is None:
        raise RuntimeError("the model returned no attention probabilities")
    probs = torch.stack([a[0].float() for a in out.attentions]).mean(dim=(0, 1))  # (S, S)
    roles = batch.roles[0]
    latent_q = roles == Role.LATENT
    image_k = roles == Role.IMAGE
    answer_q = roles == Role.ANSWER
    lat = probs[latent_q]  # (K, S)
    on_image = lat[:, image_k]  # (K, N_img)
    image_mass = float(on_image.sum(-1).mean())
    entropy = float(_entropy(on_image).mean())
    ans = probs[answer_q]
    answer_on_latents = float(ans[:, latent_q].sum(-1).mean()) if len(ans) else float("nan")
    answer_on_image = float(ans[:, image_k].sum(-1).mean()) if len(ans) else float("nan")
    mean_map = on_image.mean(0)
    merge = livr.encoder.merge_size
    maps, start = [], 0
    for t, h, w in batch.image_grid_thw.tolist():
        rows, cols = h // merge, w // merge
        n = t * rows * cols
        grid = mean_map[start : start + n].reshape(t, rows, cols).sum(0)
        maps.append((grid / grid.sum().clamp_min(1e-12)).cpu().numpy())
        start += n
    return LatentAttention(maps, image_mass, entropy, answer_on_latents, answer_on_image)


def plot_latent_attention(
    livr, examples: Sequence[Example], path: str | os.PathLike, *, stage: int = 2, title: str = ""
) -> tuple[Path, list[LatentAttention]]:
    """A PNG with, per example and image, the image and the latents' attention over it (overlay)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [latent_attention(livr, ex, stage=stage) for ex in examples]
    cols = max(len(ex.images) for ex in examples) * 2
    fig, axes = plt.subplots(len(examples), cols, figsize=(2.2 * cols, 2.4 * len(examples)), squeeze=False)
    for r, (ex, res) in enumerate(zip(examples, results, strict=True)):
        for ax in axes[r]:
            ax.axis("off")
        for i, (image, grid) in enumerate(zip(ex.images, res.maps, strict=True)):
            axes[r][2 * i].imshow(image)
            axes[r][2 * i].set_title(f"{ex.meta.get('task', '')} img {i + 1}\nanswer {ex.answer}", fontsize=7)
            axes[r][2 * i + 1].imshow(image)
            # relative to uniform on a fixed scale, so a flat map looks flat (1 = uniform)
            axes[r][2 * i + 1].imshow(
                grid * grid.size,
                cmap="inferno",
                vmin=0.0,
                vmax=2.0,
                alpha=0.6,
                extent=(0, image.width, image.height, 0),
                interpolation="nearest",
            )
            axes[r][2 * i + 1].set_title(
                f"latents→image {res.image_mass:.2f}\nentropy {res.entropy:.2f}", fontsize=7
            )
    fig.suptitle(
        title
        or f"latents' attention over the image / uniform (scale 0-2)\n(stage {stage}, mean of heads and layers)",
        fontsize=9,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, results
