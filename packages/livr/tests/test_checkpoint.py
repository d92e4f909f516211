"""save_pretrained / from_pretrained, base-model parity and clear errors on bad input."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from livr.backbones import get_backbone
from livr.config import ModelConfig
from livr.data import Example, load_examples, synthetic_counting, write_examples
from livr.model import LivrModel


def trained_model(path: str, num_latents: int = 4, mask_route: str = "registry") -> LivrModel:
    torch.manual_seed(0)
    livr = LivrModel.from_backbone(ModelConfig(model_id=path, num_latents=num_latents, mask_route=mask_route))
    with torch.no_grad():  # stand-in for training: move every trainable tensor
        for p in livr.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return livr.eval()


def test_save_and_load_give_identical_logits_and_latent_rows(tiny_backbones, tmp_path):
    livr = trained_model(tiny_backbones["qwen2_5_vl"])
    batch = livr.encode(synthetic_counting(2))
    livr.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "latents.safetensors").is_file()
    assert (tmp_path / "ckpt" / "adapter" / "adapter_config.json").is_file()
    loaded = LivrModel.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.latent_ids == livr.latent_ids
    assert torch.equal(loaded.latent_rows(), livr.latent_rows())
    with torch.no_grad():
        for stage in (1, 2):
            assert torch.equal(loaded(batch, stage).logits, livr(batch, stage).logits)


@pytest.mark.parametrize("mask_route", ["registry", "dense"])
def test_lora_disabled_without_latents_is_exactly_the_base_model(tiny_backbones, mask_route):
    path = tiny_backbones["qwen2_5_vl"]
    livr = trained_model(path, num_latents=0, mask_route=mask_route)
    base = get_backbone("qwen2_5_vl").model_class.from_pretrained(path, attn_implementation="sdpa").eval()
    batch = livr.encode(synthetic_counting(2))
    with torch.no_grad():
        reference = base(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
            mm_token_type_ids=(batch.input_ids == base.config.image_token_id).int(),
        ).logits
        with livr.model.disable_adapter():
            ours = livr(batch, 2).logits
        adapted = livr(batch, 2).logits
    real = batch.attention_mask.bool()
    assert torch.equal(ours[real], reference[real])
    assert not torch.allclose(adapted[real], reference[real])


def test_checkpoint_for_another_backbone_is_refused(tiny_backbones, tmp_path):
    trained_model(tiny_backbones["qwen2_5_vl"]).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"made for backbone 'qwen2_5_vl'.*qwen3_vl"):
        LivrModel.from_pretrained(tmp_path / "ckpt", base_model=tiny_backbones["qwen3_vl"])
    meta = json.loads((tmp_path / "ckpt" / "livr_config.json").read_text())
    meta["backbone"] = "nonexistent"
    (tmp_path / "ckpt" / "livr_config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="disagrees"):
        LivrModel.from_pretrained(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="not a livr checkpoint"):
        LivrModel.from_pretrained(tmp_path)


def test_bad_inputs_give_clear_errors(tiny_backbones, tmp_path):
    livr = LivrModel.from_backbone(ModelConfig(model_id=tiny_backbones["qwen2_5_vl"], num_latents=2))
    with pytest.raises(TypeError, match="not a PIL image"):
        Example([torch.zeros(3, 8, 8)], "q", "a")
    image = synthetic_counting(1)[0].images[0]
    with pytest.raises(ValueError, match=r"holds 0 image placeholder\(s\).*1 image"):
        livr.encoder.encode_one("no placeholder here" + livr.encoder.latent_text, [image], "1")
    with pytest.raises(ValueError, match="unknown backbone"):
        LivrModel.from_backbone(ModelConfig(backbone="llava_next", model_id=tiny_backbones["qwen2_5_vl"]))

    write_examples(synthetic_counting(2), tmp_path / "data", "train")
    assert [e.answer for e in load_examples(tmp_path / "data", "train")] == [
        e.answer for e in synthetic_counting(2)
    ]
    broken = sorted((tmp_path / "data" / "images").glob("*.png"))[0]
    broken.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=rf"{broken.name} is not a readable image"):
        load_examples(tmp_path / "data", "train")
    (tmp_path / "data" / "val.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(ValueError, match=r"val.jsonl:1: missing key\(s\) \['images'\]"):
        load_examples(tmp_path / "data", "val")


def test_multi_image_prompts_get_one_placeholder_block_per_image(tiny_backbones):
    livr = LivrModel.from_backbone(ModelConfig(model_id=tiny_backbones["qwen2_5_vl"], num_latents=2))
    images = [Image.new("RGB", (56, 56)), Image.new("RGB", (56, 56), (255, 0, 0))]
    batch = livr.encode([Example(images, "Which is red?", "second")])
    assert batch.image_grid_thw.shape[0] == 2
    image_id = livr.base.config.image_token_id
    assert int((batch.input_ids == image_id).sum()) == 8  # 4 tokens per tiny image
    with torch.no_grad():
        assert torch.isfinite(livr(batch, 1).loss)


def test_llava_onevision_1_5_needs_an_explicit_remote_code_opt_in(tmp_path):
    from livr.backbones.llava_onevision1_5 import RemoteCodeRefused

    # refused before anything is fetched: the folder does not even exist
    cfg = ModelConfig(backbone="llava_onevision1_5", model_id=str(tmp_path / "absent"))
    with pytest.raises(RemoteCodeRefused, match=r"--model\.trust-remote-code"):
        LivrModel.from_backbone(cfg)
