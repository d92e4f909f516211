import torch

from latentforge.kernels import Role
from livr.backbones import get_backbone
from livr.latents import add_latent_tokens, compute_roles, grow_embeddings, init_latent_rows
from livr.tiny import build_tokenizer


def test_roles_from_token_ids_with_two_images_and_padding():
    tok = build_tokenizer()
    latent_ids = add_latent_tokens(tok, 2)
    img = tok.convert_tokens_to_ids("<|image_pad|>")
    text = "<|vision_start|><|image_pad|><|image_pad|><|vision_end|>a<|vision_start|><|image_pad|><|vision_end|>q"
    ids = tok(text + "<|latent_0|><|latent_1|>" + "7", add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([[0, 0, *ids]])
    attention = (torch.arange(input_ids.shape[1]) >= 2).long()[None]
    answer = torch.zeros_like(input_ids, dtype=torch.bool)
    answer[0, -1] = True
    roles = compute_roles(
        input_ids, attention, image_token_ids=[img], latent_ids=latent_ids, answer_mask=answer
    )
    P, Im, L, A, D = (int(r) for r in (Role.PROMPT, Role.IMAGE, Role.LATENT, Role.ANSWER, Role.PAD))
    assert roles[0].tolist() == [D, D, P, Im, Im, P, P, P, Im, P, P, L, L, A]


def test_adding_latents_reuses_padded_rows_and_never_shrinks(tiny_backbones):
    adapter = get_backbone("qwen2_5_vl")
    model = adapter.model_class.from_pretrained(tiny_backbones["qwen2_5_vl"])
    tok = build_tokenizer()
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows > len(tok)  # like Qwen: the checkpoint is padded past the tokenizer
    ids = add_latent_tokens(tok, 4)
    assert not grow_embeddings(model, max(ids) + 1)
    assert model.get_input_embeddings().weight.shape[0] == rows  # resize to len(tokenizer) would shrink it
    more = add_latent_tokens(build_tokenizer(), 40)
    assert grow_embeddings(model, max(more) + 1)
    assert model.get_input_embeddings().weight.shape[0] == max(more) + 1
    assert model.config.get_text_config().vocab_size == max(more) + 1
    assert model.get_output_embeddings().weight.shape[0] == max(more) + 1


def test_latent_rows_are_initialised_from_their_own_seed(tiny_backbones):
    adapter = get_backbone("qwen2_5_vl")
    model = adapter.model_class.from_pretrained(tiny_backbones["qwen2_5_vl"])
    weight = model.get_input_embeddings().weight
    before = weight.detach().clone()
    ids = [103, 104, 105]
    init_latent_rows(model, ids, seed=3)
    first = weight[ids].detach().clone()
    assert not torch.equal(first, before[ids])
    keep = torch.ones(weight.shape[0], dtype=torch.bool)
    keep[ids] = False
    assert torch.equal(weight[keep], before[keep])
    init_latent_rows(model, ids, seed=3)
    assert torch.equal(weight[ids], first)
    ratio = first.std() / before[keep].std()
    assert 0.5 < ratio < 2.0
