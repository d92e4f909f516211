"""Rectified-flow training objective as Wan uses it.

``x_sigma = (1 - sigma) * x0 + sigma * noise`` with timestep ``1000 * sigma``; the network
predicts the velocity ``noise - x0`` (diffusers' ``FlowMatchEulerDiscreteScheduler``
convention, which the Wan pipelines sample with). Sigmas are drawn uniformly and shifted
like the sampler's schedule, ``s * u / (1 + (s - 1) * u)``, so training sees the noise
levels inference visits. Only target frames are noised and scored; history latents get
a light noise (t in [0, 50] of 1000) as augmentation while their timestep token stays 0,
so the model learns to trust imperfect generated history as clean context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from spatia.conditioning import FrameLayout, token_timesteps

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Map uniform ``u`` in (0, 1) through the flow-shift warp of the sampler's schedule."""
    return shift * u / (1 + (shift - 1) * u)


def sample_sigmas(
    batch: int, shift: float, *, device=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample noise levels in (0, 1]."""
    u = torch.rand(batch, device=device, generator=generator).clamp_(1e-3, 1.0)
    return shift_sigmas(u, shift)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``(1 - sigma) x0 + sigma noise`` with ``sigma`` broadcast per sample."""
    s = sigma.view(-1, *([1] * (x0.ndim - 1))).to(x0)
    return (1 - s) * x0 + s * noise


@dataclass
class FlowMatchingBatch:
    """Model inputs and target of one training step."""

    latents: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor
    loss_mask: torch.Tensor


def make_training_inputs(
    latents: torch.Tensor,
    layout: FrameLayout,
    patch_size: tuple[int, ...],
    *,
    shift: float,
    history_noise_max: float,
    generator: torch.Generator | None = None,
) -> FlowMatchingBatch:
    """Noise the target frames at a random level, lightly noise history, keep references clean."""
    b, _, f, h, w = latents.shape
    if f != layout.num_frames:
        raise ValueError(f"latents have {f} frames, layout expects {layout.num_frames}")
    device = latents.device
    noise = torch.randn(latents.shape, device=device, generator=generator, dtype=latents.dtype)
    sigma = sample_sigmas(b, shift, device=device, generator=generator)
    frame_sigma = torch.zeros(b, f, device=device)
    frame_sigma[:, layout.target_slice()] = sigma.view(-1, 1)
    if layout.num_history and history_noise_max > 0:
        hist = torch.rand(b, 1, device=device, generator=generator) * (
            history_noise_max / NUM_TRAIN_TIMESTEPS
        )
        frame_sigma[:, layout.num_reference : layout.num_context] = hist
    s = frame_sigma.view(b, 1, f, 1, 1).to(latents)
    noisy = (1 - s) * latents + s * noise
    loss_mask = torch.zeros(b, 1, f, 1, 1, device=device, dtype=latents.dtype)
    loss_mask[:, :, layout.target_slice()] = 1
    timesteps = token_timesteps(sigma * NUM_TRAIN_TIMESTEPS, layout, h, w, patch_size)
    return FlowMatchingBatch(noisy, timesteps, noise - latents, loss_mask)


def flow_matching_loss(prediction: torch.Tensor, batch: FlowMatchingBatch) -> torch.Tensor:
    """Mean squared velocity error over the target frames only."""
    err = F.mse_loss(prediction.float(), batch.target.float(), reduction="none") * batch.loss_mask
    denom = batch.loss_mask.expand_as(err).sum().clamp_min(1)
    return err.sum() / denom
