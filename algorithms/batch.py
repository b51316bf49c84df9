"""Episodes of a meta-batch → stacked torch tensors with advantages, ready for the learner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from algorithms import baseline
from algorithms.episodes import Episodes
from algorithms.errors import NonFiniteError
from algorithms.registry import AdvantageSpec
from algorithms.returns import discounted_returns, gae, normalize


@dataclass
class TaskBatch:
    """The episodes of ``n`` tasks, stacked: every tensor has a leading task dimension.

    Steps are flattened time-major, ``N = T * B`` (index ``t * B + b``), so the policy's
    batched forward takes ``obs`` as it is.
    """

    obs: Tensor  # [n, N, obs_dim]
    actions: Tensor  # [n, N, act_dim] or [n, N]
    mask: Tensor  # [n, N]
    advantages: Tensor  # [n, N]
    returns: Tensor  # [n, N], discounted
    log_probs: Tensor  # [n, N], behaviour policy
    horizon: int
    episodes: int

    @property
    def n_tasks(self) -> int:
        return int(self.mask.shape[0])

    def columns(self, cols: Tensor) -> TaskBatch:
        """The same tasks restricted to episode columns ``cols`` (a subsample of episodes)."""
        n, t, b = self.n_tasks, self.horizon, self.episodes

        def pick(x: Tensor) -> Tensor:
            y = x.view(n, t, b, *x.shape[2:])[:, :, cols]
            return y.reshape(n, t * len(cols), *x.shape[2:])

        return TaskBatch(
            obs=pick(self.obs),
            actions=pick(self.actions),
            mask=pick(self.mask),
            advantages=pick(self.advantages),
            returns=pick(self.returns),
            log_probs=pick(self.log_probs),
            horizon=t,
            episodes=len(cols),
        )

    def tasks(self, idx: Sequence[int] | slice) -> TaskBatch:
        """A sub-batch of some tasks."""
        return TaskBatch(
            obs=self.obs[idx],
            actions=self.actions[idx],
            mask=self.mask[idx],
            advantages=self.advantages[idx],
            returns=self.returns[idx],
            log_probs=self.log_probs[idx],
            horizon=self.horizon,
            episodes=self.episodes,
        )

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(
            obs=self.obs.to(device),
            actions=self.actions.to(device),
            mask=self.mask.to(device),
            advantages=self.advantages.to(device),
            returns=self.returns.to(device),
            log_probs=self.log_probs.to(device),
            horizon=self.horizon,
            episodes=self.episodes,
        )


def make_task_batch(
    episodes: Sequence[Episodes],
    *,
    advantage: AdvantageSpec,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> TaskBatch:
    """Stack per-task episodes, fit the linear baseline per task, and compute advantages.

    Every task must have the same horizon and number of episodes (the sampler guarantees it).
    """
    if not episodes:
        raise ValueError("make_task_batch needs the episodes of at least one task")
    shapes = {(e.horizon, e.num_episodes) for e in episodes}
    if len(shapes) != 1:
        raise ValueError(f"tasks have different (horizon, episodes) shapes: {sorted(shapes)}")
    (t, b), n = shapes.pop(), len(episodes)

    def stack(name: str, as_dtype: torch.dtype) -> Tensor:
        arr = np.stack([getattr(e, name) for e in episodes])
        return torch.as_tensor(arr, device=device).to(as_dtype)

    for name in ("obs", "rewards"):
        for i, e in enumerate(episodes):
            if not np.isfinite(getattr(e, name)).all():
                raise NonFiniteError(f"episodes of task {i} have non-finite {name}; the update was rejected")
    obs = stack("obs", dtype)  # [n, T, B, d]
    discrete = episodes[0].actions.ndim == 2
    actions = stack("actions", torch.long if discrete else dtype)
    rewards = stack("rewards", dtype)
    dones = stack("dones", dtype)
    mask = stack("mask", dtype)
    log_probs = stack("log_probs", dtype)

    # returns/GAE run time-major over [T, n*B]
    def tm(x: Tensor) -> Tensor:
        return x.permute(1, 0, 2).reshape(t, n * b)

    def untm(x: Tensor) -> Tensor:
        return x.reshape(t, n, b).permute(1, 0, 2)

    rets = untm(discounted_returns(tm(rewards * mask), tm(dones), gamma=advantage.gamma)) * mask
    feats = baseline.features(obs, mask, dones)
    weights = baseline.fit(feats, rets, mask)
    values = baseline.predict(feats, weights)
    adv = untm(
        gae(tm(rewards * mask), tm(values), tm(dones), gamma=advantage.gamma, gae_lambda=advantage.gae_lambda)
    ) * mask
    if advantage.normalize:
        adv = normalize(adv, mask, dims=(1, 2))

    def flat(x: Tensor) -> Tensor:
        return x.reshape(n, t * b, *x.shape[3:])

    return TaskBatch(
        obs=flat(obs),
        actions=flat(actions),
        mask=flat(mask),
        advantages=flat(adv),
        returns=flat(rets),
        log_probs=flat(log_probs),
        horizon=t,
        episodes=b,
    )
