"""Synthetic episodes for pure algorithm tests (no env needed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from algorithms.episodes import Episodes
from algorithms.policies import Params, Policy
from algorithms.supervised.data import SupportQuery


def random_episodes(
    rng: np.random.Generator, *, obs_dim: int, act_dim: int, horizon: int, episodes: int, discrete: bool = False,
    early_end: bool = True,
) -> Episodes:
    """Episodes with random obs/rewards and some early episode ends (padding after them)."""
    t, b = horizon, episodes
    lengths = rng.integers(max(1, t // 2), t + 1, size=b) if early_end else np.full(b, t)
    mask = (np.arange(t)[:, None] < lengths[None, :]).astype(np.float32)
    dones = np.zeros((t, b), dtype=bool)
    dones[lengths - 1, np.arange(b)] = True
    obs = rng.normal(size=(t, b, obs_dim)).astype(np.float32) * mask[..., None]
    if discrete:
        actions = rng.integers(0, act_dim, size=(t, b)).astype(np.int64)
    else:
        actions = rng.normal(size=(t, b, act_dim)).astype(np.float32)
    rewards = (rng.normal(size=(t, b)) - obs[..., 0]).astype(np.float32) * mask
    return Episodes(
        obs=obs, actions=actions, rewards=rewards, dones=dones, mask=mask,
        log_probs=np.zeros((t, b), np.float32), success=np.zeros((t, b), np.float32),
    )


def policy_episodes(
    policy: Policy, params: Params, rng: np.random.Generator, *, horizon: int, episodes: int, seed: int
) -> Episodes:
    """Random-state episodes whose actions are drawn from ``policy`` (so ratios/KLs are realistic)."""
    spec = policy.spec
    ep = random_episodes(rng, obs_dim=spec.obs_dim, act_dim=spec.act_dim, horizon=horizon, episodes=episodes,
                         discrete=spec.discrete)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        dtype = next(iter(params.values())).dtype
        dist = torch.func.functional_call(policy, params, (torch.as_tensor(ep.obs, dtype=dtype),))
        a = policy.sample(dist, gen)
        lp = policy.log_prob(dist, a)
    ep.actions = a.numpy() if spec.discrete else a.numpy().astype(np.float32)
    ep.log_probs = lp.numpy().astype(np.float32) * ep.mask
    return ep


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖ / ‖b‖``."""
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-30))


@dataclass(frozen=True)
class NoisyClasses:
    """Few-shot classes of ``signal + nuisance``-dimensional inputs: ``signal`` dimensions carry
    the class (its mean plus noise 0.5), ``nuisance`` are noise of scale 3 that a random embedding
    cannot ignore; training and held-out classes differ."""

    train: np.ndarray
    test: np.ndarray
    ways: int = 5
    shots: int = 5
    queries: int = 5
    nuisance: int = 12

    @property
    def input_dim(self) -> int:
        return self.train.shape[1] + self.nuisance

    def episode(self, r: np.random.Generator, means: np.ndarray) -> SupportQuery:
        """A ``ways``-way episode of classes drawn from ``means``."""
        chosen = r.choice(len(means), self.ways, replace=False)

        def draw(k: int) -> tuple[np.ndarray, np.ndarray]:
            y = np.repeat(np.arange(self.ways), k)
            x = np.concatenate([means[chosen[y]] + 0.5 * r.normal(size=(len(y), means.shape[1])),
                                3.0 * r.normal(size=(len(y), self.nuisance))], axis=1)
            return x.astype(np.float32), y.astype(np.int64)

        return SupportQuery(*draw(self.shots), *draw(self.queries))

    def held_out(self, n: int = 50) -> list[SupportQuery]:
        """``n`` fixed episodes of the held-out classes."""
        return [self.episode(np.random.default_rng(1000 + i), self.test) for i in range(n)]


def noisy_classes(rng: np.random.Generator, *, signal: int = 4, train: int = 40, test: int = 20) -> NoisyClasses:
    """:class:`NoisyClasses` with ``train`` training and ``test`` held-out class means from ``rng``."""
    return NoisyClasses(train=rng.normal(size=(train, signal)), test=rng.normal(size=(test, signal)))
