"""One meta-iteration's phases, independent of where sampling happens.

``collect_meta_batch`` alternates sampling and inner steps exactly as MAML's Algorithm 3 does
(sample with θ, adapt, ..., sample the post-adaptation episodes); the sampling function is a
:class:`~workers.sampler.Sampler` in-process or a scatter/gather over Ray rollout actors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from algorithms.base import MetaBatch, MetaLearner
from algorithms.episodes import Episodes
from algorithms.policies import Params
from workers.envs.base import Task, TaskFamily

SampleFn = Callable[[Sequence[Task], Params | Sequence[Params]], list[Episodes]]


def cpu_params(params: Params) -> Params:
    return {k: v.detach().cpu() for k, v in params.items()}


def collect_meta_batch(learner: MetaLearner, sample: SampleFn, tasks: Sequence[Task], *, inner_steps: int) -> MetaBatch:
    """Sample with θ, take ``inner_steps`` inner steps (sampling before each), then sample the
    post-adaptation (validation) episodes with the adapted parameters."""
    theta = cpu_params(learner.params)
    current: Params | list[Params] = theta
    adapted: list[Params] = [theta] * len(tasks)
    train: list[list[Episodes]] = []
    for _ in range(inner_steps):
        episodes = sample(tasks, current)
        train.append(episodes)
        adapted = [cpu_params(p) for p in learner.adapt(adapted, episodes)]
        current = adapted
    valid = sample(tasks, current)
    return MetaBatch(train=train, valid=valid)


@dataclass(frozen=True)
class TaskSchedule:
    """Seeded meta-batch task draws: iteration ``i`` always gets the same tasks for a seed."""

    family: TaskFamily
    meta_batch_size: int
    seed: int

    def tasks(self, iteration: int, *, split: str = "train") -> list[Task]:
        rng = np.random.default_rng([self.seed, iteration, 0 if split == "train" else 1])
        return self.family.sample_tasks(self.meta_batch_size, rng, split=split)  # type: ignore[arg-type]
