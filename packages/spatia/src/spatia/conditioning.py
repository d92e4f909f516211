"""Assembling the transformer's input: in-context latents, control latents, timesteps, loss mask.

Frame-axis layout of one sample (latent frames)::

    [ reference_0 .. reference_{K-1} | history_0 .. history_{h-1} | target_0 .. target_{n-1} ]
      clean, timestep 0                clean, timestep 0           noisy, timestep t

History and target are one VAE-encoded clip (the Wan VAE is causal, so the first ``h``
latent frames depend only on the history frames: 9 frames -> 3 latents, the first
image of a first clip -> 1). Each reference frame is encoded on its own (one latent).
The control latents (memory render + holes mask, each VAE-encoded, concatenated on
channels) cover the history and target frames; reference positions get zeros.
Everything that places or removes the in-context frames lives here, in one place,
so that the reference trimming and mask order cannot drift apart (diffusers #11779).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLWan


@dataclass(frozen=True)
class FrameLayout:
    """Latent-frame counts of the three segments of a sample."""

    num_reference: int
    num_history: int
    num_target: int

    @property
    def num_context(self) -> int:
        return self.num_reference + self.num_history

    @property
    def num_frames(self) -> int:
        return self.num_context + self.num_target

    def target_slice(self) -> slice:
        return slice(self.num_context, self.num_frames)


def latent_frames(num_frames: int, temporal_factor: int) -> int:
    """Latent frames the causal Wan VAE produces for ``num_frames`` (which must be 1 + k * factor)."""
    if num_frames < 1 or (num_frames - 1) % temporal_factor:
        raise ValueError(f"{num_frames} frames: the Wan VAE needs 1 + k * {temporal_factor} frames")
    return (num_frames - 1) // temporal_factor + 1


def _latent_stats(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, dtype=like.dtype, device=like.device).view(shape)
    std = torch.tensor(vae.config.latents_std, dtype=like.dtype, device=like.device).view(shape)
    return mean, std


@torch.no_grad()
def encode_video(vae: AutoencoderKLWan, video: torch.Tensor) -> torch.Tensor:
    """VAE-encode ``(B, 3, F, H, W)`` pixels in [-1, 1] to normalised latents (posterior mode)."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, F, H, W) video, got {tuple(video.shape)}")
    spatial = vae.config.scale_factor_spatial
    if video.shape[-1] % spatial or video.shape[-2] % spatial:
        raise ValueError(f"frame size {tuple(video.shape[-2:])} is not a multiple of the VAE's {spatial}")
    latents = vae.encode(video.to(vae.dtype)).latent_dist.mode().float()
    mean, std = _latent_stats(vae, latents)
    return (latents - mean) / std


@torch.no_grad()
def decode_latents(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_video`, decoded in float32 (the Wan2.2 VAE is unstable in bf16)."""
    mean, std = _latent_stats(vae, latents.float())
    return vae.float().decode(latents.float() * std + mean).sample.clamp(-1, 1)


def encode_control(vae: AutoencoderKLWan, render: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
    """Control latents: VAE(memory render) and VAE(holes mask) concatenated on channels.

    ``render`` is ``(B, 3, F, H, W)`` in [-1, 1]; ``holes`` is ``(B, F, H, W)``, true where no
    memory point projects. The mask goes through the VAE as a grey video (-1 covered, +1 hole).
    """
    if holes.shape != render.shape[:1] + render.shape[2:]:
        raise ValueError(f"holes {tuple(holes.shape)} does not match render {tuple(render.shape)}")
    mask_video = (holes.float() * 2 - 1).unsqueeze(1).expand(-1, 3, -1, -1, -1)
    return torch.cat([encode_video(vae, render), encode_video(vae, mask_video)], dim=1)


def assemble_sequence(
    clip_latents: torch.Tensor,
    reference_latents: torch.Tensor | None,
    control_latents: torch.Tensor,
    num_history: int,
) -> tuple[torch.Tensor, torch.Tensor, FrameLayout]:
    """Concatenate reference and clip latents on the frame axis, with control zero-padded to match.

    ``clip_latents`` ``(B, C, h + n, H, W)`` (history then target), ``reference_latents``
    ``(B, C, K, H, W)`` or None, ``control_latents`` ``(B, Cc, h + n, H, W)``.
    Returns ``(latents, control, layout)``.
    """
    if control_latents.shape[2:] != clip_latents.shape[2:]:
        raise ValueError(
            f"control latents {tuple(control_latents.shape)} must cover the clip {tuple(clip_latents.shape)}"
        )
    if not 0 <= num_history < clip_latents.shape[2]:
        raise ValueError(f"num_history={num_history} leaves no target frame in {clip_latents.shape[2]}")
    num_ref = 0 if reference_latents is None else reference_latents.shape[2]
    layout = FrameLayout(num_ref, num_history, clip_latents.shape[2] - num_history)
    if num_ref:
        latents = torch.cat([reference_latents.to(clip_latents), clip_latents], dim=2)
        pad = control_latents.new_zeros(*control_latents.shape[:2], num_ref, *control_latents.shape[3:])
        control = torch.cat([pad, control_latents], dim=2)
    else:
        latents, control = clip_latents, control_latents
    return latents, control, layout


def context_mask(layout: FrameLayout, batch: int, height: int, width: int, device=None) -> torch.Tensor:
    """``(B, 1, F, H, W)`` float mask: 1 on noisy target frames, 0 on clean context frames."""
    mask = torch.zeros(batch, 1, layout.num_frames, height, width, device=device)
    mask[:, :, layout.target_slice()] = 1
    return mask


def token_timesteps(
    timestep: torch.Tensor, layout: FrameLayout, height: int, width: int, patch_size: tuple[int, ...]
) -> torch.Tensor:
    """Per-token timesteps ``(B, L)``: ``timestep`` on target tokens, 0 on context tokens (Wan2.2 TI2V style)."""
    p_t, p_h, p_w = patch_size
    if layout.num_frames % p_t or height % p_h or width % p_w:
        raise ValueError(
            f"latent size {(layout.num_frames, height, width)} is not divisible by patch {patch_size}"
        )
    frame_t = torch.zeros(timestep.shape[0], layout.num_frames, device=timestep.device, dtype=torch.float32)
    frame_t[:, layout.target_slice()] = timestep.float().view(-1, 1)
    frame_t = frame_t[:, ::p_t]
    per_frame = (height // p_h) * (width // p_w)
    return frame_t.repeat_interleave(per_frame, dim=1)


def trim_context(output: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
    """The target frames of a model output or latent sequence ``(B, C, F, H, W)``."""
    if output.shape[2] != layout.num_frames:
        raise ValueError(f"expected {layout.num_frames} latent frames, got {output.shape[2]}")
    return output[:, :, layout.target_slice()]
