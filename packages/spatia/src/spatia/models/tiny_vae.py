"""A tiny Wan-style causal 3D autoencoder for the CPU preset, with ``AutoencoderKLWan``'s interface.

Wan's VAE is a causal 3D convolutional autoencoder: every convolution pads only the past on
the time axis, so latent frame ``t`` depends on frames ``<= t`` (the first frame is encoded on
its own, as an image). This one keeps that design at a width a CPU trains in minutes, with two
departures made for 32x32 frames, both in the config: no temporal compression
(``scale_factor_temporal=1``; Wan2.2's is 4) and 2x or 4x spatial compression (Wan2.2's is 16; the
CPU preset uses 2x), since a 32x32 frame compressed 16x leaves a 2x2 latent. ``AutoencoderKLWan`` at tiny widths learned too
slowly on the CPU here (13-14.5 dB held-out round trip after 150-200 steps at 0.4-0.6 s a step); this
class, trained as ``spatia.autoencoder`` does, reaches 25.0 dB (see the package README).

The pipeline and trainer only use ``encode(x).latent_dist.mode()``, ``decode(z).sample`` and
the config's ``z_dim``, ``latents_mean``, ``latents_std``, ``scale_factor_temporal`` and
``scale_factor_spatial``, which this class provides like ``AutoencoderKLWan``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

#: Log-variance the encoder reports: the autoencoder is deterministic (trained on the posterior mode).
_DETERMINISTIC_LOGVAR = -30.0


class CausalConv3d(nn.Conv3d):
    """3D convolution padded ``kernel_t - 1`` frames into the past only (zeros), ``same`` in space."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int], stride: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=(1, stride, stride))
        kt, kh, _ = kernel
        self._pad = (kh // 2, kh // 2, kh // 2, kh // 2, kt - 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self._pad))


class _ResBlock(nn.Module):
    def __init__(self, dim: int, kt: int) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(dim, dim, (kt, 3, 3))
        self.conv2 = CausalConv3d(dim, dim, (kt, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class TinyCausalVAE(ModelMixin, ConfigMixin):
    """Causal 3D conv autoencoder: ``(B, 3, F, H, W)`` in [-1, 1] <-> ``(B, z_dim, F, H/s, W/s)``."""

    @register_to_config
    def __init__(
        self,
        z_dim: int = 8,
        base_dim: int = 32,
        temporal_kernel: int = 2,
        scale_factor_spatial: int = 4,
        scale_factor_temporal: int = 1,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
    ) -> None:
        super().__init__()
        if scale_factor_temporal != 1:
            raise ValueError("TinyCausalVAE does not compress time: scale_factor_temporal must be 1")
        downs = scale_factor_spatial.bit_length() - 1
        if scale_factor_spatial != 1 << downs:
            raise ValueError(f"scale_factor_spatial must be a power of two, got {scale_factor_spatial}")
        if latents_mean is None:
            self.register_to_config(latents_mean=[0.0] * z_dim)
        if latents_std is None:
            self.register_to_config(latents_std=[1.0] * z_dim)
        kt = temporal_kernel
        # Widths base, 2 * base, 2 * base, ...: doubling further made CPU training slower, not better.
        dims = [base_dim * min(2**i, 2) for i in range(downs + 1)]
        enc: list[nn.Module] = [CausalConv3d(3, dims[0], (kt, 3, 3))]
        for i in range(downs):
            enc += [nn.SiLU(), CausalConv3d(dims[i], dims[i + 1], (1, 3, 3), stride=2)]
        enc += [nn.SiLU(), _ResBlock(dims[-1], kt), nn.SiLU(), CausalConv3d(dims[-1], z_dim, (1, 1, 1))]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [CausalConv3d(z_dim, dims[-1], (kt, 3, 3)), _ResBlock(dims[-1], kt), nn.SiLU()]
        for i in range(downs, 0, -1):
            dec += [
                nn.Upsample(scale_factor=(1, 2, 2)),
                CausalConv3d(dims[i], dims[i - 1], (kt, 3, 3)),
                nn.SiLU(),
            ]
        dec += [CausalConv3d(dims[0], 3, (1, 3, 3))]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """``latent_dist`` whose mode is the latent (the log-variance is fixed: a deterministic code)."""
        mean = self.encoder(x)
        h = torch.cat([mean, torch.full_like(mean, _DETERMINISTIC_LOGVAR)], dim=1)
        dist = DiagonalGaussianDistribution(h)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode_unclamped(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output before clamping to [-1, 1] (training uses it so gradients never vanish)."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        sample = self.decode_unclamped(z).clamp(-1, 1)
        return DecoderOutput(sample=sample) if return_dict else (sample,)


def load_vae(path: str, *, torch_dtype: torch.dtype = torch.float32, **kwargs):
    """A VAE folder of either class (``AutoencoderKLWan`` or ``TinyCausalVAE``), by its ``config.json``."""
    import json
    from pathlib import Path

    from diffusers import AutoencoderKLWan

    config = Path(path) / kwargs.get("subfolder", "") / "config.json"
    name = json.loads(config.read_text()).get("_class_name") if config.is_file() else None
    cls = TinyCausalVAE if name == TinyCausalVAE.__name__ else AutoencoderKLWan
    return cls.from_pretrained(path, torch_dtype=torch_dtype, **kwargs)
