"""The internal-RL environment (paper Algorithms 1-2) for ant-pinpad: actions are latent codes z,
observations are residual activations e_{t,l} of the frozen base model, and one step runs
primitive MuJoCo steps of the base model controlled by U(z) until the thresholded switch fires.

:class:`BatchedInternalAntEnv` keeps ``N`` :class:`~internal_rl.envs.ant.AntPinpadEnv` in a plain
list (MuJoCo runs on the CPU, one env after another) and the base model + metacontroller in one
batch per primitive step; it has the contract of the grid's
:class:`~internal_rl.internal_env.BatchedInternalEnv`. :class:`InternalAntEnv` is the single-env
gymnasium view (passes ``check_env``).

Primitive actions come from the controlled model's Gaussian head: the mean when ``greedy``,
otherwise a sample with the learned standard deviation, clipped to the ant's action box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from internal_rl.backbone import Backbone, BackboneOutput
from internal_rl.envs.ant import AntPinpadEnv
from internal_rl.envs.tasks import Task


class SplitStepper:
    """One token at a time through a base model split at ``layer``, with O(1) work per token for Hawk.

    :class:`~internal_rl.incremental.IncrementalBackbone` re-runs the whole prefix for Hawk, which
    is quadratic in the ant's 500-step episodes; this keeps :meth:`Backbone.step`'s per-layer
    states instead (conv window + RG-LRU state, or KV caches) and runs them in two halves, so the
    caller can steer the residual between :meth:`lower` and :meth:`upper`. Every row is stepped
    every time: rows are independent, and finished episodes are simply not read again.
    """

    def __init__(self, model: Backbone, batch: int, layer: int):
        self.model, self.layer = model, layer
        self.state = model.init_state(batch)
        cfg = model.config
        device = model.final_norm.weight.device
        # a_{t-1} before the first step is "none": zeros for continuous actions (as shift_actions).
        self.prev_action = (
            torch.full((batch,), -1, dtype=torch.long, device=device)
            if cfg.discrete_actions
            else torch.zeros(batch, cfg.action_dim, device=device)
        )
        self._bias: torch.Tensor | None = None

    @torch.no_grad()
    def lower(self, obs: torch.Tensor) -> torch.Tensor:
        """e_t (B, n_e) at the split layer for the next observation ``obs`` (B, obs_dim)."""
        model = self.model
        prev = self.prev_action[:, None] if model.config.condition_on_prev_action else None
        x = model.embed(obs[:, None], prev)
        self._bias = model._step_bias(self.state.t, x.device)
        for i in range(self.layer):
            x = model.blocks[i].step(x, self.state.layers[i], self._bias)
        return x[:, 0]

    @torch.no_grad()
    def upper(self, controlled: torch.Tensor) -> BackboneOutput:
        """Heads (B, 1, ...) of the current token from its (controlled) residual; advances time."""
        model = self.model
        x = controlled[:, None]
        for i in range(self.layer, model.n_layers):
            x = model.blocks[i].step(x, self.state.layers[i], self._bias)
        self.state.t += 1
        return model.heads(x)

    def record_action(self, action: torch.Tensor) -> None:
        """The action taken at this step, which the next token embeds if the model conditions on it."""
        self.prev_action = action.to(self.prev_action.dtype)


def _episode_seeds(seed: int, n: int) -> list[int]:
    # Distinct, well-mixed seeds per env, so seed(s) and seed(s + 1) share no episodes.
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n, np.uint32)]


class BatchedInternalAntEnv:
    """``num_envs`` internal ant environments sharing one frozen base model and metacontroller.

    Same contract as :class:`~internal_rl.internal_env.BatchedInternalEnv`: ``reset()`` returns
    e (N, n_e) and every env then needs a code; ``step(z)`` hands ``z[i]`` to every env ``i`` in
    ``needs_action`` and runs primitive steps for all unfinished envs until at least one of them
    fires its switch (beta >= ``threshold``) or finishes. It returns ``(e, reward, done, info)``;
    ``info["decided"]`` marks the envs whose abstract step ended in this call, ``reward`` and
    ``info["primitive_steps"]`` are what those envs accumulated since their last code.

    ``envs`` (a list of ``AntPinpadEnv``) replaces the ``num_envs`` envs built from ``task_set``,
    ``horizon`` and ``env_kwargs``. ``tasks`` swaps in explicit colour sequences. ``reset_options``
    (one dict for all envs, or one per env) is passed to every ``AntPinpadEnv.reset``, e.g. a fixed
    ``layout`` / ``task_id`` / ``start_xy``. After ``seed(s)`` the next ``reset()`` draws the
    episodes of ``episode_seeds``; later resets continue each env's random stream.

    Per episode the env records ``actions`` (N, horizon, action_dim; NaN after the end),
    ``lengths``, ``causes`` (termination cause), ``betas``, ``switch_steps`` and ``subgoals``.
    """

    def __init__(
        self,
        model: Any,
        num_envs: int | None = None,
        task_set: str = "posttrain",
        *,
        tasks: Sequence[Task] | None = None,
        threshold: float = 0.5,
        seed: int = 0,
        greedy: bool = False,
        horizon: int = 500,
        env_kwargs: dict[str, Any] | None = None,
        reset_options: dict[str, Any] | Sequence[dict[str, Any] | None] | None = None,
        envs: Sequence[AntPinpadEnv] | None = None,
    ):
        self.base, self.meta, self.layer = model.base, model.meta, model.layer
        if self.base.config.discrete_actions:
            raise ValueError("the ant's base model must have a continuous (Gaussian) action head")
        if envs is None:
            if num_envs is None:
                raise ValueError("pass num_envs or envs")
            envs = [AntPinpadEnv(task_set, horizon=horizon, **(env_kwargs or {})) for _ in range(num_envs)]
        elif num_envs is not None and num_envs != len(envs):
            raise ValueError(f"num_envs={num_envs} but {len(envs)} envs given")
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        if tasks is not None:
            for env in self.envs:  # AntPinpadEnv draws its task (and a solvable layout) from .tasks
                env.tasks = tuple(tuple(t) for t in tasks)
        self.horizon = max(env.horizon for env in self.envs)
        space = self.envs[0].action_space
        if space.shape != (self.base.config.action_dim,):
            raise ValueError(
                f"ant actions {space.shape} do not match the model's {self.base.config.action_dim}"
            )
        if self.envs[0].observation_space.shape != (self.base.config.obs_dim,):
            raise ValueError(
                f"ant observations {self.envs[0].observation_space.shape} do not match the model's "
                f"obs_dim {self.base.config.obs_dim}"
            )
        if isinstance(reset_options, dict) or reset_options is None:
            reset_options = [reset_options] * self.num_envs
        if len(reset_options) != self.num_envs:
            raise ValueError(f"{len(reset_options)} reset_options for {self.num_envs} envs")
        self.reset_options = list(reset_options)
        self.device = next(self.base.parameters()).device
        self.low = torch.as_tensor(space.low, dtype=torch.float32, device=self.device)
        self.high = torch.as_tensor(space.high, dtype=torch.float32, device=self.device)
        self.threshold, self.greedy = threshold, greedy
        self.seed(seed)

    def seed(self, seed: int) -> None:
        self.episode_seeds: list[int] = _episode_seeds(seed, self.num_envs)
        self._pending_seeds: list[int] | None = list(self.episode_seeds)
        self.generator = torch.Generator(device=self.device).manual_seed(seed + 1)

    @property
    def n_z(self) -> int:
        return self.meta.config.n_z

    @property
    def d_model(self) -> int:
        return self.base.config.d_model

    def _obs(self, rows: list[np.ndarray]) -> torch.Tensor:
        return torch.as_tensor(np.stack(rows), dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def reset(self) -> torch.Tensor:
        n, dev = self.num_envs, self.device
        seeds = self._pending_seeds or [None] * n
        self._pending_seeds = None
        obs, infos = [], []
        for env, s, options in zip(self.envs, seeds, self.reset_options, strict=True):
            o, info = env.reset(seed=s, options=options)
            obs.append(o)
            infos.append(info)
        self.reset_infos = infos
        self.last_obs = obs
        self.stepper = SplitStepper(self.base, n, self.layer)
        self.e = self.stepper.lower(self._obs(obs))
        self.h = self.meta.init_history(n, dev)
        self.z = torch.zeros(n, self.n_z, device=dev)
        self.needs_action = torch.ones(n, dtype=torch.bool, device=dev)
        self.done = torch.zeros(n, dtype=torch.bool, device=dev)
        self.terminated = torch.zeros(n, dtype=torch.bool, device=dev)
        self.truncated = torch.zeros(n, dtype=torch.bool, device=dev)
        self.success = torch.zeros(n, dtype=torch.bool, device=dev)
        self.acc_reward = torch.zeros(n, device=dev)
        self.acc_steps = torch.zeros(n, dtype=torch.long, device=dev)
        self.lengths = torch.zeros(n, dtype=torch.long, device=dev)
        self.returns = torch.zeros(n, device=dev)
        self.causes = [""] * n
        self.t = 0
        a_dim = self.base.config.action_dim
        self.actions = torch.full((n, self.horizon, a_dim), torch.nan, device=dev)
        self.betas = torch.zeros(n, self.horizon + 1, device=dev)
        self.switch_steps = torch.zeros(n, self.horizon + 1, dtype=torch.bool, device=dev)
        self.subgoals = torch.full((n, self.horizon + 1), -1, dtype=torch.long, device=dev)
        self.subgoals[:, 0] = torch.tensor([i["subgoal"] for i in infos], device=dev)
        self.switch_steps[:, 0] = True
        self.betas[:, 0] = 1.0
        return self.e.clone()

    def _act(self, out: BackboneOutput) -> torch.Tensor:
        assert out.action_mean is not None and out.action_log_std is not None
        mean = out.action_mean[:, -1]
        if self.greedy:
            action = mean
        else:
            noise = torch.randn(mean.shape, generator=self.generator, device=mean.device)
            action = mean + out.action_log_std[:, -1].exp() * noise
        return torch.maximum(torch.minimum(action, self.high), self.low)

    @torch.no_grad()
    def step(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        if bool(self.done.all()):
            raise RuntimeError("every episode is over: call reset()")
        dev = self.device
        take = self.needs_action & ~self.done
        self.z = torch.where(take[:, None], z.to(dev, torch.float32), self.z)
        self.needs_action &= ~take
        decided = torch.zeros_like(self.done)
        while True:
            active = ~self.done
            e = self.e
            out = self.stepper.upper(e + self.meta.control(self.z, e))
            action = self._act(out)
            self.stepper.record_action(action)
            # Copy to numpy once: MuJoCo gets exactly the float32 values recorded in self.actions.
            action_np = action.cpu().numpy()
            # MuJoCo's results are gathered on the host and moved to the model's device once.
            n = self.num_envs
            reward_np, term_np, trunc_np = np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool)
            subgoal_np, success_np = np.full(n, -1, np.int64), np.zeros(n, bool)
            for i in active.nonzero().squeeze(1).tolist():
                obs, r, term, trunc, info = self.envs[i].step(action_np[i])
                self.last_obs[i] = obs
                reward_np[i], term_np[i], trunc_np[i] = r, term, trunc
                subgoal_np[i], success_np[i] = info["subgoal"], info["success"]
                if term or trunc:
                    self.causes[i] = info["termination_cause"]
            reward = torch.as_tensor(reward_np, device=dev)
            terminated = torch.as_tensor(term_np, device=dev)
            truncated = torch.as_tensor(trunc_np, device=dev)
            subgoal = torch.as_tensor(subgoal_np, device=dev)
            self.success |= torch.as_tensor(success_np, device=dev)
            self.actions[:, self.t] = torch.where(active[:, None], action, torch.nan)
            self.acc_reward += reward
            self.returns += reward
            self.acc_steps += active.long()
            self.lengths += active.long()
            self.h = self.meta.step_history(e, self.h)
            self.t += 1
            finished = active & (terminated | truncated)
            self.terminated |= active & terminated
            self.truncated |= active & truncated & ~terminated
            self.done |= finished
            self.subgoals[:, self.t] = torch.where(self.done, -1, subgoal)
            fired = torch.zeros_like(self.done)
            if not bool(self.done.all()):
                # Finished rows are stepped with their last observation and never read again.
                self.e = self.stepper.lower(self._obs(self.last_obs))
                beta = self.meta.switch_prob(self.e, self.h, self.z)
                self.betas[:, self.t] = torch.where(self.done, 0.0, beta)
                fired = ~self.done & (beta >= self.threshold)
                self.switch_steps[:, self.t] = fired
            self.needs_action |= fired
            decided |= fired | finished
            if bool(decided.any()):
                break
        reward = torch.where(decided, self.acc_reward, 0.0)
        steps = torch.where(decided, self.acc_steps, 0)
        self.acc_reward = torch.where(decided, 0.0, self.acc_reward)
        self.acc_steps = torch.where(decided, 0, self.acc_steps)
        info = {
            "decided": decided,
            "primitive_steps": steps,
            "success": self.success.clone(),
            "terminated": self.terminated.clone(),
            "truncated": self.truncated.clone(),
            "termination_cause": list(self.causes),
            "t": self.t,
        }
        return self.e.clone(), reward, self.done.clone(), info

    def close(self) -> None:
        for env in self.envs:
            env.close()


class InternalAntEnv(gym.Env):
    """Gymnasium view of one internal ant environment: action z in Box(n_z), observation e_{t,l}.

    ``info`` carries ``primitive_steps`` (base-model steps the abstract step ran), ``success``
    and ``termination_cause`` ("" while running; success, wall, fell, wrong_colour or timeout).
    ``reset(options=...)`` passes ``options`` (task_id, layout, start_xy, yaw) to the ant.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        model: Any,
        task_set: str = "posttrain",
        *,
        tasks: Sequence[Task] | None = None,
        threshold: float = 0.5,
        greedy: bool = False,
        horizon: int = 500,
        env_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.inner = BatchedInternalAntEnv(
            model, 1, task_set, tasks=tasks, threshold=threshold, greedy=greedy, horizon=horizon,
            env_kwargs=env_kwargs,
        )  # fmt: skip
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.inner.d_model,), np.float32)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (self.inner.n_z,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31))
        self.inner.seed(seed)
        self.inner.reset_options = [options]
        e = self.inner.reset()
        info = {"primitive_steps": 0, "success": False, "termination_cause": ""}
        return e[0].cpu().numpy().astype(np.float32), info

    def step(self, action):
        z = torch.as_tensor(np.asarray(action, dtype=np.float32)).reshape(1, -1)
        e, reward, _, info = self.inner.step(z)
        return (
            e[0].cpu().numpy().astype(np.float32),
            float(reward[0]),
            bool(info["terminated"][0]),
            bool(info["truncated"][0]),
            {
                "primitive_steps": int(info["primitive_steps"][0]),
                "success": bool(info["success"][0]),
                "termination_cause": info["termination_cause"][0],
            },
        )

    def close(self) -> None:
        self.inner.close()
