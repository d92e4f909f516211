"""Internal RL on CompILE's codes: the adapter, the run folder and CompILE in ``reproduce``."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from gymnasium.utils.env_checker import check_env

from internal_rl import compile_rl, rl
from internal_rl.backbone import Backbone, BackboneConfig
from internal_rl.compile import CompileConfig, CompileModel
from internal_rl.data import generate_trajectories
from internal_rl.internal_env import BatchedInternalEnv, InternalGridEnv
from internal_rl.pretrain import Batch, DataConfig
from internal_rl.reproduce import ReproduceConfig, reproduce
from latentforge.checkpoint import save_checkpoint
from latentforge.configs import config_to_dict

GRID = "internal_rl/GridPinpad-v0"


def trained_like_compile(seed: int = 0, **kw) -> CompileModel:
    """A CompILE model on a random base whose decoder is randomised, so U(z) e is far from 0."""
    torch.manual_seed(seed)
    base = Backbone(BackboneConfig(n_layers=2, d_model=32, n_heads=4, mlp_hidden=64))
    with torch.no_grad():
        base.action_head.weight.mul_(10.0)  # actions react to the residual, so z changes them
    model = CompileModel(base, CompileConfig(**kw))
    with torch.no_grad():
        for p in model.decoder.decoder.parameters():
            p.normal_(0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A pretraining run folder as load_backbone reads it: a checkpoint with the backbone config."""
    root = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    base = Backbone(BackboneConfig(n_layers=2, d_model=32, n_heads=4, mlp_hidden=64))
    save_checkpoint(root / "checkpoints", model=base, step=1, extra={"backbone": config_to_dict(base.config)})
    return root


def test_adapter_drives_the_internal_env_and_passes_check_env():
    adapted = compile_rl.CompileControlledModel(trained_like_compile())
    assert adapted.layer == 1 and adapted.meta.config.n_z == 8 and adapted.meta.every == 10
    env = InternalGridEnv(adapted, tasks=((0, 1),), horizon=30)
    check_env(env, skip_render_check=True)
    e, _ = env.reset(seed=0)
    assert e.shape == (32,)
    total = 0
    while True:
        e, _, terminated, truncated, info = env.step(env.action_space.sample())
        total += info["primitive_steps"]
        if terminated or truncated:
            break
        assert info["primitive_steps"] == 10  # every abstract step but the last runs exactly k
    assert total == env.inner.t


def test_each_abstract_step_runs_exactly_k_primitive_steps_except_the_last():
    for k in (1, 7):
        model = compile_rl.CompileControlledModel(trained_like_compile(1), switch_every=k)
        env = BatchedInternalEnv(model, 12, tasks=((0, 1, 2),), horizon=40, seed=2)
        env.reset()
        per_env: list[list[int]] = [[] for _ in range(12)]
        gen = torch.Generator().manual_seed(0)
        while not env.done.all():
            _, _, _, info = env.step(torch.randn(12, 8, generator=gen))
            for i in info["decided"].nonzero()[:, 0].tolist():
                per_env[i].append(int(info["primitive_steps"][i]))
        lengths = (env.actions >= 0).sum(1).tolist()
        if k > 1:  # both kinds of episode end: mid-interval and after several full intervals
            assert any(n % k for n in lengths) and max(lengths) > 2 * k
        for i, steps in enumerate(per_env):
            assert sum(steps) == lengths[i]
            assert steps[:-1] == [k] * (len(steps) - 1) and 1 <= steps[-1] <= k
            assert len(steps) == math.ceil(lengths[i] / k)
            switches = env.switch_steps[i, : lengths[i]].nonzero()[:, 0].tolist()
            assert switches == list(range(0, lengths[i], k))
    # The default interval is the Poisson prior's mean segment length, rounded.
    assert compile_rl.PeriodicSwitch(trained_like_compile(prior_rate=3.4)).every == 3
    with pytest.raises(ValueError):
        compile_rl.PeriodicSwitch(trained_like_compile(), every=0)


