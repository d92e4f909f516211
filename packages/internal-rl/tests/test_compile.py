"""The CompILE baseline (paper C.4.3, Tables A11/A12)."""

import dataclasses
import math

import torch

from internal_rl.backbone import Backbone, BackboneConfig
from internal_rl.compile import (
    CompileConfig,
    CompileModel,
    categorical_kl,
    compile_losses,
    compile_switch_statistics,
    poisson_length_log_prior,
    segment_switches,
    train_compile,
)
from internal_rl.data import generate_trajectories
from internal_rl.discovery import alignment_f1, boundaries
from internal_rl.pretrain import Batch

GRID = "internal_rl/GridPinpad-v0"


def small_base(seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    return Backbone(BackboneConfig(n_layers=2, d_model=32, n_heads=4, mlp_hidden=64)).eval()


def sharpen_boundary_head(model: CompileModel, scale: float = 2.0) -> None:
    # A fresh head gives nearly flat boundary logits; larger weights make the segmentations vary.
    with torch.no_grad():
        for p in model.head_b.parameters():
            p.normal_(0, scale)


def random_batch(lengths: list[int], obs_dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    steps = max(lengths)
    obs = (torch.rand(len(lengths), steps, obs_dim, generator=g) < 0.05).float()
    return obs, torch.tensor(lengths)


def test_segment_masks_partition_every_real_step():
    base = small_base()
    lengths = [23, 9, 4, 1, 23]
    obs, lens = random_batch(lengths, base.config.obs_dim)
    real = torch.arange(obs.shape[1])[None] < lens[:, None]
    for temperature in (0.5, 1.0):
        model = CompileModel(base, CompileConfig(temperature=temperature))
        sharpen_boundary_head(model)
        for training in (True, False):
            model.train(training)
            for seed in range(3):
                with torch.no_grad():
                    out = model(obs, lens, generator=torch.Generator().manual_seed(seed))
                assert (out.masks >= 0).all()
                total = out.masks.sum(1)
                assert torch.allclose(total[real], torch.ones(int(real.sum())), atol=1e-5)
                assert (total[~real].abs() < 1e-6).all()
    # Soft masks: some steps are shared between segments in training, not just one-hot.
    model.train()
    with torch.no_grad():
        out = model(obs, lens, generator=torch.Generator().manual_seed(0))
    assert ((out.masks > 0.01) & (out.masks < 0.99)).any()


def test_boundaries_ordered_and_last_segment_ends_at_sequence_end():
    base = small_base(1)
    lengths = [30, 12, 5, 2, 1]
    obs, lens = random_batch(lengths, base.config.obs_dim, seed=1)
    model = CompileModel(base, CompileConfig(max_segments=4))
    sharpen_boundary_head(model, 3.0)
    steps = torch.arange(obs.shape[1])
    for training in (True, False):
        model.train(training)
        for seed in range(5):
            with torch.no_grad():
                out = model(obs, lens, generator=torch.Generator().manual_seed(seed))
            assert torch.equal(out.ends[:, -1], lens - 1)
            assert (out.ends[:, 1:] >= out.ends[:, :-1]).all()
            assert (out.ends < lens[:, None]).all()
            # No boundary mass before the previous end or past the sequence: an exact zero.
            for m in range(1, out.boundaries.shape[1]):
                before = steps[None] < out.ends[:, m - 1, None]
                assert (out.boundaries[:, m][before] == 0).all()
            past = steps[None, None] >= lens[:, None, None]
            assert (out.boundaries.masked_select(past) == 0).all()
            assert torch.allclose(out.boundaries.sum(-1), torch.ones(len(lengths), 4), atol=1e-5)
    # The free boundaries do not all collapse onto the sequence end.
    assert (out.ends[0, :-1] < 29).any()


def test_poisson_length_kl_matches_hand_computation():
    rate, length, steps = 10.0, 4, 6
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.5, 7.0, 7.0]])
    for prev_end in (-1, 1):
        log_prior = poisson_length_log_prior(torch.tensor([prev_end]), torch.tensor([length]), steps, rate)
        ends = range(max(prev_end, 0), length)
        pmf = {t: rate ** (t - prev_end) * math.exp(-rate) / math.factorial(t - prev_end) for t in ends}
        norm = sum(pmf.values())
        for t in range(steps):
            if t in pmf:
                assert math.isclose(float(log_prior[0, t]), math.log(pmf[t] / norm), rel_tol=1e-5)
            else:
                assert float(log_prior[0, t]) < -1e6
        # The posterior as the model forms it: infeasible ends masked out of the softmax.
        feasible = torch.tensor([t in pmf for t in range(steps)])
        masked = torch.where(feasible, logits, -1e9)
        z = sum(math.exp(float(logits[0, t])) for t in ends)
        q = {t: math.exp(float(logits[0, t])) / z for t in ends}
        hand = sum(q[t] * math.log(q[t] / (pmf[t] / norm)) for t in ends)
        assert math.isclose(float(categorical_kl(masked, log_prior)[0]), hand, rel_tol=1e-5)
    # A segment that can only end at the last step has a point-mass prior and posterior: KL 0.
    log_prior = poisson_length_log_prior(torch.tensor([3]), torch.tensor([length]), steps, rate)
    only = torch.where(torch.arange(steps) == 3, 0.0, -1e9)[None]
    assert float(categorical_kl(only, log_prior)[0]) == 0.0


