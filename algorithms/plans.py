"""Iteration plans: which phases one meta-iteration (or one adaptation at meta-test) collects,
with which parameters, and after which phases the learner takes its inner step.

A plan is plain data; :mod:`workers.runner` executes it over any source of phases (a sampler in
this process, the Ray rollout actors, a dataset sampler) and any learner (in process or an
actor).  Shapes:

* MAML, FO-MAML, Reptile: ``train0`` with θ, inner step, ..., ``valid`` with the adapted
  parameters (Finn et al. 2017, Algorithm 3) -- :func:`inner_loop_plan`;
* multi-task policy gradient: one phase with θ, no inner step -- :func:`single_phase_plan`;
* meta-test of the gradient-based learners: ``steps`` rounds of data and inner step, then the
  evaluation phase -- :func:`adaptation_plan`;
* RL² (a recurrent policy that adapts in its hidden state): training is one phase of trials with
  θ (:func:`single_phase_plan`); its meta-test is one evaluation phase whose data are the
  trial's adaptation episodes and the evaluation episodes that go on from their state
  (:func:`trial_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Phase:
    """One phase of a plan.

    Attributes:
        name: its label (``train0``, ``valid``, ``eval``); logged and shown in errors.
        params: ``"meta"`` -- collected with the meta-parameters θ; ``"adapted"`` -- with each
            task's parameters after the inner steps so far.
        adapt: the learner's inner step follows, on this phase's data.
        evaluation: a meta-test evaluation phase (the family's evaluation protocol applies:
            its number of episodes and deterministic actions where it has them).
    """

    name: str
    params: Literal["meta", "adapted"] = "meta"
    adapt: bool = False
    evaluation: bool = False


@dataclass(frozen=True)
class IterationPlan:
    """The phases, in order; the learner learns from all of them at the end (training)."""

    phases: tuple[Phase, ...]

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError("a plan needs at least one phase")
        adapted = False
        for p in self.phases:
            if p.params == "adapted" and not adapted:
                raise ValueError(f"phase {p.name!r} uses adapted parameters, but no inner step comes before it")
            adapted = adapted or p.adapt

    @property
    def inner_steps(self) -> int:
        return sum(p.adapt for p in self.phases)


def inner_loop_plan(inner_steps: int) -> IterationPlan:
    """``inner_steps`` phases each followed by an inner step, then the post-adaptation phase."""
    train = tuple(Phase(f"train{k}", "meta" if k == 0 else "adapted", adapt=True) for k in range(inner_steps))
    return IterationPlan(train + (Phase("valid", "adapted" if inner_steps else "meta"),))


def single_phase_plan() -> IterationPlan:
    """One phase with θ and no inner step (the learner needs nothing else)."""
    return IterationPlan((Phase("train0", "meta"),))


def trial_plan() -> IterationPlan:
    """Meta-test of an algorithm that adapts within a trial: one evaluation phase, no inner step
    (the source runs the adaptation episodes and the evaluation episodes from their state)."""
    return IterationPlan((Phase("eval", "meta", evaluation=True),))


def adaptation_plan(steps: int) -> IterationPlan:
    """Meta-test: ``steps`` rounds of data and inner step, then the evaluation phase."""
    rounds = tuple(Phase(f"adapt{k}", "meta" if k == 0 else "adapted", adapt=True) for k in range(steps))
    return IterationPlan(rounds + (Phase("eval", "adapted" if steps else "meta", evaluation=True),))
