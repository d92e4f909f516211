"""``internal-rl reproduce`` end to end on a minute-sized configuration."""

import dataclasses
import json

import pytest
import torch

from internal_rl import compile_rl, discovery, pretrain, rl, supervised
from internal_rl.pretrain import DataConfig
from internal_rl.report import plot_beta, plot_rate_distortion, plot_success_curves, write_report
from internal_rl.reproduce import (
    ReproduceConfig,
    diagnose,
    figures_reproduced,
    positive_control_verdict,
    reproduce,
)


def test_report_and_diagnosis_from_measured_numbers(tmp_path):
    meta = {"eval/action_nll": 0.95, "eval/kl": 0.001, "eval/switches_per_episode": 0.01,
            "eval/true_boundaries_per_episode": 2.0, "eval/alignment_f1": 0.0, "eval/random_alignment_f1": 0.0,
            "eval/beta_quasi_binary": 0.6, "alpha": 0.1, "eval/code_subgoal_accuracy": 0.26,
            "eval/code_subgoal_majority": 0.25, "eval/code_action_accuracy": 0.45, "eval/code_action_majority": 0.25,
            "eval/code_cosine_same_subgoal": 0.34, "eval/code_cosine_same_context": -0.54}  # fmt: skip
    compile_entry = {"eval/action_nll": 1.1, "eval/kl_z": 0.02, "eval/segments_per_episode": 3.5,
                     "eval/true_boundaries_per_episode": 2.0, "eval/alignment_f1": 0.25,
                     "eval/random_alignment_f1": 0.2, "alpha_z": 0.1, "alpha_b": 0.3, "rl_switch_every": 10}  # fmt: skip
    rl_entry = {"metrics": [{"initial_success": 0.0, "final_success": 0.1}, {"initial_success": 0.0,
                "final_success": 0.3}], "decisions": [[1.0, 2.0], [1.0, 1.0]], "episodes": [4, 8]}  # fmt: skip
    results = {
        "command": "internal-rl reproduce", "seconds": 10.0, "load_start": "1", "load_end": "2",
        "base_run": "x", "base": {"eval/action_accuracy": 0.55},
        "probe": {"accuracy": [0.25, 0.26], "chance": 0.27, "history_baseline": 0.7, "mlp_accuracy": [0.3, 0.5]},
        "discovery": {"internal-rl": meta, "compile": compile_entry}, "rl_task": "posttrain", "rl": {"internal-rl": rl_entry},
        "supervised": {"held_out_nll_controlled": 0.3, "held_out_nll_base": 0.4,
                       **{f"{t}/{lab}_{k}": v for t in ("pretrain", "posttrain") for lab, v in
                          (("true", 0.5), ("wrong", 0.1), ("none", 0.2)) for k in ("success", "colours")}},
    }  # fmt: skip
    # codes held through an episode pick the first colour no better than the base model alone
    gains = lambda rates, success: [{"gain": g, "success": success * g, "reached": [], "rates": [r * g for r in rates]}  # noqa: E731
                                    for g in (0.0, 1.0, 4.0)]  # fmt: skip
    results["steering"] = {
        "candidates": 64,
        "first_colour": [{"colour": c, "uncontrolled": 0.25, "prior": 0.24, "best_screened": 0.4, "best": 0.27,
                          "subgoal_code": 0.26} for c in range(4)],
        "transitions": {"rl": {"task": [0, 1, 2, 3], "gains": gains([0.2, 0.05, 0.1, 0.0], 0.0)},
                        "seen": {"task": [0, 2, 1, 3], "gains": gains([0.2, 0.25, 0.2, 0.15], 0.1)},
                        "label-driven": {"task": [0, 1, 2, 3], "gains": gains([0.25, 0.2, 0.2, 0.2], 0.2)}},
    }  # fmt: skip
    control = {"metrics": [{"initial_success": 0.0, "final_success": 0.5}, {"initial_success": 0.01,
               "final_success": 0.7}], "decisions": [[2.0, 3.0], [2.0, 4.0]], "episodes": [4, 8]}  # fmt: skip
    results["rl"]["subgoal-codes"] = control
    results["exploration"] = {"episodes": 2048, "success": 0.001, "reached": [2048, 300, 20, 2, 1], "scale": 4.0,
                              "rl_batch_size": 1024}  # fmt: skip
    results["diagnosis"] = diagnose(results)
    results["rate_distortion"] = [{"alpha": a, "switches_per_episode": sw, "action_nll": 0.2, "alignment_f1": 0.5,
                                   "random_alignment_f1": 0.3, "kl": 0.1} for a, sw in ((0.03, 5.0), (0.1, 1.0), (0.3, 0.1))]  # fmt: skip
    results["rl"]["raw-action"] = rl_entry
    results["rl"]["forced-switch"] = {
        **rl_entry,
        "metrics": [{"initial_success": 0.0, "final_success": 0.0}] * 2,
    }
    results["figures_reproduced"] = figures_reproduced(results)
    verdicts = {r["figure"]: r["reproduced"] for r in results["figures_reproduced"]}
    # probes at chance, label-driven controllers steer, switches miss the changes, switching falls with
    # alpha through the 2 true changes, internal RL no better than raw-action RL but above forced switching
    # (0.2 vs 0.0); the control over label-driven codes (median 0.6) far above raw-action RL (0.2)
    assert verdicts == {"Fig. 3": "no", "Fig. 4": "yes", "Figs. 6, A3": "no", "Fig. 7": "yes", "Fig. 8": "no",
                        "Fig. 8, beta = 1 ablation": "yes", "Fig. 8, RL half (control)": "yes"}  # fmt: skip
    text = " ".join(results["diagnosis"])
    assert "Codes drawn from N(0, 4^2 I) (internal RL's first policy)" in text
    assert "about 1.0 successes per RL batch of 1024" in text
    assert "almost never switches" in text and "KL collapse" in text and "no linearly decodable" in text
    write_report(tmp_path / "report.md", results)
    report = (tmp_path / "report.md").read_text()
    assert "| internal-rl | 2 | 8 | 0.000 [0.000, 0.000] | 0.200 [0.100, 0.300] | 1.2 |" in report
    assert "| subgoal-codes | 2 | 8 |" in report and "positive control, not a method of the paper" in report
    assert (
        "## Exploration from the first policy (posttrain)" in report
        and "Codes z ~ N(0, 4^2 I) at every" in report
    )
    assert "ends at 0.600 success against 0.200 over the discovered codes" in text and "is discovery" in text
    assert "| 0.1 | 0.3 | 1.100 | 0.020 | 3.50 | 2.00 | 0.250 | 0.200 | 10 |" in report
    assert "| compile | 0.1 |" not in report  # CompILE has no gate: not a row of the metacontroller table
    assert "switches every 10 primitive steps" in text
    assert "do not name the colour an episode heads for" in text
    assert "reach 0.500 success and 0.500 colours on the post-training task" in text
    assert "| posttrain | 0.500 | 0.500 | 0.100 | 0.100 | 0.200 | 0.200 |" in report
    assert "| internal-rl | 0.260 | 0.250 | 0.450 | 0.250 | 0.340 | -0.540 |" in report
    assert (
        "| Fig. 4 | label-driven controllers steer" in report
        and "| 0.500 with the true subgoal" not in report
    )
    assert "last colour entered decodes the subgoal at 0.700" in text
    assert "0.25 of episodes for the base model alone, 0.27 for the best of 64 prior codes" in text
    assert "no code held throughout picks the first colour" in text
    assert (
        "cosine 0.34; codes of different subgoals after the same previous one, -0.54: the codes are relative"
        in text
    )
    assert (
        "(0-2-1-3) it gets through colour 1, 2, ... at rates 0.20, 0.25, 0.20, 0.15 (success 0.100)" in text
    )
    assert "scaled 4x at 0.80, 0.20, 0.40, 0.00 (success 0.000)" in text
    assert "| 2 | 0.250 | 0.240 | 0.400 | 0.270 | 0.260 |" in report
    assert "| 0-1-2-3 (RL task) | 4 | 0.000 | 0.800 | 0.200 | 0.400 | 0.000 |" in report
    assert "| 0-1-2-3 (RL task, label-driven controllers) | 1 | 0.200 | 0.250 |" in report
    assert "gain 4: rates 1.00, 0.80, 0.80, 0.80, success 0.800. Where they get through" in text
    assert "probe reads the subgoal at 0.500 (layer 1)" in text and "not linearly" in text
    assert "| one-hidden-layer probe (diagnostic) | 0.300 | 0.500 | | |" in report
    plot_success_curves({"a": [[0.0, 0.5], [0.1, 0.3]]}, [4, 8], tmp_path / "s.png", "t")
    plot_beta(torch.rand(10), torch.zeros(10, dtype=torch.bool), 10, tmp_path / "b.png", "t")
    assert (tmp_path / "s.png").stat().st_size > 1000 and (tmp_path / "b.png").stat().st_size > 1000
    # seeds sharing an alpha are points around that alpha's median
    rd = [
        {"alpha": a, "switches_per_episode": sw, "action_nll": 0.2}
        for a, sw in ((0.03, 5.0), (0.1, 1.0), (0.1, 3.0))
    ]
    plot_rate_distortion(rd, 2.0, tmp_path / "rd.png")
    assert (tmp_path / "rd.png").stat().st_size > 1000


