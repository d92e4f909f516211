"""Do the metacontroller's codes steer? Closed-loop tests of what a code does when it is played.

Teacher-forced numbers (action NLL, the code -> subgoal read-out) say what the codes *encode* on
expert episodes. Internal RL needs something else: a code that, played on its own in the
environment, takes the agent somewhere. Two tests, both on fresh layouts of the grid:

- :func:`first_colour_steering`: hold one code for a whole episode and count how often the first
  colour the agent steps on is colour ``c``. Against the base model alone (gain 0) and codes from
  the prior, the best of ``candidates`` codes says whether *any* code means "go to c". Codes that
  re-encode motor moves ("go up") cannot: the colours move with every layout.
- :func:`transition_rates`: play the mean posterior code of the true next subgoal at every switch
  (an oracle over the discovered codes, like the label-driven controllers over theirs) and report,
  per colour of the task, how often an episode that reached it goes on to the next one. With the
  controller scaled by a gain, it also says whether the codes point the right way but push too
  weakly against the base model's habits. The gain is a diagnostic of this package, not the paper's.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from internal_rl.envs.tasks import Task, get_grid_spec
from internal_rl.internal_env import BatchedInternalEnv


@torch.no_grad()
def _play_constant(
    model: Any, codes: torch.Tensor, episodes: int, task: Task, *, variant: str, horizon: int,
    threshold: float, seed: int, gain: float = 1.0,
) -> torch.Tensor:  # fmt: skip
    """Colours entered in order (len(codes), episodes) with code k held for all of group k's episode."""
    k = codes.shape[0]
    env = BatchedInternalEnv(model, k * episodes, "posttrain", tasks=(task,), threshold=threshold, seed=seed,
                             horizon=horizon, variant=variant, control_gain=gain)  # fmt: skip
    env.reset()
    z = codes.repeat_interleave(episodes, 0)
    while not env.done.all():
        env.step(z)
    return env.colours.view(k, episodes).cpu()


@torch.no_grad()
def first_colour_steering(
    model: Any,
    *,
    variant: str = "paper",
    horizon: int = 100,
    threshold: float = 0.5,
    candidates: int = 64,
    episodes: int = 64,
    recheck: int = 512,
    codes: torch.Tensor | None = None,
    seed: int = 0,
) -> list[dict[str, float]]:
    """For every colour c: how often an episode first steps on c when one code is held throughout.

    Rows hold ``uncontrolled`` (the base model alone), ``prior`` (the mean over ``candidates`` codes
    from N(0, I) and 3 N(0, I)), ``best_screened`` (the best candidate on its ``episodes`` layouts,
    biased upwards by the choice) and ``best`` (that candidate again on ``recheck`` fresh layouts, the
    number to read), plus ``subgoal_code`` when ``codes`` (P, n_z) gives the mean code of c's subgoal.
    """
    spec = get_grid_spec(variant)
    n_z = model.meta.config.n_z
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for c in range(spec.num_colours):
        cand = torch.randn(candidates, n_z, generator=gen)
        cand[candidates // 2 :] *= 3.0
        play = dict(variant=variant, horizon=horizon, threshold=threshold)
        screen = (
            (_play_constant(model, cand, episodes, (c,), seed=seed + 10 * c + 1, **play) >= 1).float().mean(1)
        )
        best = int(screen.argmax())
        fresh = dict(seed=seed + 10 * c + 2, **play)
        row = {
            "colour": c,
            "uncontrolled": float(
                (_play_constant(model, cand[:1], recheck, (c,), gain=0.0, **fresh) >= 1).float().mean()
            ),
            "prior": float(screen.mean()),
            "best_screened": float(screen[best]),
            "best": float(
                (_play_constant(model, cand[best : best + 1], recheck, (c,), **fresh) >= 1).float().mean()
            ),
        }
        if codes is not None:
            code = codes[spec.subgoal_of(c)][None]
            row["subgoal_code"] = float(
                (_play_constant(model, code, recheck, (c,), **fresh) >= 1).float().mean()
            )
        rows.append(row)
    return rows


@torch.no_grad()
def transition_rates(
    model: Any,
    codes: torch.Tensor,
    task: Task,
    *,
    gains: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0),
    episodes: int = 1024,
    variant: str = "paper",
    horizon: int = 100,
    threshold: float = 0.5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Play ``codes[subgoal of the next colour]`` at every switch of ``task``, the controller scaled by each gain.

    Returns per gain the success rate, ``reached[k]`` (episodes that entered at least k colours in
    order) and ``rates[k] = reached[k + 1] / reached[k]``, the share that got through colour k + 1
    once at colour k (NaN where none got that far). Gain 0 is the base model alone.
    """
    spec = get_grid_spec(variant)
    subgoal = torch.tensor([spec.subgoal_of(c) for c in range(spec.num_colours)])
    out = []
    for gain in gains:
        env = BatchedInternalEnv(model, episodes, "posttrain", tasks=(task,), threshold=threshold, seed=seed,
                                 horizon=horizon, variant=variant, control_gain=gain)  # fmt: skip
        env.reset()
        while not env.done.all():
            nxt = env.grid.next_colours().clamp(min=0).cpu()
            env.step(codes[subgoal[nxt]])
        reached = env.reached(len(task))
        rates = [reached[k + 1] / reached[k] if reached[k] else float("nan") for k in range(len(task))]
        out.append(
            {"gain": gain, "success": float(env.success.float().mean()), "reached": reached, "rates": rates}
        )
    return out


def seen_transition_task(variant: str = "paper") -> Task:
    """A task as long as the post-training task, from its first subgoal, whose every transition occurs
    in pretraining: the control for :func:`transition_rates` (the most distinct subgoals, then the first
    in order). The same codes on both tasks separate "cannot steer" from "cannot compose"."""
    spec = get_grid_spec(variant)
    post = spec.posttrain_task()
    first, length = spec.subgoal_of(post[0]), len(post) // spec.colours_per_subgoal
    banned = spec.posttrain_transitions()
    best: tuple[int, ...] | None = None
    for seq in itertools.product(range(spec.num_subgoals), repeat=length - 1):
        seq = (first, *seq)
        if any(a == b or (a, b) in banned for a, b in itertools.pairwise(seq)):
            continue
        if best is None or len(set(seq)) > len(set(best)):
            best = seq
    if best is None:
        raise ValueError(
            f"variant {variant!r} has no task of length {length} with only pretraining transitions"
        )
    return spec.colours(best)
