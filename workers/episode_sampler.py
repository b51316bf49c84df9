"""The data of a supervised phase: one episode -- a support set and a query set -- of every task,
drawn by the task distribution (:meth:`workers.tasks.SupervisedTaskDistribution.episode`).

The supervised counterpart of :class:`workers.sampler.Sampler`: what
:func:`workers.sampling.make_sampler` builds for a supervised job, in the rollout actors (which
then make the meta-batch's episodes on the CPUs, the learner taking them by reference) and in
process.  It draws from its own seeded generator, so a worker's episodes are reproducible; it
needs no parameters (the data do not depend on the model).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from algorithms.supervised.data import SupportQuery
from workers.sampler import SampleStats
from workers.tasks import SupervisedTaskDistribution, Task


class EpisodeSampler:
    """Episodes of a supervised task distribution.

    Args:
        family: the distribution (its ``shots`` and ``queries`` size every episode).
        seed: seeds the generator the episodes are drawn with.
    """

    def __init__(self, family: SupervisedTaskDistribution, *, seed: int) -> None:
        self.family = family
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.last_stats = SampleStats(env_steps=0, seconds=0.0)

    def sample(self, tasks: Sequence[Task], params: Any = None, *, episodes_per_task: int = 1,
               deterministic: bool = False) -> list[SupportQuery]:
        """One episode of every task (``episodes_per_task`` must be 1: a supervised task gives one
        support set and one query set per iteration); ``params`` and ``deterministic`` are
        accepted for the sampler interface and not used.  ``last_stats.env_steps`` counts the
        examples drawn."""
        if episodes_per_task != 1:
            raise ValueError(
                f"a supervised task gives one episode per phase; got episodes_per_task={episodes_per_task}"
            )
        began = time.perf_counter()
        out = [self.family.episode(task, self._rng) for task in tasks]
        examples = sum(len(e.y_support) + len(e.y_query) for e in out)
        self.last_stats = SampleStats(env_steps=examples, seconds=time.perf_counter() - began)
        return out

    def close(self) -> None:
        """Nothing to release (the sampler interface's)."""


__all__ = ["EpisodeSampler"]
