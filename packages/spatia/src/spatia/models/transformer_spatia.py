"""The Spatia transformer: Wan2.2 (TI2V-5B) with a zero-initialised control branch.

Paper layout (arXiv 2512.15716, Sec. 3): eight control blocks run beside the thirty main
blocks, one per group of four (main layers 0, 4, ..., 28); each is a Wan block plus a
linear projector whose output is added into the main stream after its layer. The control
input is the spatial memory rendered along the target trajectory and its holes mask, each
VAE-encoded (48 + 48 = 96 latent channels).

This is diffusers' VACE design (``WanVACETransformer3DModel``: ``vace_layers``,
``vace_in_channels``, hints added after the listed layers, same parameter names), and we
keep its vocabulary and state-dict layout. We do not use its ``forward`` because in
diffusers 0.42 it embeds one timestep per sample (its control blocks chunk ``temb`` along
dim 1), while Wan2.2-TI2V-5B runs with a timestep per token (``expand_timesteps``) and
Spatia's in-context history and reference latents need timestep 0 beside noisy ones.
The control block here is therefore diffusers' ``WanTransformerBlock`` (which handles both
timestep layouts) plus the two projections, and the main stream is
``WanTransformer3DModel`` itself, so base checkpoints load unchanged.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel, WanTransformerBlock
from diffusers.utils import apply_lora_scale
from torch import nn

#: Wan2.2-TI2V-5B transformer config (``Wan-AI/Wan2.2-TI2V-5B-Diffusers/transformer/config.json``).
WAN22_TI2V_5B: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 24,
    "attention_head_dim": 128,
    "in_channels": 48,
    "out_channels": 48,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 14336,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
    "pos_embed_seq_len": None,
}

#: One control block per group of four main blocks of the 30-layer model.
SPATIA_CONTROL_LAYERS: tuple[int, ...] = (0, 4, 8, 12, 16, 20, 24, 28)


class SpatiaControlBlock(WanTransformerBlock):
    """A Wan block with an input projection (first block only) and a zero-initialised output projector.

    The first block sees ``proj_in(control) + hidden``; every block returns a hint
    ``proj_out(control)`` for the main stream and the control state for the next block.
    """

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        qk_norm: str | None = "rms_norm_across_heads",
        cross_attn_norm: bool = False,
        eps: float = 1e-6,
        added_kv_proj_dim: int | None = None,
        apply_input_projection: bool = False,
    ) -> None:
        super().__init__(dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps, added_kv_proj_dim)
        self.proj_in = nn.Linear(dim, dim) if apply_input_projection else None
        self.proj_out = nn.Linear(dim, dim)
        # ControlNet's zero projector: an untrained branch adds exactly zero to the main stream.
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        control_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.proj_in is not None:
            control_hidden_states = self.proj_in(control_hidden_states) + hidden_states
        control_hidden_states = super().forward(
            control_hidden_states, encoder_hidden_states, temb, rotary_emb
        )
        return self.proj_out(control_hidden_states), control_hidden_states


class SpatiaTransformer3DModel(WanTransformer3DModel):
    """Wan2.2 transformer with Spatia's memory-control branch (defaults: the TI2V-5B config).

    ``forward`` takes the noisy + in-context latents ``(B, C, F, H, W)``, a timestep per
    sample ``(B,)`` or per token ``(B, F*H*W/patch)``, the text states and the control latents
    ``(B, vace_in_channels, F, H, W)`` aligned with ``hidden_states`` frame by frame.
    """

    _no_split_modules: ClassVar[list[str]] = ["WanTransformerBlock", "SpatiaControlBlock"]
    _repeated_blocks: ClassVar[list[str]] = ["WanTransformerBlock", "SpatiaControlBlock"]
    _skip_layerwise_casting_patterns: ClassVar[list[str]] = [
        "patch_embedding",
        "vace_patch_embedding",
        "condition_embedder",
        "norm",
    ]

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 24,
        attention_head_dim: int = 128,
        in_channels: int = 48,
        out_channels: int = 48,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 14336,
        num_layers: int = 30,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        vace_layers: tuple[int, ...] = SPATIA_CONTROL_LAYERS,
        vace_in_channels: int = 96,
    ) -> None:
        super().__init__(
            patch_size=patch_size,
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            text_dim=text_dim,
            freq_dim=freq_dim,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            cross_attn_norm=cross_attn_norm,
            qk_norm=qk_norm,
            eps=eps,
            image_dim=image_dim,
            added_kv_proj_dim=added_kv_proj_dim,
            rope_max_seq_len=rope_max_seq_len,
            pos_embed_seq_len=pos_embed_seq_len,
        )
        layers = list(vace_layers)
        if not layers or layers[0] != 0 or sorted(set(layers)) != layers:
            raise ValueError(f"vace_layers must be strictly increasing and start at 0, got {layers}")
        if layers[-1] >= num_layers:
            raise ValueError(f"vace_layers {layers} exceed the number of transformer layers {num_layers}")
        inner_dim = num_attention_heads * attention_head_dim
        self.vace_patch_embedding = nn.Conv3d(
            vace_in_channels, inner_dim, kernel_size=patch_size, stride=patch_size
        )
        self.vace_blocks = nn.ModuleList(
            [
                SpatiaControlBlock(
                    inner_dim,
                    ffn_dim,
                    num_attention_heads,
                    qk_norm,
                    cross_attn_norm,
                    eps,
                    added_kv_proj_dim,
                    apply_input_projection=i == 0,
                )
                for i in range(len(layers))
            ]
        )

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_transformer(
        cls,
        transformer: WanTransformer3DModel,
        *,
        vace_layers: tuple[int, ...] = SPATIA_CONTROL_LAYERS,
        vace_in_channels: int = 96,
        copy_main_weights_into_control: bool = True,
    ) -> SpatiaTransformer3DModel:
        """Wrap a (pretrained) Wan transformer: main weights copied, control branch new.

        With ``copy_main_weights_into_control`` each control block starts from the main
        block at its layer (ControlNet's ``from_transformer`` initialisation); the output
        projectors stay zero either way.
        """
        config = {k: v for k, v in transformer.config.items() if not k.startswith("_")}
        model = cls(**config, vace_layers=tuple(vace_layers), vace_in_channels=vace_in_channels)
        if transformer.dtype != model.dtype:
            model = model.to(dtype=transformer.dtype)
        missing, unexpected = model.load_state_dict(transformer.state_dict(), strict=False)
        if unexpected or any(not k.startswith(("vace_blocks.", "vace_patch_embedding.")) for k in missing):
            raise ValueError(
                f"transformer does not match the Wan layout: missing={missing} unexpected={unexpected}"
            )
        if copy_main_weights_into_control:
            for block, layer in zip(model.vace_blocks, vace_layers, strict=True):
                state = copy.deepcopy(transformer.blocks[layer].state_dict())
                block.load_state_dict(state, strict=False)
        return model

    def control_parameters(self) -> list[nn.Parameter]:
        """Parameters of the control branch (stage 1 trains exactly these)."""
        return [*self.vace_patch_embedding.parameters(), *self.vace_blocks.parameters()]

    def control_state_dict(self) -> dict[str, torch.Tensor]:
        """The control branch's weights, keyed as in the full model."""
        return {
            k: v
            for k, v in self.state_dict().items()
            if k.startswith(("vace_blocks.", "vace_patch_embedding."))
        }

    # ------------------------------------------------------------------ forward

    @apply_lora_scale("attention_kwargs")
    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        control_hidden_states: torch.Tensor | None = None,
        control_hidden_states_scale: torch.Tensor | float = 1.0,
        encoder_hidden_states_image: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Denoise ``hidden_states``; without ``control_hidden_states`` this is the base Wan model."""
        batch_size, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        post_f, post_h, post_w = num_frames // p_t, height // p_h, width // p_w
        layers = list(self.config.vace_layers)

        scales = torch.as_tensor(control_hidden_states_scale, dtype=torch.float32)
        scales = scales.expand(len(layers)) if scales.ndim == 0 else scales
        if scales.shape != (len(layers),):
            raise ValueError(
                f"control_hidden_states_scale needs {len(layers)} entries, got {tuple(scales.shape)}"
            )
        if control_hidden_states is not None and control_hidden_states.shape[2:] != hidden_states.shape[2:]:
            raise ValueError(
                f"control latents {tuple(control_hidden_states.shape)} must match the frames and size of "
                f"hidden_states {tuple(hidden_states.shape)}"
            )

        rotary_emb = self.rope(hidden_states)
        hidden_states = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()

        # Per-token timesteps (Wan2.2 TI2V): (B, L) -> temb (B, L, D), projections (B, L, 6, D).
        ts_seq_len = None
        if timestep.ndim == 2:
            ts_seq_len = timestep.shape[1]
            if ts_seq_len != hidden_states.shape[1]:
                raise ValueError(
                    f"per-token timestep has {ts_seq_len} entries for {hidden_states.shape[1]} tokens"
                )
            timestep = timestep.flatten()
        temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = self.condition_embedder(
            timestep, encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len=ts_seq_len
        )
        timestep_proj = timestep_proj.unflatten(2 if ts_seq_len is not None else 1, (6, -1))
        if encoder_hidden_states_image is not None:
            encoder_hidden_states = torch.cat([encoder_hidden_states_image, encoder_hidden_states], dim=1)

        checkpointing = torch.is_grad_enabled() and self.gradient_checkpointing

        def run(block: nn.Module, *args: Any) -> Any:
            return self._gradient_checkpointing_func(block, *args) if checkpointing else block(*args)

        # The control branch reads the main stream's input once (VACE), then runs as a chain.
        hints: dict[int, torch.Tensor] = {}
        if control_hidden_states is not None:
            control = self.vace_patch_embedding(control_hidden_states.to(hidden_states.dtype))
            control = control.flatten(2).transpose(1, 2).contiguous()
            for i, (layer, block) in enumerate(zip(layers, self.vace_blocks, strict=True)):
                hint, control = run(
                    block, hidden_states, encoder_hidden_states, control, timestep_proj, rotary_emb
                )
                hints[layer] = hint * scales[i].to(hint)

        for i, block in enumerate(self.blocks):
            hidden_states = run(block, hidden_states, encoder_hidden_states, timestep_proj, rotary_emb)
            if i in hints:
                hidden_states = hidden_states + hints[i]

        if temb.ndim == 3:
            shift, scale = (self.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (self.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden_states = (self.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch_size, post_f, post_h, post_w, p_t, p_h, p_w, -1)
        output = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)
