"""The phase runner: executes an algorithm's plan (:mod:`algorithms.plans`) -- the phases of one
meta-iteration, or the adaptation of a trained model at meta-test -- over any source of phases
and any learner.  It is the one copy of the loop: the Ray driver, the in-process loop
(:mod:`workers.loop`), ``MetaPolicy`` adaptation and the meta-test evaluation all call it.

A **source** makes a phase's data for the tasks, given the parameters to act with: the
in-process :class:`SamplerSource` (a :class:`~workers.sampler.Sampler`), the Ray rollout actors
(``workers.driver.PoolSource``), or a dataset sampler for supervised tasks.  A **learner port**
gives the meta-parameters θ, takes inner step ``k`` on a phase's data and learns from all phases:
:class:`LocalLearner` wraps a learner in this process, ``workers.driver.ActorLearner`` the
learner actor, and ``MetaPolicy`` adapts with its own inner step.  What travels between them is
opaque to the runner (episodes in process, object references on Ray).

This module imports no Ray: sources and ports that need it live with the driver.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from algorithms.episodes import Episodes
from algorithms.plans import IterationPlan, Phase
from algorithms.policies import Params
from workers.envs.base import Task, TaskFamily

#: θ (shared by every task) or one parameter dict per task -- or a reference to either.
ParamsArg = Any


class Source(Protocol):
    """Makes the data of one phase for ``tasks``, acting with ``params``."""

    def sample(self, phase: Phase, tasks: Sequence[Task], params: ParamsArg) -> Any: ...


class LearnerPort(Protocol):
    """The learner side of a plan, wherever the learner is."""

    def meta_params(self) -> ParamsArg: ...

    def adapt(self, params: ParamsArg, data: Any, *, k: int) -> ParamsArg: ...

    def learn(self, phases: list[Any]) -> dict[str, float]: ...


@dataclass
class Collected:
    """A plan's phases as collected.

    Attributes:
        phases: each phase's data, in the plan's order.
        params: the tasks' parameters after the plan's inner steps (θ where it has none).
        adapt_s: seconds spent in inner steps.
    """

    phases: list[Any]
    params: ParamsArg
    adapt_s: float = 0.0


def collect(plan: IterationPlan, tasks: Sequence[Task], *, source: Source, learner: LearnerPort) -> Collected:
    """Run ``plan``'s phases: each phase's data from ``source`` with θ or the tasks' adapted
    parameters, and the learner's inner step after the phases that ask for one (Finn et al.
    2017, Algorithm 3, lines 4-8)."""
    theta = learner.meta_params()
    current: ParamsArg = theta
    phases: list[Any] = []
    adapt_s, rounds = 0.0, 0
    for phase in plan.phases:
        data = source.sample(phase, tasks, theta if phase.params == "meta" else current)
        phases.append(data)
        if phase.adapt:
            t0 = time.perf_counter()
            current = learner.adapt(current, data, k=rounds)
            adapt_s += time.perf_counter() - t0
            rounds += 1
    return Collected(phases=phases, params=current, adapt_s=adapt_s)


def run_iteration(plan: IterationPlan, tasks: Sequence[Task], *, source: Source,
                  learner: LearnerPort) -> tuple[Collected, dict[str, float]]:
    """One meta-iteration: collect the plan's phases, then learn from all of them."""
    collected = collect(plan, tasks, source=source, learner=learner)
    return collected, learner.learn(collected.phases)


# ---- in this process ---------------------------------------------------------------------------


def cpu_params(params: Params) -> Params:
    return {k: v.detach().cpu() for k, v in params.items()}


@dataclass
class SamplerSource:
    """Phases sampled in this process by a :class:`~workers.sampler.Sampler`.

    ``episodes_per_task`` episodes per task and phase; an evaluation phase follows the family's
    evaluation protocol (``eval_episodes``, deterministic actions) where it has one.  Counts the
    env steps and seconds it sampled.
    """

    sampler: Any
    episodes_per_task: int
    eval_episodes: int | None = None
    deterministic_eval: bool = False
    env_steps: int = 0
    seconds: float = 0.0

    def sample(self, phase: Phase, tasks: Sequence[Task], params: ParamsArg) -> list[Episodes]:
        n = self.eval_episodes if phase.evaluation and self.eval_episodes else self.episodes_per_task
        deterministic = phase.evaluation and self.deterministic_eval
        out = self.sampler.sample(tasks, params, episodes_per_task=n, deterministic=deterministic)
        self.env_steps += self.sampler.last_stats.env_steps
        self.seconds += self.sampler.last_stats.seconds
        return out

    @classmethod
    def evaluating(cls, sampler: Any, family: TaskFamily, *, episodes_per_task: int,
                   sampled_actions: bool = False) -> SamplerSource:
        """A source whose evaluation phases follow ``family``'s evaluation protocol
        (``sampled_actions``: its evaluation episodes sample the actions even where it takes the mean)."""
        return cls(sampler, episodes_per_task, eval_episodes=family.eval_episodes,
                   deterministic_eval=family.deterministic_eval and not sampled_actions)


@dataclass
class LocalLearner:
    """A learner in this process (anything with ``params``, ``adapt`` and ``learn``)."""

    learner: Any

    def meta_params(self) -> Params:
        return cpu_params(self.learner.params)

    def adapt(self, params: ParamsArg, data: list[Episodes], *, k: int) -> list[Params]:
        start = [params] * len(data) if isinstance(params, dict) else params
        return [cpu_params(p) for p in self.learner.adapt(start, data)]

    def learn(self, phases: list[Any]) -> dict[str, float]:
        return dict(self.learner.learn(phases).values)
