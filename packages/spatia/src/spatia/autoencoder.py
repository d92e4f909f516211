"""Training the tiny causal autoencoder on procedural rooms, once, cached by its config.

The CPU preset needs a VAE that reproduces the rooms before any memory effect can show in
pixels (a random one caps every frame near 11 dB). ``cached_autoencoder`` trains
``spatia.models.TinyCausalVAE`` on clips of procedural rooms (scene seeds apart from the
transformer's training scenes and from the evaluation rooms), measures the round trip on the
held-out evaluation rooms, sets ``latents_mean`` / ``latents_std`` from the training latents (so
the flow-matching latents are normalised as Wan's are), and saves it under a folder named by a
hash of its config: a second run with the same config loads it instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from spatia.models.tiny_vae import TinyCausalVAE

#: Scene seeds of the autoencoder's training rooms (the transformer trains on ``seed * 100_003 + i``).
TRAIN_SCENE_OFFSET = 500_000


@dataclass
class AutoencoderConfig:
    """The tiny autoencoder and how it is trained."""

    z_dim: int = 12
    """Latent channels (8 stalled near 24.9 dB held out)."""
    base_dim: int = 32
    """Width of the first convolution (2x that below it)."""
    scale_factor_spatial: int = 2
    """Spatial compression (32x32 frames -> 16x16 latents; 4x learned too slowly on the CPU, see the README)."""
    iterations: int = 1200
    """AdamW steps."""
    batch_size: int = 8
    """Clips per step."""
    clip_frames: int = 3
    """Frames per training clip (the causal convolutions see one past frame; 3 trains that path)."""
    learning_rate: float = 1e-3
    """AdamW peak learning rate (cosine decay to zero: at a constant rate the held-out round trip
    stalled near 24.9 dB after 800 steps)."""
    num_scenes: int = 64
    """Training rooms."""
    frames_per_scene: int = 9
    """Frames rendered along each training room's orbit."""
    heldout_scenes: tuple[int, ...] = (1000, 1001, 1002, 1003)
    """Rooms the round trip is measured on (``spatia reproduce``'s evaluation rooms; never trained on)."""
    height: int = 32
    width: int = 32
    cell_range: tuple[float, float] = (0.8, 1.6)
    """Texture cell sizes of the rooms (as the transformer's training data)."""
    patterns: tuple[int, ...] = (0, 1)
    """Texture patterns of the rooms (as the transformer's training data)."""
    supersample: int = 4
    """Anti-aliasing rays per pixel side (as the transformer's training data)."""
    latent_noise: float = 0.05
    """Gaussian noise added to the latents in training, relative to their standard deviation, so the
    decoder also maps latents slightly off the encoder's (as sampled ones are) to rooms, not to noise."""
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def _rooms(config: AutoencoderConfig, seeds: list[int]) -> torch.Tensor:
    """``(N, 3, F, H, W)`` orbit clips in [-1, 1] of the rooms ``seeds``."""
    from spatia.data.procedural import sample_scene

    clips = [
        sample_scene(
            s,
            config.frames_per_scene,
            config.height,
            config.width,
            cell_range=config.cell_range,
            patterns=config.patterns,
            supersample=config.supersample,
        )[1].images
        for s in seeds
    ]
    return torch.stack(clips).permute(0, 2, 1, 3, 4) * 2 - 1


@torch.no_grad()
def round_trip_psnr(vae: TinyCausalVAE, video: torch.Tensor) -> list[float]:
    """Per-frame PSNR (dB, pixels in [0, 1]) of ``decode(encode(video))`` over a batch ``(B, 3, F, H, W)``."""
    recon = vae.decode(vae.encode(video).latent_dist.mode()).sample
    mse = ((recon - video) / 2).pow(2).mean(dim=(0, 1, 3, 4))
    return [float(-10 * torch.log10(m.clamp_min(1e-10))) for m in mse]


def train_autoencoder(config: AutoencoderConfig, out_dir: Path) -> dict:
    """Train, normalise the latents, measure the held-out round trip, save to ``out_dir``; returns the metrics."""
    torch.manual_seed(config.seed)
    started = time.time()
    train = _rooms(config, [TRAIN_SCENE_OFFSET + i for i in range(config.num_scenes)])
    heldout = _rooms(config, list(config.heldout_scenes))
    vae = TinyCausalVAE(
        z_dim=config.z_dim, base_dim=config.base_dim, scale_factor_spatial=config.scale_factor_spatial
    )
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(config.iterations, 1))
    gen = torch.Generator().manual_seed(config.seed)
    losses = []
    for _ in range(config.iterations):
        idx = torch.randint(0, train.shape[0], (config.batch_size,), generator=gen)
        t0 = int(torch.randint(0, config.frames_per_scene - config.clip_frames + 1, (1,), generator=gen))
        x = train[idx, :, t0 : t0 + config.clip_frames]
        # Unclamped output: a clamped pixel would pass no gradient. L1 keeps edges sharp, MSE is what PSNR reads.
        z = vae.encode(x).latent_dist.mode()
        z = z + config.latent_noise * z.detach().std() * torch.randn(z.shape, generator=gen)
        recon = vae.decode_unclamped(z)
        loss = (recon - x).abs().mean() + (recon - x).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(c[None]).latent_dist.mode() for c in train])
    vae.register_to_config(
        latents_mean=latents.mean(dim=(0, 2, 3, 4)).tolist(),
        latents_std=latents.std(dim=(0, 2, 3, 4)).clamp_min(1e-3).tolist(),
    )
    per_frame = round_trip_psnr(vae, heldout)
    metrics = {
        "heldout_psnr_per_frame": per_frame,
        "heldout_psnr": float(sum(per_frame) / len(per_frame)),
        "train_psnr": float(sum(round_trip_psnr(vae, train[:16])) / config.frames_per_scene),
        "final_loss": float(sum(losses[-50:]) / max(len(losses[-50:]), 1)),
        "seconds": time.time() - started,
        "config": asdict(config),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(out_dir)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def cached_autoencoder(config: AutoencoderConfig, cache_root: str | Path) -> tuple[Path, dict]:
    """The trained autoencoder folder for ``config`` (training it if no cached copy exists) and its metrics."""
    out_dir = Path(cache_root) / f"tiny_vae-{config.key()}"
    metrics_path = out_dir / "metrics.json"
    if metrics_path.is_file() and (out_dir / "config.json").is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics["cached"] = True
        return out_dir, metrics
    metrics = train_autoencoder(config, out_dir)
    metrics["cached"] = False
    return out_dir, metrics
