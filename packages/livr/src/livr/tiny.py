"""Tiny random-weight backbones with a locally built tokenizer, for tests and CPU runs.

``make_tiny_backbone(name, folder)`` writes a folder in the published Hugging Face layout
(``config.json``, ``model.safetensors``, tokenizer files with the chat template,
``preprocessor_config.json``), so livr loads it through the same ``from_pretrained`` path
as a real checkpoint. The tokenizer is character-level over printable ASCII plus the
special tokens of the Qwen chat format; images are kept to a few patches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from livr.backbones import get_backbone

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The Qwen chat format: one vision block per image item, then the text items.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer with Qwen's special tokens and chat template."""
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *chars])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )


UNK_TOKEN = "<|unk|>"


def build_word_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the words of ``texts`` plus every printable ASCII character.

    With Qwen's special tokens and chat template, like :func:`build_tokenizer`. Words are split at
    whitespace and punctuation; a word outside the vocabulary becomes ``<|unk|>``. For the small
    base model: one token per word makes its prompts about three times shorter than characters do,
    and a word is one embedding the model need not assemble from letters.
    """
    split = pre_tokenizers.Whitespace()
    words = {w for text in texts for w, _ in split.pre_tokenize_str(text)}
    words |= {chr(c) for c in range(33, 127)}
    words |= {"user", "assistant", "system"}
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, UNK_TOKEN, *sorted(words)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    core.pre_tokenizer = split
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=UNK_TOKEN,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )


def make_tiny_backbone(
    name: str, folder: str | os.PathLike, *, seed: int = 0, vocab_size: int = 128, image_tokens: int = 4
) -> Path:
    """Write a tiny random-weight ``name`` backbone to ``folder`` and return the folder.

    ``vocab_size`` is the embedding's row count; like Qwen's checkpoints it is padded past
    the tokenizer's length so that adding latent tokens can reuse spare rows. Every image is
    resized to ``image_tokens`` placeholder tokens (after the 2x2 patch merge).
    """
    adapter = get_backbone(name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    config = adapter.tiny_config(vocab, vocab_size)
    torch.manual_seed(seed)
    model = adapter.model_class(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    side = config.vision_config.patch_size * config.vision_config.spatial_merge_size
    pixels = side * side * image_tokens
    adapter.image_processor(min_pixels=pixels, max_pixels=pixels).save_pretrained(folder)
    (folder / "livr_tiny.json").write_text(json.dumps({"backbone": name, "seed": seed}))
    return folder
