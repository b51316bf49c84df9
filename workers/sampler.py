"""Collects episodes of one or several tasks, the policy batched over every env (no Ray here).

A :class:`Sampler` owns one gymnasium vector env with ``envs_per_task`` sub-envs per task,
grouped by task.  Each step runs the policy ONCE for all sub-envs: with per-task parameters
(after adaptation) the layers are batched matrix products over tasks
(``Policy.forward_stacked``), so adapted policies cost no more than the shared one.

Episodes are gathered in rounds: a round resets every sub-env and steps them together until all
have ended or the horizon is reached; a task gets ``ceil(episodes_per_task / envs_per_task)``
rounds.  What a sub-env does after its episode ended (autoreset, or a finished env stepped
again) is masked out.  The same class runs inside the Ray rollout actors.
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
from algorithms.policies import Params, PolicySpec, expand_params, make_policy, stack_params
from workers.envs.base import Task, TaskFamily, set_vector_tasks


@dataclass(frozen=True)
class SampleStats:
    """What one ``sample`` call did (for throughput metrics)."""

    env_steps: int
    seconds: float


class Sampler:
    """Steps a vector env for a set of tasks and returns one :class:`Episodes` per task.

    Args:
        family: the task family.
        policy_spec: the policy architecture (parameters come with every call).
        envs_per_task: sub-envs stepped in parallel for each task.
        seed: base seed of the env resets and the action noise.
    """

    def __init__(self, family: TaskFamily, policy_spec: PolicySpec, *, envs_per_task: int, seed: int) -> None:
        if envs_per_task < 1:
            raise ValueError(f"envs_per_task must be >= 1, got {envs_per_task}")
        self.family = family
        self.policy = make_policy(policy_spec)
        self.policy.requires_grad_(False)
        self.envs_per_task = envs_per_task
        self.seed = seed
        self._vec: gym.vector.VectorEnv | None = None
        self._vec_tasks = 0
        self._seeded = False
        self._gen = torch.Generator().manual_seed(seed)
        space = family.action_space
        self._discrete = isinstance(space, gym.spaces.Discrete)
        self._low = None if self._discrete else np.asarray(space.low, dtype=np.float32)
        self._high = None if self._discrete else np.asarray(space.high, dtype=np.float32)
        self.last_stats = SampleStats(0, 0.0)

    def close(self) -> None:
        if self._vec is not None:
            self._vec.close()
            self._vec = None

    def _vector_env(self, tasks: Sequence[Task]) -> gym.vector.VectorEnv:
        if self._vec is None or self._vec_tasks != len(tasks):
            self.close()
            self._vec = self.family.make_vector_env(tasks, self.envs_per_task)
            self._vec_tasks = len(tasks)
            self._seeded = False
        else:
            set_vector_tasks(self._vec, tasks, self.envs_per_task)
        return self._vec

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
            stacked = expand_params({key: v.detach().cpu() for key, v in params.items()}, n)
        else:
            if len(params) != n:
                raise ValueError(f"got {len(params)} parameter sets for {n} tasks")
            stacked = stack_params([{key: v.detach().cpu() for key, v in p.items()} for p in params])
        start = time.perf_counter()
        vec = self._vector_env(tasks)
        rounds = math.ceil(episodes_per_task / k)
        parts = [self._round(vec, stacked, n, deterministic) for _ in range(rounds)]
        out = []
        for i in range(n):
            cols = np.arange(i * k, (i + 1) * k)
            ep = Episodes.concatenate([p.select(cols) for p in parts]) if rounds > 1 else parts[0].select(cols)
            out.append(ep.select(slice(0, episodes_per_task)) if ep.num_episodes > episodes_per_task else ep)
        steps = sum(p.num_steps for p in parts)
        self.last_stats = SampleStats(env_steps=steps, seconds=time.perf_counter() - start)
        return out

    def _round(self, vec: gym.vector.VectorEnv, params: Params, n: int, deterministic: bool) -> Episodes:
        horizon = self.family.max_episode_steps
        num = vec.num_envs
        k = num // n
        if self._seeded:
            obs, _ = vec.reset()
        else:
            obs, _ = vec.reset(seed=[self.seed * 100_003 + i for i in range(num)])
            self._seeded = True
        obs_dim = self.policy.spec.obs_dim
        obs_buf = np.zeros((horizon, num, obs_dim), np.float32)
        act_buf = np.zeros((horizon, num), np.int64) if self._discrete else np.zeros((horizon, num, self.policy.spec.act_dim), np.float32)
        rew = np.zeros((horizon, num), np.float32)
        dones = np.zeros((horizon, num), bool)
        mask = np.zeros((horizon, num), np.float32)
        logp = np.zeros((horizon, num), np.float32)
        success = np.zeros((horizon, num), np.float32)
        active = np.ones(num, bool)
        with torch.no_grad():
            for t in range(horizon):
                o = np.asarray(obs, dtype=np.float32)
                obs_buf[t] = np.where(active[:, None], o, 0.0)
                dist = self.policy.forward_stacked(params, torch.from_numpy(o).view(n, k, obs_dim))
                a = self.policy.mode(dist) if deterministic else self.policy.sample(dist, self._gen)
                lp = self.policy.log_prob(dist, a)
                a_np = a.reshape(num, *a.shape[2:]).numpy()
                act_buf[t] = np.where(active.reshape(-1, *([1] * (a_np.ndim - 1))), a_np, 0)
                logp[t] = np.where(active, lp.reshape(num).numpy(), 0.0)
                env_a = a_np if self._discrete else np.clip(a_np, self._low, self._high)
                obs, r, term, trunc, info = vec.step(env_a)
                mask[t] = active
                rew[t] = np.where(active, r, 0.0)
                if "success" in info:
                    s = np.asarray(info["success"], dtype=np.float32)
                    present = np.asarray(info.get("_success", np.ones(num, bool)))
                    success[t] = np.where(active & present, s, 0.0)
                ended = np.logical_or(term, trunc)
                if t == horizon - 1:
                    ended = np.ones(num, bool)
                dones[t] = ended & active
                active &= ~ended
                if not active.any():
                    break
        return Episodes(obs=obs_buf, actions=act_buf, rewards=rew, dones=dones, mask=mask, log_probs=logp, success=success)
