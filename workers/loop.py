"""Meta-training in this process (no Ray): seeded task draws, and the algorithm's plan run by the
phase runner (:mod:`workers.runner`) over a :class:`~workers.sampler.Sampler`.

The Ray driver runs the same plans through the same runner over its rollout actors; the
learning tests, the benchmarks' learning curves and ``python -m workers.demo`` use this.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from algorithms import registry
from algorithms.episodes import Episodes
from algorithms.plans import IterationPlan
from workers.envs.base import Task, TaskFamily
from workers.runner import LocalLearner, SamplerSource, collect, cpu_params, run_iteration

#: Metrics that only mean something for families whose episodes report ``info["success"]``.
SUCCESS_METRICS = ("meta/success_pre", "meta/success_post")

__all__ = ["IterationResult", "TaskSchedule", "collect_phases", "cpu_params", "family_metrics", "plan_of",
           "train_in_process"]


def family_metrics(metrics: dict[str, float], family: TaskFamily) -> dict[str, float]:
    """``metrics`` without the success rates where ``family`` has no success signal (they would
    read 0 however well the policy does)."""
    if family.has_success:
        return metrics
    return {k: v for k, v in metrics.items() if k not in SUCCESS_METRICS}


def plan_of(learner: object) -> IterationPlan:
    """The iteration plan of a learner's algorithm, from its registration and its spec."""
    return registry.get(learner.name).plan(learner.config)  # type: ignore[attr-defined]


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


def collect_phases(learner: object, sampler: object, tasks: Sequence[Task], *,
                   episodes_per_task: int) -> list[list[Episodes]]:
    """One iteration's phases (the learner's plan) sampled by ``sampler``, without learning."""
    source = SamplerSource(sampler, episodes_per_task)
    return collect(plan_of(learner), tasks, source=source, learner=LocalLearner(learner)).phases


def train_in_process(
    learner: object,
    family: TaskFamily,
    *,
    meta_batch_size: int,
    episodes_per_task: int,
    iterations: int,
    seed: int,
    envs_per_task: int | None = None,
    on_iteration: Callable[[IterationResult], None] | None = None,
) -> list[IterationResult]:
    """Meta-train ``learner`` (a registered algorithm's learner) on ``family`` in this process,
    from its current iteration to ``iterations``, one sampler (the algorithm's,
    :func:`~workers.sampling.make_sampler`) for all phases."""
    from workers.sampling import make_sampler

    plan = plan_of(learner)
    sampler = make_sampler(
        learner.config,  # type: ignore[attr-defined]
        family,
        learner.policy.spec,  # type: ignore[attr-defined]
        envs_per_task=envs_per_task or episodes_per_task,
        seed=seed,
    )
    schedule = TaskSchedule(family, meta_batch_size, seed)
    port = LocalLearner(learner)
    steps_total = 0.0
    results = []
    try:
        for it in range(learner.iteration, iterations):  # type: ignore[attr-defined]
            source = SamplerSource(sampler, episodes_per_task)
            t0 = time.perf_counter()
            collected, update = run_iteration(plan, schedule.tasks(it), source=source, learner=port)
            learn_s = time.perf_counter() - t0 - source.seconds - collected.adapt_s
            steps_total += source.env_steps
            metrics = family_metrics(update, family)
            metrics.update({
                "time/sample_s": source.seconds,
                "time/adapt_s": collected.adapt_s,
                "time/learn_s": learn_s,
                "perf/env_steps_per_s": source.env_steps / max(source.seconds, 1e-9),
                "perf/env_steps_total": steps_total,
            })
            result = IterationResult(iteration=it, metrics=metrics)
            results.append(result)
            if on_iteration is not None:
                on_iteration(result)
    finally:
        sampler.close()
    return results