def test_zero_decoder_output_leaves_base_model_bit_identical():
    base = small_base()
    model = CompileModel(base, CompileConfig())
    sharpen_boundary_head(model)
    with torch.no_grad():
        model.decoder.decoder[-1].weight.zero_()
        model.decoder.decoder[-1].bias.zero_()
    obs, lens = random_batch([11, 11, 6], base.config.obs_dim)
    with torch.no_grad():
        plain = base(obs)
        for training in (True, False):
            model.train(training)
            out = model(obs, lens, generator=torch.Generator().manual_seed(0))
            assert (out.delta == 0).all()
            assert torch.equal(out.pred.action_logits, plain.action_logits)
            assert torch.equal(out.pred.obs_pred, plain.obs_pred)


def test_encoder_is_the_base_models_first_half_with_its_weights():
    base = small_base(3)
    model = CompileModel(base, CompileConfig())
    assert model.layer == 1 and len(model.encoder.blocks) == 1
    enc = model.encoder.state_dict()
    full = base.state_dict()
    assert set(enc) and all(k.startswith(("obs_embed", "rel_bias", "blocks.0.")) for k in enc)
    for k, v in enc.items():
        assert torch.equal(v, full[k]), k
    # A copy, not a view: training the encoder must leave the frozen base model untouched.
    assert all(p.data_ptr() != q.data_ptr() for p in model.encoder.parameters() for q in base.parameters())
    assert all(p.requires_grad for p in model.encoder.parameters())
    assert not any(p.requires_grad for p in model.base.parameters())
    obs, _ = random_batch([8, 8], base.config.obs_dim)
    with torch.no_grad():
        assert torch.equal(model.encoder.lower(obs, 1), base.lower(obs, 1))
    fresh = CompileModel(base, CompileConfig(init_from_base=False))
    assert not torch.equal(fresh.encoder.obs_embed.weight, base.obs_embed.weight)


def test_per_step_code_is_the_code_of_the_covering_segment():
    base = small_base()
    model = CompileModel(base, CompileConfig()).eval()
    sharpen_boundary_head(model)
    obs, lens = random_batch([25, 10], base.config.obs_dim)
    with torch.no_grad():
        out = model(obs, lens)
    for b, length in enumerate(lens.tolist()):
        start = 0
        for m, end in enumerate(out.ends[b].tolist()):
            for t in range(start, end + 1):
                assert torch.equal(out.masks[b, :, t], torch.eye(4)[m])
                assert torch.allclose(out.z[b, t], out.mu[b, m], atol=1e-6)
            start = max(start, end + 1)
        assert start == length


