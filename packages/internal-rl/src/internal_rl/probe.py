"""Stage 2a: linear probes that decode the current subgoal from the residual stream (paper C.2, Table A6).

For every layer l = 0..L (0 = token embeddings) a softmax probe p(g_t | e_{t,l}) is fitted
on frozen residuals of expert episodes (Eqs. 6-7) and scored on held-out episodes. The
subgoal labels are used here and only here. Outputs in the run folder: ``probe.json``
(accuracy by layer for each backbone checkpoint, chance level) and ``probe_accuracy.png``.

    internal-rl probe tiny --run runs/internal-rl/<pretraining run>
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from internal_rl.backbone import Backbone
from internal_rl.pretrain import (
    CHECKPOINTS,
    Batch,
    DataConfig,
    load_backbone,
    load_data,
    model_inputs,
    resolve_device,
)
from latentforge.checkpoint import list_checkpoints
from latentforge.configs import config_to_dict
from latentforge.runs import MetricsLogger, create_run_dir
from latentforge.seeding import seed_everything


@dataclass
class ProbeConfig:
    """Linear subgoal probes. Defaults: paper Table A6."""

    run: Path | None = None
    """Pretraining run folder (or one checkpoint folder) whose backbone is probed."""
    checkpoints: Literal["latest", "all"] = "all"
    """Probe the latest checkpoint only, or every checkpoint of the run (Table A6: 16K ... 256K steps)."""
    data: DataConfig = field(
        default_factory=lambda: DataConfig(num_episodes=20_000, data_seed=1, eval_fraction=0.2)
    )
    """Labelled episodes; data_seed differs from pretraining's so the layouts are new."""
    steps: int = 8000
    """Probe optimiser steps."""
    batch_size: int = 512
    """Residual vectors per probe step."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_tokens: int = 200_000
    """Cap on the residual vectors collected for training (memory: tokens x (L+1) x n_e floats)."""
    mlp_hidden: int = 0
    """If > 0, also fit a one-hidden-layer ReLU probe of this width per layer (same data, steps and
    validation), a diagnostic: it tells a subgoal that is in the residual but not linearly readable
    from one that is absent. The paper's probes are linear."""
    validation_fraction: float = 0.15
    """Share of the training episodes kept aside to pick each layer's probe (best validation
    accuracy over training, see :func:`fit_probes`); 0 uses the last weights."""
    seed: int = 0
    """Seed of probe init and batch sampling."""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda[:i]'."""
    num_threads: int = 0
    """CPU threads for torch (0 keeps torch's default)."""
    run_root: Path = Path("runs")
    """Probe runs go to <run_root>/internal-rl/<run name>/."""
    exp_name: str = "probe"
    """Experiment name inside the run name."""


def paper_probe_config() -> ProbeConfig:
    """Table A6: 8000 steps, batch 512, AdamW lr 1e-3, wd 0, every layer, every checkpoint."""
    return ProbeConfig()


def tiny_probe_config() -> ProbeConfig:
    """CPU-sized: 600 labelled episodes, 1500 probe steps."""
    return ProbeConfig(
        data=DataConfig(num_episodes=600, data_seed=1, eval_fraction=0.3),
        steps=1500,
        batch_size=256,
        lr=3e-3,
        max_tokens=50_000,
    )


def small_probe_config() -> ProbeConfig:
    """The small grid (``variant="small"``): 2000 labelled episodes, 1500 probe steps."""
    return ProbeConfig(
        data=DataConfig(
            num_episodes=2000, data_seed=1, eval_fraction=0.3, variant="small", expert_ties="first"
        ),
        steps=1500,
        batch_size=256,
        lr=3e-3,
        max_tokens=50_000,
        mlp_hidden=256,
    )


PRESETS = {"small": small_probe_config, "tiny": tiny_probe_config, "paper": paper_probe_config}


