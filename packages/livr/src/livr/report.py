"""``results.json`` and a markdown table laid out like the paper's results table.

A *run record* is ``{"method": ..., "seed": ..., "scores": {task: TaskScore.summary()}}``. The table
has one row per method (zero-shot, Direct SFT, LIVR, ablations), one column per task plus the
unweighted average, cells ``mean ± std`` over seeds (std of the sample, 0 with one seed), and a
``LIVR − Direct SFT`` row of the per-seed paired differences.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

METHOD_LABELS = {
    "zero_shot": "Zero-shot (base model)",
    "direct_sft": "Direct SFT",
    "livr": "LIVR",
    "latents_no_mask": "Ablation: latents, no bottleneck mask",
    "mask_no_latents": "Ablation: bottleneck mask, no latents",
}


BLANK_SUFFIX = ":blank_image"
REFERENCE_LABELS = {"chance": "Chance", "majority": "Majority (most frequent training answer)"}


def method_label(method: str) -> str:
    if method.endswith(BLANK_SUFFIX):
        return f"{method_label(method.removesuffix(BLANK_SUFFIX))}, blank image (text-only control)"
    if method.startswith("livr_k"):
        return f"Ablation: LIVR with K = {method.removeprefix('livr_k')}"
    return METHOD_LABELS.get(method, method)


def _stats(values: Sequence[float]) -> dict:
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values) if values else float("nan"),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n_seeds": len(values),
        "values": values,
    }


def run_average(record: Mapping) -> float:
    scores = [s["score"] for s in record["scores"].values()]
    return statistics.fmean(scores) if scores else float("nan")


def summarise(records: Sequence[Mapping], tasks: Sequence[str]) -> dict[str, dict]:
    """``{method: {task | "average": {mean, std, n_seeds, values}}}`` in first-seen method order."""
    methods: dict[str, list[Mapping]] = {}
    for rec in records:
        missing = [t for t in tasks if t not in rec["scores"]]
        if missing:
            raise ValueError(f"run {rec['method']} seed {rec['seed']} has no score for {missing}")
        methods.setdefault(rec["method"], []).append(rec)
    out = {}
    for method, recs in methods.items():
        row = {t: _stats([r["scores"][t]["score"] for r in recs]) for t in tasks}
        row["average"] = _stats([run_average(r) for r in recs])
        out[method] = row
    return out


def paired_difference(records: Sequence[Mapping], tasks: Sequence[str], a: str, b: str) -> dict | None:
    """Per-task ``a − b`` over the seeds both methods ran (None if they share no seed)."""
    by = {(r["method"], r["seed"]): r for r in records}
    seeds = sorted({s for m, s in by if m == a} & {s for m, s in by if m == b})
    if not seeds:
        return None
    row = {
        t: _stats([by[a, s]["scores"][t]["score"] - by[b, s]["scores"][t]["score"] for s in seeds])
        for t in tasks
    }
    row["average"] = _stats([run_average(by[a, s]) - run_average(by[b, s]) for s in seeds])
    return row


def _cell(stat: Mapping, signed: bool = False) -> str:
    if math.isnan(stat["mean"]):
        return "–"
    mean = f"{stat['mean']:+.1f}" if signed else f"{stat['mean']:.1f}"
    return f"{mean} ± {stat['std']:.1f}" if stat["n_seeds"] > 1 else mean


def markdown_table(
    records: Sequence[Mapping],
    tasks: Sequence[str],
    references: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    """The results table (scores in percent; mean ± std over seeds).

    ``references`` (``{"chance" | "majority": {task: percent}}``) become the first rows, so every
    score is read beside the rates a model reaches without the image.
    """
    summary = summarise(records, tasks)
    header = "| method | seeds | " + " | ".join(tasks) + " | Avg |"
    lines = [header, "|" + "---|" * (len(tasks) + 3)]
    for name, row in (references or {}).items():
        values = [row[t] for t in tasks]
        cells = [f"{v:.1f}" for v in values] + [f"{statistics.fmean(values):.1f}"]
        lines.append(f"| {REFERENCE_LABELS.get(name, name)} | – | " + " | ".join(cells) + " |")
    for method, row in summary.items():
        cells = [_cell(row[t]) for t in tasks] + [_cell(row["average"])]
        lines.append(f"| {method_label(method)} | {row['average']['n_seeds']} | " + " | ".join(cells) + " |")
    diff = paired_difference(records, tasks, "livr", "direct_sft")
    if diff is not None:
        cells = [_cell(diff[t], signed=True) for t in tasks] + [_cell(diff["average"], signed=True)]
        lines.append(
            f"| LIVR − Direct SFT (paired by seed) | {diff['average']['n_seeds']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def unparseable_table(records: Sequence[Mapping], tasks: Sequence[str]) -> str:
    """How many answers per method and task could not be parsed (summed over seeds)."""
    totals: dict[str, dict[str, list[int]]] = {}
    for rec in records:
        row = totals.setdefault(rec["method"], {t: [0, 0] for t in tasks})
        for t in tasks:
            row[t][0] += rec["scores"][t]["unparseable"]
            row[t][1] += rec["scores"][t]["n"]
    lines = ["| method | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 1)]
    for method, row in totals.items():
        lines.append(f"| {method_label(method)} | " + " | ".join(f"{u}/{n}" for u, n in row.values()) + " |")
    return "\n".join(lines)


def write_results(
    folder: str | os.PathLike, records: Sequence[Mapping], tasks: Sequence[str], extra: Mapping | None = None
) -> Path:
    """``<folder>/results.json``: the run records, the per-method summary and ``extra``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "tasks": list(tasks),
        "runs": list(records),
        "summary": summarise(records, tasks),
        "livr_minus_direct_sft": paired_difference(records, tasks, "livr", "direct_sft"),
        **(extra or {}),
    }
    path = folder / "results.json"
    path.write_text(json.dumps(payload, indent=2, allow_nan=True))
    return path


def read_results(path: str | os.PathLike) -> dict:
    """Read a ``results.json`` back, with an error naming the file if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not {"tasks", "runs"} <= data.keys():
            raise KeyError("expected keys 'tasks' and 'runs'")
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise ValueError(f"{path} is not a livr results.json: {exc}") from exc
    return data
