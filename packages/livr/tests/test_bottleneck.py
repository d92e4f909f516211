"""The bottleneck inside the real transformers classes (tiny configs, random weights)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from PIL import Image

from latentforge.kernels import Role
from livr.config import ModelConfig
from livr.data import Example, synthetic_counting
from livr.model import LivrModel

BACKBONES = ("qwen2_5_vl", "qwen3_vl", "llava_onevision1_5")
ROUTES = ("registry", "dense")
# every (backbone, mask route) pair: both routes must give the same bottleneck
CASES = [f"{name}/{route}" for name in BACKBONES for route in ROUTES]


@pytest.fixture(scope="module")
def models(tiny_backbones):
    out = {}
    for case in CASES:
        name, route = case.split("/")
        torch.manual_seed(0)
        cfg = ModelConfig(backbone=name, model_id=tiny_backbones[name], num_latents=4, mask_route=route)
        livr = LivrModel.from_backbone(cfg)
        # LoRA B starts at zero; give it weights so that the adapter path is exercised too
        with torch.no_grad():
            for n, p in livr.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
        out[case] = livr.eval()
    return out


def decoder_layers(livr: LivrModel):
    lm = livr.base.model  # Qwen-VL: .language_model inside; LLaVA-OV-1.5: the Qwen3 model itself
    return getattr(lm, "language_model", lm).layers


@contextlib.contextmanager
def edit_latent_states(livr: LivrModel, latent: torch.Tensor, how: str):
    """Replace the latent positions' hidden states after every decoder layer: detach or zero them."""

    def hook(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        keep = latent[..., None]
        edited = hidden.detach() if how == "detach" else torch.zeros_like(hidden)
        hidden = torch.where(keep, edited, hidden)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handles = [layer.register_forward_hook(hook) for layer in decoder_layers(livr)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def pixel_grad(livr: LivrModel, stage: int, detach_latents: bool) -> torch.Tensor:
    batch = livr.encode(synthetic_counting(1, seed=4))
    batch.pixel_values = batch.pixel_values.clone().requires_grad_(True)
    ctx = (
        edit_latent_states(livr, batch.roles == Role.LATENT, "detach")
        if detach_latents
        else contextlib.nullcontext()
    )
    with ctx:
        loss = livr(batch, stage).loss
    (grad,) = torch.autograd.grad(loss, batch.pixel_values, allow_unused=True)
    return torch.zeros_like(batch.pixel_values) if grad is None else grad


@pytest.mark.parametrize("name", CASES)
def test_stage1_answer_gradient_reaches_the_image_only_through_latents(models, name):
    livr = models[name]
    assert pixel_grad(livr, 1, detach_latents=True).abs().max() == 0
    assert pixel_grad(livr, 1, detach_latents=False).abs().max() > 0


@pytest.mark.parametrize("name", CASES)
def test_stage2_answer_sees_the_image_directly(models, name):
    livr = models[name]
    assert pixel_grad(livr, 2, detach_latents=True).abs().max() > 0
    assert pixel_grad(livr, 2, detach_latents=False).abs().max() > 0


@pytest.mark.parametrize("name", CASES)
def test_changing_pixels_changes_no_answer_logit_when_latents_are_cut(models, name):
    livr = models[name]
    base = synthetic_counting(1, seed=5)[0]
    other = Example([Image.new("RGB", base.images[0].size, (90, 10, 200))], base.question, base.answer)
    logits = {}
    for stage in (1, 2):
        for key, ex in (("a", base), ("b", other)):
            batch = livr.encode([ex])
            with torch.no_grad(), edit_latent_states(livr, batch.roles == Role.LATENT, "zero"):
                out = livr(batch, stage)
            logits[stage, key] = out.logits[batch.roles == Role.ANSWER]
    assert torch.equal(logits[1, "a"], logits[1, "b"])
    assert not torch.allclose(logits[2, "a"], logits[2, "b"])


@pytest.mark.parametrize("name", CASES)
def test_latent_tokens_take_text_rope_positions(models, name):
    livr = models[name]
    batch = livr.encode(synthetic_counting(2, seed=6), with_answer=False)
    pos = livr.positions(batch)
    for b in range(2):
        latent = (batch.roles[b] == Role.LATENT).nonzero().flatten()
        p = pos[:, b, latent]
        # all three mRoPE axes equal (text) and consecutive after the preceding prompt token
        assert torch.equal(p[0], p[1]) and torch.equal(p[1], p[2])
        expected = pos[0, b, latent[0] - 1] + 1 + torch.arange(len(latent))
        assert torch.equal(p[0], expected)
    # left padding does not move a sequence's positions
    single = livr.positions(livr.encode(synthetic_counting(2, seed=6)[1:], with_answer=False))
    assert torch.equal(pos[:, 1], single[:, 0])


# the dense route's masks are compared with the registry's in test_both_mask_routes_give_the_same_logits
@pytest.mark.parametrize(
    "name", ["qwen2_5_vl/registry", "qwen3_vl/registry", "llava_onevision1_5/registry", "qwen2_5_vl/dense"]
)
@pytest.mark.parametrize("stage", [1, 2])
def test_cached_greedy_decoding_matches_full_recomputation(models, name, stage):
    livr = models[name]
    examples = synthetic_counting(2, seed=7)
    batch = livr.encode(examples, with_answer=False)
    ids = livr.generate_ids(batch, stage, max_new_tokens=4)
    for b, ex in enumerate(examples):
        single = livr.encode([ex], with_answer=False)
        # recompute each step with no cache: append the decoded tokens as the answer
        tokens = []
        for _ in range(ids.shape[1]):
            full = single
            if tokens:
                extra = torch.tensor([tokens])
                full = type(single)(
                    input_ids=torch.cat([single.input_ids, extra], 1),
                    attention_mask=torch.cat([single.attention_mask, torch.ones_like(extra)], 1),
                    roles=torch.cat([single.roles, torch.full_like(extra, int(Role.ANSWER))], 1),
                    labels=None,
                    pixel_values=single.pixel_values,
                    image_grid_thw=single.image_grid_thw,
                )
            with torch.no_grad():
                logits = livr(full, stage).logits[0, -1]
            logits[livr.latent_ids] = float("-inf")
            tokens.append(int(logits.argmax()))
            if tokens[-1] == livr.tokenizer.eos_token_id:
                break
        assert ids[b, : len(tokens)].tolist() == tokens


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("stage", [1, 2])
def test_transformers_generate_with_its_own_positions_matches_our_decoding(models, name, stage):
    livr = models[f"{name}/registry"]
    examples = synthetic_counting(2, seed=11)
    examples[1].question = "How many white squares are in the picture?"  # left padding on row 0
    batch = livr.encode(examples, with_answer=False)
    ours = livr.generate_ids(batch, stage, max_new_tokens=5)
    theirs = livr.hf_generate(batch, stage, max_new_tokens=5)
    for b in range(2):
        n = len(ours[b])
        assert theirs[b, :n].tolist() == ours[b].tolist()


def test_both_mask_routes_give_the_same_logits(models):
    for name in BACKBONES:
        batch = models[f"{name}/registry"].encode(synthetic_counting(2, seed=8))
        with torch.no_grad():
            for stage in (1, 2):
                torch.testing.assert_close(
                    models[f"{name}/registry"](batch, stage).logits,
                    models[f"{name}/dense"](batch, stage).logits,
                )


def test_flash_attention_2_is_refused_for_the_bottleneck(tiny_backbones):
    cfg = ModelConfig(model_id=tiny_backbones["qwen2_5_vl"], attn_implementation="flash_attention_2")
    with pytest.raises(ValueError, match=r"flash_attention_2.*bottleneck"):
        LivrModel.from_backbone(cfg)


def test_stage1_refuses_a_prompt_without_latents(tiny_backbones):
    livr = LivrModel.from_backbone(ModelConfig(model_id=tiny_backbones["qwen2_5_vl"], num_latents=0))
    batch = livr.encode(synthetic_counting(1))
    with pytest.raises(ValueError, match="no latent token"):
        livr(batch, 1)
    assert torch.isfinite(livr(batch, 2).loss)
    # The mask-without-latents ablation opts in: stage 1 then runs, and the answer is blind to the image.
    blind = LivrModel.from_backbone(
        ModelConfig(model_id=tiny_backbones["qwen2_5_vl"], num_latents=0, stage1_without_latents=True)
    )
    assert torch.isfinite(blind(batch, 1).loss)


def two_image_examples() -> list[Example]:
    """Rows of different lengths (left padding) with one and two images, so positions must skip images."""
    examples = synthetic_counting(2, seed=12)
    examples[0].question = "How many squares are in these two pictures, counting both?"
    examples[0].images = [examples[0].images[0], examples[1].images[0]]
    return examples


@pytest.mark.parametrize("name", ["qwen2_5_vl", "qwen3_vl"])
def test_explicit_mrope_positions_equal_the_models_get_rope_index(models, name):
    """livr writes the M-RoPE rule out (``mrope_positions``); it must agree with transformers' own on
    every non-padding token, latents included, with left padding and two images in one row."""
    livr = models[f"{name}/dense"]
    batch = livr.encode(two_image_examples())
    ours = livr.positions(batch)
    image_id = livr.base.config.image_token_id
    theirs, _ = livr.base.model.get_rope_index(
        batch.input_ids,
        (batch.input_ids == image_id).int(),
        image_grid_thw=batch.image_grid_thw,
        attention_mask=batch.attention_mask,
    )
    valid = batch.attention_mask.bool()
    assert torch.equal(ours[:, valid], theirs[:, valid])
    # the image tokens really spread over rows and columns (not a text-like diagonal)
    image = batch.input_ids[0] == image_id
    assert len(set(ours[1, 0, image].tolist())) > 1 and len(set(ours[2, 0, image].tolist())) > 1
    assert not torch.equal(ours[1, 0, image], ours[2, 0, image])


def flex_bottleneck_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """A transformers attention function running latentforge's flex kernel (``backend="flex"``) on the roles.

    transformers 5.24 refuses ``attn_implementation="flex_attention"`` for the Qwen2.5-VL text model, so
    the flex comparison goes through the attention registry, as livr's default route does."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from latentforge.kernels import bottleneck_attention

    roles, stage = kwargs.pop("roles", None), kwargs.pop("stage", None)
    kwargs.pop("require_latents", None)
    if roles is None or not getattr(module, "is_causal", True):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    out = bottleneck_attention(query, key, value, roles, stage, backend="flex", scale=scaling)
    return out.transpose(1, 2).contiguous(), None


@pytest.mark.parametrize("name", BACKBONES)
def test_stage1_logits_agree_across_eager_sdpa_and_flex(models, name):
    """Stage-1 logits with the positions passed explicitly: the dense 4-D mask under transformers' eager
    and SDPA attention, and the roles under latentforge's flex kernel, agree on every non-padding token."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("livr_test_flex", flex_bottleneck_forward)
    AttentionMaskInterface.register("livr_test_flex", sdpa_mask)
    examples = two_image_examples() if name != "llava_onevision1_5" else synthetic_counting(2, seed=12)
    logits = {}
    for route, impl in (("dense", "eager"), ("dense", "sdpa"), ("registry", "livr_test_flex")):
        livr = models[f"{name}/{route}"]
        batch = livr.encode(examples)
        before = livr.base.config.get_text_config()._attn_implementation
        livr.base.set_attn_implementation({"text_config": impl})
        try:
            with torch.no_grad():
                logits[impl] = livr(batch, 1).logits
        finally:
            livr.base.set_attn_implementation({"text_config": before})
    real = batch.roles != Role.PAD
    for impl in ("sdpa", "livr_test_flex"):
        torch.testing.assert_close(logits[impl][real], logits["eager"][real], atol=2e-5, rtol=1e-4)