def test_positive_control_verdict_tells_missing_discovery_from_a_match_and_a_failure():
    # measured on small6 (session 10 / session 12): control 0.658 vs internal RL 0.129, then 0.659 vs 0.653
    assert "what is missing here is discovery" in positive_control_verdict(0.658, 0.129)
    assert "as well as the true subgoal labels" in positive_control_verdict(0.659, 0.653)
    assert "as well as the true subgoal labels" in positive_control_verdict(0.5, 0.7)
    assert "does not solve the task" in positive_control_verdict(0.05, 0.0)


def _tiny_reproduce_config(tmp_path, **overrides) -> ReproduceConfig:
    """Every stage at a few steps on a 3-step base model of the paper grid."""
    pcfg = dataclasses.replace(
        pretrain.tiny_config(), data=DataConfig(num_episodes=64, eval_fraction=0.1), steps=3, batch_size=8,
        run_root=tmp_path, rollout_episodes=0,
    )  # fmt: skip
    base_run = pretrain.pretrain(pcfg).run_dir
    cfg = ReproduceConfig(
        variant="paper",
        base_run=base_run,
        meta_seeds=1,
        probe_steps=5,
        probe_episodes=30,
        supervised=dataclasses.replace(supervised.small_config(), steps=2, batch_size=4, rollout_episodes=8),
        discovery=dataclasses.replace(
            discovery.tiny_config(), data=DataConfig(num_episodes=60, data_seed=2), steps=3, batch_size=4,
            eval_every=3, checkpoint_every=3, eval_episodes=10,
        ),
        compile=dataclasses.replace(
            compile_rl.tiny_config(),
            compile=dataclasses.replace(compile_rl.tiny_config().compile, steps=3, batch_size=4),
            eval_episodes=10,
        ),
        rl=dataclasses.replace(rl.tiny_config(), steps=2, batch_size=4, checkpoint_every=2),
        rl_seeds=2,
        alpha_sweep=(0.0, 1.0),
        sweep_steps=2,
        exploration_episodes=16,
        steering_episodes=16,
        run_root=tmp_path,
    )  # fmt: skip
    return dataclasses.replace(cfg, **overrides)


