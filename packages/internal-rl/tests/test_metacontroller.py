"""Metacontroller (Eqs. 11-18) and its training stage (discovery)."""

import dataclasses
import json

import pytest
import torch

from internal_rl.backbone import Backbone, BackboneConfig
from internal_rl.data import generate_trajectories
from internal_rl.discovery import (
    ControlledModel,
    alignment_f1,
    boundaries,
    random_switches,
    tiny_config,
    train_metacontroller,
)
from internal_rl.metacontroller import Metacontroller, MetacontrollerConfig
from internal_rl.pretrain import Batch

GRID = "internal_rl/GridPinpad-v0"


def small_base(seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    return Backbone(BackboneConfig(n_layers=2, d_model=32, n_heads=4, mlp_hidden=64)).eval()


def randomise_decoder(meta: Metacontroller) -> None:
    # The decoder starts at U = 0; give it weights so U is a generic matrix.
    with torch.no_grad():
        for p in meta.decoder.parameters():
            p.normal_(0, 0.3)


def test_control_is_a_real_matrix_applied_to_e():
    for rank in (4, 0):
        torch.manual_seed(rank)
        meta = Metacontroller(12, MetacontrollerConfig(rank=rank, n_z=3))
        randomise_decoder(meta)
        z, e = torch.randn(2, 5, 3), torch.randn(2, 5, 12)
        delta = meta.control(z, e)
        for b in range(2):
            for t in range(5):
                u = meta.matrix(z[b, t])
                assert u.shape == (12, 12)
                rows, vec = u.tolist(), e[b, t].tolist()
                explicit = torch.tensor([sum(r[j] * vec[j] for j in range(12)) for r in rows])
                assert torch.allclose(delta[b, t], explicit, rtol=1e-4, atol=1e-5)
                # Not an elementwise rescaling of e: U has off-diagonal mass.
                assert (u - torch.diag(torch.diag(u))).abs().max() > 1e-3
        if rank:
            assert torch.linalg.matrix_rank(meta.matrix(z[0, 0])) <= rank


def test_beta_in_unit_interval_and_forced_switch():
    torch.manual_seed(0)
    meta = Metacontroller(16, MetacontrollerConfig())
    with torch.no_grad():
        for p in meta.switch.parameters():
            p.normal_(0, 3.0)
    e = torch.randn(4, 30, 16) * 50
    out = meta(e, torch.tensor([30, 10, 1, 20]))
    assert ((out.beta >= 0) & (out.beta <= 1)).all()
    assert torch.isfinite(out.kl).all()
    assert (out.beta[:, 0] == 1).all()  # the first step opens a segment
    forced = Metacontroller(16, MetacontrollerConfig(forced_switch=True))
    assert (forced(e, torch.full((4,), 30)).beta == 1).all()


def test_z_interpolates_with_beta():
    torch.manual_seed(1)
    meta = Metacontroller(8, MetacontrollerConfig(n_z=2))
    e = torch.randn(1, 6, 8)
    out = meta(e, torch.tensor([6]), sample=False)
    for t in range(1, 6):
        b = out.beta[0, t]
        assert torch.allclose(out.z[0, t], b * out.mu[0, t] + (1 - b) * out.z[0, t - 1], atol=1e-6)


def test_embedder_ignores_padding():
    torch.manual_seed(2)
    meta = Metacontroller(8, MetacontrollerConfig())
    e = torch.randn(1, 10, 8)
    padded = torch.cat([e[:, :6], torch.randn(1, 4, 8) * 100], 1)
    a = meta.embedder(e[:, :6], torch.tensor([6]))
    b = meta.embedder(padded, torch.tensor([6]))[:, :6]
    assert torch.allclose(a, b, atol=1e-6)


def test_zero_decoder_output_leaves_base_model_bit_identical():
    base = small_base()
    meta = Metacontroller(32, MetacontrollerConfig())
    with torch.no_grad():
        meta.decoder[-1].weight.zero_()
        meta.decoder[-1].bias.zero_()
    model = ControlledModel(base, meta)
    obs = torch.rand(3, 9, base.config.obs_dim)
    batch = Batch(
        obs=obs,
        next_obs=obs,
        actions=torch.zeros(3, 9, dtype=torch.long),
        mask=torch.ones(3, 9, dtype=torch.bool),
    )
    with torch.no_grad():
        controlled, _ = model(batch, torch.full((3,), 9))
        plain = base(obs)
    assert torch.equal(controlled.action_logits, plain.action_logits)
    assert torch.equal(controlled.obs_pred, plain.obs_pred)


def test_alignment_metric():
    subgoals = torch.tensor([[0, 0, 0, 1, 1, 1, 2, 2, 2, 2, -1]])
    lengths = torch.tensor([10])
    truth = boundaries(subgoals, lengths)
    assert truth.nonzero()[:, 1].tolist() == [3, 6]
    assert alignment_f1(truth, truth) == 1.0
    off = torch.zeros_like(truth)
    off[0, [1, 9]] = True
    assert alignment_f1(off, truth) == 0.0
    rand = random_switches(truth, lengths, torch.Generator().manual_seed(0))
    assert int(rand.sum()) == 2 and not rand[0, 0]
    late = torch.zeros_like(truth)
    late[0, [4, 7]] = True  # one step after each change: counts with tolerance 1 only
    assert alignment_f1(late, truth) == 1.0 and alignment_f1(late, truth, tolerance=0) == 0.0


def test_kl_weight_is_zero_then_ramps_to_alpha():
    from internal_rl.discovery import kl_weight

    cfg = dataclasses.replace(tiny_config(), alpha=0.3, kl_free_steps=10, kl_warmup_steps=4)
    assert [kl_weight(cfg, s) for s in (0, 9)] == [0.0, 0.0]
    assert kl_weight(cfg, 10) == pytest.approx(0.075) and kl_weight(cfg, 11) == pytest.approx(0.15)
    assert kl_weight(cfg, 13) == pytest.approx(0.3) and kl_weight(cfg, 1000) == pytest.approx(0.3)
    assert kl_weight(tiny_config(), 0) == tiny_config().alpha  # the paper's constant alpha by default


def test_switch_init_bias_sets_the_initial_switch_rate():
    e = torch.randn(2, 5, 16)
    for bias, lo, hi in ((0.0, 0.3, 0.7), (-3.0, 0.0, 0.2)):
        torch.manual_seed(0)
        meta = Metacontroller(16, MetacontrollerConfig(switch_init_bias=bias))
        beta = meta(e, torch.tensor([5, 5])).beta[:, 1:]
        assert lo < float(beta.detach().mean()) < hi


def _tiny_run(tmp_path, steps, **kw):
    data = generate_trajectories(GRID, "pretrain", num_episodes=80, seed=5, num_envs=80)
    cfg = dataclasses.replace(
        tiny_config(), steps=steps, batch_size=16, log_every=5, eval_every=10, checkpoint_every=10,
        eval_episodes=16, run_root=tmp_path, device="cpu", lr=3e-3, **kw,
    )  # fmt: skip
    return cfg, data


def test_elbo_terms_finite_and_falling_base_frozen(tmp_path):
    cfg, data = _tiny_run(tmp_path, 30)
    cfg = dataclasses.replace(cfg, eval_every=30, checkpoint_every=30)
    base = small_base()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    result = train_metacontroller(cfg, data=data, base=base)
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "losses/total" in r]
    assert all(torch.isfinite(torch.tensor([r["losses/action_nll"], r["losses/kl"]])).all() for r in train)
    first = sum(r["losses/total"] for r in train[:2]) / 2
    last = sum(r["losses/total"] for r in train[-2:]) / 2
    assert last < first
    for k, v in result.model.base.state_dict().items():
        assert torch.equal(v, before[k]), f"frozen base parameter {k} changed"
    assert "eval/alignment_f1" in result.metrics


