"""Bottleneck mask semantics and the attention backends against the dense reference."""

import math

import pytest
import torch

from latentforge.kernels import (
    Role,
    bottleneck_attention,
    bottleneck_block_mask,
    bottleneck_mask,
    bottleneck_mask_mod,
)

P, I, L, A, X = (int(r) for r in (Role.PROMPT, Role.IMAGE, Role.LATENT, Role.ANSWER, Role.PAD))  # noqa: E741 (I = image role, as in the paper's figures)


def livr_roles(lengths, n_images=1, n_latents=4, left_pad=0, right_pad=0, n_answer=3, seed=0):
    """One LIVR-like layout: [pad] (prompt image)*n prompt latents answer [pad]."""
    g = torch.Generator().manual_seed(seed)
    out = [X] * left_pad
    for _ in range(n_images):
        out += [P] * int(torch.randint(1, 4, (), generator=g)) + [I] * lengths
    out += [P] * 3 + [L] * n_latents + [A] * n_answer + [X] * right_pad
    return out


def batch_roles():
    a = livr_roles(5, n_images=2, right_pad=2)
    b = livr_roles(7, n_images=1, left_pad=3, seed=1)
    s = max(len(a), len(b))
    a, b = a + [X] * (s - len(a)), b + [X] * (s - len(b))
    return torch.tensor([a, b])


def brute_force_mask(roles, stage):
    b, s = roles.shape
    out = torch.zeros(b, 1, s, s, dtype=torch.bool)
    for bi in range(b):
        for q in range(s):
            for k in range(s):
                rq, rk = int(roles[bi, q]), int(roles[bi, k])
                if rq == X:
                    ok = k == q
                else:
                    ok = k <= q and rk != X
                    if stage == 1 and rk == I and rq not in (I, L):
                        ok = False
                out[bi, 0, q, k] = ok
    return out


def eager_attention(q, k, v, mask):
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v


@pytest.mark.parametrize("stage", [1, 2, "bottleneck", "causal"])
def test_mask_matches_rule_written_out(stage):
    roles = batch_roles()
    st = {1: 1, 2: 2, "bottleneck": 1, "causal": 2}[stage]
    mask = bottleneck_mask(roles, stage)
    assert mask.shape == (2, 1, roles.shape[1], roles.shape[1]) and mask.dtype == torch.bool
    assert torch.equal(mask, brute_force_mask(roles, st))
    assert mask.any(-1).all(), "no row may be fully masked"


def test_mask_mod_and_block_mask_match_dense():
    from torch.nn.attention.flex_attention import create_mask

    roles = batch_roles()
    s = roles.shape[1]
    for stage in (1, 2):
        dense = bottleneck_mask(roles, stage)
        assert torch.equal(create_mask(bottleneck_mask_mod(roles, stage), 2, 1, s, s, device="cpu"), dense)
        block = bottleneck_block_mask(roles, stage, block_size=8)
        assert torch.equal(create_mask(block.mask_mod, 2, 1, s, s, device="cpu"), dense)


def test_block_mask_skips_blocks_the_answer_cannot_see():
    # 64 prompt, 128 image, 64 prompt, 16 latents, 112 answer: answer rows never touch the image blocks.
    roles = torch.tensor([[P] * 64 + [I] * 128 + [P] * 64 + [L] * 16 + [A] * 112])
    b1 = bottleneck_block_mask(roles, 1, block_size=64)
    b2 = bottleneck_block_mask(roles, 2, block_size=64)
    dense1, dense2 = b1.to_dense()[0, 0], b2.to_dense()[0, 0]
    assert dense1.sum() < dense2.sum()
    assert not dense1[5, 1:3].any() and dense2[5, 1:3].all()


def test_query_length_uses_last_positions():
    roles = batch_roles()
    full = bottleneck_mask(roles, 1)
    assert torch.equal(bottleneck_mask(roles, 1, query_length=3), full[:, :, -3:])


def test_several_images_need_latents_only_after_the_last():
    roles = torch.tensor([livr_roles(4, n_images=3)])
    mask = bottleneck_mask(roles, 1)[0, 0]
    ans = (roles[0] == A).nonzero().flatten()
    lat = (roles[0] == L).nonzero().flatten()
    img = (roles[0] == I).nonzero().flatten()
    assert not mask[ans][:, img].any()
    assert mask[lat][:, img].all()


