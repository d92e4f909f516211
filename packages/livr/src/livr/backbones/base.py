"""What livr needs to know about a vision-language backbone, in one small interface.

An adapter names the model class, where the image placeholder tokens are, which modules
are the vision tower and projector (frozen), which language-model projections get LoRA,
how many placeholder tokens an image expands to, and how to build a tiny random-weight
copy for offline tests. Adding a backbone means writing one subclass and registering it.
"""

from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


class BackboneAdapter(abc.ABC):
    """Backbone-specific facts; everything else in livr is backbone-agnostic."""

    #: registry key, also written into checkpoints
    name: ClassVar[str]
    #: ``config.model_type`` of checkpoints this adapter accepts
    model_types: ClassVar[tuple[str, ...]]
    #: the hub id used when none is given
    default_model_id: ClassVar[str]
    #: the placeholder that the chat template emits once per image and the processor expands
    image_token: ClassVar[str] = "<|image_pad|>"
    #: attribute paths (from the ``*ForConditionalGeneration`` model) of frozen vision parts
    vision_modules: ClassVar[tuple[str, ...]] = ("model.visual",)
    #: regex (full match, peft semantics) of the language model's attention and MLP projections
    lora_target_modules: ClassVar[str] = (
        r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
    )
    #: the input embedding's module name, as peft's ``trainable_token_indices`` expects it
    embedding_module: ClassVar[str] = "embed_tokens"

    @property
    @abc.abstractmethod
    def model_class(self) -> type[PreTrainedModel]:
        """The transformers class that holds vision tower, projector and language model."""

    @abc.abstractmethod
    def published_config(self) -> PretrainedConfig:
        """The published checkpoint's config, written from the paper notes (no download)."""

    @abc.abstractmethod
    def tiny_config(self, vocab: dict[str, int], vocab_size: int) -> PretrainedConfig:
        """A few-thousand-parameter config with the same architecture, for CPU tests."""

    @abc.abstractmethod
    def image_processor(self, **overrides: Any) -> Any:
        """A local image processor with this backbone's patching (small images for tests)."""

    def check_loadable(self, model_id: str, trust_remote_code: bool) -> None:
        """Raise before any weights are read if ``model_id`` cannot be loaded as asked.

        A local folder's ``config.json`` must name one of this backbone's model types (a hub id is
        checked after loading, by :meth:`check_model`).
        """
        del (
            trust_remote_code
        )  # native classes never need it; adapters with a remote route override load_model
        config_file = Path(model_id) / "config.json"
        if not config_file.is_file():
            return
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ValueError(f"{config_file} is not a valid JSON config: {exc}") from exc
        if model_type not in self.model_types:
            raise ValueError(
                f"{config_file}: model_type {model_type!r} does not match backbone {self.name!r} "
                f"(expects {list(self.model_types)})"
            )

    def load_model(
        self, model_id: str, *, dtype: torch.dtype, attn_implementation: str, trust_remote_code: bool
    ) -> PreTrainedModel:
        """Load the base model by hub id or local folder (native classes need no remote code)."""
        del trust_remote_code
        return self.model_class.from_pretrained(
            model_id, dtype=dtype, attn_implementation=attn_implementation
        )

    def num_image_tokens(self, grid_thw: torch.Tensor, merge_size: int) -> int:
        """How many placeholder tokens one image with patch grid ``grid_thw`` expands to."""
        return int(grid_thw.prod()) // (merge_size**2)

    def rope_positions(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_grid_thw: torch.Tensor | None,
    ) -> torch.Tensor:
        """Multimodal RoPE position ids ``(3, B, S)`` from the token layout: latent tokens count as plain text.

        Computed by :func:`mrope_positions` (the Qwen-VL rule written out), so no position is left for
        transformers to infer, e.g. from a 4-D mask; tests check it equals the model's ``get_rope_index``.
        """
        return mrope_positions(
            input_ids,
            attention_mask,
            image_grid_thw,
            image_token_id=int(model.config.image_token_id),
            merge_size=int(model.config.vision_config.spatial_merge_size),
        )

    def vision_parameters(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """Named parameters of the vision tower and projector."""
        out = []
        for path in self.vision_modules:
            module = model.get_submodule(path)
            out.extend((f"{path}.{n}", p) for n, p in module.named_parameters())
        return out

    def check_model(self, model: PreTrainedModel, where: str) -> None:
        """Refuse a model that is not of this backbone's type."""
        model_type = getattr(model.config, "model_type", None)
        if model_type not in self.model_types:
            raise ValueError(
                f"{where}: model_type {model_type!r} does not match backbone {self.name!r} "
                f"(expects {list(self.model_types)})"
            )


def mrope_positions(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    image_grid_thw: torch.Tensor | None,
    *,
    image_token_id: int,
    merge_size: int,
) -> torch.Tensor:
    """Qwen-VL multimodal RoPE positions ``(3, B, S)`` (time, row, column) from each row's 2-D layout.

    Counting from a row's first non-padding token: a text token (latents and answers included) takes
    ``(p, p, p)`` and advances ``p`` by one; an image's ``t x h x w`` merged grid takes ``(p + i, p + r,
    p + c)`` for its tokens in raster order, then ``p`` continues one past the largest of them. Images
    are consumed from ``image_grid_thw`` in order through the batch. Padding gets 0.
    """
    batch, length = input_ids.shape
    out = torch.zeros(3, batch, length, dtype=torch.long, device=input_ids.device)
    grids = iter(image_grid_thw.tolist()) if image_grid_thw is not None else iter(())
    ids, valid = input_ids.tolist(), attention_mask.bool().tolist()
    for b in range(batch):
        cols: list[tuple[int, int, int]] = []
        where = [i for i in range(length) if valid[b][i]]
        p, k = 0, 0
        while k < len(where):
            if ids[b][where[k]] != image_token_id:
                cols.append((p, p, p))
                p, k = p + 1, k + 1
                continue
            t, h, w = next(grids)
            h, w = h // merge_size, w // merge_size
            cols += [(p + i, p + r, p + c) for i in range(t) for r in range(h) for c in range(w)]
            p, k = p + max(t, h, w), k + t * h * w
        out[:, b, where] = torch.tensor(cols, dtype=torch.long, device=input_ids.device).T
    return out


class QwenVLFamilyAdapter(BackboneAdapter):
    """What the Qwen-VL family (and LLaVA-OV-1.5, built on it) shares: special tokens, image processor, tiny LM.

    The two differ only in model class, configs and the vision patch size.
    """

    vision_patch_size: int = 14

    @staticmethod
    def special_token_ids(vocab: dict[str, int]) -> dict[str, int]:
        """The image/video placeholder and vision-bracket ids a Qwen-VL config needs."""
        return {
            "image_token_id": vocab["<|image_pad|>"],
            "video_token_id": vocab["<|video_pad|>"],
            "vision_start_token_id": vocab["<|vision_start|>"],
            "vision_end_token_id": vocab["<|vision_end|>"],
        }

    @staticmethod
    def tiny_text_config(vocab: dict[str, int], vocab_size: int, **rope_parameters: Any) -> dict[str, Any]:
        """The tiny language model every Qwen-family test backbone shares (2 layers, width 32, GQA 4/2)."""
        return dict(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=1024,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, **rope_parameters},
            bos_token_id=None,
            eos_token_id=vocab["<|im_end|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )

    def image_processor(self, **overrides: Any) -> Any:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        kwargs = dict(patch_size=self.vision_patch_size, merge_size=2, temporal_patch_size=2)
        kwargs.update(overrides)
        return Qwen2VLImageProcessorPil(**kwargs)