def test_discovery_resume_matches_uninterrupted(tmp_path):
    cfg, data = _tiny_run(tmp_path / "a", 20)
    full = train_metacontroller(cfg, data=data, base=small_base())
    half = train_metacontroller(
        dataclasses.replace(cfg, steps=10, run_root=tmp_path / "b"), data=data, base=small_base()
    )
    resumed = train_metacontroller(
        dataclasses.replace(cfg, resume=half.run_dir), data=data, base=small_base()
    )
    for (k, a), (_, b) in zip(
        full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k


def test_cotraining_updates_the_base_model(tmp_path):
    cfg, data = _tiny_run(tmp_path, 5, cotrain=True)
    base = small_base()
    before = base.obs_embed.weight.clone()
    result = train_metacontroller(cfg, data=data, base=base)
    assert not torch.equal(result.model.base.obs_embed.weight, before)


def test_code_decodability_reads_what_the_codes_carry():
    from internal_rl.discovery import code_decodability

    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (40, 12), generator=gen)
    labels[:, 10:] = -1  # padding is ignored
    carried = torch.nn.functional.one_hot(labels.clamp(min=0), 8).float() + 0.1 * torch.randn(
        40, 12, 8, generator=gen
    )
    accuracy, majority = code_decodability(carried, labels)
    assert accuracy == 1.0 and 0.15 < majority < 0.4
    noise = torch.randn(40, 12, 8, generator=gen)
    accuracy, majority = code_decodability(noise, labels)
    assert accuracy < majority + 0.15


def test_fixed_embedder_decays_stay_fixed_and_reload(tmp_path):
    from internal_rl.discovery import load_metacontroller
    from internal_rl.pretrain import pretrain
    from internal_rl.pretrain import tiny_config as pretrain_tiny

    meta_cfg = MetacontrollerConfig(embed_decay_logits=(1.0, 2.2), embed_decay_trainable=False)
    fixed = Metacontroller(16, meta_cfg).embedder.layers[0].decay_logit
    assert not fixed.requires_grad
    assert float(fixed.min()) == pytest.approx(1.0) and float(fixed.max()) == pytest.approx(2.2)
    assert Metacontroller(16, MetacontrollerConfig()).embedder.layers[0].decay_logit.requires_grad

    data = generate_trajectories(GRID, "pretrain", num_episodes=40, seed=5, num_envs=40)
    pcfg = dataclasses.replace(pretrain_tiny(), steps=2, batch_size=4, run_root=tmp_path, rollout_episodes=0)
    base_run = pretrain(pcfg, data=data).run_dir
    cfg, _ = _tiny_run(tmp_path, 10)
    cfg = dataclasses.replace(cfg, meta=meta_cfg, base_run=base_run)
    result = train_metacontroller(cfg, data=data)
    trained = result.model.meta.embedder.layers[0].decay_logit
    assert torch.equal(trained, torch.linspace(1.0, 2.2, trained.shape[1]).repeat(2, 1))
    loaded = load_metacontroller(result.run_dir)
    assert loaded.meta.config.embed_decay_logits == (1.0, 2.2)
    assert not loaded.meta.config.embed_decay_trainable
    batch = Batch.from_trajectories(data.observations[:4], data.actions[:4], data.lengths[:4], "cpu")
    with torch.no_grad():
        a = result.model.meta(
            result.model.base.lower(batch.obs, result.model.layer), data.lengths[:4], sample=False
        )
        b = loaded.meta(loaded.base.lower(batch.obs, loaded.layer), data.lengths[:4], sample=False)
    assert torch.equal(a.beta, b.beta) and torch.equal(a.z, b.z)