def qkv(roles, hq=4, hkv=2, d=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    b, s = roles.shape
    return (
        torch.randn(b, hq, s, d, generator=g).to(dtype),
        torch.randn(b, hkv, s, d, generator=g).to(dtype),
        torch.randn(b, hkv, s, d, generator=g).to(dtype),
    )


@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("stage", [1, 2])
def test_reference_matches_eager_forward_and_backward(hq, hkv, stage):
    roles = batch_roles()
    q, k, v = (t.requires_grad_() for t in qkv(roles, hq, hkv))
    out = bottleneck_attention(q, k, v, roles, stage, backend="reference")
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    expect = eager_attention(q2, k2, v2, brute_force_mask(roles, stage))
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (expect * w).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hq,hkv,d", [(4, 2, 16), (2, 2, 32)])
@pytest.mark.parametrize("stage", [1, 2])
def test_flex_matches_reference_forward_on_cpu(hq, hkv, d, stage):
    roles = batch_roles()
    q, k, v = qkv(roles, hq, hkv, d)
    ref = bottleneck_attention(q, k, v, roles, stage, backend="reference")
    out = bottleneck_attention(q, k, v, roles, stage, backend="flex")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_flex_longer_sequence_multiple_blocks():
    roles = torch.tensor([[P] * 20 + [I] * 150 + [P] * 10 + [L] * 16 + [A] * 60])
    q, k, v = qkv(roles, 2, 1, 16)
    for stage in (1, 2):
        ref = bottleneck_attention(q, k, v, roles, stage, backend="reference")
        torch.testing.assert_close(
            bottleneck_attention(q, k, v, roles, stage, backend="flex"), ref, atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("backend", ["reference", "flex"])
def test_bf16_close_to_fp32_reference(backend):
    roles = batch_roles()
    q, k, v = qkv(roles)
    ref = bottleneck_attention(q, k, v, roles, 1, backend="reference")
    low = bottleneck_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), roles, 1, backend=backend)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, atol=3e-2, rtol=3e-2)


def test_decoding_queries_match_full_rows():
    roles = batch_roles()
    q, k, v = qkv(roles)
    full = bottleneck_attention(q, k, v, roles, 1, backend="reference")
    last = bottleneck_attention(q[:, :, -2:], k, v, roles, 1, backend="reference")
    torch.testing.assert_close(last, full[:, :, -2:])
    flex_last = bottleneck_attention(q[:, :, -2:], k, v, roles, 1, backend="flex")
    torch.testing.assert_close(flex_last, full[:, :, -2:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "flex"])
def test_stage1_answer_sees_image_only_through_latents(backend):
    roles = torch.tensor([livr_roles(6, n_images=2)])
    q, k, v = qkv(roles)
    img = roles[0] == I
    k2, v2 = k.clone(), v.clone()
    k2[:, :, img] += torch.randn_like(k2[:, :, img])
    v2[:, :, img] += torch.randn_like(v2[:, :, img])
    last_img = int(img.nonzero().max())
    pos = torch.arange(roles.shape[1])
    blind = ((roles[0] == A) | (roles[0] == P)) & (pos > int(img.nonzero().min()))
    seeing = roles[0] == L
    for stage, expect_blind_equal in ((1, True), (2, False)):
        a = bottleneck_attention(q, k, v, roles, stage, backend=backend)
        b = bottleneck_attention(q, k2, v2, roles, stage, backend=backend)
        same = torch.isclose(a, b, atol=1e-6).all(dim=(0, 1, 3))
        assert bool(same[blind].all()) == expect_blind_equal
        if not expect_blind_equal:
            assert not same[blind & (pos > last_img)].any()
        assert not same[seeing].any(), "latents must see the image"


@pytest.mark.parametrize("backend", ["reference", "split"])
def test_gradients_respect_mask(backend):
    # In stage 1 the loss on answer rows must not send gradient into image keys/values.
    roles = torch.tensor([livr_roles(5)])
    q, k, v = (t.requires_grad_() for t in qkv(roles))
    out = bottleneck_attention(q, k, v, roles, 1, backend=backend)
    out[:, :, roles[0] == A].sum().backward()
    assert k.grad[:, :, roles[0] == I].abs().max() == 0
    assert v.grad[:, :, roles[0] == I].abs().max() == 0
    assert v.grad[:, :, roles[0] == L].abs().max() > 0


def test_flex_refuses_cpu_backward_clearly():
    roles = batch_roles()
    q, k, v = (t.requires_grad_() for t in qkv(roles))
    with pytest.raises(RuntimeError, match="no backward on CPU"):
        bottleneck_attention(q, k, v, roles, 1, backend="flex")


