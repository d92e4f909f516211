"""``internal-rl reproduce`` on ant-pinpad: the paper-ant preset, the ant report and a minimal end-to-end run."""

import dataclasses
import json

import pytest

from internal_rl import cli, compile_rl, discovery, pretrain, rl
from internal_rl.backbone import ant_backbone_config
from internal_rl.pretrain import ANT_ENV, DataConfig
from internal_rl.report import write_report
from internal_rl.reproduce import PAPER_METHODS, PRESETS, ReproduceConfig, diagnose, load_env_data, reproduce


def test_paper_ant_preset_holds_the_papers_ant_settings():
    cfg = PRESETS["paper-ant"]()
    assert cfg.env == "ant"
    assert cfg.base_models * cfg.meta_seeds == 30  # Fig. 8: 10 base models x 3 metacontrollers
    # all five methods, raw-action RL (C.4.1) on the base model's Gaussian torques included
    assert set(cfg.methods) == {"internal-rl", "forced-switch", "cotrained", "compile", "raw-action"}
    # Table A5: Hawk 8 x 256, MLP 512, lambda 10, 204,800 steps x batch 512, AdamW 3e-4, wd 0.03
    p = pretrain.PRESETS[cfg.pretrain_preset]()
    assert p.data.env_id == "internal_rl/AntPinpad-v0"
    assert (p.model.arch, p.model.n_layers, p.model.d_model, p.model.mlp_hidden) == ("hawk", 8, 256, 512)
    assert not p.model.discrete_actions and p.model.action_dim == 8
    assert (p.obs_loss_coef, p.steps, p.batch_size, p.lr, p.weight_decay) == (10.0, 204_800, 512, 3e-4, 0.03)
    # Table A10: full linear controller, 32,000 steps x batch 128, AdamW 3e-4, wd 0.03, n_z 8, alpha grid
    d = cfg.discovery
    assert d.meta.rank == 0 and d.meta.n_z == 8
    assert (d.steps, d.batch_size, d.lr, d.weight_decay) == (32_000, 128, 3e-4, 0.03)
    assert d.data.env_id == "internal_rl/AntPinpad-v0" and d.data.epsilon == 0.0
    assert tuple(cfg.alpha_sweep) == (0.0, 0.05, 0.1, 0.17, 0.3, 0.5, 1.0)
    # Table A12: CompILE as the grid's (M 4, prior rate 10, 32K steps) with a full U, batch 128, lr 3e-4
    c = cfg.compile.compile
    assert (c.rank, c.max_segments, c.prior_rate, c.steps, c.batch_size, c.lr) == (
        0,
        4,
        10.0,
        32_000,
        128,
        3e-4,
    )
    assert cfg.compile.data.env_id == "internal_rl/AntPinpad-v0"
    # Table A14: 51,200 steps x batch 256, AdamW 3e-5, wd 0, 1-layer SSM policy 256; ant horizon T = 500
    r = cfg.rl
    assert (r.steps, r.batch_size, r.ppo.lr, r.ppo.weight_decay, r.policy_width) == (
        51_200,
        256,
        3e-5,
        0.0,
        256,
    )
    assert r.horizon == 500 and cfg.ant_horizon == 500 and r.task_set == "posttrain"


def test_grid_presets_stay_grid_and_the_cli_lists_the_ant_presets():
    for name in ("tiny", "paper"):
        cfg = PRESETS[name]()
        assert cfg.env == "grid" and "raw-action" in cfg.methods
    tiny_ant = PRESETS["tiny-ant"]()
    assert tiny_ant.env == "ant" and tiny_ant.rl.horizon == tiny_ant.ant_horizon
    # the ant runs the grid's five methods; the grid adds the label-driven control
    assert tiny_ant.methods == PAPER_METHODS and PRESETS["tiny"]().methods == (
        *PAPER_METHODS,
        "subgoal-codes",
    )
    assert pretrain.PRESETS[tiny_ant.pretrain_preset]().data.env_id == ANT_ENV
    # small6: the small preset on six fixed colours, with the first policy and batch of the sixth search
    small, six = PRESETS["small"](), PRESETS["small6"]()
    assert six.variant == "small6-fixed" and six.discovery == small.discovery and six.discovery.alpha == 0.1
    assert (six.rl.init_std, six.rl.batch_size, small.rl.init_std, small.rl.batch_size) == (
        4.0,
        1024,
        1.0,
        128,
    )
    assert six.methods == small.methods and six.pretrain_preset == small.pretrain_preset == "small"
    assert tiny_ant.discovery.meta.rank == 0 and tiny_ant.compile.compile.rank == 0
    with pytest.raises(SystemExit, match="paper-ant"):
        cli.reproduce("paper-and")


def test_ant_data_is_generated_with_the_requested_horizon():
    cfg = ReproduceConfig(env="ant", ant_horizon=6)
    data = load_env_data(cfg, DataConfig(env_id=ANT_ENV, num_episodes=2, data_seed=3))
    assert data.env_id == ANT_ENV and not data.is_discrete and len(data) == 2
    assert int(data.lengths.max()) <= 6 and data.actions.shape[-1] == 8


def test_ant_env_with_grid_data_is_refused_before_any_stage_runs(tmp_path):
    with pytest.raises(ValueError, match="the discovery data is internal_rl/GridPinpad-v0"):
        reproduce(ReproduceConfig(env="ant", run_root=tmp_path))  # default discovery data: the grid's
    with pytest.raises(ValueError, match="env must be"):
        reproduce(ReproduceConfig(env="mujoco", run_root=tmp_path))
    assert not (tmp_path / "internal-rl").exists()


