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


#: Metrics that only mean something for families whose episodes report ``info["success"]``.
SUCCESS_METRICS = ("meta/success_pre", "meta/success_post")


def family_metrics(metrics: dict[str, float], family: TaskFamily) -> dict[str, float]:
    """``metrics`` without the success rates where ``family`` has no success signal (they would
    read 0 however well the policy does)."""
    if family.has_success:
        return metrics
    return {k: v for k, v in metrics.items() if k not in SUCCESS_METRICS}


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


@dataclass(frozen=True)
class IterationResult:
    """One meta-iteration's metrics, with the sampling/learning time split."""

    iteration: int
    metrics: dict[str, float]


def train_in_process(
    learner: MetaLearner,
    family: TaskFamily,
    *,
    meta_batch_size: int,
    episodes_per_task: int,
    iterations: int,
    inner_steps: int,
    seed: int,
    envs_per_task: int | None = None,
    on_iteration: Callable[[IterationResult], None] | None = None,
) -> list[IterationResult]:
    """Meta-train in this process with one :class:`~workers.sampler.Sampler` (no Ray).

    The same phases the distributed driver runs; used by ``make run`` before the service
    exists, by the learning tests and by the benchmarks' learning curves.
    """
    import time

    from workers.sampler import Sampler

    sampler = Sampler(family, learner.policy.spec, envs_per_task=envs_per_task or episodes_per_task, seed=seed)
    schedule = TaskSchedule(family, meta_batch_size, seed)
    steps_total = 0.0
    results = []

    def sample(tasks: Sequence[Task], params: Params | Sequence[Params]) -> list[Episodes]:
        nonlocal sample_s, steps
        out = sampler.sample(tasks, params, episodes_per_task=episodes_per_task)
        sample_s += sampler.last_stats.seconds
        steps += sampler.last_stats.env_steps
        return out

    try:
        for it in range(learner.iteration, iterations):
            sample_s, steps = 0.0, 0
            t0 = time.perf_counter()
            batch = collect_meta_batch(learner, sample, schedule.tasks(it), inner_steps=inner_steps)
            t1 = time.perf_counter()
            update = learner.step(batch)
            learn_s = time.perf_counter() - t1
            steps_total += steps
            metrics = family_metrics(dict(update.values), family)
            metrics.update(
                {
                    "time/sample_s": sample_s,
                    "time/adapt_s": (t1 - t0) - sample_s,
                    "time/learn_s": learn_s,
                    "perf/env_steps_per_s": steps / max(sample_s, 1e-9),
                    "perf/env_steps_total": steps_total,
                }
            )
            result = IterationResult(iteration=it, metrics=metrics)
            results.append(result)
            if on_iteration is not None:
                on_iteration(result)
    finally:
        sampler.close()
    return results