@pytest.mark.parametrize(
    "roles,stage,match",
    [
        (torch.tensor([[0, 1, 2, 3]], dtype=torch.float32), 1, "integer dtype"),
        (torch.tensor([[0, 1, 2, 3]]).bool(), 1, "integer dtype"),
        (torch.tensor([0, 1, 2, 3]), 1, "shape"),
        (torch.tensor([[0, 1, 2, 7]]), 1, "unknown role value 7"),
        (torch.tensor([[0, -1, 2, 3]]), 1, "unknown role value -1"),
        (torch.tensor([[0, 2, 1, 3]]), 1, "no latent token after"),
        (torch.tensor([[0, 1, 2, 3]]), 3, "unknown stage"),
        (torch.tensor([[0, 1, 2, 3]]), "full", "unknown stage"),
    ],
)
def test_bad_roles_and_stages_raise(roles, stage, match):
    with pytest.raises(ValueError, match=match):
        bottleneck_mask(roles, stage)


def test_stage2_allows_images_without_latents():
    assert bottleneck_mask(torch.tensor([[0, 2, 1, 3]]), 2).shape == (1, 1, 4, 4)


def test_attention_shape_errors():
    roles = torch.tensor([[0, 1, 2, 3]])
    q, k, v = qkv(roles)
    with pytest.raises(ValueError, match="cover 3 positions"):
        bottleneck_attention(q, k, v, roles[:, :3], 1)
    with pytest.raises(ValueError, match="multiple"):
        bottleneck_attention(q[:, :3], k, v, roles, 1)
    with pytest.raises(ValueError, match="backend"):
        bottleneck_attention(q, k, v, roles, 1, backend="fast")
    with pytest.raises(ValueError, match="batch"):
        bottleneck_attention(q, k, v, torch.cat([roles, roles]), 1)
    with pytest.raises(ValueError, match="on meta"):
        bottleneck_attention(q, k, v, roles.to("meta"), 1)


def assert_outputs_and_grads_close(out, ref, inputs, ref_inputs, dtype) -> None:
    """``out`` against ``ref``, then the gradients of one random projection of each (GPU tolerances)."""
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    w = torch.randn_like(ref)
    (ref * w).sum().backward()
    (out * w).sum().backward()
    for a, b in zip(ref_inputs, inputs, strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=tol * 10, rtol=tol * 10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flex_matches_reference_on_gpu_with_grads(dtype):
    roles = torch.tensor([[P] * 100 + [I] * 300 + [P] * 20 + [L] * 16 + [A] * 76] * 2, device="cuda")
    q, k, v = (t.cuda().requires_grad_() for t in qkv(roles.cpu(), 8, 2, 64, dtype=dtype))
    ref = bottleneck_attention(q, k, v, roles, 1, backend="reference")
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = bottleneck_attention(q2, k2, v2, roles, 1, backend="flex")
    assert_outputs_and_grads_close(out, ref, (q2, k2, v2), (q, k, v), dtype)


def test_no_latents_ablation_is_an_explicit_opt_in():
    # The paper's "bottleneck mask without latents": stage 1 with no latent cuts everything after the image
    # off from it. Refused by default (a missing latent is usually a bug), allowed when asked for.
    roles = torch.tensor([[0, 1, 1, 0, 3, 3]])
    with pytest.raises(ValueError, match="no latent token after"):
        bottleneck_mask(roles, 1)
    mask = bottleneck_mask(roles, 1, require_latents=False)[0, 0]
    image = roles[0] == 1
    assert not mask[~image][:, image].any()  # nothing outside the image sees it
    assert mask[image][:, image].tril().sum() == 3  # the image sees itself causally
    assert mask[4, 3] and mask[4, 0]  # the answer still sees the prompt


def test_auto_backend_follows_the_gpu_measurements():
    from latentforge.kernels.bottleneck_attention import FLEX_TRAINING_MIN_KEYS, resolve_backend

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    # full-length calls on CUDA (training, prefill): split, the mask-free causal route, at every length
    for training in (False, True):
        for keys in (1024, 4096, FLEX_TRAINING_MIN_KEYS):
            assert resolve_backend("auto", cuda, training=training, keys=keys) == "split"
            assert resolve_backend("auto", cuda, training=training, keys=keys, queries=keys) == "split"
    # fewer queries than keys (decoding): flex for inference; training, the dense reference below the crossover
    assert resolve_backend("auto", cuda, training=False, keys=1024, queries=1) == "flex"
    assert resolve_backend("auto", cuda, training=True, keys=4096, queries=8) == "reference"
    assert resolve_backend("auto", cuda, training=True, keys=FLEX_TRAINING_MIN_KEYS, queries=8) == "flex"
    assert resolve_backend("auto", cpu, training=False, keys=10**6) == "reference"
    assert resolve_backend("auto", cpu, training=True, keys=64, queries=64) == "reference"
    # an explicit choice is never overridden
    assert resolve_backend("flex", cuda, training=True, keys=16) == "flex"
    assert resolve_backend("split", cpu, training=True, keys=16, queries=1) == "split"
    with pytest.raises(ValueError, match="unknown attention backend"):
        resolve_backend("fast", cuda)


# ----------------------------------------------------------------------------- split: two causal calls, no mask


def split_vs_reference(roles, stage, hq=4, hkv=2, d=16, n_queries=None, seed=0):
    """Max abs differences (output, grad q, grad k, grad v) of split against the reference, fp32, on CPU."""
    q, k, v = (t.requires_grad_() for t in qkv(roles, hq, hkv, d, seed=seed))
    if n_queries is not None:
        q = q[:, :, -n_queries:].detach().requires_grad_()
    ref = bottleneck_attention(q, k, v, roles, stage, backend="reference")
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = bottleneck_attention(q2, k2, v2, roles, stage, backend="split")
    w = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed + 1))
    (ref * w).sum().backward()
    (out * w).sum().backward()
    assert out.shape == ref.shape and out.dtype == ref.dtype

    def grad(t):  # split never touches q when every query is padding (its output is the value alone)
        return torch.zeros_like(t) if t.grad is None else t.grad

    return [
        float((a - b).detach().abs().max())
        for a, b in ((out, ref), (grad(q2), grad(q)), (grad(k2), grad(k)), (grad(v2), grad(v)))
    ]


