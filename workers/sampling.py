"""What collects a phase's data for a job: the algorithm's registered sampler, or the one its task
distribution's kind calls for."""

from __future__ import annotations

from typing import Any

from algorithms import registry
from workers.episode_sampler import EpisodeSampler
from workers.sampler import Sampler


def make_sampler(algorithm: Any, family: Any, policy_spec: Any, *, envs_per_task: int, seed: int) -> Any:
    """What collects a phase's data for ``algorithm`` (a registered algorithm's spec) on
    ``family``: its registered sampler (RL²'s trials), else -- or with no algorithm -- a
    :class:`~workers.sampler.Sampler` of episodes, or for a supervised task distribution an
    :class:`~workers.episode_sampler.EpisodeSampler` (support and query sets)."""
    factory = None if algorithm is None else registry.get(algorithm.name).sampler_factory()
    if factory is not None:
        return factory(family, policy_spec, algorithm, envs_per_task=envs_per_task, seed=seed)
    if getattr(family, "kind", "rl") == "supervised":
        return EpisodeSampler(family, seed=seed)
    return Sampler(family, policy_spec, envs_per_task=envs_per_task, seed=seed)


__all__ = ["make_sampler"]
