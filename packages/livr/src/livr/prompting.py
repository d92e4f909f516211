"""Turning examples into model inputs: chat template, image placeholders, latents, labels.

The prompt is the backbone's chat template for a user turn (the images, then the question)
followed by the assistant header; the K latent tokens come right after that header and
before the answer, at training and at inference. Each image placeholder is expanded to as
many tokens as the image processor's patch grid gives, as the backbone's own processor does.
Batches are left-padded so that generation continues every row at its end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from latentforge.kernels import Role
from livr.backbones import BackboneAdapter
from livr.data import Example
from livr.latents import compute_roles

IGNORE_INDEX = -100


@dataclass
class Batch:
    """Model inputs for a left-padded batch; ``labels`` is IGNORE_INDEX outside the answers."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    roles: torch.Tensor
    labels: torch.Tensor | None
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None

    def to(self, device: torch.device | str) -> Batch:
        def move(t):
            return None if t is None else t.to(device)

        return Batch(*(move(getattr(self, f)) for f in self.__dataclass_fields__))


class PromptEncoder:
    """Encodes examples for one backbone, tokenizer, image processor and latent set."""

    def __init__(self, tokenizer, image_processor, adapter: BackboneAdapter, latent_ids: Sequence[int]):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.adapter = adapter
        self.latent_ids = [int(i) for i in latent_ids]
        self.latent_text = "".join(tokenizer.convert_ids_to_tokens(self.latent_ids))
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(adapter.image_token))
        self.merge_size = int(getattr(image_processor, "merge_size", 2))
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer defines no eos_token, which ends every answer")

    def prompt_text(self, example: Example) -> str:
        """The chat-formatted prompt (images first, then the question), latents appended."""
        content = [{"type": "image"} for _ in example.images] + [{"type": "text", "text": example.question}]
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        return text + self.latent_text

    def _tokens(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_one(
        self, prompt: str, images: Sequence[Image.Image], answer: str | None
    ) -> tuple[list[int], list[int], torch.Tensor | None, torch.Tensor | None]:
        """Token ids and answer flags for one raw prompt that already holds one placeholder per image."""
        for i, image in enumerate(images):
            if not isinstance(image, Image.Image):
                raise TypeError(f"image {i} is a {type(image).__name__}, not a PIL image")
        placeholder = self.adapter.image_token
        found = prompt.count(placeholder)
        if found != len(images):
            raise ValueError(
                f"the prompt holds {found} image placeholder(s) {placeholder!r} but {len(images)} image(s) "
                "were given; the chat template must emit one placeholder per image"
            )
        pixel_values = grid = None
        if images:
            processed = self.image_processor(images=list(images), return_tensors="pt")
            pixel_values, grid = processed["pixel_values"], processed["image_grid_thw"]
            pieces = prompt.split(placeholder)
            expanded = pieces[0]
            for i, piece in enumerate(pieces[1:]):
                expanded += placeholder * self.adapter.num_image_tokens(grid[i], self.merge_size) + piece
            prompt = expanded
        ids = self._tokens(prompt)
        if self.latent_ids and ids[-len(self.latent_ids) :] != self.latent_ids:
            raise ValueError("the prompt does not end with the latent tokens; use PromptEncoder.prompt_text")
        is_answer = [0] * len(ids)
        if answer is not None:
            answer_ids = self._tokens(answer + self.tokenizer.eos_token)
            ids += answer_ids
            is_answer += [1] * len(answer_ids)
        return ids, is_answer, pixel_values, grid

    def encode(self, examples: Sequence[Example], *, with_answer: bool = True) -> Batch:
        """A left-padded batch; with ``with_answer`` the answers (plus eos) are appended as labels."""
        rows, flags, pixels, grids = [], [], [], []
        for ex in examples:
            ids, is_answer, pv, grid = self.encode_one(
                self.prompt_text(ex), ex.images, ex.answer if with_answer else None
            )
            rows.append(ids)
            flags.append(is_answer)
            if pv is not None:
                pixels.append(pv)
                grids.append(grid)
        length = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        answer_mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for b, (ids, is_answer) in enumerate(zip(rows, flags, strict=True)):
            input_ids[b, length - len(ids) :] = torch.tensor(ids)
            attention_mask[b, length - len(ids) :] = 1
            answer_mask[b, length - len(ids) :] = torch.tensor(is_answer, dtype=torch.bool)
        roles = compute_roles(
            input_ids,
            attention_mask,
            image_token_ids=[self.image_token_id],
            latent_ids=self.latent_ids,
            answer_mask=answer_mask,
        )
        labels = torch.where(roles == Role.ANSWER, input_ids, IGNORE_INDEX) if with_answer else None
        return Batch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            roles=roles,
            labels=labels,
            pixel_values=torch.cat(pixels) if pixels else None,
            image_grid_thw=torch.cat(grids) if grids else None,
        )
