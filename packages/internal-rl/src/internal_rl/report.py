"""Figures and the markdown report of ``internal-rl reproduce`` (paper Figs. 3, 6, 7, 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_success_curves(
    curves: dict[str, list[list[float]]],
    episodes: list[int],
    path: Path,
    title: str,
    *,
    ylabel: str = "success rate (on-policy batch)",
    ymax: float = 1.02,
) -> None:
    """Fig. 8: success vs episodes, median and 25-75% band over runs, one colour per method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.asarray(episodes)
    for name, runs in curves.items():
        y = np.asarray(runs, dtype=float)
        if y.size == 0:
            continue
        med = np.median(y, 0)
        lo, hi = np.percentile(y, 25, 0), np.percentile(y, 75, 0)
        control = name == "subgoal-codes"  # the positive control, dashed: not a method of the paper
        (line,) = ax.plot(x[: len(med)], med, ls="--" if control else "-",
                          label=f"{name} (control)" if control else name)  # fmt: skip
        ax.fill_between(x[: len(med)], lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("episodes")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(-0.02, ymax)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_beta(beta: torch.Tensor, truth: torch.Tensor, length: int, path: Path, title: str) -> None:
    """Fig. 6: beta_t of one episode with the true subgoal boundaries as vertical lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 2.6))
    t = np.arange(length)
    ax.plot(t, beta[:length].numpy(), drawstyle="steps-mid", label="beta_t")
    for i, b in enumerate(truth[:length].nonzero().flatten().tolist()):
        ax.axvline(b, color="red", ls="--", lw=1, label="true subgoal change" if i == 0 else None)
    ax.set_xlabel("t")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_probe(accuracy: list[float], chance: float, path: Path, history: float | None = None) -> None:
    """Fig. 3b: held-out subgoal-probe accuracy by layer (``history``: the last-visited-colour lookup)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(range(len(accuracy)), accuracy, marker="o", label="linear probe")
    ax.axhline(chance, color="grey", ls="--", label="majority class")
    if history is not None:
        ax.axhline(history, color="black", ls=":", label="last visited colour (lookup)")
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("held-out accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def medians_by_alpha(points: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    """(the distinct alphas in increasing order, the median of ``key`` over each alpha's runs)."""
    alphas = sorted({p["alpha"] for p in points})
    return alphas, [float(np.median([p[key] for p in points if p["alpha"] == a])) for a in alphas]


def plot_rate_distortion(points: list[dict[str, float]], true_switches: float, path: Path) -> None:
    """Fig. 7: switches per episode and action NLL against alpha; every run a point, the line through
    each alpha's median (several seeds may share an alpha)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    alphas, switches = medians_by_alpha(points, "switches_per_episode")
    _, nll = medians_by_alpha(points, "action_nll")
    ax.scatter([p["alpha"] for p in points], [p["switches_per_episode"] for p in points], s=14, alpha=0.6)
    ax.plot(alphas, switches, marker="o", label="switches / episode (median)")
    ax.axhline(true_switches, color="red", ls="--", label="true subgoal changes / episode")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("alpha (KL weight)")
    ax.set_ylabel("switches per episode")
    ax2 = ax.twinx()
    ax2.scatter(
        [p["alpha"] for p in points], [p["action_nll"] for p in points], s=14, color="green", alpha=0.6
    )
    ax2.plot(alphas, nll, marker="s", color="green", label="action NLL (median)")
    ax2.set_ylabel("action NLL", color="green")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def band(values: list[float]) -> str:
    """``median [25%, 75%]`` of ``values`` (the paper's Fig. 8 statistics)."""
    q = np.percentile(np.asarray(values, dtype=float), [50, 25, 75])
    return f"{q[0]:.3f} [{q[1]:.3f}, {q[2]:.3f}]"


def seed_values(entry: dict[str, Any], key: str) -> list[float]:
    """``key`` of every seed of a discovery entry (the entry itself when it has no seed list)."""
    return [m[key] for m in entry.get("seeds", [entry]) if key in m]


def _figures_table(rows: list[dict[str, str]]) -> list[str]:
    if not rows:
        return []
    lines = ["## Which of the paper's figures this run reproduces (in shape)", "",
             "| figure | claim | reproduced | measured |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['figure']} | {r['claim']} | {r['reproduced']} | {r['evidence']} |" for r in rows]
    return [*lines, ""]


def first_policy_name(exploration: dict[str, Any]) -> str:
    """The distribution internal RL's first policy draws codes from, as the report writes it."""
    scale = exploration.get("scale", 1.0)
    return "the prior N(0, I)" if scale == 1.0 else f"N(0, {scale:g}^2 I)"


def _exploration_table(results: dict[str, Any]) -> list[str]:
    """How far codes from internal RL's first policy (the prior N(0, I) by default) carry episodes of the RL task."""
    x = results.get("exploration")
    if not x:
        return []
    reached = x["reached"]
    lines = [
        "",
        f"## Exploration from the first policy ({results['rl_task']})",
        "",
        f"Codes z ~ {first_policy_name(x)} at every switch of the first internal-RL metacontroller, {x['episodes']} fresh "
        f"layouts (what internal RL starts from); success {x['success']:.4f}.",
        "",
        "| colours entered in order | episodes | of those that entered the previous one |",
        "|---:|---:|---:|",
    ]
    for k in range(1, len(reached)):
        share = reached[k] / reached[k - 1] if reached[k - 1] else float("nan")
        lines.append(f"| {k} | {reached[k]} | {share:.3f} |")
    return lines


def _steering_tables(results: dict[str, Any]) -> list[str]:
    """Do the codes steer? One code held for a whole episode; the mean code of the true next subgoal."""
    st = results.get("steering")
    if not st:
        return []
    lines = [
        "",
        "## Do the codes steer? (closed loop, fresh layouts)",
        "",
        "One code held for the whole episode: share of episodes whose first colour is c. The best of "
        f"{st['candidates']} prior codes is re-measured on fresh layouts (the screened value is biased upwards by the choice).",
        "",
        "| colour | base alone | prior codes | best code (screened) | best code (re-measured) | mean code of its subgoal |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in st["first_colour"]:
        lines.append(
            f"| {r['colour']} | {r['uncontrolled']:.3f} | {r['prior']:.3f} | {r['best_screened']:.3f} | "
            f"{r['best']:.3f} | {r.get('subgoal_code', float('nan')):.3f} |"
        )
    lines += [
        "",
        "The mean posterior code of the true next subgoal at every switch, the controller scaled by a gain "
        "(gain 0: the base model alone; the paper's environment is gain 1; other gains are a diagnostic): "
        "share of the episodes at colour k that go on to colour k + 1. The label-driven rows play the one-hot "
        "code of the true subgoal at every step through the label-driven controllers.",
        "",
    ]
    longest = max(len(e["task"]) for e in st["transitions"].values())
    heads = ["colour 1", *(f"then {k}" for k in range(2, longest + 1))]
    lines += [f"| task | gain | success | {' | '.join(heads)} |", "|---|---:|---:|" + "---:|" * longest]
    for name, entry in st["transitions"].items():
        task = "-".join(str(c) for c in entry["task"])
        what = {
            "rl": "RL task",
            "seen": "seen transitions only",
            "label-driven": "RL task, label-driven controllers",
        }
        label = f"{task} ({what.get(name, name)})"
        for g in entry["gains"]:
            rates = " | ".join(f"{r:.3f}" for r in g["rates"])
            lines.append(f"| {label} | {g['gain']:g} | {g['success']:.3f} | {rates} |")
    return lines


def write_report(path: Path, results: dict[str, Any]) -> None:
    """``report.md``: the measured numbers of a reproduce run, with its command and timings."""
    ant = results.get("env") == "ant"
    base = results["base"]
    if ant and "eval/action_accuracy" not in base:  # a Gaussian action head has no accuracy
        base_line = f"held-out action NLL {base.get('eval/action_nll', float('nan')):.3f} nats per step"
    else:
        base_line = f"held-out action accuracy {base.get('eval/action_accuracy', float('nan')):.3f}"
    lines = [
        "# internal-rl reproduce" + (" (ant-pinpad)" if ant else ""),
        "",
        f"Command: `{results['command']}`  ",
        f"Wall time: {results['seconds']:.0f} s; load average at start / end: {results['load_start']} / "
        f"{results['load_end']}",
        "",
        *_figures_table(results.get("figures_reproduced", [])),
        "## Base model",
        "",
        f"Pretraining run: `{results['base_run']}`; {base_line}.",
        "",
    ]
    if "eval/rollout_success_sampled" in base:
        lines += [
            "Acting itself on fresh layouts of its pretraining tasks (the task is not in the observation, so a "
            "perfect imitator of the data succeeds only when its guess agrees with the episode's task; the "
            "expert, which knows the task, succeeds always):",
            "",
            "| policy | success | colours entered in order |",
            "|---|---:|---:|",
            f"| base model, sampled | {base['eval/rollout_success_sampled']:.3f} | {base['eval/rollout_colours_sampled']:.3f} |",
            f"| base model, greedy | {base['eval/rollout_success']:.3f} | {base['eval/rollout_colours']:.3f} |",
            f"| perfect imitator (exact) | {base['eval/imitator_success']:.3f} | {base['eval/imitator_colours']:.3f} |",
            "| expert | 1.000 | every colour of the task |",
            "",
        ]
    if results.get("probe"):
        p = results["probe"]
        lines += [
            "## Probes (Fig. 3)",
            "",
            "Held-out accuracy of a linear probe per layer (0 = embeddings); chance = the held-out majority "
            "class; history = a lookup table from the colour entered last.",
            "",
            "| layer | " + " | ".join(str(i) for i in range(len(p["accuracy"]))) + " | chance | history |",
            "|---|" + "---:|" * (len(p["accuracy"]) + 2),
            "| accuracy | "
            + " | ".join(f"{a:.3f}" for a in p["accuracy"])
            + f" | {p['chance']:.3f} | "
            + (f"{p['history_baseline']:.3f} |" if p.get("history_baseline") is not None else "- |"),
        ]
        if p.get("mlp_accuracy"):  # the non-linear diagnostic (ProbeConfig.mlp_hidden)
            row = " | ".join(f"{a:.3f}" for a in p["mlp_accuracy"])
            lines.append(f"| one-hidden-layer probe (diagnostic) | {row} | | |")
        lines.append("")
    sup = results.get("supervised")
    if sup:
        lines += [
            "## Label-driven controllers (Fig. 4, C.3)",
            "",
            "One linear controller per subgoal at layer L/2, trained on the clean data with the true labels "
            f"(held-out action NLL {sup['held_out_nll_controlled']:.3f} controlled vs {sup['held_out_nll_base']:.3f} "
            "for the base model), then played in closed loop with the true current subgoal, a wrong one, or none:",
            "",
            "| tasks | true subgoal: success | colours | wrong subgoal: success | colours | "
            "no control: success | colours |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for tasks in ("pretrain", "posttrain"):
            cells = " | ".join(
                f"{sup[f'{tasks}/{lab}_success']:.3f} | {sup[f'{tasks}/{lab}_colours']:.3f}"
                for lab in ("true", "wrong", "none")
            )
            lines.append(f"| {tasks} | {cells} |")
        lines.append("")
    lines += [
        "## Metacontrollers (discovery on clean expert data, held-out episodes)",
        "",
        "| method | alpha | action NLL | KL | switches / episode | true changes / episode | "
        "alignment F1 | random-segmentation F1 | quasi-binary beta |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in results["discovery"].items():
        if name == "compile":  # no switching gate: its own table below
            continue
        lines.append(
            f"| {name} | {m['alpha']} | {m['eval/action_nll']:.3f} | {m['eval/kl']:.3f} | "
            f"{m['eval/switches_per_episode']:.2f} | {m['eval/true_boundaries_per_episode']:.2f} | "
            f"{m['eval/alignment_f1']:.3f} | {m['eval/random_alignment_f1']:.3f} | {m['eval/beta_quasi_binary']:.3f} |"
        )
    coded = {k: m for k, m in results["discovery"].items() if "eval/code_subgoal_accuracy" in m}
    if coded:
        lines += [
            "",
            "What the codes z_t stand for: a nearest-class-mean read-out fitted on half the held-out episodes and "
            "scored on the other half, against the majority label. The cosines compare mean codes of (previous "
            "subgoal, subgoal) pairs: same subgoal after different previous ones (high if codes are absolute, "
            '"go to c"), and different subgoals after the same previous one (negative if a code only picks '
            "among the successors the base model expects there).",
            "",
            "| method | code -> subgoal | majority | code -> current action | majority | cosine, same subgoal | "
            "cosine, same previous subgoal |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, m in coded.items():
            lines.append(
                f"| {name} | {m['eval/code_subgoal_accuracy']:.3f} | {m['eval/code_subgoal_majority']:.3f} | "
                f"{m['eval/code_action_accuracy']:.3f} | {m['eval/code_action_majority']:.3f} | "
                f"{m.get('eval/code_cosine_same_subgoal', float('nan')):.3f} | "
                f"{m.get('eval/code_cosine_same_context', float('nan')):.3f} |"
            )
    seeded = {k: m for k, m in results["discovery"].items() if len(m.get("seeds", [])) > 1}
    if seeded:
        lines += [
            "",
            "Over seeds (the table above shows the first): median [25%, 75%].",
            "",
            "| method | seeds | switches / episode | alignment F1 | random-segmentation F1 | F1 - random F1 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, m in seeded.items():
            f1, rand = seed_values(m, "eval/alignment_f1"), seed_values(m, "eval/random_alignment_f1")
            lines.append(
                f"| {name} | {len(f1)} | {band(seed_values(m, 'eval/switches_per_episode'))} | {band(f1)} | "
                f"{band(rand)} | {band([a - b for a, b in zip(f1, rand, strict=True)])} |"
            )
    c = results["discovery"].get("compile")
    if c:
        lines += [
            "",
            "## CompILE (C.4.3; same base model and clean data, held-out episodes, argmax boundaries)",
            "",
            "| alpha_z | alpha_b | action NLL | KL_z | segments / episode | true changes / episode | "
            "alignment F1 | random-segmentation F1 | RL switch every k steps |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {c['alpha_z']} | {c['alpha_b']} | {c['eval/action_nll']:.3f} | {c['eval/kl_z']:.3f} | "
            f"{c['eval/segments_per_episode']:.2f} | {c['eval/true_boundaries_per_episode']:.2f} | "
            f"{c['eval/alignment_f1']:.3f} | {c['eval/random_alignment_f1']:.3f} | {c['rl_switch_every']} |",
        ]
    lines += _exploration_table(results)
    lines += _steering_tables(results)
    scale = results.get("success_normaliser")
    lines += [
        "",
        f"## RL on the post-training task ({results['rl_task']}, Fig. 8)",
        "",
        "Success rate of each iteration's on-policy batch; first / last quarter of the iterations, "
        "median over runs [min, max]; the last column is the final success as median [25%, 75%].",
        "",
    ]
    if "subgoal-codes" in results["rl"]:
        lines += [
            "`subgoal-codes` is a positive control, not a method of the paper: internal RL over the label-driven "
            "controllers, a code per true subgoal (the argmax of a Gaussian z), switching at the true subgoal "
            "changes. It shows what RL at the abstract timescale does once the codes name subgoals.",
            "",
        ]
    if scale:
        lines += [
            f"Normalised columns divide by {scale}, the paper expert's success on this task (C.1.1), as "
            "Fig. 8b does; our data come from the gait-MPC controller, whose own score is not that number.",
            "",
            "| method | seeds | episodes | initial success | final success | initial / expert | "
            "final / expert | decisions / episode |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
    else:
        lines += [
            "| method | seeds | episodes | initial success | final success | decisions / episode | final, band |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
    for name, r in results["rl"].items():
        ini = [m["initial_success"] for m in r["metrics"]]
        fin = [m["final_success"] for m in r["metrics"]]
        dec = [float(np.mean(h)) for h in r["decisions"]]
        norm = f"{np.median(ini) / scale:.3f} | {np.median(fin) / scale:.3f} | " if scale else ""
        lines.append(
            f"| {name} | {len(fin)} | {r['episodes'][-1] if r['episodes'] else 0} | "
            f"{np.median(ini):.3f} [{min(ini):.3f}, {max(ini):.3f}] | "
            f"{np.median(fin):.3f} [{min(fin):.3f}, {max(fin):.3f}] | {norm}{np.median(dec):.1f} |"
            + ("" if scale else f" {band(fin)} |")
        )
    if results.get("rate_distortion"):
        lines += ["", "## Rate-distortion (Fig. 7)", "",
                  "| alpha | switches / episode | action NLL | KL | alignment F1 | random-segmentation F1 |",
                  "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for p in results["rate_distortion"]:
            lines.append(
                f"| {p['alpha']} | {p['switches_per_episode']:.2f} | {p['action_nll']:.3f} | {p.get('kl', float('nan')):.3f} | "
                f"{p['alignment_f1']:.3f} | {p.get('random_alignment_f1', float('nan')):.3f} |"
            )
    lines += ["", "## Diagnosis", "", *results.get("diagnosis", []), ""]
    lines += ["Figures: " + ", ".join(f"`{f}`" for f in results.get("figures", [])), ""]
    path.write_text("\n".join(lines))