@torch.no_grad()
def collect_residuals(
    model: Backbone, data: Any, device: torch.device, *, batch_size: int = 128, max_tokens: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residuals (N, L+1, n_e) of every real step of ``data`` and their subgoal labels (N,)."""
    model.eval()
    feats, labels = [], []
    total = 0
    for start in range(0, len(data), batch_size):
        part = data[start : start + batch_size]
        batch = Batch.from_trajectories(part.observations, part.actions, part.lengths, device)
        out = model(batch.obs, **model_inputs(model, batch), return_residuals=True)
        stream = torch.stack(out.residuals, 2)  # (B, T, L+1, n_e)
        keep = batch.mask & (part.subgoals[:, : batch.mask.shape[1]].to(device) >= 0)
        feats.append(stream[keep].float().cpu())
        labels.append(part.subgoals[:, : batch.mask.shape[1]].to(device)[keep].cpu())
        total += int(keep.sum())
        if max_tokens is not None and total >= max_tokens:
            break
    x, y = torch.cat(feats), torch.cat(labels)
    return (x[:max_tokens], y[:max_tokens]) if max_tokens is not None else (x, y)


@dataclass
class LayerProbes:
    """One linear softmax probe per layer, trained together (their losses are independent)."""

    weight: torch.Tensor  # (L+1, n_e, n_classes)
    bias: torch.Tensor  # (L+1, n_classes)
    mean: torch.Tensor  # (L+1, n_e): feature standardisation, an invertible affine map
    std: torch.Tensor

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L+1, n_e) residuals -> (N, L+1, n_classes)."""
        z = (x - self.mean) / self.std
        return torch.einsum("nld,ldc->nlc", z, self.weight) + self.bias

    def accuracy(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 8192) -> list[float]:
        correct = torch.zeros(x.shape[1])
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                pred = self.logits(x[start : start + batch_size]).argmax(-1)
                correct += (pred == y[start : start + batch_size, None]).float().sum(0).cpu()
        return (correct / max(len(x), 1)).tolist()


def fit_probes(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    generator: torch.Generator | None = None,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    eval_every: int = 100,
) -> LayerProbes:
    """Fit a linear probe per layer on residuals ``x`` (N, L+1, n_e) with labels ``y`` (N,).

    With ``validation`` (residuals and labels of *other episodes*), each layer keeps the weights of
    its best validation accuracy (checked every ``eval_every`` steps, starting from the constant
    probe that predicts the training majority): a probe fitted to a few thousand correlated steps
    of 64-256 dimensions otherwise memorises its training episodes and can score below the
    majority rate on new ones.
    """
    n_layers, d = x.shape[1], x.shape[2]
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    weight = torch.zeros(n_layers, d, n_classes, requires_grad=True)
    # start at the training prior, so that step 0 is the constant (majority) classifier
    prior = torch.bincount(y, minlength=n_classes).float().add(1.0).log()
    bias = (prior - prior.mean()).repeat(n_layers, 1).requires_grad_(True)
    probes = LayerProbes(weight, bias, mean, std)
    optimizer = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    best_acc = torch.full((n_layers,), -1.0)
    best_w, best_b = weight.detach().clone(), bias.detach().clone()

    def keep_best() -> None:
        if validation is None:
            return
        acc = torch.tensor(probes.accuracy(*validation))
        better = acc > best_acc
        best_acc[better] = acc[better]
        best_w[better], best_b[better] = weight.detach()[better], bias.detach()[better]

    keep_best()
    for step in range(steps):
        idx = torch.randint(len(x), (batch_size,), generator=generator)
        logits = probes.logits(x[idx])
        loss = F.cross_entropy(logits.flatten(0, 1), y[idx].repeat_interleave(n_layers), reduction="sum")
        optimizer.zero_grad(set_to_none=True)
        (loss / batch_size).backward()
        optimizer.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            keep_best()
    if validation is None:
        return LayerProbes(weight.detach(), bias.detach(), mean, std)
    return LayerProbes(best_w, best_b, mean, std)


def fit_mlp_probes(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    *,
    hidden: int,
    steps: int,
    batch_size: int,
    lr: float,
    validation: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator | None = None,
    eval_every: int = 100,
) -> list[float]:
    """Held-out accuracy per layer of a one-hidden-layer ReLU probe, each layer's weights chosen at its best
    validation accuracy (as :func:`fit_probes`)."""
    out = []
    for layer in range(x.shape[1]):
        feats = x[:, layer]
        mean, std = feats.mean(0), feats.std(0).clamp(min=1e-6)
        net = torch.nn.Sequential(
            torch.nn.Linear(feats.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_classes)
        )
        optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-2)
        best_val, best_test = -1.0, 0.0
        for step in range(steps):
            idx = torch.randint(len(feats), (batch_size,), generator=generator)
            loss = F.cross_entropy(net((feats[idx] - mean) / std), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step + 1) % eval_every == 0 or step + 1 == steps:
                val = _accuracy(net, (validation[0][:, layer] - mean) / std, validation[1])
                if val > best_val:
                    best_val, best_test = val, _accuracy(net, (test[0][:, layer] - mean) / std, test[1])
        out.append(best_test)
    return out