def _numbers(results: dict) -> dict:
    """results.json without what differs between two runs of the same config: times, loads, run folders."""

    def keep(x):
        if isinstance(x, dict):
            return {
                k: keep(v) for k, v in x.items() if not k.startswith(("seconds", "load_", "timings", "run"))
            }
        if isinstance(x, list):
            return [keep(v) for v in x]
        return x

    return keep(results)


def test_workers_change_the_wall_time_not_the_numbers(tmp_path):
    cfg = _tiny_reproduce_config(
        tmp_path, rl_seeds=1, exploration_episodes=0, steering_episodes=0, probe=False
    )
    one = json.loads((reproduce(cfg) / "results.json").read_text())
    two = json.loads((reproduce(dataclasses.replace(cfg, workers=2)) / "results.json").read_text())
    assert _numbers(one) == _numbers(two)
    assert len(one["rl"]) == 6 and len(one["rate_distortion"]) == 3  # every pooled stage took part


@pytest.mark.slow
def test_reproduce_writes_results_report_and_figures(tmp_path):
    cfg = _tiny_reproduce_config(tmp_path)
    run_dir = reproduce(cfg)
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["rl"]) == {
        "internal-rl",
        "forced-switch",
        "cotrained",
        "compile",
        "raw-action",
        "subgoal-codes",
    }
    control_runs = sorted((run_dir / "stages" / "internal-rl").glob("*rl-subgoal-codes*"))
    assert len(control_runs) == 2  # and only the control switches at the true subgoal changes
    assert all(json.loads((r / "config.json").read_text())["switch_on_subgoal"] for r in control_runs)
    assert not json.loads(
        next((run_dir / "stages" / "internal-rl").glob("*rl-internal-rl*"))
        .joinpath("config.json")
        .read_text()
    )["switch_on_subgoal"]
    assert results["discovery"]["compile"]["eval/segments_per_episode"] >= 1.0
    for entry in results["rl"].values():
        assert len(entry["metrics"]) == 2 and entry["episodes"][-1] == 8
    assert len(results["probe"]["accuracy"]) == 5  # embeddings + 4 layers of the tiny model
    assert (
        results["supervised"]["held_out_nll_base"] > 0 and "posttrain/true_colours" in results["supervised"]
    )
    assert results["probe"]["history_baseline"] > results["probe"]["chance"]
    assert [p["alpha"] for p in results["rate_distortion"]] == [0.0, 0.1, 1.0]  # 0.1: the main run
    assert results["discovery"]["forced-switch"]["eval/beta_quasi_binary"] == 1.0
    report = (run_dir / "report.md").read_text()
    assert "| raw-action | 2 | 8 |" in report and "## Diagnosis" in report
    x = results["exploration"]
    assert (
        x["reached"][0] == 16 and len(x["reached"]) == 13
    )  # the paper grid's post-training task: 12 colours
    assert "## Exploration from the first policy" in report and "successes per RL batch of 4" in report
    st = results["steering"]
    assert [r["colour"] for r in st["first_colour"]] == list(range(8)) and st["candidates"] == 16
    assert st["transitions"]["rl"]["task"] == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3]
    assert [g["gain"] for g in st["transitions"]["seen"]["gains"]] == [0.0, 1.0, 2.0, 4.0]
    assert "## Do the codes steer?" in report and "- Do the codes steer?" in report
    for name in results["figures"]:
        assert (run_dir / name).stat().st_size > 1000
    assert "success_vs_episodes.png" in results["figures"] and "rate_distortion.png" in results["figures"]


