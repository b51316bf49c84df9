"""Episodes of a plain gymnasium env (one that is not a task of a registered family), rolled out
one step at a time with a policy's parameters: how a user's own env adapts a meta-policy."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.func import functional_call

from algorithms.episodes import Episodes
from algorithms.policies import Params, Policy

#: An episode of a plain gymnasium env without a known horizon is cut here.
MAX_ENV_STEPS = 100_000


def horizon(env: gym.Env, default: int | None) -> int:
    """The env's episode limit: its spec's, its own ``max_episode_steps``, else ``default``."""
    for value in (getattr(env.spec, "max_episode_steps", None), getattr(env.unwrapped, "max_episode_steps", None),
                  default):
        if isinstance(value, int) and value > 0:
            return value
    return MAX_ENV_STEPS


def rollout(policy: Policy, params: Params, env: gym.Env, *, episodes: int, seed: int, gen: torch.Generator,
            max_steps: int) -> Episodes:
    """``episodes`` episodes of ``env`` with ``params``, one after another (actions sampled; a
    continuous action is clipped to a Box action space unless the env says it clips itself)."""
    space = env.action_space
    low = high = None
    if isinstance(space, gym.spaces.Box) and getattr(env.unwrapped, "clips_actions", True):
        low, high = np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)
    return Episodes.concatenate([
        _episode(policy, params, env, seed=seed + e, gen=gen, max_steps=max_steps, bounds=(low, high))
        for e in range(episodes)
    ])


def _episode(policy: Policy, params: Params, env: gym.Env, *, seed: int, gen: torch.Generator, max_steps: int,
             bounds: tuple[Any, Any]) -> Episodes:
    discrete = policy.spec.discrete
    low, high = bounds
    obs, _ = env.reset(seed=seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("obs", "actions", "rewards", "dones", "log_probs", "success")}
    for t in range(max_steps):
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32)).unsqueeze(0)
        with torch.inference_mode():
            dist = functional_call(policy, params, (x,))
            a = policy.sample(dist, gen)
            logp = float(policy.log_prob(dist, a)[0])
        a_np = a[0].numpy()
        env_a = int(a_np) if discrete else np.clip(a_np, low, high) if low is not None else a_np
        obs_next, r, term, trunc, info = env.step(env_a)
        ended = bool(term or trunc) or t == max_steps - 1
        rows["obs"].append(x[0].numpy())
        rows["actions"].append(a_np)
        rows["rewards"].append(float(r))
        rows["dones"].append(ended)
        rows["log_probs"].append(logp)
        rows["success"].append(float(info.get("success", 0.0)))
        obs = obs_next
        if ended:
            break
    n = len(rows["rewards"])
    return Episodes(
        obs=np.stack(rows["obs"]).astype(np.float32)[:, None],
        actions=np.stack(rows["actions"])[:, None].astype(np.int64 if discrete else np.float32),
        rewards=np.asarray(rows["rewards"], np.float32)[:, None],
        dones=np.asarray(rows["dones"], bool)[:, None],
        mask=np.ones((n, 1), np.float32),
        log_probs=np.asarray(rows["log_probs"], np.float32)[:, None],
        success=np.asarray(rows["success"], np.float32)[:, None],
    )