@torch.no_grad()
def _accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((net(x).argmax(-1) == y).float().mean())


def last_visited_colour(data: Any) -> torch.Tensor | None:
    """``(E, T)`` the colour the agent last entered before acting at step t (``num_colours`` before the
    first), read off grid observations and ``layouts["colour_cells"]``; ``None`` for other data."""
    colours = data.layouts.get("colour_cells")
    if colours is None or not data.is_discrete:
        return None
    n_cells = data.observations.shape[-1] // (colours.shape[1] + data.layouts["wall_cells"].shape[1] + 1)
    channels = data.observations.shape[-1] // n_cells
    agent = data.observations.view(len(data), -1, n_cells, channels)[..., -1].argmax(-1)  # (E, T+1)
    steps = data.subgoals.shape[1]
    on = agent[:, :steps, None] == colours[:, None, :]  # (E, T, K): the agent stands on colour k
    moved = torch.ones_like(agent[:, :steps], dtype=torch.bool)
    moved[:, 1:] = agent[:, 1:steps] != agent[:, : steps - 1]
    entered = torch.where((on.any(-1) & moved), on.float().argmax(-1), -1)
    entered[:, 0] = -1  # the start cell holds no colour, and standing there is no visit
    # carry the last entered colour forward: index of the latest entry at or before t
    times = torch.arange(steps).expand_as(entered)
    latest = torch.where(entered >= 0, times, -1).cummax(1).values
    last = torch.gather(entered, 1, latest.clamp(min=0))
    return torch.where(latest >= 0, last, colours.shape[1])


def history_baseline(train: Any, held_out: Any) -> float | None:
    """Held-out accuracy of the best lookup table from the last visited colour to the subgoal, fitted on
    ``train``: what a model that only remembers which colour it entered last could decode (grid only)."""
    x_train, x_test = last_visited_colour(train), last_visited_colour(held_out)
    if x_train is None or x_test is None:
        return None
    keep_train, keep_test = train.subgoals >= 0, held_out.subgoals >= 0
    x_train, y_train = x_train[keep_train], train.subgoals[keep_train]
    n_classes = int(max(train.subgoals.max(), held_out.subgoals.max())) + 1
    n_values = int(max(x_train.max(), x_test.max())) + 1
    counts = torch.zeros(n_values, n_classes).index_put_(
        (x_train, y_train), torch.ones(len(y_train)), accumulate=True
    )
    table = counts.argmax(-1)
    return float((table[x_test[keep_test]] == held_out.subgoals[keep_test]).float().mean())


def majority_rate(y_train: torch.Tensor, y_test: torch.Tensor, n_classes: int) -> float:
    """Held-out accuracy of the best constant guess (the held-out majority class: at least what the
    training majority, which an uninformed probe predicts, scores there): the bar a probe must clear
    to show that the residual carries the subgoal."""
    del y_train  # the held-out majority bounds the training majority's score from above
    return float(torch.bincount(y_test, minlength=n_classes).max()) / max(len(y_test), 1)