@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("stage", [1, 2])
def test_split_matches_reference_forward_and_backward(hq, hkv, stage):
    # batch_roles: two images in row 0 with right padding, one image in row 1 with left padding: two layouts
    errs = split_vs_reference(batch_roles(), stage, hq, hkv)
    assert max(errs) < 1e-5, errs


@pytest.mark.parametrize(
    "layout",
    [
        [P] * 20 + [I] * 150 + [P] * 10 + [L] * 16 + [A] * 60,  # the benchmark's shape: one image, K=16
        [I] * 30 + [L] * 4 + [A] * 5,  # image first, no prompt, nothing between image and latents
        [P] * 3 + [I] * 8 + [L] * 2 + [P] * 2 + [I] * 5 + [P] * 2 + [L] * 3 + [A] * 4,  # latents mid-sequence
        [P] * 6 + [A] * 5,  # text only: stage 1 is plain causal
        [X] * 4 + [P] * 2 + [I] * 9 + [P] + [L] * 3 + [A] * 2 + [X] * 3,  # padding both sides
    ],
)
def test_split_exact_on_livr_layouts(layout):
    roles = torch.tensor([layout, layout])  # one shared layout: a single pair of calls for the whole batch
    for stage in (1, 2):
        assert max(split_vs_reference(roles, stage)) < 1e-5


