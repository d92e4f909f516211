"""The real loading path (a diffusers-format Wan2.2 folder) on a tiny folder written offline."""

from __future__ import annotations

import torch

from spatia.config import ModelConfig
from spatia.networks import WAN_TEXT_LENGTH, build_networks, encode_prompts
from spatia.tiny import tiny_base_transformer, tiny_text_encoder, tiny_vae


def _write_tiny_wan_folder(root):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tiny_base_transformer(seed=5).save_pretrained(root / "transformer")
    tiny_vae().save_pretrained(root / "vae")
    tiny_text_encoder().save_pretrained(root / "text_encoder")
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "room": 4, "camera": 5, "moves": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(root / "tokenizer")


def test_build_networks_from_a_diffusers_folder(tmp_path):
    _write_tiny_wan_folder(tmp_path)
    networks = build_networks(ModelConfig(pretrained=str(tmp_path), control_layers=(0, 2)))
    base = tiny_base_transformer(seed=5)
    model = networks.transformer
    assert tuple(model.config.vace_layers) == (0, 2) and model.config.vace_in_channels == 8
    torch.testing.assert_close(model.blocks[3].ffn.net[2].weight, base.blocks[3].ffn.net[2].weight)
    assert not any(p.requires_grad for p in networks.vae.parameters())
    assert not any(p.requires_grad for p in networks.text_encoder.parameters())
    text = encode_prompts(networks, ["a camera moves", "room"], torch.device("cpu"))
    assert text.shape == (2, WAN_TEXT_LENGTH, 16)
    # Padding positions are zero (as Wan's pipelines feed them), real tokens are not.
    assert torch.count_nonzero(text[1, 1:]) == 0 and torch.count_nonzero(text[1, 0]) > 0
    assert torch.count_nonzero(text[0, :3].abs().sum(-1)) == 3