def test_control_is_compiles_decoder_at_half_depth():
    model = trained_like_compile(2)
    adapted = compile_rl.CompileControlledModel(model)
    d, r = 32, model.config.rank
    z, e = torch.randn(5, 8), torch.randn(5, d)
    # Explicit hypernetwork: two-layer MLP -> low-rank factors A (d, r) / sqrt(r), B (r, d).
    lin1, lin2 = model.decoder.decoder[0], model.decoder.decoder[2]
    out = torch.relu(z @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    a = out[:, : d * r].reshape(5, d, r) / math.sqrt(r)
    b = out[:, d * r :].reshape(5, r, d)
    want = torch.einsum("bij,bjk,bk->bi", a, b, e)
    with torch.no_grad():
        assert torch.allclose(adapted.meta.control(z, e), want, atol=1e-5)
        assert float(want.abs().mean()) > 0.1
    # CompILE's own forward pass steers the base model with exactly this control at L/2.
    obs = (
        torch.rand(3, 14, model.base.config.obs_dim, generator=torch.Generator().manual_seed(0)) < 0.1
    ).float()
    with torch.no_grad():
        out = model(obs, torch.tensor([14, 9, 5]))
        h = model.base.lower(obs, model.base.n_layers // 2)
        again = model.base.upper(h + adapted.meta.control(out.z, h), adapted.layer)
    assert torch.allclose(again.action_logits, out.pred.action_logits, atol=1e-5)

    # The environment's greedy actions are the argmax of that controlled model over the episode.
    env = BatchedInternalEnv(adapted, 6, tasks=((0, 1),), greedy=True, horizon=25, seed=4)
    record: list[torch.Tensor] = []
    reset, step = env.grid.reset, env.grid.step

    def rec_reset(*args, **kw):
        obs = reset(*args, **kw)
        record.append(obs.clone())
        return obs

    def rec_step(action):
        out = step(action)
        record.append(out[0].clone())
        return out

    env.grid.reset, env.grid.step = rec_reset, rec_step
    env.reset()
    codes = torch.zeros(6, 25, 8)
    gen = torch.Generator().manual_seed(1)
    while not env.done.all():
        t0 = env.t
        env.step(torch.randn(6, 8, generator=gen))
        codes[:, t0 : env.t] = env.z[:, None]
    steps = env.t
    seq = torch.stack(record[: steps + 1], 1)[:, :steps]
    with torch.no_grad():
        h = model.base.lower(seq, adapted.layer)
        logits = model.base.upper(h + model.decoder.control(codes[:, :steps], h), adapted.layer).action_logits
    taken = env.actions[:, :steps]
    real = taken >= 0
    assert real.sum() > 20
    assert torch.equal(logits.argmax(-1)[real], taken[real])


def test_run_folder_checkpoint_reloads_to_identical_outputs(base_run, tmp_path):
    data = generate_trajectories(GRID, "pretrain", num_episodes=30, seed=5, num_envs=30)
    cfg = compile_rl.tiny_config()
    cfg = dataclasses.replace(
        cfg, compile=dataclasses.replace(cfg.compile, steps=3, batch_size=4, log_every=1, device="cpu"),
        eval_episodes=6, rl_switch_every=4, run_root=tmp_path,
    )  # fmt: skip
    out = compile_rl.train_compile_run(cfg, base_run, data)
    assert json.loads((out.run_dir / "config.json").read_text())["compile"]["steps"] == 3
    rows = [json.loads(line) for line in (out.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "losses/total" in r] == [1, 2, 3]
    assert any("eval/alignment_f1" in r for r in rows)
    results = json.loads((out.run_dir / "results.json").read_text())
    assert results["rl_switch_every"] == 4 and out.controlled.meta.every == 4
    assert results["eval/segments_per_episode"] == results["eval/switches_per_episode"] + 1
    assert 0.0 <= results["eval/alignment_f1"] <= 1.0
    assert (out.run_dir / "checkpoints" / "latest").is_file()

    loaded, extra = compile_rl.load_compile(out.run_dir)
    assert extra["base_run"] == str(base_run)
    trained = out.model.state_dict()
    assert set(loaded.state_dict()) == set(trained)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, trained[key]), key
    batch = Batch.from_trajectories(data.observations, data.actions, data.lengths, torch.device("cpu"))
    with torch.no_grad():
        a = out.model.eval()(batch.obs, data.lengths)
        b = loaded(batch.obs, data.lengths)
    assert torch.equal(a.pred.action_logits, b.pred.action_logits)
    assert torch.equal(a.z, b.z) and torch.equal(a.ends, b.ends)
    controlled = compile_rl.load_compile_controlled(out.run_dir)
    assert controlled.meta.every == 4
    assert compile_rl.load_compile_controlled(out.run_dir, switch_every=6).meta.every == 6
    z, e = torch.randn(3, 8), torch.randn(3, loaded.base.config.d_model)
    assert torch.equal(controlled.meta.control(z, e), out.controlled.meta.control(z, e))
    # The loaded model drives internal RL directly.
    rcfg = rl.RLConfig(tasks="0", steps=1, batch_size=4, policy_width=8, horizon=12, run_root=tmp_path)
    result = rl.train_internal_rl(rcfg, controlled)
    history = json.loads((result.run_dir / "results.json").read_text())["history"]
    # Every abstract step is 4 primitive steps except the episode's last.
    steps = history["primitive_steps"][0] / 4
    assert steps <= history["decisions"][0] <= steps + 1


def test_reproduce_with_compile_writes_its_curve_and_segmentation(base_run, tmp_path):
    cfg = ReproduceConfig(
        variant="paper",
        base_run=base_run,
        meta_seeds=1,
        probe=False,
        supervised=None,
        discovery=dataclasses.replace(
            ReproduceConfig().discovery, data=DataConfig(num_episodes=40, data_seed=2)
        ),
        compile=dataclasses.replace(
            compile_rl.tiny_config(),
            compile=dataclasses.replace(compile_rl.tiny_config().compile, steps=2, batch_size=4),
            eval_episodes=8,
        ),
        rl=dataclasses.replace(
            rl.tiny_config(), tasks="0-1", steps=2, batch_size=4, checkpoint_every=2, horizon=30
        ),
        rl_seeds=2,
        methods=("compile",),
        alpha_sweep=(),
        run_root=tmp_path,
    )
    run_dir = reproduce(cfg)
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["rl"]) == {"compile"} and set(results["discovery"]) == {"compile"}
    d = results["discovery"]["compile"]
    for key in ("eval/segments_per_episode", "eval/alignment_f1", "eval/random_alignment_f1"):
        assert math.isfinite(d[key])
    assert d["rl_switch_every"] == 10 and d["alpha_z"] == 0.1
    assert len(results["curves"]["compile"]) == 2 and all(len(c) == 2 for c in results["curves"]["compile"])
    assert results["rl"]["compile"]["episodes"] == [4, 8]
    # With a switch every 10 steps, a 30-step horizon allows at most 3 decisions per episode.
    assert all(1.0 <= x <= 3.0 for run in results["rl"]["compile"]["decisions"] for x in run)
    report = (run_dir / "report.md").read_text()
    assert "## CompILE" in report and "| compile | 2 | 8 |" in report
    assert any("CompILE:" in line for line in results["diagnosis"])


def test_cli_trains_compile_then_runs_internal_rl_on_its_codes(base_run, tmp_path, capsys):
    from internal_rl.cli import main

    main(["compile", "tiny", "--base-run", str(base_run), "--compile.steps", "2", "--compile.batch-size", "4",
          "--compile.device", "cpu", "--data.num-episodes", "30", "--eval-episodes", "6",
          "--run-root", str(tmp_path)])  # fmt: skip
    compile_run = capsys.readouterr().out.split("run: ")[1].split()[0]
    main(["rl", "tiny", "--compile-run", compile_run, "--steps", "1", "--batch-size", "4", "--tasks", "0-1", "--horizon", "20",
          "--device", "cpu", "--run-root", str(tmp_path)])  # fmt: skip
    rl_run = Path(capsys.readouterr().out.split("run: ")[1].split()[0])
    config = json.loads((rl_run / "config.json").read_text())
    assert config["compile_run"] == compile_run and config["metacontroller_run"] is None
    assert len(json.loads((rl_run / "results.json").read_text())["history"]["success"]) == 1
    with pytest.raises(ValueError, match="set one of metacontroller_run, compile_run or label_run"):
        rl.train_internal_rl(rl.RLConfig(run_root=tmp_path))
