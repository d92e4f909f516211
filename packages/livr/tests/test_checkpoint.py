"""save_pretrained / from_pretrained, base-model parity and clear errors on bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from livr.backbones import get_backbone
from livr.config import ModelConfig
from livr.data import Example, load_examples, synthetic_counting, write_examples
from livr.model import LivrModel

BACKBONES = ("qwen2_5_vl", "qwen3_vl", "llava_onevision1_5")


def trained_model(
    path: str, num_latents: int = 4, mask_route: str = "registry", backbone: str = "qwen2_5_vl"
) -> LivrModel:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, model_id=path, num_latents=num_latents, mask_route=mask_route)
    livr = LivrModel.from_backbone(cfg)
    with torch.no_grad():  # stand-in for training: move every trainable tensor
        for p in livr.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return livr.eval()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_save_and_load_give_identical_logits_and_latent_rows(tiny_backbones, tmp_path, backbone):
    livr = trained_model(tiny_backbones[backbone], backbone=backbone)
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


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("mask_route", ["registry", "dense"])
def test_lora_disabled_without_latents_is_exactly_the_base_model(tiny_backbones, mask_route, backbone):
    path = tiny_backbones[backbone]
    livr = trained_model(path, num_latents=0, mask_route=mask_route, backbone=backbone)
    base = get_backbone(backbone).model_class.from_pretrained(path, attn_implementation="sdpa").eval()
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


@pytest.mark.parametrize(("saved", "base"), [(a, BACKBONES[(i + 1) % 3]) for i, a in enumerate(BACKBONES)])
def test_every_backbone_refuses_a_checkpoint_of_another(tiny_backbones, tmp_path, saved, base):
    trained_model(tiny_backbones[saved], num_latents=2, backbone=saved).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=rf"made for backbone '{saved}'.*model_type"):
        LivrModel.from_pretrained(tmp_path / "ckpt", base_model=tiny_backbones[base])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_rejects_non_images_and_prompts_without_placeholders(tiny_backbones, backbone):
    cfg = ModelConfig(backbone=backbone, model_id=tiny_backbones[backbone], num_latents=2)
    encoder = LivrModel.from_backbone(cfg).encoder
    image = synthetic_counting(1)[0].images[0]
    prompt = encoder.prompt_text(Example([image], "How many?", "1"))
    with pytest.raises(TypeError, match="image 0 is a ndarray, not a PIL image"):
        encoder.encode_one(prompt, [np.zeros((28, 28, 3), dtype=np.uint8)], "1")
    with pytest.raises(ValueError, match=r"holds 0 image placeholder\(s\).*1 image"):
        encoder.encode_one("no placeholder here" + encoder.latent_text, [image], "1")
    with pytest.raises(ValueError, match=r"holds 1 image placeholder\(s\).*2 image"):
        encoder.encode_one(prompt, [image, image], "1")


def test_llava_onevision_1_5_loads_natively_without_running_the_checkpoint_code(tiny_backbones, tmp_path):
    # a checkpoint folder that ships modeling code (as the hub repo does) which would leave a mark if imported
    folder = tmp_path / "ov15"
    shutil.copytree(tiny_backbones["llava_onevision1_5"], folder)
    mark = tmp_path / "remote-code-ran"
    (folder / "modeling_remote.py").write_text(f"open({str(mark)!r}, 'w').close()\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoModelForCausalLM": "modeling_remote.Model",
        "AutoConfig": "modeling_remote.Config",
    }
    (folder / "config.json").write_text(json.dumps(config))
    livr = LivrModel.from_backbone(
        ModelConfig(backbone="llava_onevision1_5", model_id=str(folder), num_latents=2)
    )
    assert type(livr.base).__name__ == "LlavaOneVision15ForConditionalGeneration"
    assert not mark.exists()


def test_llava_onevision_1_5_refuses_the_remote_code_route(tmp_path):
    # refused before anything is read: the folder does not even exist
    cfg = ModelConfig(
        backbone="llava_onevision1_5", model_id=str(tmp_path / "absent"), trust_remote_code=True
    )
    with pytest.raises(ValueError, match=r"trust-remote-code is refused.*native implementation"):
        LivrModel.from_backbone(cfg)
