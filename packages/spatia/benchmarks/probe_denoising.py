"""How well a trained pipeline denoises held-out clips: its x0 estimate against the noisy input at several sigmas.

    .venv/bin/python packages/spatia/benchmarks/probe_denoising.py runs/spatia/<reproduce run>/pipeline

Encodes a 9-frame ground-truth clip of held-out room 1000 (the reproduce evaluation's there-and-back
path), noises the 4 target latent frames to sigma, and compares the model's x0 estimate
``x_t - sigma * v`` with the clean latents (MSE in normalised latents, whose variance is about 1), next to
the MSE of ``x_t`` itself and of copying the last context latent. Twice: memory off (all holes), and a
perfect memory (the ground-truth frames as the render, no holes), which a control branch that follows
its render should copy. No references.
"""

from __future__ import annotations

import sys

import torch

from spatia.conditioning import FrameLayout, encode_control, encode_video
from spatia.pipeline import SpatiaPipeline
from spatia.reproduce import eval_scene, tiny_reproduce


def main(path: str) -> None:
    torch.set_num_threads(1)
    pipe = SpatiaPipeline.from_pretrained(path)
    scene = eval_scene(1000, tiny_reproduce(), 9)
    video = (scene.frames * 2 - 1).permute(1, 0, 2, 3)[None]
    z = encode_video(pipe.vae, video)
    layout = FrameLayout(0, 5, 4)
    text = pipe.encode_prompt(["a camera moves through a room"])
    controls = {
        "memory off": encode_control(
            pipe.vae, torch.full_like(video, -1.0), torch.ones(1, 9, 32, 32, dtype=torch.bool)
        ),
        "ground-truth render": encode_control(pipe.vae, video, torch.zeros(1, 9, 32, 32, dtype=torch.bool)),
    }
    torch.manual_seed(0)
    target = z[:, :, 5:]
    for sigma in (0.05, 0.2, 0.5, 0.9):
        xt = z.clone()
        xt[:, :, 5:] = (1 - sigma) * target + sigma * torch.randn_like(target)
        estimates = []
        for name, control in controls.items():
            v = pipe._velocity(xt, torch.tensor(sigma * 1000.0), layout, text, control, 1.0)
            estimates.append(f"{name} {((xt[:, :, 5:] - sigma * v - target) ** 2).mean():.3f}")
        print(
            f"sigma {sigma}: MSE of the x0 estimate, {', '.join(estimates)}; of x_t itself "
            f"{((xt[:, :, 5:] - target) ** 2).mean():.3f}, of copying the last context latent "
            f"{((z[:, :, 4:5] - target) ** 2).mean():.3f}"
        )


if __name__ == "__main__":
    main(sys.argv[1])