def test_training_lowers_the_loss_and_changes_only_compile_parameters():
    data = generate_trajectories(GRID, "pretrain", num_episodes=48, seed=0, num_envs=48)
    base = small_base()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    cfg = CompileConfig(
        steps=40, batch_size=16, lr=3e-3, log_every=1, device="cpu", alpha_z=0.01, alpha_b=0.01
    )
    init, _ = train_compile(dataclasses.replace(cfg, steps=0), small_base(), data)  # the same seeded init
    model, history = train_compile(cfg, base, data)
    assert len(history) == 40
    for row in history:
        assert all(math.isfinite(row[k]) for k in ("total", "action_nll", "kl_z", "kl_b"))
    first = sum(r["total"] for r in history[:5]) / 5
    last = sum(r["total"] for r in history[-5:]) / 5
    assert last < first
    for k, v in model.base.state_dict().items():
        assert torch.equal(v, before[k]), f"frozen base parameter {k} changed"
    trained = dict(model.named_parameters())
    start = dict(init.named_parameters())
    for group in ("encoder.", "head_b.", "head_z.", "decoder."):
        assert any(not torch.equal(trained[k], start[k]) for k in trained if k.startswith(group)), group
    # Switch positions compare with the true subgoal boundaries through alignment_f1.
    part = data[:16]
    batch = Batch.from_trajectories(part.observations, part.actions, part.lengths, torch.device("cpu"))
    switches = segment_switches(model, batch)
    truth = boundaries(part.subgoals, part.lengths)
    assert switches.shape == truth.shape and switches.dtype == torch.bool
    assert not switches[:, 0].any() and not (switches & ~batch.mask).any()
    assert (switches.sum(1) <= cfg.max_segments - 1).all()
    assert 0.0 <= alignment_f1(switches, truth) <= 1.0
    stats = compile_switch_statistics(model, part)
    assert stats["switches_per_episode"] == float(switches.sum()) / 16
    assert stats["alignment_f1"] == alignment_f1(switches, truth)
    assert 0.0 <= stats["random_alignment_f1"] <= 1.0


def test_action_nll_trains_boundaries_and_encoder_not_the_base():
    # The boundaries are learnt through the soft masks alone (no KL terms here); the decoder is
    # randomised because its zero-initialised factor blocks every gradient into z at the start.
    base = small_base()
    model = CompileModel(base, CompileConfig(alpha_z=0.0, alpha_b=0.0)).train()
    sharpen_boundary_head(model, 1.0)
    with torch.no_grad():
        for p in model.decoder.decoder.parameters():
            p.normal_(0, 0.3)
    obs, lens = random_batch([15, 12, 7], base.config.obs_dim)
    actions = torch.randint(4, (3, 15))
    batch = Batch(obs=obs, next_obs=obs, actions=actions, mask=torch.arange(15)[None] < lens[:, None])
    losses = compile_losses(model, batch, lens, generator=torch.Generator().manual_seed(0))
    losses["total"].backward()
    assert torch.equal(losses["total"], losses["action_nll"])
    for name in ("head_b", "head_z", "encoder", "decoder"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name
    assert all(p.grad is None for p in model.base.parameters())


def test_segment_switches_are_the_starts_of_later_segments():
    base = small_base(2)
    model = CompileModel(base, dataclasses.replace(CompileConfig(), max_segments=3))
    sharpen_boundary_head(model, 3.0)
    obs, lens = random_batch([20, 6, 1], base.config.obs_dim)
    batch = Batch(
        obs=obs,
        next_obs=obs,
        actions=torch.zeros(3, 20, dtype=torch.long),
        mask=torch.arange(20)[None] < lens[:, None],
    )
    switches = segment_switches(model, batch)
    with torch.no_grad():
        out = model.eval()(obs, lens)
    for b, length in enumerate(lens.tolist()):
        expected = {e + 1 for e in out.ends[b, :-1].tolist() if e + 1 < length}
        assert set(switches[b].nonzero()[:, 0].tolist()) == expected
    assert not switches[2].any()  # a one-step episode has nowhere to switch
