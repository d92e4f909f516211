"""``LivrModel``: a Hugging Face VLM with K latent tokens, LoRA and the bottleneck mask.

The base model is the unmodified transformers class; no modeling code is copied. The
bottleneck reaches its attention in one of two ways (``ModelConfig.mask_route``):

- ``registry`` (default): the language model runs latentforge's attention function, registered
  in transformers' attention and mask registries, and the per-token roles travel as keyword
  arguments from the top-level forward down to every attention call;
- ``dense``: ``latentforge.kernels.bottleneck_mask`` builds a 4-D mask that is passed as
  ``attention_mask`` (transformers hands a 4-D mask to the eager/SDPA functions unchanged).

Either way the multimodal RoPE positions are computed here with the model's own
``get_rope_index`` (latent tokens count as text) and passed explicitly, so both routes and the
KV-cached decoding loop use the same positions.

Checkpoint folder (``save_pretrained``)::

    livr_config.json           backbone, base model, K, latent ids and LoRA settings
    adapter/                   peft LoRA adapter (adapter_config.json, adapter_model.safetensors)
    latents.safetensors        the K trained latent embedding rows
    tokenizer files, preprocessor_config.json (with the latent tokens added)
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.utils import load_peft_weights
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoImageProcessor, AutoTokenizer, DynamicCache

from latentforge.configs import config_from_dict, config_to_dict
from latentforge.distributed import unwrap_model
from latentforge.kernels import Role, bottleneck_mask, bottleneck_roles, register_transformers_bottleneck
from latentforge.kernels.roles import parse_stage
from livr.backbones import BackboneAdapter, get_backbone
from livr.config import ModelConfig
from livr.latents import add_latent_tokens, grow_embeddings, init_latent_rows
from livr.prompting import IGNORE_INDEX, Batch, PromptEncoder

LIVR_CONFIG = "livr_config.json"
LATENTS_FILE = "latents.safetensors"
ADAPTER_DIR = "adapter"
FORMAT_VERSION = 1


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean (True = attend) -> additive float mask, which eager and SDPA both accept."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


def answer_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL over the answer tokens (labels != IGNORE_INDEX)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


class LivrModel(nn.Module):
    """A VLM with latent tokens; ``forward(batch, stage)`` applies the stage's mask."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        image_processor: Any,
        adapter: BackboneAdapter,
        config: ModelConfig,
        latent_ids: list[int],
        base_model_id: str,
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.adapter = adapter
        self.config = config
        self.latent_ids = list(latent_ids)
        self.base_model_id = base_model_id
        self.encoder = PromptEncoder(tokenizer, image_processor, adapter, self.latent_ids)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_backbone(
        cls, config: ModelConfig, *, dtype: torch.dtype | None = None, lora: bool = True
    ) -> LivrModel:
        """Load the base model named by ``config`` (hub id or folder), add latents and LoRA."""
        adapter = get_backbone(config.backbone)
        model_id = config.model_id or adapter.default_model_id
        if config.attn_implementation == "flash_attention_2":
            raise ValueError(
                "attn_implementation='flash_attention_2' keeps only a 2-D padding mask and cannot express the "
                "LIVR bottleneck; use 'sdpa' or 'eager'"
            )
        attn: str | dict[str, str] = config.attn_implementation
        if config.mask_route == "registry":
            attn = {
                "text_config": register_transformers_bottleneck(),
                "vision_config": config.attn_implementation,
            }
        adapter.check_loadable(str(model_id), config.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=config.trust_remote_code)
        tokenizer.padding_side = "left"
        overrides = {
            k: v for k, v in (("min_pixels", config.min_pixels), ("max_pixels", config.max_pixels)) if v
        }
        image_processor = AutoImageProcessor.from_pretrained(model_id, **overrides)
        model = adapter.load_model(
            str(model_id),
            dtype=dtype or torch.float32,
            attn_implementation=attn,
            trust_remote_code=config.trust_remote_code,
        )
        adapter.check_model(model, str(model_id))
        latent_ids = add_latent_tokens(tokenizer, config.num_latents)
        if latent_ids:
            grow_embeddings(model, max(latent_ids) + 1)
            init_latent_rows(model, latent_ids, seed=config.latent_init_seed)
        if lora:
            model = get_peft_model(model, cls.lora_config(adapter, config, latent_ids))
        else:
            model.requires_grad_(False)
        return cls(model, tokenizer, image_processor, adapter, config, latent_ids, str(model_id))

    @staticmethod
    def lora_config(adapter: BackboneAdapter, config: ModelConfig, latent_ids: list[int]) -> LoraConfig:
        """The paper's LoRA on the LM projections, plus the K latent embedding rows."""
        return LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=adapter.lora_target_modules,
            trainable_token_indices={adapter.embedding_module: latent_ids} if latent_ids else None,
        )

    @property
    def peft_model(self) -> nn.Module:
        """``self.model`` without a DDP/FSDP wrapper."""
        return unwrap_model(self.model)

    @property
    def base(self) -> nn.Module:
        """The transformers model underneath the peft (and data-parallel) wrappers."""
        inner = self.peft_model
        return inner.get_base_model() if isinstance(inner, PeftModel) else inner

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ running
    def encode(self, examples, *, with_answer: bool = True) -> Batch:
        """Examples -> a left-padded batch on this model's device."""
        return self.encoder.encode(examples, with_answer=with_answer).to(self.device)

    def positions(self, batch: Batch) -> torch.Tensor:
        """Multimodal RoPE position ids ``(3, B, S)`` for ``batch``."""
        return self.adapter.rope_positions(
            self.base, batch.input_ids, batch.attention_mask, batch.image_grid_thw
        )

    def _mask_kwargs(
        self,
        roles: torch.Tensor,
        attention_mask: torch.Tensor,
        stage: int | str,
        query_length: int | None = None,
    ) -> dict[str, Any]:
        """The model-call arguments that carry the stage's bottleneck for the configured route."""
        require = self._require_latents
        if self.config.mask_route == "registry":
            return {
                "attention_mask": attention_mask,
                "roles": roles,
                "stage": parse_stage(stage),
                "require_latents": require,
            }
        dtype = self.base.get_input_embeddings().weight.dtype
        mask = bottleneck_mask(roles, stage, query_length=query_length, require_latents=require)
        return {"attention_mask": additive_mask(mask, dtype)}

    @property
    def _require_latents(self) -> bool:
        return not self.config.stage1_without_latents

    def forward(self, batch: Batch, stage: int | str = 1, **kwargs: Any) -> Any:
        """Run the model with the stage's mask; the output gets ``loss`` (answer NLL) when labels exist."""
        out = self.model(
            input_ids=batch.input_ids,
            position_ids=self.positions(batch),
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
            use_cache=False,
            **self._mask_kwargs(batch.roles, batch.attention_mask, stage),
            **kwargs,
        )
        if batch.labels is not None:
            out.loss = answer_nll(out.logits, batch.labels)
        return out

    @torch.no_grad()
    def generate(self, batch: Batch, stage: int | str = 2, max_new_tokens: int = 16) -> list[str]:
        """Greedy decoding with a KV cache; every new token is an ANSWER query under the stage's mask.

        Latent tokens are never generated (their logits are masked out).
        """
        ids = self.generate_ids(batch, stage, max_new_tokens)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    @torch.no_grad()
    def generate_ids(self, batch: Batch, stage: int | str = 2, max_new_tokens: int = 16) -> torch.Tensor:
        """Like :meth:`generate`, returning the new token ids ``(B, T)`` (pad after eos)."""
        roles = batch.roles
        positions = self.positions(batch)
        cache = DynamicCache(config=self.base.config.get_text_config())
        attention_mask = batch.attention_mask
        out = self.model(
            input_ids=batch.input_ids,
            **self._mask_kwargs(roles, attention_mask, stage),
            position_ids=positions,
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
            cache=cache,
            use_cache=True,
        )
        next_pos = positions.amax(dim=(0, 2)) + 1
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        done = torch.zeros(batch.input_ids.shape[0], dtype=torch.bool, device=roles.device)
        new_tokens = []
        for _ in range(max_new_tokens):
            logits = out.logits[:, -1].float()
            if self.latent_ids:
                logits[:, self.latent_ids] = float("-inf")
            token = torch.where(done, torch.full_like(done, pad, dtype=torch.long), logits.argmax(-1))
            new_tokens.append(token)
            step_role = torch.where(done, int(Role.PAD), int(Role.ANSWER))
            done = done | (token == eos)
            if bool(done.all()):
                break
            roles = torch.cat([roles, step_role[:, None]], dim=1)
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
            out = self.model(
                input_ids=token[:, None],
                **self._mask_kwargs(roles, attention_mask, stage, query_length=1),
                position_ids=next_pos[None, :, None].expand(3, -1, 1),
                cache=out.cache,
                use_cache=True,
            )
            next_pos = next_pos + 1
        return torch.stack(new_tokens, dim=1)

    @torch.no_grad()
    def hf_generate(self, batch: Batch, stage: int | str = 2, **generate_kwargs: Any) -> torch.Tensor:
        """transformers' ``generate`` (sampling, beams...) under the stage's mask; returns the new ids.

        Needs ``mask_route="registry"``: the roles reach the attention through ``bottleneck_roles``,
        and generated positions count as ANSWER. transformers places the mRoPE positions itself.
        """
        if self.config.mask_route != "registry":
            raise ValueError("hf_generate needs mask_route='registry'; use generate() with the dense route")
        kwargs = {
            "max_new_tokens": 16,
            "do_sample": False,
            "eos_token_id": self.tokenizer.eos_token_id,
            "pad_token_id": self.tokenizer.pad_token_id,
            **generate_kwargs,
        }
        if self.latent_ids:
            kwargs["suppress_tokens"] = list(self.latent_ids) + list(kwargs.get("suppress_tokens") or [])
        with bottleneck_roles(batch.roles, stage, require_latents=self._require_latents):
            out = self.peft_model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                pixel_values=batch.pixel_values,
                image_grid_thw=batch.image_grid_thw,
                mm_token_type_ids=(batch.input_ids == self.base.config.image_token_id).int(),
                **kwargs,
            )
        return out[:, batch.input_ids.shape[1] :]

    # ------------------------------------------------------------------ parameters
    def latent_rows(self) -> torch.Tensor:
        """The K latent embedding rows as the model currently uses them."""
        ids = torch.tensor(self.latent_ids, device=self.device)
        return self.peft_model.get_input_embeddings()(ids).detach()

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: LoRA matrices decay, the latent rows do not."""
        decay, no_decay = [], []
        for name, p in self.trainable_named_parameters():
            (no_decay if "trainable_tokens" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the adapter, latent rows, tokenizer, image processor and config to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not isinstance(self.peft_model, PeftModel):
            raise ValueError("save_pretrained needs a LoRA-wrapped model (built with lora=True)")
        self.peft_model.save_pretrained(folder / ADAPTER_DIR)
        if self.latent_ids:
            save_file(
                {"latent_embeddings": self.latent_rows().cpu().contiguous()}, str(folder / LATENTS_FILE)
            )
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
        meta = {
            "format_version": FORMAT_VERSION,
            "backbone": self.adapter.name,
            "base_model": self.base_model_id,
            "base_model_type": self.base.config.model_type,
            "latent_ids": self.latent_ids,
            "model_config": config_to_dict(self.config),
        }
        (folder / LIVR_CONFIG).write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, *, base_model: str | None = None, dtype: torch.dtype | None = None
    ) -> LivrModel:
        """Load a checkpoint written by :meth:`save_pretrained` onto its base model.

        ``base_model`` overrides the hub id or folder recorded in the checkpoint (e.g. a local copy);
        it must be of the checkpoint's backbone.
        """
        folder = Path(folder)
        meta_file = folder / LIVR_CONFIG
        if not meta_file.is_file():
            raise FileNotFoundError(f"{folder} is not a livr checkpoint: {LIVR_CONFIG} is missing")
        try:
            meta = json.loads(meta_file.read_text())
            config = config_from_dict(ModelConfig, meta["model_config"], where=str(meta_file))
            latent_ids = [int(i) for i in meta["latent_ids"]]
            backbone = str(meta["backbone"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{meta_file} is not a valid livr checkpoint config: {exc}") from exc
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_file}: unsupported format_version {meta.get('format_version')!r}")
        if backbone != config.backbone:
            raise ValueError(f"{meta_file}: backbone {backbone!r} disagrees with model_config.backbone")
        config = dataclasses.replace(config, model_id=base_model or meta["base_model"])
        try:
            livr = cls.from_backbone(config, dtype=dtype)
        except ValueError as exc:
            raise ValueError(f"checkpoint {folder} was made for backbone {backbone!r}: {exc}") from exc
        if livr.latent_ids != latent_ids:
            raise ValueError(
                f"{meta_file}: latent token ids {latent_ids} differ from the ids {livr.latent_ids} the base "
                "tokenizer assigns; the checkpoint was made for another tokenizer"
            )
        adapter_dir = folder / ADAPTER_DIR
        if not (adapter_dir / "adapter_config.json").is_file():
            raise FileNotFoundError(f"checkpoint {folder} has no {ADAPTER_DIR}/adapter_config.json")
        weights = load_peft_weights(str(adapter_dir), device="cpu")
        result = set_peft_model_state_dict(livr.model, weights)
        missing = [k for k in result.missing_keys if "lora_" in k or "trainable_tokens" in k]
        if result.unexpected_keys or missing:
            raise ValueError(
                f"{adapter_dir}: adapter does not fit the base model "
                f"(unexpected {result.unexpected_keys[:5]}, missing {missing[:5]})"
            )
        if latent_ids:
            livr.load_latent_rows(folder / LATENTS_FILE)
        return livr

    @torch.no_grad()
    def load_latent_rows(self, path: Path) -> None:
        """Set the trained latent rows from ``latents.safetensors``."""
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing")
        rows = load_file(str(path)).get("latent_embeddings")
        expected = (len(self.latent_ids), self.base.get_input_embeddings().weight.shape[1])
        if rows is None or tuple(rows.shape) != expected:
            raise ValueError(f"{path}: expected 'latent_embeddings' of shape {expected}")
        delta = self.latent_parameter()
        delta.copy_(rows.to(delta))

    def latent_parameter(self) -> nn.Parameter:
        """peft's trainable-token parameter holding the K latent rows."""
        found = [p for n, p in self.model.named_parameters() if "trainable_tokens_delta" in n]
        if len(found) != 1:
            raise RuntimeError(f"expected one trainable-token parameter, found {len(found)}")
        return found[0]
