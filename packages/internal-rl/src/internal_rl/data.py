"""Expert trajectory datasets: generation, sharded storage and loading.

A dataset is a folder with ``index.json`` and ``shard_00000.safetensors`` ... Each shard holds
a slice of episodes padded to that shard's longest episode; :meth:`Trajectories.load` pads
them to one common length again. Subgoal labels and layouts are stored for analysis
(probes, plots) and must never be a training input.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from internal_rl.envs import ANT_ID, GRID_ID, register_envs

FORMAT_VERSION = 1
INDEX_FILE = "index.json"
_PER_EPISODE = ("lengths", "task_ids", "success")
_PER_STEP = ("observations", "actions", "subgoals")


@dataclass
class Trajectories:
    """A batch of episodes, padded along time.

    ``observations[e, t]`` is seen before ``actions[e, t]``; ``observations[e, lengths[e]]`` is
    the final observation; everything after is padding (zeros, actions -1 for the grid,
    subgoals -1).
    """

    env_id: str
    # (E, T+1, obs_dim): uint8 for the one-hot grid (exact, 4x smaller: the paper's 100K episodes
    # are 6.4 GB instead of 26 GB), float32 for the ant; ``Batch.from_trajectories`` and
    # :meth:`float_observations` convert per batch.
    observations: torch.Tensor
    actions: torch.Tensor  # grid: (E, T) int64, pad -1; ant: (E, T, 8) float32, pad 0
    lengths: torch.Tensor  # (E,) int64
    subgoals: torch.Tensor  # (E, T) int64, -1 on padding
    task_ids: torch.Tensor  # (E,) int64 into the task set
    success: torch.Tensor  # (E,) bool
    task_set: str = "pretrain"
    # Per-episode layout tensors, e.g. grid colour_cells (E, 8), wall_cells (E, 4), agent_cell (E,).
    layouts: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        e = self.lengths.shape[0]
        t = self.subgoals.shape[1] if self.subgoals.ndim == 2 else -1
        shapes = {
            "observations": (self.observations.ndim == 3 and self.observations.shape[:2] == (e, t + 1)),
            "actions": self.actions.shape[:2] == (e, t),
            "subgoals": self.subgoals.shape == (e, t),
            "task_ids": self.task_ids.shape == (e,),
            "success": self.success.shape == (e,),
        }
        shapes["observations dtype (uint8 or floating)"] = (
            self.observations.dtype == torch.uint8 or self.observations.is_floating_point()
        )
        bad = [k for k, ok in shapes.items() if not ok]
        if bad:
            raise ValueError(f"inconsistent trajectory shapes for {bad} (episodes={e}, steps={t})")
        if e and int(self.lengths.max()) > t:
            raise ValueError(f"a length {int(self.lengths.max())} exceeds the {t} padded steps")

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def is_discrete(self) -> bool:
        return self.actions.ndim == 2

    def __getitem__(self, index: Any) -> Trajectories:
        """Episodes ``index`` (slice, index tensor or boolean mask), trimmed to their longest episode."""
        lengths = self.lengths[index]
        t = int(lengths.max()) if lengths.numel() else 0
        return Trajectories(
            env_id=self.env_id,
            observations=self.observations[index][:, : t + 1],
            actions=self.actions[index][:, :t],
            lengths=lengths,
            subgoals=self.subgoals[index][:, :t],
            task_ids=self.task_ids[index],
            success=self.success[index],
            task_set=self.task_set,
            layouts={k: v[index] for k, v in self.layouts.items()},
        )

    def to(self, device: str | torch.device) -> Trajectories:
        """The same episodes with every tensor on ``device``."""
        tensors = {key: getattr(self, key).to(device) for key in (*_PER_STEP, *_PER_EPISODE)}
        layouts = {k: v.to(device) for k, v in self.layouts.items()}
        return replace(self, **tensors, layouts=layouts)

    def float_observations(self) -> torch.Tensor:
        """``observations`` as float32 (a copy for uint8 grids: convert batches, not a whole dataset)."""
        return self.observations.float()

    def step_mask(self) -> torch.Tensor:
        """(E, T) bool: True on real (non-padding) action steps."""
        return torch.arange(self.subgoals.shape[1]) < self.lengths[:, None]

    # -- storage ---------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, shard_size: int = 4096) -> None:
        """Write ``index.json`` plus safetensors shards of at most ``shard_size`` episodes."""
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        shards = []
        obs = self.observations
        # grid observations are 0/1 one-hots (already uint8 when generated here)
        one_hot = obs.dtype == torch.uint8 or bool(((obs == 0) | (obs == 1)).all())
        for k, start in enumerate(range(0, max(len(self), 1), shard_size)):
            part = self[start : start + shard_size]
            name = f"shard_{k:05d}.safetensors"
            tensors = {key: getattr(part, key).contiguous() for key in (*_PER_STEP, *_PER_EPISODE)}
            if one_hot:
                tensors["observations"] = tensors["observations"].to(torch.uint8)  # exact, 4x smaller
            tensors.update({f"layout.{key}": v.contiguous() for key, v in part.layouts.items()})
            save_file(tensors, str(directory / name))
            shards.append({"file": name, "num_episodes": len(part)})
        index = {
            "format_version": FORMAT_VERSION,
            "env_id": self.env_id,
            "task_set": self.task_set,
            "num_episodes": len(self),
            "max_steps": int(self.subgoals.shape[1]),
            "obs_dim": int(self.observations.shape[-1]),
            "observations_stored_as": "uint8" if one_hot else "float32",
            "action_shape": list(self.actions.shape[2:]),
            "success_rate": float(self.success.float().mean()) if len(self) else 0.0,
            "shards": shards,
        }
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Trajectories:
        """Read a folder written by :meth:`save`, checking every file against the index."""
        directory = Path(directory)
        index_path = directory / INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(
                f"{index_path}: no dataset index (expected a folder written by Trajectories.save)"
            )
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{index_path}: not valid JSON ({exc})") from exc
        missing = {"format_version", "env_id", "task_set", "max_steps", "shards"} - set(index)
        if missing:
            raise ValueError(f"{index_path}: missing keys {sorted(missing)}")
        if index["format_version"] != FORMAT_VERSION:
            raise ValueError(
                f"{index_path}: format_version {index['format_version']}, expected {FORMAT_VERSION}"
            )
        t_max = int(index["max_steps"])
        parts: dict[str, list[torch.Tensor]] = {}
        for shard in index["shards"]:
            path = directory / str(shard.get("file", ""))
            if path.parent != directory or not path.is_file():
                raise FileNotFoundError(f"{path}: shard listed in {index_path} is missing")
            try:
                tensors = load_file(str(path))
            except (SafetensorError, OSError) as exc:
                raise ValueError(f"{path}: unreadable safetensors shard ({exc})") from exc
            need = {*_PER_STEP, *_PER_EPISODE} - set(tensors)
            if need:
                raise ValueError(f"{path}: missing tensors {sorted(need)}")
            e = tensors["lengths"].shape[0]
            if e != shard.get("num_episodes"):
                raise ValueError(f"{path}: holds {e} episodes, index says {shard.get('num_episodes')}")
            t = tensors["subgoals"].shape[1]
            if t > t_max:
                raise ValueError(f"{path}: {t} steps exceed the index's max_steps {t_max}")
            pad = t_max - t
            obs = tensors["observations"]
            if obs.dtype != torch.uint8 and not obs.is_floating_point():
                raise ValueError(f"{path}: observations have dtype {obs.dtype}, expected uint8 or float")
            # uint8 one-hots stay uint8 in memory; float data is float32
            tensors["observations"] = _pad_time(obs if obs.dtype == torch.uint8 else obs.float(), pad, 0)
            tensors["actions"] = _pad_time(tensors["actions"], pad, -1 if tensors["actions"].ndim == 2 else 0)
            tensors["subgoals"] = _pad_time(tensors["subgoals"], pad, -1)
            for key, value in tensors.items():
                parts.setdefault(key, []).append(value)
        if not parts:
            raise ValueError(f"{index_path}: lists no shards")
        joined = {k: torch.cat(v) for k, v in parts.items()}
        try:
            return cls(
                env_id=index["env_id"],
                task_set=index["task_set"],
                layouts={k.removeprefix("layout."): v for k, v in joined.items() if k.startswith("layout.")},
                **{k: joined[k] for k in (*_PER_STEP, *_PER_EPISODE)},
            )
        except ValueError as exc:
            raise ValueError(f"{directory}: {exc}") from exc


def _pad_time(x: torch.Tensor, pad: int, value: float) -> torch.Tensor:
    if pad == 0:
        return x
    shape = list(x.shape)
    shape[1] = pad
    return torch.cat([x, torch.full(shape, value, dtype=x.dtype)], dim=1)


# -- generation ------------------------------------------------------------------------------
def generate_trajectories(
    env_id: str,
    task_set: str = "pretrain",
    num_episodes: int = 1024,
    seed: int = 0,
    epsilon: float = 0.0,
    num_envs: int = 256,
    *,
    device: str | torch.device = "cpu",
    env_kwargs: dict[str, Any] | None = None,
    expert: str | os.PathLike | None = None,
    ties: str = "random",
) -> Trajectories:
    """Roll out the expert of ``env_id`` for ``num_episodes`` episodes.

    Grid episodes run in the batched torch env (``num_envs`` at a time) with the DP expert;
    ``epsilon`` is the paper's per-step random-move probability. Ant episodes run one env
    with the PPO expert checkpoint ``expert`` or, if ``None``, the cheap goal-reaching
    controller (see :func:`internal_rl.ant_data.generate_ant_trajectories` for ``epsilon``).
    ``ties`` is the grid expert's tie-breaking among optimal moves ("random" or "first").
    """
    if num_episodes < 1:
        raise ValueError("num_episodes must be >= 1")
    if env_id == GRID_ID:
        from internal_rl.envs.grid_batched import generate_grid_trajectories

        return generate_grid_trajectories(
            task_set,
            num_episodes,
            seed=seed,
            epsilon=epsilon,
            num_envs=num_envs,
            device=device,
            ties=ties,
            **(env_kwargs or {}),
        )
    if env_id == ANT_ID:
        from internal_rl.ant_data import generate_ant_trajectories

        return generate_ant_trajectories(
            task_set, num_episodes, seed=seed, epsilon=epsilon, expert=expert, env_kwargs=env_kwargs
        )
    raise ValueError(f"unknown env_id {env_id!r}; expected {GRID_ID!r} or {ANT_ID!r}")


def rollout_gym_grid(
    task_set: str, num_episodes: int, *, seed: int = 0, epsilon: float = 0.0, **env_kwargs: Any
) -> Trajectories:
    """The same grid data from the reference gymnasium env, one episode at a time (slow; for checks)."""
    from internal_rl.experts import GridExpert

    register_envs()
    env = gym.make(GRID_ID, task_set=task_set, **env_kwargs)
    base = env.unwrapped
    expert = GridExpert(base, epsilon=epsilon, seed=seed + 1)
    episodes = []
    for k in range(num_episodes):
        obs, info = env.reset(seed=seed + k)
        observations, actions, subgoals = [obs], [], []
        layout = {key: np.asarray(info[key]) for key in ("colour_cells", "wall_cells", "agent_cell")}
        done = False
        while not done:
            subgoals.append(info["subgoal"])
            action = expert.act()
            obs, _, terminated, truncated, info = env.step(action)
            observations.append(obs)
            actions.append(action)
            done = terminated or truncated
        episodes.append((observations, actions, subgoals, info, layout))
    env.close()
    return _stack_episodes(GRID_ID, task_set, episodes)


def _stack_episodes(env_id: str, task_set: str, episodes: list) -> Trajectories:
    """Pad a list of ``(observations, actions, subgoals, final_info, layout)`` episodes into tensors."""
    e = len(episodes)
    t = max(len(ep[1]) for ep in episodes)
    obs_dim = len(episodes[0][0][0])
    discrete = np.ndim(episodes[0][1][0]) == 0
    observations = torch.zeros(e, t + 1, obs_dim, dtype=torch.uint8 if env_id == GRID_ID else torch.float32)
    actions = (
        torch.full((e, t), -1, dtype=torch.int64) if discrete else torch.zeros(e, t, len(episodes[0][1][0]))
    )
    subgoals = torch.full((e, t), -1, dtype=torch.int64)
    lengths = torch.zeros(e, dtype=torch.int64)
    task_ids = torch.zeros(e, dtype=torch.int64)
    success = torch.zeros(e, dtype=torch.bool)
    layouts: dict[str, list] = {}
    for i, (obs, act, sub, info, layout) in enumerate(episodes):
        n = len(act)
        observations[i, : n + 1] = torch.as_tensor(np.stack(obs)).to(observations.dtype)
        actions[i, :n] = torch.as_tensor(np.array(act), dtype=actions.dtype)
        subgoals[i, :n] = torch.as_tensor(sub, dtype=torch.int64)
        lengths[i], task_ids[i], success[i] = n, int(info["task_id"]), bool(info["success"])
        for key, value in layout.items():
            layouts.setdefault(key, []).append(torch.as_tensor(value))
    return Trajectories(
        env_id=env_id,
        observations=observations,
        actions=actions,
        lengths=lengths,
        subgoals=subgoals,
        task_ids=task_ids,
        success=success,
        task_set=task_set,
        layouts={k: torch.stack(v) for k, v in layouts.items()},
    )