def test_cli_variant_reaches_every_stage_and_bad_values_stop_before_work(tmp_path, monkeypatch):
    from internal_rl import cli
    from internal_rl import reproduce as reproduce_module

    seen = []

    def fake(cfg):
        seen.append(cfg)
        (tmp_path / "report.md").write_text("report")
        return tmp_path

    monkeypatch.setattr(reproduce_module, "reproduce", fake)
    cli.reproduce(run_root=tmp_path)  # make train-internal-rl
    default = seen.pop()
    assert default.variant == "small6-fixed" and default.workers == 2
    assert (default.rl.init_std, default.rl.batch_size, default.rl.steps) == (4.0, 1024, 150)
    assert (
        default.alpha_sweep[-1] == 1.0 == max(discovery.ALPHA_GRID)
    )  # Fig. 7 up to the paper's largest alpha
    cli.reproduce("small", run_root=tmp_path, variant="small-fixed")
    assert seen[-1].variant == "small-fixed" and seen[-1].run_root == tmp_path
    cli.reproduce("small", run_root=tmp_path)
    assert seen[-1].variant == "small" and seen[-1].rl.steps == 150
    cli.reproduce("small", run_root=tmp_path, rl_steps=300)
    assert seen[-1].rl.steps == 300 and seen[-1].rl.batch_size == 128
    assert seen[-1].workers == 2  # the CPU presets use both cores of the machine they were sized on
    cli.reproduce("small", run_root=tmp_path, workers=1)
    assert seen[-1].workers == 1
    with pytest.raises(SystemExit, match="unknown --variant"):
        cli.reproduce("small", run_root=tmp_path, variant="smal")
    with pytest.raises(SystemExit, match="grid option"):
        cli.reproduce("tiny-ant", run_root=tmp_path, variant="small")
    with pytest.raises(SystemExit, match="rl-steps"):
        cli.reproduce("small", run_root=tmp_path, rl_steps=0)
    with pytest.raises(SystemExit, match="workers"):
        cli.reproduce("small", run_root=tmp_path, workers=0)
    assert len(seen) == 4
