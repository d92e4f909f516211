"""``SpatiaPipeline``: iterative, camera-controlled video generation with an updatable spatial memory.

One call turns a text instruction, an initial image (with its depth) and a camera trajectory
into a video, clip by clip (paper Sec. 3, notes in ``shared/papers/spatia.md``):

1. the initial image's points (unprojected with its depth) start the memory;
2. for every clip, the memory is rendered along the clip's cameras (the control input), up to
   ``num_reference_frames`` earlier keyframes are retrieved by 3D overlap with the new views, and
   the clip is denoised with the preceding frames (the image for the first clip, the last
   ``history_frames`` frames afterwards) and the references as clean in-context latents;
3. after every clip, the memory is updated from the new frames by visual SLAM (pycolmap, in
   ``SpatialMemory.update_from_clip``); its pose estimates form the estimated camera path.

``use_memory=False`` is the ablation the evaluation needs: the control input is an empty memory
(every pixel a hole) and no reference frames are given. Edits (remove or insert a box of points)
are applied to the memory before the clip they are scheduled for (3D-aware editing).

The pipeline is a diffusers ``DiffusionPipeline``: ``save_pretrained`` writes transformer, VAE,
text encoder, tokenizer and scheduler folders plus ``model_index.json``; ``from_pretrained``
reads them back. Sampling uses ``FlowMatchEulerDiscreteScheduler`` (the training objective's
convention: timestep ``1000 * sigma``, velocity ``noise - x0``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from diffusers import AutoencoderKLWan, DiffusionPipeline, FlowMatchEulerDiscreteScheduler

from spatia.conditioning import (
    FrameLayout,
    decode_latents,
    encode_control,
    encode_video,
    latent_frames,
    token_timesteps,
    trim_context,
)
from spatia.models import SpatiaTransformer3DModel

if TYPE_CHECKING:
    from spatia.spatial_memory import SpatialMemory


@dataclass
class MemoryEdit:
    """A 3D edit of the memory: ``remove`` the points in the box ``[lo, hi]`` or ``insert`` a box of ``color``."""

    kind: Literal["remove", "insert"]
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    color: tuple[float, float, float] = (1.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.kind not in ("remove", "insert"):
            raise ValueError(f"edit kind must be 'remove' or 'insert', got {self.kind!r}")
        if any(a > b for a, b in zip(self.lo, self.hi, strict=True)):
            raise ValueError(f"edit box lo {self.lo} must be <= hi {self.hi} on every axis")


def box_surface_points(lo: torch.Tensor, hi: torch.Tensor, spacing: float) -> torch.Tensor:
    """Points on a grid over the six faces of the box ``[lo, hi]`` (at most ``spacing`` apart)."""
    lo, hi = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
    steps = [max(int(torch.ceil((hi[a] - lo[a]) / spacing)) + 1, 2) for a in range(3)]
    axes = [torch.linspace(float(lo[a]), float(hi[a]), steps[a], dtype=torch.float64) for a in range(3)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    on_face = ((grid == lo) | (grid == hi)).any(-1)
    return grid[on_face].float()


def apply_edit(memory: SpatialMemory, edit: MemoryEdit) -> int:
    """Apply ``edit`` to ``memory``; returns the number of points removed or inserted."""
    if edit.kind == "remove":
        return memory.remove_box(edit.lo, edit.hi)
    points = box_surface_points(torch.tensor(edit.lo), torch.tensor(edit.hi), memory.voxel_size)
    return memory.insert_points(points, torch.tensor([edit.color], dtype=torch.float32))


@dataclass
class ClipRecord:
    """What conditioned one clip: its frame range, the memory render, holes, references, SLAM outcome."""

    start: int
    stop: int
    render: torch.Tensor  # (F, 3, H, W) in [0, 1], over history + new frames
    holes: torch.Tensor  # (F, H, W) bool
    reference_ids: list[int]
    slam: dict[str, Any] = field(default_factory=dict)


@dataclass
class SpatiaOutput:
    """Generated frames ``(T, 3, H, W)`` in [0, 1], requested and estimated cameras, the memory and per-clip records."""

    frames: torch.Tensor
    requested_w2c: torch.Tensor
    estimated_w2c: torch.Tensor
    intrinsics: torch.Tensor
    clips: list[ClipRecord]
    memory: SpatialMemory | None
    registered: torch.Tensor  # (T,) bool: frames whose estimated pose came from SLAM (frame 0: given)


def clip_schedule(num_frames: int, first_clip_frames: int, new_frames: int) -> list[tuple[int, int]]:
    """``(start, stop)`` frame ranges of the clips covering ``num_frames`` (first clip, then new-frame clips)."""
    if num_frames < first_clip_frames or (num_frames - first_clip_frames) % new_frames:
        raise ValueError(
            f"a trajectory of {num_frames} frames does not split into a first clip of {first_clip_frames} "
            f"frames plus clips of {new_frames} new frames; use {first_clip_frames} + k * {new_frames} frames"
        )
    ranges = [(0, first_clip_frames)]
    while ranges[-1][1] < num_frames:
        ranges.append((ranges[-1][1], ranges[-1][1] + new_frames))
    return ranges


def tiny_tokenizer():
    """A saveable ``PreTrainedTokenizerFast`` giving exactly ``spatia.tiny.ByteTokenizer``'s ids (bytes + 2, eos 1, pad 0).

    The tiny networks are trained with ``ByteTokenizer``; a pipeline needs a tokenizer diffusers can save and
    load, so this is the same mapping written as a byte-level BPE without merges.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = bytes_to_unicode()
    vocab = {"<pad>": 0, "</s>": 1, **{byte_chars[b]: b + 2 for b in range(256)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>")


class SpatiaPipeline(DiffusionPipeline):
    """Text + initial image + camera trajectory -> video, conditioned on an updatable 3D memory.

    Config values (saved in ``model_index.json``): ``text_length`` (prompt tokens, 512 for Wan),
    ``first_clip_frames`` / ``history_frames`` / ``new_frames`` (paper: 81 / 9 / 72).
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"

    def __init__(
        self,
        tokenizer: Any,
        text_encoder: Any,
        vae: AutoencoderKLWan,
        transformer: SpatiaTransformer3DModel,
        scheduler: FlowMatchEulerDiscreteScheduler,
        text_length: int = 512,
        first_clip_frames: int = 81,
        history_frames: int = 9,
        new_frames: int = 72,
    ) -> None:
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=vae,
            transformer=transformer,
            scheduler=scheduler,
        )
        if first_clip_frames != history_frames + new_frames:
            raise ValueError(
                f"first_clip_frames ({first_clip_frames}) must equal history_frames + new_frames "
                f"({history_frames} + {new_frames}), as in training"
            )
        self.register_to_config(
            text_length=text_length,
            first_clip_frames=first_clip_frames,
            history_frames=history_frames,
            new_frames=new_frames,
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        torch_dtype=None,
        revision: str | None = None,
    ) -> SpatiaPipeline:
        """Load a ``save_pretrained`` folder (or hub id), validating ``model_index.json``.

        diffusers' generic loader only finds component classes in diffusers / transformers, and the
        transformer class lives in this package, so every component is loaded here by its own class.
        """
        from transformers import AutoTokenizer, UMT5EncoderModel

        from spatia.models.tiny_vae import load_vae

        root = Path(pretrained_model_name_or_path)
        if not root.is_dir():
            from huggingface_hub import snapshot_download

            root = Path(snapshot_download(str(pretrained_model_name_or_path), revision=revision))
        index_path = root / "model_index.json"
        try:
            index = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{index_path}: cannot read the pipeline index: {exc}") from exc
        if index.get("_class_name") != cls.__name__:
            raise ValueError(f"{index_path}: holds a {index.get('_class_name')!r}, not a {cls.__name__}")
        missing = [
            n for n in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler") if n not in index
        ]
        if missing:
            raise ValueError(f"{index_path}: missing components {missing}")
        dtype = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
        return cls(
            tokenizer=AutoTokenizer.from_pretrained(root / "tokenizer"),
            text_encoder=UMT5EncoderModel.from_pretrained(root / "text_encoder", **dtype).eval(),
            vae=load_vae(str(root / "vae")),
            transformer=SpatiaTransformer3DModel.from_pretrained(root / "transformer", **dtype),
            scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(root / "scheduler"),
            **{
                k: index[k]
                for k in ("text_length", "first_clip_frames", "history_frames", "new_frames")
                if k in index
            },
        )

    @classmethod
    def from_networks(
        cls,
        networks,
        *,
        tokenizer: Any,
        first_clip_frames: int,
        history_frames: int,
        new_frames: int,
        shift: float = 5.0,
    ) -> SpatiaPipeline:
        """A pipeline around ``spatia.networks.Networks`` (a trained transformer and its frozen encoders)."""
        return cls(
            tokenizer=tokenizer,
            text_encoder=networks.text_encoder,
            vae=networks.vae,
            transformer=networks.transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
            text_length=networks.text_length,
            first_clip_frames=first_clip_frames,
            history_frames=history_frames,
            new_frames=new_frames,
        )

    # ------------------------------------------------------------------ pieces

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """UMT5 states ``(B, L, D)`` with padding positions zeroed (as training and the Wan pipelines do)."""
        out = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.config.text_length,
            truncation=True,
            return_tensors="pt",
        )
        ids, mask = out.input_ids.to(self.device), out.attention_mask.to(self.device)
        states = self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return states * mask.unsqueeze(-1).to(states.dtype)

    def _velocity(self, latents, timestep, layout, text, control, guidance_scale):
        patch = tuple(self.transformer.config.patch_size)
        h, w = latents.shape[-2:]
        batch = text.shape[0]
        ts = token_timesteps(timestep.reshape(1).expand(batch), layout, h, w, patch)
        out = self.transformer(
            latents.expand(batch, -1, -1, -1, -1).to(self.transformer.dtype),
            ts,
            text.to(self.transformer.dtype),
            control_hidden_states=control.expand(batch, -1, -1, -1, -1),
            return_dict=False,
        )[0].float()
        v = trim_context(out, layout)
        if batch == 2:  # classifier-free guidance: [conditional, unconditional]
            v = v[1:] + guidance_scale * (v[:1] - v[1:])
        return v

    @torch.no_grad()
    def denoise(
        self,
        context: torch.Tensor,
        layout: FrameLayout,
        control: torch.Tensor,
        text: torch.Tensor,
        *,
        num_inference_steps: int,
        guidance_scale: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Sample the target latents ``(1, C, n, h, w)`` after the clean ``context`` (references + history)."""
        _, c, _, h, w = context.shape
        target = torch.randn(
            (1, c, layout.num_target, h, w),
            generator=generator,
            device=generator.device if generator else None,
        ).to(self.device)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        for t in self.scheduler.timesteps:
            latents = torch.cat([context, target], dim=2)
            v = self._velocity(latents, t, layout, text, control, guidance_scale)
            target = self.scheduler.step(v, t, target, return_dict=False)[0]
        return target

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        image: torch.Tensor,
        w2c: torch.Tensor,
        intrinsics: torch.Tensor,
        *,
        depth: torch.Tensor | None = None,
        memory: SpatialMemory | None = None,
        use_memory: bool = True,
        num_reference_frames: int = 7,
        update_memory: bool = True,
        memory_voxel_size: float = 0.01,
        edits: dict[int, list[MemoryEdit]] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        negative_prompt: str = "",
        generator: torch.Generator | None = None,
        show_progress: bool = True,
    ) -> SpatiaOutput:
        """Generate ``len(w2c)`` frames (``first_clip_frames + k * new_frames``) along the OpenCV w2c trajectory.

        ``image`` ``(3, H, W)`` in [0, 1] is frame 0's view; ``depth`` ``(H, W)`` its camera-space depth
        (exact on procedural scenes; the paper estimates it with MapAnything, see the README), needed
        when ``use_memory`` and no ``memory`` is given. ``edits[c]`` are applied before clip ``c``.
        """
        cfg = self.config
        w2c = torch.as_tensor(w2c).double()
        num_frames = w2c.shape[0]
        k_all = torch.as_tensor(intrinsics).double()
        k_all = k_all.expand(num_frames, 3, 3).clone() if k_all.ndim == 2 else k_all
        if w2c.shape != (num_frames, 4, 4) or k_all.shape != (num_frames, 3, 3):
            raise ValueError(f"need (T, 4, 4) w2c and (3, 3) or (T, 3, 3) intrinsics, got {tuple(w2c.shape)}")
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be (3, H, W) in [0, 1], got {tuple(image.shape)}")
        h, w = image.shape[-2:]
        schedule = clip_schedule(num_frames, cfg.first_clip_frames, cfg.new_frames)
        edits = edits or {}
        vae = self.vae
        t_factor = vae.config.scale_factor_temporal

        if use_memory and memory is None:
            if depth is None:
                raise ValueError(
                    "the initial memory needs the image's depth: pass depth=(H, W) (exact for procedural "
                    "scenes; a depth estimate for real images, see the README), or a prepared memory="
                )
            from spatia.spatial_memory import SpatialMemory

            memory = SpatialMemory(voxel_size=memory_voxel_size)
            memory.add_frames(image[None].float(), depth[None].float(), w2c[:1], k_all[:1], frame_ids=[0])

        text = self.encode_prompt([prompt])
        if guidance_scale > 1.0:
            text = torch.cat([text, self.encode_prompt([negative_prompt])])

        frames = torch.zeros(num_frames, 3, h, w)
        frames[0] = image.float()
        estimated = w2c.clone()
        registered = torch.zeros(num_frames, dtype=torch.bool)
        registered[0] = True
        records: list[ClipRecord] = []
        clips = self.progress_bar(schedule) if show_progress else schedule
        for c, (start, stop) in enumerate(clips):
            if use_memory:
                for edit in edits.get(c, []):
                    apply_edit(memory, edit)
            first = c == 0
            context_start = 0 if first else start - cfg.history_frames
            history = frames[0:1] if first else frames[context_start:start]
            span = slice(context_start, stop)  # the cameras this clip's latents cover
            cams, ks = w2c[span], k_all[span]
            if use_memory:
                render, holes = memory.render(cams, ks, h, w)
                holes = holes[:, 0]
                exclude = list(range(context_start, start))
                ids = (
                    memory.retrieve(
                        w2c[start:stop], k_all[start:stop], h, w, k=num_reference_frames, exclude=exclude
                    )
                    if not first and num_reference_frames > 0
                    else []
                )
            else:
                render = torch.zeros(len(cams), 3, h, w)
                holes = torch.ones(len(cams), h, w, dtype=torch.bool)
                ids = []
            control = encode_control(
                vae,
                (render * 2 - 1).permute(1, 0, 2, 3)[None].to(self.device),
                holes[None].to(self.device),
            )
            history_latents = encode_video(vae, (history * 2 - 1).permute(1, 0, 2, 3)[None].to(self.device))
            num_history = latent_frames(1 if first else cfg.history_frames, t_factor)
            num_target = latent_frames(cfg.first_clip_frames, t_factor) - num_history
            refs = None
            if ids:
                ref_images = torch.stack([memory.keyframe(i)[0].float() for i in ids])  # (K, 3, H, W)
                per = encode_video(vae, (ref_images * 2 - 1)[:, :, None].to(self.device))  # (K, C, 1, h, w)
                refs = per[:, :, 0].permute(1, 0, 2, 3)[None]
                control = torch.cat(
                    [control.new_zeros(*control.shape[:2], len(ids), *control.shape[3:]), control], 2
                )
            context = history_latents if refs is None else torch.cat([refs, history_latents], dim=2)
            layout = FrameLayout(len(ids), num_history, num_target)
            target = self.denoise(
                context,
                layout,
                control,
                text,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                generator=generator,
            )
            video = decode_latents(vae, torch.cat([history_latents, target], dim=2))  # (1, 3, F, H, W)
            video = ((video[0].permute(1, 0, 2, 3).float().cpu() + 1) / 2).clamp(0, 1)
            if video.shape[0] != cfg.first_clip_frames:
                raise RuntimeError(f"decoded {video.shape[0]} frames, expected {cfg.first_clip_frames}")
            new = video if first else video[cfg.history_frames :]
            if first:
                new = new[1:]  # frame 0 stays the given image
            frames[start + int(first) : stop] = new
            slam: dict[str, Any] = {}
            if use_memory and update_memory:
                result = memory.update_from_clip(
                    frames[start + int(first) : stop],
                    w2c[start + int(first) : stop],
                    k_all[start + int(first) : stop],
                    frame_ids=list(range(start + int(first), stop)),
                )
                estimated[start + int(first) : stop] = result.estimated_w2c.double()
                registered[start + int(first) : stop] = result.registered.bool()
                slam = _slam_summary(result)
            records.append(ClipRecord(start, stop, render, holes, list(ids), slam))
        return SpatiaOutput(
            frames, w2c, estimated, k_all, records, memory if use_memory else None, registered
        )


def _slam_summary(result: Any) -> dict[str, Any]:
    """The JSON-friendly fields of a ``SlamResult`` (registered frames, points added, why it fell back)."""
    out: dict[str, Any] = {}
    for name, value in vars(result).items():
        if name == "estimated_w2c":
            continue
        if isinstance(value, torch.Tensor):
            value = value.tolist() if value.numel() <= 64 else f"tensor{tuple(value.shape)}"
        if isinstance(value, (bool, int, float, str, list, type(None))):
            out[name] = value
    return out
