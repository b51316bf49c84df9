"""Collects episodes of one or several tasks, the policy batched over every env (no Ray here).

A :class:`Sampler` owns one gymnasium vector env with ``envs_per_task`` sub-envs per task,
grouped by task.  Each step runs the policy ONCE for all sub-envs: with per-task parameters
(after adaptation) the layers are batched matrix products over tasks
(``Policy.forward_stacked``), so adapted policies cost no more than the shared one.

Episodes are gathered in rounds: a round resets every sub-env and steps them together until all
have ended or the horizon is reached; a task gets ``ceil(episodes_per_task / envs_per_task)``
rounds.  What a sub-env does after its episode ended (autoreset, or a finished env stepped
again) is masked out.  The same class runs inside the Ray rollout actors.

Speed: the sampler's own work per step has to stay small against the simulator's (a
HalfCheetah step is about 0.1 ms, and a torch op costs 5-10 us of dispatch on these CPUs).
For the package's MLP policies the per-step action is therefore computed with numpy (a few
small matrix products; noise drawn once per round from the sampler's torch generator), and the
behaviour log-probabilities are computed afterwards by the policy itself (``forward_stacked`` and
``log_prob`` over the whole round in one call), so they are exactly the torch policy's.  Other
policy classes take the generic per-step torch path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from algorithms.episodes import Episodes
from algorithms.policies import (
    CategoricalMLPPolicy,
    GaussianMLPPolicy,
    Params,
    PolicySpec,
    expand_params,
    make_policy,
    stack_params,
)
from workers.envs.base import Task, TaskFamily, set_vector_tasks
from workers.envs.vector import LeanVectorEnv


@dataclass(frozen=True)
class SampleStats:
    """What one ``sample`` call did (for throughput metrics)."""

    env_steps: int
    seconds: float


def steps_until(ends: np.ndarray) -> np.ndarray:
    """``[T, B]`` bool: True for each column's steps up to and including its first end (the
    steps that count), False after it."""
    mask = np.ones(ends.shape, bool)
    np.equal(np.cumsum(ends[:-1], axis=0), 0, out=mask[1:])
    return mask


class TaskVectorEnvs:
    """What every sampler of a family's vector env holds: one vector env for a set of tasks with
    ``envs_per_task`` sub-envs each (rebuilt when the number of tasks changes, else re-targeted
    in place), its seeding, the action-noise generator and the bounds actions are clipped to."""

    def __init__(self, family: TaskFamily, *, envs_per_task: int, seed: int, discrete: bool) -> None:
        if envs_per_task < 1:
            raise ValueError(f"envs_per_task must be >= 1, got {envs_per_task}")
        self.family = family
        self.envs_per_task = envs_per_task
        self.seed = seed
        self._vec: gym.vector.VectorEnv | None = None
        self._vec_tasks = 0
        self._seeded = False
        self._gen = torch.Generator().manual_seed(seed)
        self._discrete = discrete
        space = family.action_space
        clip = not discrete and family.clips_actions
        box = space if isinstance(space, gym.spaces.Box) else None
        self._low = np.asarray(box.low, dtype=np.float32) if clip and box is not None else None
        self._high = np.asarray(box.high, dtype=np.float32) if clip and box is not None else None
        self.last_stats = SampleStats(0, 0.0)

    def close(self) -> None:
        if self._vec is not None:
            self._vec.close()
            self._vec = None

    def _vector_env(self, tasks: Sequence[Task]) -> gym.vector.VectorEnv:
        if self._vec is None or self._vec_tasks != len(tasks):
            self.close()
            self._vec = self.family.make_vector_env(tasks, self.envs_per_task)
            if isinstance(self._vec, LeanVectorEnv):
                self._vec.copy = False  # each step's results are copied into the call's buffers
            self._vec_tasks = len(tasks)
            self._seeded = False
        else:
            set_vector_tasks(self._vec, tasks, self.envs_per_task)
        return self._vec


class Sampler(TaskVectorEnvs):
    """Steps a vector env for a set of tasks and returns one :class:`Episodes` per task.

    Args:
        family: the task family.
        policy_spec: the policy architecture (parameters come with every call).
        envs_per_task: sub-envs stepped in parallel for each task.
        seed: base seed of the env resets and the action noise.
    """

    def __init__(self, family: TaskFamily, policy_spec: PolicySpec, *, envs_per_task: int, seed: int) -> None:
        super().__init__(family, envs_per_task=envs_per_task, seed=seed,
                         discrete=isinstance(family.action_space, gym.spaces.Discrete))
        self.policy = make_policy(policy_spec)
        self.policy.requires_grad_(False)

    def sample(
        self,
        tasks: Sequence[Task],
        params: Params | Sequence[Params],
        *,
        episodes_per_task: int,
        deterministic: bool = False,
    ) -> list[Episodes]:
        """Episodes of every task; ``params`` is θ (shared) or one params dict per task."""
        if not tasks:
            raise ValueError("sample needs at least one task")
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
        n, k = len(tasks), self.envs_per_task
        if isinstance(params, dict):
            theta = {key: v.detach().cpu() for key, v in params.items()}
            shared: Params | None = theta
            stacked = expand_params(theta, n)
        else:
            if len(params) != n:
                raise ValueError(f"got {len(params)} parameter sets for {n} tasks")
            shared = None
            stacked = stack_params([{key: v.detach().cpu() for key, v in p.items()} for p in params])
        start = time.perf_counter()
        vec = self._vector_env(tasks)
        actor = (
            _NumpyActor(self.policy, shared if shared is not None else stacked, n, k, shared=shared is not None)
            if _NumpyActor.supports(self.policy)
            else None
        )
        rounds = math.ceil(episodes_per_task / k)
        parts = [self._round(vec, stacked, actor, n, deterministic) for _ in range(rounds)]
        out = []
        for i in range(n):
            cols = np.arange(i * k, (i + 1) * k)
            ep = Episodes.concatenate([p.select(cols) for p in parts]) if rounds > 1 else parts[0].select(cols)
            out.append(ep.select(slice(0, episodes_per_task)) if ep.num_episodes > episodes_per_task else ep)
        steps = sum(p.num_steps for p in parts)
        self.last_stats = SampleStats(env_steps=steps, seconds=time.perf_counter() - start)
        return out

    def _round(
        self, vec: gym.vector.VectorEnv, params: Params, actor: _NumpyActor | None, n: int, deterministic: bool
    ) -> Episodes:
        """One round: reset every sub-env, step them together until all ended or the horizon.

        Per step only what the next action needs runs; the raw step results go into the
        round's buffers.  The mask, the masking of what sub-envs report after their episode
        ended, and the behaviour log-probabilities are computed once at the end of the round.
        """
        horizon = self.family.max_episode_steps
        num = vec.num_envs
        k = num // n
        if self._seeded:
            obs, _ = vec.reset()
        else:
            # one seed per sub-env (gymnasium's vector envs take a list; its stub says int)
            obs, _ = vec.reset(seed=[self.seed * 100_003 + i for i in range(num)])  # type: ignore[arg-type]
            self._seeded = True
        policy = self.policy
        obs_dim = policy.spec.obs_dim
        obs_buf = np.zeros((horizon, num, obs_dim), np.float32)
        act_buf = (
            np.zeros((horizon, num), np.int64)
            if self._discrete
            else np.zeros((horizon, num, policy.spec.act_dim), np.float32)
        )
        rew = np.zeros((horizon, num), np.float32)
        dones = np.zeros((horizon, num), bool)
        success = np.zeros((horizon, num), np.float32)
        active = np.ones(num, bool)
        low, high = self._low, self._high
        if actor is not None:
            noise = None if deterministic else actor.noise(horizon, self._gen)
            dist_buf = actor.dist_buffer(horizon)
        steps = horizon
        with torch.inference_mode():
            for t in range(horizon):
                o = obs_buf[t]
                o[...] = obs
                if actor is not None:
                    actor.act(o, None if noise is None else noise[t], act_buf[t], dist_buf[t])
                else:
                    dist = policy.forward_stacked(params, torch.from_numpy(o).view(n, k, obs_dim))
                    a = policy.mode(dist) if deterministic else policy.sample(dist, self._gen)
                    act_buf[t] = a.numpy().reshape(act_buf.shape[1:])
                a_t = act_buf[t]
                env_a = a_t if low is None or high is None else np.minimum(np.maximum(a_t, low), high)
                obs, r, term, trunc, info = vec.step(env_a)
                rew[t] = r
                if "success" in info:
                    present = info.get("_success")
                    success[t] = info["success"] if present is None else np.where(present, info["success"], 0.0)
                ended = term | trunc
                if t == horizon - 1:
                    ended[:] = True
                d = dones[t]
                np.logical_and(ended, active, out=d)
                active ^= d
                if not np.count_nonzero(active):
                    steps = t + 1
                    break
            logp = np.zeros((horizon, num), np.float32)
            if actor is not None:
                logp[:steps] = actor.log_probs(dist_buf[:steps], act_buf[:steps])
            else:
                logp[:steps] = self._log_probs(params, obs_buf[:steps], act_buf[:steps], n, k)
        # a sub-env's steps count until the step its episode ended on; the rest is masked out
        mask = steps_until(dones)
        off = ~mask
        obs_buf[off] = 0.0
        act_buf[off] = 0
        rew[off] = 0.0
        logp[off] = 0.0
        success[off] = 0.0
        return Episodes(
            obs=obs_buf, actions=act_buf, rewards=rew, dones=dones, mask=mask.astype(np.float32), log_probs=logp,
            success=success
        )

    def _log_probs(self, params: Params, obs: np.ndarray, actions: np.ndarray, n: int, k: int) -> np.ndarray:
        """The behaviour policy's log-probabilities of ``actions`` ``[T, num]``: its own
        ``forward_stacked`` and ``log_prob`` over all steps of the round at once."""
        steps = obs.shape[0]

        def by_task(a: np.ndarray) -> torch.Tensor:  # [T, n*k, ...] -> [n, T*k, ...]
            rest = a.shape[2:]
            return torch.from_numpy(
                np.ascontiguousarray(a.reshape(steps, n, k, *rest).swapaxes(0, 1)).reshape(n, steps * k, *rest)
            )

        dist = self.policy.forward_stacked(params, by_task(obs))
        lp = self.policy.log_prob(dist, by_task(actions)).numpy()  # [n, T*k]
        return lp.reshape(n, steps, k).swapaxes(0, 1).reshape(steps, n * k)


class _NumpyActor:
    """The per-step actions of the package's MLP policies, computed with numpy.

    Mirrors ``_MLPPolicy._mlp_stacked`` (``h = act(h @ W.T + b)`` per hidden layer, linear
    output layer) for the given parameters: one 2-D product per layer over all sub-envs when
    every task shares them, else one batched product per layer over tasks.  Gaussian actions are
    ``mean + exp(log_std) * noise``; categorical ones ``argmax(logits + Gumbel noise)`` (the
    same distribution as sampling the softmax).  The distribution parameters of every step are
    kept, and the log-probabilities of a round come from the policy's own ``log_prob`` on them.
    """

    def __init__(
        self, policy: GaussianMLPPolicy | CategoricalMLPPolicy, params: Params, n: int, k: int, *, shared: bool
    ) -> None:
        self.policy = policy
        self.n, self.k, self.shared = n, k, shared
        self.discrete = isinstance(policy, CategoricalMLPPolicy)
        self.tanh = policy.spec.activation == "tanh"
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        for i in range(len(policy.body)):
            w = params[f"body.{i}.weight"].detach().to(torch.float32)
            b = params[f"body.{i}.bias"].detach().to(torch.float32)
            # W^T contiguous: [in, out] shared, [n, in, out] per task; bias [out] / [n, 1, out]
            self.weights.append(np.ascontiguousarray(w.transpose(-1, -2).numpy()))
            self.biases.append(b.numpy().copy() if shared else b.unsqueeze(1).numpy().copy())
        self.out_dim = policy.spec.act_dim
        # the hidden activations, allocated once: [n*k, width] shared, [n, k, width] per task
        lead = (n * k,) if shared else (n, k)
        self._hidden = [np.zeros((*lead, w.shape[-1]), np.float32) for w in self.weights[:-1]]
        if not self.discrete:
            log_std = params["log_std"].detach().to(torch.float32)
            # one row per sub-env: [n*k, act_dim]
            rows = log_std.expand(n * k, self.out_dim) if shared else log_std.repeat_interleave(k, dim=0)
            self.log_std = rows.contiguous()
            self.std = self.log_std.exp().numpy()

    @staticmethod
    def supports(policy: object) -> bool:
        return type(policy) in (GaussianMLPPolicy, CategoricalMLPPolicy)

    def noise(self, horizon: int, gen: torch.Generator) -> np.ndarray:
        """The round's noise from the sampler's generator: scaled Gaussian noise
        ``[H, n*k, act_dim]`` or Gumbel noise ``[H, n*k, n_actions]``."""
        shape = (horizon, self.n * self.k, self.out_dim)
        if self.discrete:
            return (-torch.empty(shape).exponential_(generator=gen).log()).numpy()
        return torch.randn(shape, generator=gen).numpy() * self.std

    def dist_buffer(self, horizon: int) -> np.ndarray:
        """Room for a round's means (Gaussian) or logits (categorical), ``[H, n*k, act_dim]``."""
        return np.zeros((horizon, self.n * self.k, self.out_dim), np.float32)

    def act(self, obs: np.ndarray, noise: np.ndarray | None, out: np.ndarray, dist: np.ndarray) -> None:
        """Write the actions for ``obs`` ``[n*k, obs_dim]`` into ``out`` (the mode without noise)
        and the distribution's means/logits into ``dist`` ``[n*k, act_dim]``."""
        h = obs if self.shared else obs.reshape(self.n, self.k, obs.shape[-1])
        last = len(self.weights) - 1
        for i in range(last):
            buf = self._hidden[i]
            np.matmul(h, self.weights[i], out=buf)
            np.add(buf, self.biases[i], out=buf)
            if self.tanh:
                np.tanh(buf, out=buf)
            else:
                np.maximum(buf, 0.0, out=buf)
            h = buf
        d = dist if self.shared else dist.reshape(self.n, self.k, self.out_dim)  # a view
        np.matmul(h, self.weights[last], out=d)
        np.add(d, self.biases[last], out=d)
        if self.discrete:
            out[...] = (dist if noise is None else dist + noise).argmax(-1)
        elif noise is None:
            out[...] = dist
        else:
            np.add(dist, noise, out=out)

    def log_probs(self, dist: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``policy.log_prob`` of ``actions`` ``[T, n*k, ...]`` under the kept distribution
        parameters ``[T, n*k, act_dim]``; ``[T, n*k]``."""
        params = (torch.from_numpy(dist),) if self.discrete else (torch.from_numpy(dist), self.log_std)
        return self.policy.log_prob(params, torch.from_numpy(actions)).numpy()