def test_split_no_latents_ablation_layout():
    # the image cut off from everything after it; validation is the caller's (bottleneck_mask opt-in), the
    # split route only follows the mask rule
    from latentforge.kernels.bottleneck_split import split_bottleneck_attention

    roles = torch.tensor([[P, P, I, I, I, P, A, A, A]])
    q, k, v = qkv(roles)
    mask = bottleneck_mask(roles, 1, require_latents=False)
    expect = eager_attention(q, k, v, mask)
    torch.testing.assert_close(split_bottleneck_attention(q, k, v, roles, 1), expect, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_queries", [1, 2, 5, 13])
@pytest.mark.parametrize("stage", [1, 2])
def test_split_decoding_queries_are_the_last_positions(n_queries, stage):
    # KV-cache decoding: the queries are the last positions; n_queries=13 reaches back before the latents
    roles = batch_roles()
    assert max(split_vs_reference(roles, stage, n_queries=n_queries)) < 1e-5


def test_split_batch_of_distinct_layouts_keeps_row_order():
    # four rows, three layouts (rows 0 and 2 identical), interleaved: outputs must come back in batch order
    a = livr_roles(5, n_images=1, right_pad=3)
    b = livr_roles(6, n_images=1, left_pad=2, seed=2)
    c = livr_roles(4, n_images=2, seed=3)
    s = max(map(len, (a, b, c)))
    a, b, c = (r + [X] * (s - len(r)) for r in (a, b, c))
    roles = torch.tensor([a, b, a, c])
    for stage in (1, 2):
        assert max(split_vs_reference(roles, stage, hq=4, hkv=1)) < 1e-5


def test_split_builds_no_square_mask(monkeypatch):
    # every SDPA call of the split route is is_causal without a mask (no padding, full-length queries)
    import torch.nn.functional as F

    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        calls.append((attn_mask, kw.get("is_causal"), q.shape[2], k.shape[2]))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    roles = torch.tensor([[P] * 20 + [I] * 150 + [P] * 10 + [L] * 16 + [A] * 60])
    q, k, v = qkv(roles)
    bottleneck_attention(q, k, v, roles, 1, backend="split")
    # full: up to the last latent (196 positions); blind: the sequence without its 150 image tokens
    assert calls == [(None, True, 196, 196), (None, True, 106, 106)]
    calls.clear()
    bottleneck_attention(q, k, v, roles, 2, backend="split")
    assert calls == [(None, True, 256, 256)]


def test_split_bf16_close_to_fp32_reference():
    roles = batch_roles()
    q, k, v = qkv(roles)
    ref = bottleneck_attention(q, k, v, roles, 1, backend="reference")
    low = bottleneck_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), roles, 1, backend="split")
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, atol=3e-2, rtol=3e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("hkv", [2, 8])
def test_split_matches_reference_on_gpu_with_grads(dtype, hkv):
    # bf16 GQA takes FlashAttention with enable_gqa; fp32 repeats the k/v heads; row 1 is left padded
    row = [P] * 100 + [I] * 300 + [P] * 20 + [L] * 16 + [A] * 76
    roles = torch.tensor([row, [X] * 40 + row[40:]], device="cuda")
    q, k, v = (t.cuda().requires_grad_() for t in qkv(roles.cpu(), 8, hkv, 64, dtype=dtype))
    ref = bottleneck_attention(q, k, v, roles, 1, backend="reference")
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # the math kernel (which materialises the scores) is ruled out: split must run on a fused kernel
    with sdpa_kernel(
        [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    ):
        out = bottleneck_attention(q2, k2, v2, roles, 1, backend="split")
    assert bottleneck_attention(q2.detach(), k2.detach(), v2.detach(), roles, 1).shape == ref.shape  # auto
    assert_outputs_and_grads_close(out, ref, (q2, k2, v2), (q, k, v), dtype)


def test_split_matches_the_rule_on_random_role_sequences():
    # arbitrary role sequences (several images, latents anywhere, padding anywhere, rows differing) against
    # eager attention under the brute-force mask: split follows the rule, not just the LIVR layout
    from latentforge.kernels.bottleneck_split import split_bottleneck_attention

    g = torch.Generator().manual_seed(7)
    for trial in range(20):
        s = int(torch.randint(1, 40, (), generator=g))
        # runs of random roles, so the sequences look like spans rather than noise
        rows = []
        for _ in range(3):
            row = []
            while len(row) < s:
                row += [int(torch.randint(0, 5, (), generator=g))] * int(torch.randint(1, 8, (), generator=g))
            rows.append(row[:s])
        roles = torch.tensor(rows)
        q, k, v = qkv(roles, 4, 2, 8, seed=trial)
        for stage in (1, 2):
            expect = eager_attention(q, k, v, brute_force_mask(roles, stage))
            for n in (s, max(1, s // 3)):
                got = split_bottleneck_attention(q[:, :, -n:], k, v, roles, stage)
                torch.testing.assert_close(got, expect[:, :, -n:], atol=1e-5, rtol=1e-5)


def test_split_plan_is_reused_for_the_same_roles_and_redone_after_a_change():
    from latentforge.kernels.bottleneck_split import split_plan

    roles = torch.tensor([[P] * 3 + [I] * 5 + [L] * 2 + [A] * 3])
    plan = split_plan(roles)
    assert split_plan(roles) is plan  # a model's later layers: no second host read-back
    assert split_plan(roles.clone()) is not plan  # another tensor, even with equal values
    roles[0, 4] = P  # modified in place: the cached layout is stale and must not be used
    assert split_plan(roles).runs != plan.runs
    q, k, v = qkv(roles)
    expect = eager_attention(q, k, v, brute_force_mask(roles, 1))
    torch.testing.assert_close(
        bottleneck_attention(q, k, v, roles, 1, backend="split"), expect, atol=1e-5, rtol=1e-5
    )