def plot_accuracy(
    results: dict[int, list[float]], chance: float, path: Path, title: str = "", history: float | None = None
) -> None:
    """Accuracy by layer, one line per backbone checkpoint (the paper's Fig. 3b)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for step, acc in sorted(results.items()):
        ax.plot(range(len(acc)), acc, marker="o", label=f"{step} steps")
    ax.axhline(chance, color="grey", linestyle="--", label="chance (majority)")
    if history is not None:
        ax.axhline(history, color="black", linestyle=":", label="last visited colour (lookup)")
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("held-out subgoal accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title or "linear subgoal probes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class ProbeResult:
    run_dir: Path
    accuracy: dict[int, list[float]]
    """Backbone checkpoint step -> held-out accuracy for layers 0..L."""
    chance: float
    """Accuracy of always predicting the most frequent held-out subgoal."""
    history_baseline: float | None = None
    """Accuracy of the last-visited-colour lookup table (:func:`history_baseline`; grid only)."""
    mlp_accuracy: dict[int, list[float]] = field(default_factory=dict)
    """With ``mlp_hidden`` > 0: held-out accuracy of the non-linear diagnostic probe, by layer."""


def _checkpoint_paths(run: Path, which: str) -> list[Path]:
    if (run / "state.json").is_file():
        return [run]
    found = list_checkpoints(run / CHECKPOINTS if (run / CHECKPOINTS).is_dir() else run)
    if not found:
        raise FileNotFoundError(f"{run}: no pretraining checkpoints found")
    return found if which == "all" else found[-1:]


def probe(cfg: ProbeConfig, data: Any = None) -> ProbeResult:
    """Probe every requested checkpoint of ``cfg.run``; ``data`` (Trajectories) overrides ``cfg.data``."""
    if cfg.run is None:
        raise ValueError("set run: the pretraining run folder to probe")
    device = resolve_device(cfg.device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    paths = _checkpoint_paths(Path(cfg.run), cfg.checkpoints)
    if data is None:
        data = load_data(cfg.data)
    n_eval = max(1, round(len(data) * cfg.data.eval_fraction))
    if len(data) - n_eval < 1:
        raise ValueError(f"need at least 2 labelled episodes, got {len(data)}")
    train, held_out = data[: len(data) - n_eval], data[len(data) - n_eval :]
    n_val = round(len(train) * cfg.validation_fraction) if len(train) > 1 else 0
    fit, val = train[: len(train) - n_val], (train[len(train) - n_val :] if n_val else None)
    n_classes = int(data.subgoals.max()) + 1
    run_dir = create_run_dir(cfg.run_root, "internal-rl", cfg.exp_name, cfg.seed, config_to_dict(cfg))
    results: dict[int, list[float]] = {}
    mlp: dict[int, list[float]] = {}
    chance = 0.0
    with MetricsLogger(run_dir) as log:
        for path in log.progress(paths, desc="probe"):
            model, info = load_backbone(path, device)
            if info.get("env_id") not in (None, data.env_id):
                raise ValueError(
                    f"{path} was trained on {info['env_id']} but the probe data is {data.env_id}"
                )
            x_train, y_train = collect_residuals(model, fit, device, max_tokens=cfg.max_tokens)
            x_test, y_test = collect_residuals(model, held_out, device)
            validation = None if val is None else collect_residuals(model, val, device)
            generator = torch.Generator().manual_seed(cfg.seed)
            probes = fit_probes(
                x_train,
                y_train,
                n_classes,
                steps=cfg.steps,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
                generator=generator,
                validation=validation,
            )
            acc = probes.accuracy(x_test, y_test)
            chance = majority_rate(y_train, y_test, n_classes)
            results[int(info["step"])] = acc
            if cfg.mlp_hidden > 0 and validation is not None:
                mlp[int(info["step"])] = fit_mlp_probes(
                    x_train, y_train, n_classes, hidden=cfg.mlp_hidden, steps=cfg.steps,
                    batch_size=cfg.batch_size, lr=cfg.lr, validation=validation, test=(x_test, y_test),
                    generator=generator,
                )  # fmt: skip
            log.log(int(info["step"]), **{f"probe/layer{layer}": a for layer, a in enumerate(acc)})
    summary = {
        "env_id": data.env_id,
        "chance": chance,
        "accuracy_by_layer": {str(step): acc for step, acc in sorted(results.items())},
        "best_layer": {str(s): int(torch.tensor(a).argmax()) for s, a in results.items()},
        "history_baseline": history_baseline(train, held_out),
        "mlp_accuracy_by_layer": {str(step): acc for step, acc in sorted(mlp.items())},
        "train_tokens": len(x_train),
        "held_out_tokens": len(x_test),
        "pretraining_run": str(cfg.run),
    }
    (run_dir / "probe.json").write_text(json.dumps(summary, indent=2))
    plot_accuracy(
        results,
        chance,
        run_dir / "probe_accuracy.png",
        title=f"subgoal probes ({data.env_id})",
        history=summary["history_baseline"],
    )
    return ProbeResult(
        run_dir=run_dir,
        accuracy=results,
        chance=chance,
        history_baseline=summary["history_baseline"],
        mlp_accuracy=mlp,
    )