def test_ant_report_normalises_by_the_expert(tmp_path):
    meta = {"eval/action_nll": 5.1, "eval/kl": 0.4, "eval/switches_per_episode": 2.0,
            "eval/true_boundaries_per_episode": 2.0, "eval/alignment_f1": 0.9, "eval/random_alignment_f1": 0.2,
            "eval/beta_quasi_binary": 0.95, "alpha": 0.1}  # fmt: skip
    rl_entry = {"metrics": [{"initial_success": 0.07, "final_success": 0.35}, {"initial_success": 0.07,
                "final_success": 0.49}], "decisions": [[3.0], [5.0]], "episodes": [256, 512]}  # fmt: skip
    results = {
        "command": "internal-rl reproduce --config tiny-ant", "seconds": 1.0, "load_start": "1", "load_end": "1",
        "env": "ant", "success_normaliser": 0.7,
        "base_run": "x", "base": {"eval/action_nll": 3.25}, "discovery": {"internal-rl": meta},
        "rl_task": "posttrain", "rl": {"internal-rl": rl_entry},
    }  # fmt: skip
    results["diagnosis"] = diagnose(results)
    text = "\n".join(results["diagnosis"])
    assert "action NLL 3.250" in text and "not run" not in text
    assert "final success median 0.490 (0.700 of the expert's 0.7)" in text
    write_report(tmp_path / "report.md", results)
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# internal-rl reproduce (ant-pinpad)")
    assert "held-out action NLL 3.250 nats per step" in report and "nan" not in report
    assert "## Not run" not in report
    # median 0.07 / 0.42 raw; divided by 0.7: 0.1 / 0.6
    assert (
        "| internal-rl | 2 | 512 | 0.070 [0.070, 0.070] | 0.420 [0.350, 0.490] | 0.100 | 0.600 | 4.0 |"
        in report
    )


@pytest.mark.slow
def test_ant_reproduce_end_to_end_on_short_episodes(tmp_path):
    horizon = 16
    tiny_hawk = ant_backbone_config(n_layers=2, d_model=16, n_heads=2, mlp_hidden=32, lru_width=16)
    data = DataConfig(env_id=ANT_ENV, num_episodes=10, data_seed=2)
    cfg = ReproduceConfig(
        env="ant",
        ant_horizon=horizon,
        pretrain_config=dataclasses.replace(
            pretrain.tiny_ant_config(), model=tiny_hawk, steps=3, batch_size=4, eval_every=3, checkpoint_every=3,
            data=DataConfig(env_id=ANT_ENV, num_episodes=5, eval_fraction=0.2),
        ),
        probe_steps=5,
        discovery=dataclasses.replace(
            discovery.paper_ant_config(), data=data, steps=2, batch_size=4, eval_every=2, checkpoint_every=2,
            eval_episodes=2,
        ),
        compile=dataclasses.replace(
            compile_rl.paper_ant_config(), data=data, eval_episodes=2,
            compile=dataclasses.replace(compile_rl.paper_ant_config().compile, steps=2, batch_size=4),
        ),
        rl=dataclasses.replace(rl.paper_ant_config(), steps=1, batch_size=2, horizon=horizon, policy_width=16,
                               checkpoint_every=1),
        meta_seeds=1,
        rl_seeds=1,
        raw_action_runs=1,
        probe_mlp_hidden=0,
        alpha_sweep=(0.0, 1.0),
        sweep_steps=1,
        run_root=tmp_path,
    )  # fmt: skip
    run_dir = reproduce(cfg)
    results = json.loads((run_dir / "results.json").read_text())
    ant_methods = {"internal-rl", "forced-switch", "cotrained", "compile", "raw-action"}
    assert results["env"] == "ant" and set(results["rl"]) == ant_methods == set(results["curves"])
    assert "skipped" not in results
    for name in ant_methods:
        assert len(results["curves"][name]) == 1 and len(results["curves"][name][0]) == 1
        raw, norm = results["curves"][name][0][0], results["curves_normalised"][name][0][0]
        assert norm == pytest.approx(raw / 0.7)
        assert results["rl"][name]["episodes"] == [2]
    assert results["base"]["train_episodes"] == 4 and "eval/action_nll" in results["base"]
    assert len(results["probe"]["accuracy"]) == 3  # embeddings + 2 Hawk layers, on the ant's D*
    assert results["discovery"]["forced-switch"]["eval/beta_quasi_binary"] == 1.0
    assert results["discovery"]["compile"]["eval/segments_per_episode"] >= 1.0
    assert [p["alpha"] for p in results["rate_distortion"]] == [0.0, 0.1, 1.0]  # 0.1: the main run
    probe_cfg = json.loads(next((run_dir / "stages" / "internal-rl").glob("*probe*/config.json")).read_text())
    assert probe_cfg["data"]["env_id"] == ANT_ENV  # the ant probes read the ant's D*
    report = (run_dir / "report.md").read_text()
    assert "(ant-pinpad)" in report and "## Not run" not in report
    assert "| internal-rl | 1 | 2 |" in report and "| raw-action | 1 | 2 |" in report
    assert "- raw-action: final success median" in report
    for name in results["figures"]:
        assert (run_dir / name).stat().st_size > 1000
