"""The bottleneck registered in transformers' attention registry, inside a tiny randomly initialised Qwen2."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from latentforge.kernels import Role, bottleneck_mask, bottleneck_mask_mod  # noqa: E402
from latentforge.kernels.transformers_attention import (  # noqa: E402
    bottleneck_roles,
    register_transformers_bottleneck,
)

P, IMG, L, A, X = (int(r) for r in (Role.PROMPT, Role.IMAGE, Role.LATENT, Role.ANSWER, Role.PAD))
NAME = register_transformers_bottleneck()


def tiny_qwen2(layers=2, impl=NAME, seed=0):
    cfg = transformers.Qwen2Config(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    model.set_attn_implementation(impl)
    return model


def same_weights(model, impl):
    other = tiny_qwen2(model.config.num_hidden_layers, impl)
    other.load_state_dict(model.state_dict())
    return other


ROLES = torch.tensor(
    [
        [P, P, IMG, IMG, IMG, P, IMG, IMG, P, P, L, L, L, A, A, A],
        [X, X, X, P, IMG, IMG, IMG, IMG, P, L, L, L, A, A, A, A],  # left padded
    ]
)
IDS = torch.randint(0, 96, ROLES.shape, generator=torch.Generator().manual_seed(1))
ATTN_2D = (ROLES != X).long()


@pytest.mark.parametrize("stage", [1, 2])
def test_registered_attention_matches_sdpa_with_dense_mask(stage):
    model = tiny_qwen2()
    out = model(IDS, attention_mask=ATTN_2D, roles=ROLES, stage=stage).logits
    ref_model = same_weights(model, "sdpa")
    ref = ref_model(IDS, attention_mask=bottleneck_mask(ROLES, stage), position_ids=None).logits
    real = ROLES != X
    # Left padding shifts the default position ids in the 2-D route; compare the row without padding exactly
    # and the padded row with explicit position ids.
    torch.testing.assert_close(out[0], ref[0], atol=1e-5, rtol=1e-5)
    pos = (ATTN_2D.cumsum(-1) - 1).clamp(min=0)
    out_p = model(IDS, attention_mask=ATTN_2D, position_ids=pos, roles=ROLES, stage=stage).logits
    ref_p = ref_model(IDS, attention_mask=bottleneck_mask(ROLES, stage), position_ids=pos).logits
    torch.testing.assert_close(out_p[real], ref_p[real], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out_p).all()


def test_without_roles_it_is_plain_sdpa():
    model = tiny_qwen2()
    ref = same_weights(model, "sdpa")
    torch.testing.assert_close(
        model(IDS, attention_mask=ATTN_2D).logits, ref(IDS, attention_mask=ATTN_2D).logits
    )
    # Causality survives the unknown registry name (the mask registry entry is what guarantees it).
    a = model(IDS[:1]).logits
    ids2 = IDS[:1].clone()
    ids2[0, -1] = (ids2[0, -1] + 1) % 96
    torch.testing.assert_close(model(ids2).logits[:, :-1], a[:, :-1])


def test_stage1_blocks_image_inside_the_model():
    roles = ROLES[:1]
    embeds_model = tiny_qwen2(layers=1)
    emb = embeds_model.get_input_embeddings()(IDS[:1])
    emb2 = emb.clone()
    img = roles[0] == IMG
    emb2[0, img] += torch.randn_like(emb2[0, img])
    after_image = torch.arange(roles.shape[1]) > int(img.nonzero().min())
    blind = after_image & ((roles[0] == P) | (roles[0] == A))

    def changed(model, stage):
        a = model(inputs_embeds=emb, roles=roles, stage=stage).logits[0]
        b = model(inputs_embeds=emb2, roles=roles, stage=stage).logits[0]
        return ~torch.isclose(a, b, atol=1e-6).all(-1)

    one = changed(embeds_model, 1)
    assert not one[blind].any() and one[roles[0] == L].all()
    assert changed(embeds_model, 2)[roles[0] == A].all()
    # Two layers: the answer now sees the image, but only through the latents; the prompt between image and
    # latents still sees nothing of it.
    two = changed(tiny_qwen2(layers=2), 1)
    assert two[roles[0] == A].all()
    assert not two[blind & (roles[0] == P)].any()


def test_generate_with_cache_stays_masked():
    model = tiny_qwen2()
    prompt, roles = IDS[:1, :13], ROLES[:1, :13]
    with bottleneck_roles(roles, 1):
        gen = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),  # else generate guesses padding from pad_token_id
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
        )
    seq = gen.sequences
    for step, logits in enumerate(gen.logits):
        n = prompt.shape[1] + step
        full_roles = torch.cat([roles, torch.full((1, n - 13), A)], dim=1)
        expect = model(seq[:, :n], roles=full_roles, stage=1, use_cache=False).logits[:, -1]
        torch.testing.assert_close(logits, expect, atol=1e-5, rtol=1e-5)
        unmasked = model(seq[:, :n], roles=full_roles, stage=2, use_cache=False).logits[:, -1]
        assert not torch.allclose(logits, unmasked, atol=1e-4)


def test_bad_calls_raise():
    model = tiny_qwen2()
    with pytest.raises(ValueError, match="without stage"):
        model(IDS, roles=ROLES)
    with pytest.raises(ValueError, match="roles cover"):
        model(IDS[:, :8], roles=ROLES, stage=1)
    with pytest.raises(ValueError, match="unknown role value 9"):
        model(IDS, roles=torch.full_like(ROLES, 9), stage=1)
    no_latents = torch.where(ROLES == L, P, ROLES)
    with pytest.raises(ValueError, match="no latent token"):
        model(IDS, roles=no_latents, stage=1)
    assert torch.isfinite(model(IDS, roles=no_latents, stage=2).logits).all()
    with pytest.raises(ValueError, match="unknown stage"), bottleneck_roles(ROLES, "full"):
        pass


def tiny_qwen2_5_vl():
    cfg = transformers.Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 128,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 32,
            "fullatt_block_indexes": [0],
            "window_size": 112,
        },
        image_token_id=100,
        video_token_id=101,
        vision_start_token_id=102,
        vision_end_token_id=103,
    )
    torch.manual_seed(0)
    model = transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()
    model.set_attn_implementation({"text_config": NAME, "vision_config": "sdpa"})
    return model


# One 4x4-patch image (4 merged tokens) between <vision_start>/<vision_end>, prompt, 2 latents, 2 answer tokens.
VL_IDS = torch.tensor([[3, 4, 102, 100, 100, 100, 100, 103, 5, 6, 110, 111, 9, 10]])
VL_ROLES = torch.tensor([[P, P, P, IMG, IMG, IMG, IMG, P, P, P, L, L, A, A]])
VL_TYPES = (VL_IDS == 100).int()
VL_GRID = torch.tensor([[1, 4, 4]])


def vl_pixels(seed=0):
    return torch.randn(16, 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(seed))


def test_qwen2_5_vl_registry_keeps_mrope_and_matches_dense_mask():
    model = tiny_qwen2_5_vl()
    assert model.config.vision_config._attn_implementation == "sdpa"
    common = {"input_ids": VL_IDS, "pixel_values": vl_pixels(), "image_grid_thw": VL_GRID}
    out = model(**common, mm_token_type_ids=VL_TYPES, roles=VL_ROLES, stage=1).logits
    ref = transformers.Qwen2_5_VLForConditionalGeneration(model.config).eval()
    ref.load_state_dict(model.state_dict())
    ref.set_attn_implementation("sdpa")
    pos, _ = model.model.get_rope_index(VL_IDS, VL_TYPES, VL_GRID)
    assert not torch.equal(pos[0], pos[1])  # real 3-D positions, not 1-D text positions
    dense = ref(
        **common, mm_token_type_ids=VL_TYPES, position_ids=pos, attention_mask=bottleneck_mask(VL_ROLES, 1)
    )
    torch.testing.assert_close(out, dense.logits, atol=1e-5, rtol=1e-5)
    # Why livr uses the registry: a 4-D mask alone reaches get_rope_index, which expects a 2-D padding mask.
    with pytest.raises(IndexError):
        ref(**common, mm_token_type_ids=VL_TYPES, attention_mask=bottleneck_mask(VL_ROLES, 1))


def test_qwen2_5_vl_image_reaches_prompt_only_through_latents_and_generate_works():
    model = tiny_qwen2_5_vl()
    common = {"image_grid_thw": VL_GRID, "mm_token_type_ids": VL_TYPES}
    a = model(input_ids=VL_IDS, pixel_values=vl_pixels(0), roles=VL_ROLES, stage=1, **common).logits[0]
    b = model(input_ids=VL_IDS, pixel_values=vl_pixels(1), roles=VL_ROLES, stage=1, **common).logits[0]
    changed = ~torch.isclose(a, b, atol=1e-6).all(-1)
    assert not changed[7:10].any() and changed[10:12].all()  # post-image prompt blind, latents see it

    with bottleneck_roles(VL_ROLES, 1):
        gen = model.generate(
            input_ids=VL_IDS,
            pixel_values=vl_pixels(),
            attention_mask=torch.ones_like(VL_IDS),
            max_new_tokens=3,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            **common,
        )
    for step, logits in enumerate(gen.logits):
        n = VL_IDS.shape[1] + step
        roles = torch.cat([VL_ROLES, torch.full((1, step), A)], dim=1)
        types = torch.cat([VL_TYPES, torch.zeros(1, step, dtype=VL_TYPES.dtype)], dim=1)
        kw = {
            "pixel_values": vl_pixels(),
            "image_grid_thw": VL_GRID,
            "mm_token_type_ids": types,
            "use_cache": False,
        }
        expect = model(input_ids=gen.sequences[:, :n], roles=roles, stage=1, **kw).logits[:, -1]
        torch.testing.assert_close(logits, expect, atol=1e-5, rtol=1e-5)
        unmasked = model(input_ids=gen.sequences[:, :n], roles=roles, stage=2, **kw).logits[:, -1]
        assert not torch.allclose(logits, unmasked, atol=1e-4)


def test_training_gradients_reach_image_only_through_latents():
    # One layer: an answer-only loss cannot send gradient to image inputs in stage 1, and does in stage 2.
    roles = ROLES[:1]
    model = tiny_qwen2(layers=1)
    model.train()
    img = roles[0] == IMG
    grads = {}
    for stage in (1, 2):
        emb = model.get_input_embeddings()(IDS[:1]).detach().requires_grad_()
        logits = model(inputs_embeds=emb, roles=roles, stage=stage).logits
        logits[0, roles[0] == A].logsumexp(-1).sum().backward()
        grads[stage] = emb.grad[0]
    assert grads[1][img].abs().max() == 0
    assert grads[2][img].abs().max() > 0
    assert grads[1][roles[0] == L].abs().max() > 0


def test_mask_mod_is_a_transformers_mask_function():
    from transformers.masking_utils import sdpa_mask

    fn = bottleneck_mask_mod(ROLES, 1)
    full = sdpa_mask(
        batch_size=2, q_length=16, kv_length=16, mask_function=fn, allow_is_causal_skip=False, use_vmap=True
    )
    dense = bottleneck_mask(ROLES, 1)
    assert torch.equal(full, dense)
    tail = sdpa_mask(
        batch_size=2,
        q_length=4,
        kv_length=16,
        q_offset=12,
        mask_function=fn,
        allow_is_causal_skip=False,
        use_vmap=True,
    )
    assert torch.equal(tail, dense[:, :, 12:])


def test_no_latents_ablation_reaches_the_model_only_when_asked():
    roles = torch.tensor([[P, IMG, IMG, P, A, A]])
    ids = IDS[:1, : roles.shape[1]]
    model = tiny_qwen2(layers=2)
    with pytest.raises(ValueError, match="no latent token after"):
        model(ids, roles=roles, stage=1)
    emb = model.get_input_embeddings()(ids)
    emb2 = emb.clone()
    emb2[0, 1:3] += 1.0
    a = model(inputs_embeds=emb, roles=roles, stage=1, require_latents=False).logits[0]
    b = model(inputs_embeds=emb2, roles=roles, stage=1, require_latents=False).logits[0]
    assert torch.equal(a[3:], b[3:])  # blind after the image
    assert not torch.equal(a[1:3], b[1:3])
    with bottleneck_roles(roles, 1, require_latents=False):
        c = model(inputs_embeds=emb2).logits[0]
    assert torch.equal(b, c)


# ------------------------------------------------------------- the split route (two causal calls) in the registry
SPLIT = register_transformers_bottleneck("latentforge_bottleneck_split_test", backend="split")


@pytest.mark.parametrize("stage", [1, 2])
def test_split_route_matches_dense_route_with_padding_and_gradients(stage, monkeypatch):
    # the same weights under the dense-mask route (CPU auto) and the forced split route: logits and gradients
    from latentforge.kernels import transformers_attention

    calls = []
    real = transformers_attention.split_bottleneck_attention
    monkeypatch.setattr(
        transformers_attention, "split_bottleneck_attention", lambda *a: calls.append(1) or real(*a)
    )
    dense = tiny_qwen2()
    split = same_weights(dense, SPLIT)
    pos = (ATTN_2D.cumsum(-1) - 1).clamp(min=0)
    outs = []
    for model in (dense, split):
        model.zero_grad()
        logits = model(IDS, attention_mask=ATTN_2D, position_ids=pos, roles=ROLES, stage=stage).logits
        logits[ROLES == A].logsumexp(-1).sum().backward()
        outs.append((logits, [p.grad.clone() for p in model.parameters()]))
    assert len(calls) == 2  # one per layer, from the split model only
    real = ROLES != X
    torch.testing.assert_close(outs[1][0][real], outs[0][0][real], atol=1e-5, rtol=1e-5)
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_split_route_generate_with_cache_matches_dense_route():
    dense = tiny_qwen2()
    split = same_weights(dense, SPLIT)
    prompt, roles = IDS[:1, :13], ROLES[:1, :13]
    kw = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0, "output_logits": True}
    gens = []
    for model in (dense, split):
        with bottleneck_roles(roles, 1):
            gens.append(
                model.generate(
                    prompt, attention_mask=torch.ones_like(prompt), return_dict_in_generate=True, **kw
                )
            )
    assert torch.equal(gens[0].sequences, gens[1].sequences)
    for a, b in zip(gens[0].logits, gens[1].logits, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_split_route_refuses_padding_that_roles_do_not_mark():
    model = tiny_qwen2(impl=SPLIT)
    unmarked = ROLES.clone()
    unmarked[1, :3] = P  # the attention_mask pads these three, the roles call them prompt
    with pytest.raises(ValueError, match=r"do not mark Role\.PAD"):
        model(IDS, attention_mask=ATTN_2D, roles=unmarked, stage=1)
    with pytest.raises(ValueError, match="expected 'auto', 'reference' or 'split'"):
        register_transformers_bottleneck("x", backend="flex")


def test_split_route_in_qwen2_5_vl_matches_dense_route():
    model = tiny_qwen2_5_vl()
    other = transformers.Qwen2_5_VLForConditionalGeneration(model.config).eval()
    other.load_state_dict(model.state_dict())
    other.set_attn_implementation({"text_config": SPLIT, "vision_config": "sdpa"})
    common = {
        "input_ids": VL_IDS,
        "pixel_values": vl_pixels(),
        "image_grid_thw": VL_GRID,
        "mm_token_type_ids": VL_TYPES,
    }
    for stage in (1, 2):
        a = model(**common, roles=VL_ROLES, stage=stage).logits
        b = other(**common, roles=VL_ROLES, stage=stage).logits
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
